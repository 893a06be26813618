"""Run pytest while every CPU is kept busy by a hog, and say how long it took and what failed.

    ./bootstrap test-loaded [PYTEST ARGS]      (or: .venv/bin/python .ci/loaded.py [PYTEST ARGS])

The hog is Debian's stress-ng (`--cpu N`, N = the CPUs this process may use; TESTBED_HOGS=N
overrides), started before pytest and stopped after it, also when pytest fails or is
interrupted. It dies with this script (PR_SET_PDEATHSIG) and ends by itself after
TESTBED_HOG_LIMIT seconds (default 3 h) at the latest, so it is never left running. The verdicts
must not change under load: the last line is the wall time and the count of failed tests, and the
exit status is pytest's. The JUnit XML (and the matrix beside it) goes to results/junit-loaded.xml
unless --junitxml=PATH is given.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

PR_SET_PDEATHSIG = 1


def _signal_when_parent_dies(sig: int):
    return lambda: ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def start_hog(n: int, limit: int) -> subprocess.Popen:
    exe = shutil.which("stress-ng")
    if exe is None:
        raise SystemExit("test-loaded: stress-ng is not installed (`./bootstrap` installs it)")
    # Silent: stress-ng warns "finished prematurely" when it is stopped; an early end is reported below.
    return subprocess.Popen([exe, "--cpu", str(n), "--timeout", f"{limit}s", "--quiet"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True,
                            preexec_fn=_signal_when_parent_dies(signal.SIGKILL))


def stop_hog(hog: subprocess.Popen) -> None:
    """SIGTERM to the hog's own process group (its workers), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(hog.pid, sig)
        except ProcessLookupError:
            break
        try:
            hog.wait(timeout=5)
            break
        except subprocess.TimeoutExpired:
            continue


def failures(junit: str) -> tuple[int, int] | None:
    """(tests, failed or errored) from a JUnit XML file; None if pytest wrote none."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = sum(int(s.get("tests", 0)) for s in suites)
    bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    return tests, bad


def main(argv: list[str]) -> int:
    n = int(os.environ.get("TESTBED_HOGS") or len(os.sched_getaffinity(0)))
    limit = int(os.environ.get("TESTBED_HOG_LIMIT") or 3 * 3600)
    args = list(argv)
    junit = next((a.split("=", 1)[1] for a in args if a.startswith("--junitxml=")), None)
    if junit is None:  # the behaviour × mode matrix is written beside it
        os.makedirs("results", exist_ok=True)
        junit = os.path.join("results", "junit-loaded.xml")
        args.append(f"--junitxml={junit}")
    if os.path.exists(junit):  # an old report must not be counted if pytest writes none
        os.unlink(junit)
    start = time.monotonic()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `timeout`, kill: as ^C
    hog = start_hog(n, limit)
    print(f"test-loaded: {n} CPU hog(s) running (stress-ng --cpu {n}, pid {hog.pid})", flush=True)
    try:
        # Its own session: a ^C reaches this script only, which passes one SIGINT on per ^C (or
        # SIGINT/SIGTERM to this script; SIGINT too if this script is killed), so pytest removes
        # its labs before it ends.
        pytest = subprocess.Popen([sys.executable, "-m", "pytest", *args], start_new_session=True,
                                  preexec_fn=_signal_when_parent_dies(signal.SIGINT))
        while True:
            try:
                rc = pytest.wait()
                break
            except KeyboardInterrupt:
                pytest.send_signal(signal.SIGINT)
    finally:
        early = hog.poll()
        stop_hog(hog)
    if early is not None:
        print(f"test-loaded: warning: the hog ended before pytest did (exit {early}; TESTBED_HOG_LIMIT={limit})")
    wall = time.monotonic() - start
    counted = failures(junit)
    what = "no JUnit report" if counted is None else f"{counted[1]} of {counted[0]} tests failed"
    print(f"test-loaded: wall {wall:.0f} s under {n} CPU hog(s); {what}; pytest exit {rc}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
