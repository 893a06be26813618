"""IPVS and SCTP tests where this kernel lacks them: the whole subset runs in ONE `testbed vm` boot.

The guest (Debian's kernel under qemu, see testbed/vm.py; it loads ip_vs and sctp) runs pytest on
the IPVS tests and the conformance rows in the `ipvs` column, and on the conformance rows that need
SCTP in every mode that has SCTP (iptables, nftables, ipvs; userspace never had it); this test
passes when that inner run passes, and shows its summary. Where the host kernel has IPVS (or SCTP)
those tests run natively instead, and are left out of the guest run (this test skips when both are
here).
"""
import io
import os
from pathlib import Path

import pytest

from testbed import vm
from testbed.conformance import kernel_has_sctp

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent.parent
IPVS_TESTS = [
    "tests/kernel/test_ipvs_apply.py",
    "tests/kernel/test_ipvs_schedulers.py",
    "tests/conformance/test_conformance.py",
]
SCTP_TESTS = ["tests/conformance/test_conformance.py"]


def guest_subset(has_ipvs: bool, has_sctp: bool) -> tuple[list[str], str, list[str]] | None:
    """(modes, -k expression, files) of the guest run for what this kernel lacks; None if nothing.
    The -k words match test ids: `ipvs` the IPVS modules and the conformance ids of the ipvs
    column, `sctp` the SCTP rows in every mode."""
    modes, exprs, files = [], [], []
    if not has_ipvs:
        modes.append("ipvs")
        exprs.append("(ipvs and not service-types and not ingress and not seed)")
        files += IPVS_TESTS
    if not has_sctp:
        modes += [m for m in ("iptables", "nftables", "ipvs") if m not in modes]
        exprs.append("sctp")
        files += [f for f in SCTP_TESTS if f not in files]
    return (modes, " or ".join(exprs), files) if exprs else None


def test_ipvs_and_sctp_suite_in_one_guest_boot():
    subset = guest_subset(os.path.exists("/proc/net/ip_vs"), kernel_has_sctp())
    if subset is None:
        pytest.skip("this kernel has IPVS and SCTP: those tests run natively")
    if os.environ.get("TESTBED_IN_VM") == "1":
        pytest.skip("already inside the guest")
    missing = vm.available()
    if missing:
        pytest.skip(f"the kernel runner is not installed: {missing}")
    modes, expr, files = subset
    out, err = io.BytesIO(), io.BytesIO()
    argv = [vm.guest_python(), "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "--testbed-modes", ",".join(modes), "-k", expr, *files]
    code = vm.run(argv, timeout=2400, cwd=str(ROOT), stdout=out, stderr=err)
    text = out.getvalue().decode(errors="replace")
    summary = "\n".join(text.strip().splitlines()[-15:])
    print(summary)
    assert code == 0, f"the IPVS/SCTP tests failed inside testbed vm (exit {code}):\n{summary}\n{err.getvalue().decode(errors='replace')[-2000:]}"
    assert " passed" in text and "no tests ran" not in text


def test_guest_subset_follows_what_the_kernel_lacks():
    assert guest_subset(True, True) is None
    modes, expr, files = guest_subset(True, False)
    assert (modes, expr, files) == (["iptables", "nftables", "ipvs"], "sctp", SCTP_TESTS)
    modes, expr, files = guest_subset(False, True)
    assert modes == ["ipvs"] and "sctp" not in expr and files == IPVS_TESTS
    modes, expr, files = guest_subset(False, False)
    assert modes == ["ipvs", "iptables", "nftables"] and expr.endswith(" or sctp") and files == IPVS_TESTS
