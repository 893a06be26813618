"""A lab's state under /run/testbed/<lab>/: what it was asked for, what it allocated, what it made.

`journal` is appended *before* a kernel object or process is made, so `down` after a crash (even
SIGKILL mid-build) knows everything that may exist. `state.json` is the desired state and the
allocations, written atomically after each successful step.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

RUN_DIR = Path(os.environ.get("TESTBED_RUN_DIR", "/run/testbed"))


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


def write(lab: str, state: dict) -> None:
    d = lab_dir(lab)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True, default=_as_json))
    os.replace(tmp, d / "state.json")


def journal(lab: str, kind: str, *fields) -> None:
    """Record intent: `ns NAME` before a namespace is made, `pid PID START` once a process runs."""
    d = lab_dir(lab)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "journal", "a") as f:
        f.write(" ".join([kind, *map(str, fields)]) + "\n")
        f.flush()


def read_journal(lab: str) -> list[list[str]]:
    try:
        return [line.split() for line in (lab_dir(lab) / "journal").read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


@contextmanager
def locked(lab: str, timeout: float = 30.0):
    """One operation on a lab at a time (up, apply, delete, down)."""
    d = lab_dir(lab)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"lab {lab} is busy (another testbed command holds {d / 'lock'})")
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
