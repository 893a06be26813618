"""IPVS, SCTP and kernel-6.1 nftables tests: the whole subset runs in ONE `testbed vm` boot.

The guest (Debian's kernel under qemu, see testbed/vm.py; it loads ip_vs and sctp) runs pytest on
the IPVS tests and the conformance rows in the `ipvs` column, on the conformance rows that need
SCTP in every mode that has SCTP (iptables, nftables, ipvs; userspace never had it), and, when the
guest's kernel is older than 6.2 and this one is not, on the nftables mode's kernel tests: the
transactions of test_nft_apply.py and the lab changes of test_nft_lab_changes.py (a Service
deleted while another still references its chains among them), since kube-proxy defers
`delete chain` on kernels before 6.2 and testbed does not (docs/nftables-kernels.md). The
nftables cases of test_service_changes.py and test_readiness.py stay native: they bound wall-clock
times (10 s to ready, 10 s per latency change) that the emulated guest misses on a busy machine
(rules took 15.9 s there) although its nft transactions succeed. This test passes when the inner
run passes, and shows its slowest tests and summary. Where this kernel has what a group needs, that
group runs natively instead and is left out of the guest run (this test skips when nothing is left).
The guest boots when collection ends and runs beside the host's tests; this test, put last, waits
for it (GuestRun).
"""
import io
import os
import re
import threading
import time
from dataclasses import dataclass
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
    "tests/kernel/test_repro.py",
]
SCTP_TESTS = ["tests/conformance/test_conformance.py"]
NFT_TESTS = ["tests/kernel/test_nft_apply.py", "tests/kernel/test_nft_lab_changes.py"]
NFT_SAME_TRANSACTION_DELETE = (6, 2)  # kube-proxy deletes stale chains a sync later below this


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as 6.1.0-57-cloud-amd64."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def nft_in_guest(host_release: str, guest_release: str | None) -> bool:
    """The guest's kernel is below 6.2 and this one is not: the nftables tests are worth a run there."""
    return guest_release is not None and \
        kernel_version(guest_release) < NFT_SAME_TRANSACTION_DELETE <= kernel_version(host_release)


def _scoped(files: list[str], expr: str | None) -> str:
    """A -k expression for `expr` in `files` only (-k words match module names too)."""
    modules = " or ".join(Path(f).stem for f in files)
    return f"(({modules}) and {expr})" if expr else f"({modules})"


def guest_subset(has_ipvs: bool, has_sctp: bool, nft: bool = False) -> tuple[list[str], str, list[str]] | None:
    """(modes, -k expression, files) of the guest run for what this kernel lacks; None if nothing.
    The -k words match test ids: `ipvs` the IPVS modules and the conformance ids of the ipvs
    column, `sctp` the SCTP rows in every mode (module names scope each to its files); the
    nftables files run whole."""
    groups = []
    if not has_ipvs:
        groups.append((["ipvs"], IPVS_TESTS, "ipvs and not service-types and not ingress and not seed"))
    if not has_sctp:
        groups.append((["iptables", "nftables", "ipvs"], SCTP_TESTS, "sctp"))
    if nft:
        groups.append((["nftables"], NFT_TESTS, None))
    if not groups:
        return None
    modes = list(dict.fromkeys(m for g in groups for m in g[0]))
    files = list(dict.fromkeys(f for g in groups for f in g[1]))
    return modes, " or ".join(_scoped(files_, expr) for _, files_, expr in groups), files


# Alone on a quiet machine the run took 587 s (2026-12-03); beside the host's tests under
# ./bootstrap test-loaded it ended 334 s after them, 21 min into the suite. An hour is the bound.
GUEST_TIMEOUT = 3600


@dataclass
class Plan:
    argv: list[str]
    kernel: object
    nft: bool


def plan() -> Plan | str:
    """The guest run for what this kernel lacks, or why there is none (a skip reason)."""
    kernel = vm.find_kernel()
    nft = nft_in_guest(os.uname().release, kernel.version if kernel else None)
    subset = guest_subset(os.path.exists("/proc/net/ip_vs"), kernel_has_sctp(), nft)
    if subset is None:
        return "this kernel has IPVS and SCTP, and the guest's adds no nftables case: those tests run natively"
    if os.environ.get("TESTBED_IN_VM") == "1":
        return "already inside the guest"
    missing = vm.available()
    if missing:
        return f"the kernel runner is not installed: {missing}"
    modes, expr, files = subset
    argv = [vm.guest_python(), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=15",
            "--testbed-modes", ",".join(modes), "-k", expr, *files]
    return Plan(argv, kernel, nft)


