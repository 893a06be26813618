"""The lab state's own fault handling, without root: a full file system named (a write to
/dev/full fails with ENOSPC like a full /run), the lock, the out-of-date marks."""
import errno
from pathlib import Path

import pytest

from testbed import errors, state
from testbed.lab import SYNCING, Lab


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "RUN_DIR", tmp_path / "run")
    return tmp_path / "run"


def enospc_writing(path: Path) -> OSError:
    with pytest.raises(OSError) as ei:
        with state.writing(path), open("/dev/full", "w") as f:
            f.write("x" * 10000)
    return ei.value


def test_a_full_file_system_is_named_with_the_file_and_its_room(run_dir):
    target = run_dir / "lab" / "state.json.tmp"
    target.parent.mkdir(parents=True)
    e = enospc_writing(target)
    assert e.errno == errno.ENOSPC and e.filename == str(target)
    error = state.full_error(e)
    assert isinstance(error, state.StateWriteError) and isinstance(error, errors.TestbedError)
    said = " ".join(str(error).split())
    assert f"writing {target} failed (No space left on device;" in said
    assert "free of" in said and "state.json still holds the last complete state" in said
    assert all(len(line) <= 80 or str(target) in line or str(run_dir) in line for line in str(error).splitlines())


def test_only_space_errors_under_the_state_directory_are_turned_into_state_errors(run_dir, tmp_path):
    assert state.full_error(enospc_writing(tmp_path / "elsewhere")) is None
    assert state.full_error(OSError(errno.EACCES, "Permission denied", str(run_dir / "x"))) is None
    assert state.full_error(OSError(errno.ENOSPC, "No space left on device")) is None  # names no file
    named = OSError(errno.ENOSPC, "No space left on device", "/already/named")
    with pytest.raises(OSError) as ei:
        with state.writing(run_dir / "other"):
            raise named
    assert ei.value is named


def test_replace_file_and_write(run_dir):
    d = run_dir / "lab"
    d.mkdir(parents=True)
    state.replace_file(d / "f", "one")
    state.replace_file(d / "f", "two")
    assert (d / "f").read_text() == "two" and sorted(p.name for p in d.iterdir()) == ["f"]
    state.write("lab", {"a": 1})
    assert state.read("lab") == {"a": 1} and not (d / "state.json.tmp").exists()


def test_lock_busy_and_is_locked(run_dir):
    assert state.is_locked("lab") is False  # no lock file at all
    with state.locked("lab"):
        assert state.is_locked("lab") is True
        with pytest.raises(state.LabBusy) as ei:
            with state.locked("lab", timeout=0.1):
                pass
        assert isinstance(ei.value, errors.TestbedError) and "lab lab is busy" in str(ei.value)
    assert state.is_locked("lab") is False


def test_out_of_date_nodes_and_why(run_dir):
    state.write("lab", {"nodes": {
        "node-1": {"ns": "lab-node-1"},
        "node-2": {"ns": "lab-node-2", "out_of_date": {"since": 1.0, "reason": SYNCING}},
        "node-3": {"ns": "lab-node-3", "out_of_date": {"since": 1.0, "reason": "nft failed at line 3: x"}}}})
    assert Lab("lab").out_of_date() == {"node-2": "a sync was interrupted (its process died)",
                                        "node-3": "nft failed at line 3: x"}
    with state.locked("lab"):
        assert Lab("lab").out_of_date() == {"node-2": "syncing", "node-3": "nft failed at line 3: x"}
