"""The fault hook (TESTBED_FAULT) the kernel fault tests use: kill, mark and pause at a point."""
import os
import subprocess
import sys
import time
from pathlib import Path

from testbed import faultpoint

REPO = Path(__file__).resolve().parents[2]


def reach_in_child(spec: str, point: str = "here", timeout: float = 30) -> subprocess.Popen:
    code = f"from testbed import faultpoint; faultpoint.reach({point!r}); print('went on')"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, TESTBED_FAULT=spec),
                            stdout=subprocess.PIPE, text=True)


def test_fault_hook_kill_mark_pause(tmp_path):
    p = reach_in_child("kill:here")
    assert p.communicate(timeout=30)[0] == "" and p.returncode == -9
    p = reach_in_child("kill:elsewhere,mark:here:" + str(tmp_path))
    assert p.communicate(timeout=30)[0] == "went on\n" and (tmp_path / "here.reached").exists()
    (tmp_path / "here.reached").unlink()
    p = reach_in_child(f"pause:here:{tmp_path}")
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "here.reached").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (tmp_path / "here.reached").exists() and p.poll() is None  # waiting for the go
        (tmp_path / "here.go").touch()
        assert p.communicate(timeout=30)[0] == "went on\n"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    faultpoint.reach("here")  # unset in this process: nothing happens