class GuestRun:
    """The guest's pytest run in a thread of this process. tests/conftest.py starts it as soon as
    collection ends and puts this file's test last, so the emulated guest works while the host's
    tests run (its root is an overlay with its own /run and /tmp: nothing it makes reaches the
    host); the test waits for it. qemu dies with the thread that started it (die_with_parent)."""

    def __init__(self, argv: list[str]):
        self.argv, self.out, self.err = argv, io.BytesIO(), io.BytesIO()
        self.code: int | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, name="testbed-vm-guest-run", daemon=True)

    def start(self) -> "GuestRun":
        self.thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            self.code = vm.run(self.argv, timeout=GUEST_TIMEOUT, cwd=str(ROOT), stdout=self.out, stderr=self.err)
        except BaseException as e:  # raised in the test, not lost in the thread
            self.error = e
        self.seconds = time.monotonic() - t0

    def wait(self) -> int:
        if not self.thread.is_alive() and self.code is None and self.error is None:
            self.start()
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.code


EARLY: dict[str, GuestRun] = {}


def start_early() -> None:
    """Called by tests/conftest.py once collection ends, when this file's test is selected."""
    p = plan()
    if isinstance(p, Plan) and "run" not in EARLY:
        EARLY["run"] = GuestRun(p.argv).start()


def test_ipvs_sctp_and_nftables_suite_in_one_guest_boot():
    p = plan()
    if isinstance(p, str):
        pytest.skip(p)
    run = EARLY.pop("run", None) or GuestRun(p.argv)
    code = run.wait()
    text = run.out.getvalue().decode(errors="replace")
    lines = text.strip().splitlines()
    slowest = next((i for i, line in enumerate(lines) if "slowest 15 durations" in line), None)
    shown = lines[slowest:] if slowest is not None else lines[-15:]
    summary = "\n".join(shown)
    print(f"guest kernel {p.kernel.version}; nftables tests {'included' if p.nft else 'native only'}; "
          f"{run.seconds:.0f} s in the guest (boot included)\n{summary}")
    assert code == 0, f"the tests failed inside testbed vm (exit {code}):\n{text[-6000:]}\n" \
                      f"{run.err.getvalue().decode(errors='replace')[-2000:]}"
    assert " passed" in text and "no tests ran" not in text


def test_guest_subset_follows_what_the_kernel_lacks():
    assert guest_subset(True, True) is None
    modes, expr, files = guest_subset(True, False)
    assert (modes, expr, files) == (["iptables", "nftables", "ipvs"], "((test_conformance) and sctp)", SCTP_TESTS)
    modes, expr, files = guest_subset(False, True)
    assert modes == ["ipvs"] and "sctp" not in expr and files == IPVS_TESTS
    modes, expr, files = guest_subset(False, False)
    assert modes == ["ipvs", "iptables", "nftables"] and expr.endswith(" or ((test_conformance) and sctp)")
    assert files == IPVS_TESTS
    modes, expr, files = guest_subset(True, True, nft=True)
    assert (modes, expr, files) == (["nftables"], "(test_nft_apply or test_nft_lab_changes)", NFT_TESTS)
    modes, expr, files = guest_subset(False, False, nft=True)
    assert modes == ["ipvs", "iptables", "nftables"] and files == IPVS_TESTS + NFT_TESTS
    assert expr.endswith(" or ((test_conformance) and sctp) or (test_nft_apply or test_nft_lab_changes)")


def test_the_nftables_tests_go_to_a_guest_below_6_2_from_a_host_at_or_above_it():
    assert nft_in_guest("6.18.44-fc", "6.1.0-57-cloud-amd64")
    assert not nft_in_guest("6.1.0-57-cloud-amd64", "6.1.0-57-cloud-amd64")  # they ran natively on 6.1
    assert not nft_in_guest("6.18.44", "6.12.9-cloud-amd64")  # Debian 13's kernel adds nothing
    assert not nft_in_guest("6.18.44", None)
    assert kernel_version("6.2.0") == (6, 2) and kernel_version("weird") == (0, 0)
