"""IPVS tests where this kernel lacks IPVS: the whole IPVS subset runs in ONE `testbed vm` boot.

The guest (Debian's kernel under qemu, see testbed/vm.py) runs pytest on the IPVS tests and the
conformance rows in the `ipvs` column; this test passes when that inner run passes, and shows its
summary. Where the host kernel has IPVS the same tests run natively instead, and this one skips.
"""
import io
import os
from pathlib import Path

import pytest

from testbed import vm

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent.parent
IPVS_TESTS = [
    "tests/kernel/test_ipvs_apply.py",
    "tests/kernel/test_ipvs_schedulers.py",
    "tests/conformance/test_conformance.py",
]


def test_ipvs_suite_in_one_guest_boot():
    if os.path.exists("/proc/net/ip_vs"):
        pytest.skip("this kernel has IPVS: the IPVS tests run natively")
    if os.environ.get("TESTBED_IN_VM") == "1":
        pytest.skip("already inside the guest")
    missing = vm.available()
    if missing:
        pytest.skip(f"the kernel runner is not installed: {missing}")
    out, err = io.BytesIO(), io.BytesIO()
    argv = [vm.guest_python(), "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "--testbed-modes", "ipvs", "-k", "not service-types and not ingress and not seed", *IPVS_TESTS]
    code = vm.run(argv, timeout=2400, cwd=str(ROOT), stdout=out, stderr=err)
    text = out.getvalue().decode(errors="replace")
    summary = "\n".join(text.strip().splitlines()[-15:])
    print(summary)
    assert code == 0, f"the IPVS tests failed inside testbed vm (exit {code}):\n{summary}\n{err.getvalue().decode(errors='replace')[-2000:]}"
    assert " passed" in text and "no tests ran" not in text
