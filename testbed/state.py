"""A lab's state under /run/testbed/<lab>/: what it was asked for, what it allocated, what it made.

`journal` is appended *before* a kernel object or process is made, so `down` after a crash (even
SIGKILL mid-build) knows everything that may exist. `state.json` is the desired state and the
allocations, written atomically after each successful step (a temporary file renamed over it:
a reader, or the command after a SIGKILL, sees the previous state or the new one, never half).
Every change happens under `locked`, which re-reads nothing itself: callers drop what they read
before and read the state again inside it.

A full file system (a small /run) is reported as StateWriteError, naming the file, the file
system and its free space; the previous state.json is left as it was.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from . import faultpoint
from .errors import TestbedError, fill

RUN_DIR = Path(os.environ.get("TESTBED_RUN_DIR", "/run/testbed"))
_FULL = (errno.ENOSPC, errno.EDQUOT)


class StateWriteError(TestbedError):
    """The lab's state directory has no room left (or no inodes): what, where, how much is free."""


class LabBusy(TestbedError, TimeoutError):
    """Another testbed command held the lab's lock for longer than the wait allows."""


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def full_error(e: OSError) -> StateWriteError | None:
    """The error to show for a write under RUN_DIR that failed for want of space; None otherwise."""
    name = e.filename or e.filename2
    if e.errno not in _FULL or not name or not Path(os.path.abspath(name)).is_relative_to(os.path.abspath(RUN_DIR)):
        return None
    where = _mount_point(Path(name).parent if Path(name).parent.exists() else RUN_DIR)
    try:
        st = os.statvfs(where)
        room = f"{_size(st.f_bavail * st.f_frsize)} free of {_size(st.f_blocks * st.f_frsize)}"
        room += ", no inodes free" if st.f_favail == 0 else ""
    except OSError:
        room = "its size unknown"
    return StateWriteError(fill(
        f"the file system holding the lab state is full: writing {name} failed ({os.strerror(e.errno)}; "
        f"{where}: {room}). state.json still holds the last complete state. Free space under {where}, "
        f"or set TESTBED_RUN_DIR to a directory with room (now {RUN_DIR}), and run the command again"))


def lab_dir(lab: str) -> Path:
    return RUN_DIR / lab


def list_labs() -> list[str]:
    try:
        return sorted(p.name for p in RUN_DIR.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def read(lab: str) -> dict | None:
    try:
        return json.loads((lab_dir(lab) / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _as_json(obj):
    """Objects a proxier keeps in a node's record (its last state) are stored as their JSON text."""
    to_json = getattr(obj, "to_json", None)
    if to_json is None:
        raise TypeError(f"cannot store {type(obj).__name__} in the lab state")
    return to_json()


@contextmanager
def writing(path: Path | str):
    """A block that writes `path`: an error from write() (which names no file) names it, so a
    full file system can be reported (full_error) with the file that did not fit."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def replace_file(path: Path, text: str) -> None:
    """Write `path` whole or not at all (a temporary file renamed over it): a reader, or the
    command after a SIGKILL, sees the old text or the new. On a full file system the old file
    stays, the partial temporary one is removed, and the error is StateWriteError."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with writing(tmp), open(tmp, "w") as f:
            f.write(text)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        full = full_error(e)
        if full is None:
            raise
        raise full from e
    if path.name == "state.json":
        faultpoint.reach("state-write")
    os.replace(tmp, path)


def write(lab: str, state: dict) -> None:
    d = lab_dir(lab)
    d.mkdir(parents=True, exist_ok=True)
    replace_file(d / "state.json", json.dumps(state, indent=1, sort_keys=True, default=_as_json))


def journal(lab: str, kind: str, *fields) -> None:
    """Record intent: `ns NAME` before a namespace is made, `pid PID START` once a process runs.
    A line that does not fit (full file system) is taken back whole, so the journal never holds
    half a line."""
    d = lab_dir(lab)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "journal", "a") as f:
        end = f.tell()
        try:
            with writing(d / "journal"):
                f.write(" ".join([kind, *map(str, fields)]) + "\n")
                f.flush()
        except OSError as e:
            f.truncate(end)
            full = full_error(e)
            if full is None:
                raise
            raise full from e


def read_journal(lab: str) -> list[list[str]]:
    try:
        return [line.split() for line in (lab_dir(lab) / "journal").read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


@contextmanager
def locked(lab: str, timeout: float = 30.0):
    """One operation on a lab at a time (up, apply, delete, down). A write under RUN_DIR that
    fails for want of space inside it comes out as StateWriteError."""
    d = lab_dir(lab)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    waited = True
                    faultpoint.reach("lock-wait")
                if time.monotonic() > deadline:
                    raise LabBusy(f"lab {lab} is busy: another testbed command has held {d / 'lock'} for "
                                  f"{timeout:.0f} s; try again when it is done") from None
                time.sleep(0.05)
        faultpoint.reach("locked")
        try:
            yield
        except OSError as e:
            error = full_error(e)
            if error is None:
                raise
            raise error from None
    finally:
        os.close(fd)


def is_locked(lab: str) -> bool:
    """Whether a testbed command holds the lab's lock now (a sync is running)."""
    try:
        fd = os.open(lab_dir(lab) / "lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
