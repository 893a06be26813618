"""Named points where a test makes a testbed process fail or wait on purpose, deterministically.

    TESTBED_FAULT=kill:POINT         SIGKILL this process the first time it reaches POINT
    TESTBED_FAULT=pause:POINT:DIR    at POINT, create DIR/POINT.reached, then wait (at most
                                     PAUSE_LIMIT seconds) until DIR/POINT.go exists
    TESTBED_FAULT=mark:POINT:DIR     at POINT, create DIR/POINT.reached and go on

Several specs may be joined with commas. Points (in the order an apply reaches them): `locked`
(the lab lock taken), `lock-wait` (another command holds it), `pod-wired`, `workloads-started`,
`pods-recorded`, `state-write` (state.json.tmp written, not yet renamed), `rules-applied` (after
each node's transaction), `rules-done`, `published`; and `cleaned`, after each node's old rules
are removed in a switch of proxy mode. Unset, reach() costs one environment lookup.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ENV = "TESTBED_FAULT"
PAUSE_LIMIT = 60.0


def reach(point: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        action, _, rest = item.partition(":")
        name, _, directory = rest.partition(":")
        if name != point:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action in ("pause", "mark") and directory:
            Path(directory, f"{point}.reached").touch()
        if action == "pause" and directory:
            go = Path(directory, f"{point}.go")
            deadline = time.monotonic() + PAUSE_LIMIT
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
