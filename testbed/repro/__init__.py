"""`testbed repro`: a catalogue of real Service-networking bugs, each reproduced with packets, with
the bug's conditions and with the fix side by side (catalogue: what a reproduction is; cases/: one
module per bug; runner: building, measuring, tearing down; the CLI view is testbed/repro_view.py)."""
from __future__ import annotations

import importlib

from .catalogue import Repro


def all_repros() -> list[Repro]:
    from .cases import MODULES
    return [importlib.import_module(f"{__name__}.cases.{m}").REPRO for m in MODULES]


def by_name(name: str) -> Repro:
    from ..errors import TestbedError
    repros = {r.name: r for r in all_repros()}
    if name not in repros:
        raise TestbedError(f"no reproduction named {name!r}; `testbed repro list` shows them: {', '.join(repros)}")
    return repros[name]
