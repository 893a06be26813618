"""`testbed verify`: build a lab in each proxy mode, prove each behaviour row with real traffic.

Rows: the hand-written tables of testbed/conformance_rows.py for the shipped topologies (the same
rows the pytest conformance suite runs, so both show the same matrix), otherwise rows derived
from the topology (`conformance.derive_rows`).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from . import model, state, versions
from . import modes as proxy_modes
from .conformance import Cell, Matrix, Row, derive_rows, run_row

BUILD_ROW = "(lab built)"
BUILD_SHORT = "lab built"


def table_for(topo_path: str | None) -> list[Row] | None:
    """The hand-written rows for a shipped topology (None for a topology of the user's own)."""
    from .conformance_rows import TABLES

    path = Path(topo_path) if topo_path else model.builtin("default")
    if path.resolve().parent != model.TOPOLOGY_DIR.resolve():
        return None
    return TABLES.get(path.name)


def column(mode: str, version: str | None) -> str:
    """A matrix column: the mode, or the mode at a kube-proxy release ("nftables 1.33")."""
    return f"{mode} {version}" if version else mode


def guest_stderr(progress):
    """A sink for the guest's stderr. The guest verifies with plain progress: its lines
    ("[  1.2s] ipvs: 3/12 …") come through as "guest" events; the rest (its own matrix, notes)
    is kept for the error message only."""
    from .bench import _LineSink

    def relay(line: str) -> None:
        m = re.match(r"\[vm\] \[ *[\d.]+s\] (.*)", line)
        if m:
            progress("guest", {"what": m[1]})

    return _LineSink(relay)


def guest_json(argv: list[str], progress=lambda e, i: None, what: str = "JSON") -> tuple[dict | None, str]:
    """Run a testbed command that prints JSON on standard output inside `testbed vm` (one boot):
    (its JSON, "") or (None, why: the boot's error, or the exit code and the last lines of stderr)."""
    import io

    from . import vm

    out, err = io.BytesIO(), guest_stderr(progress)
    try:
        code = vm.run(argv, timeout=1800, cwd=str(Path(__file__).resolve().parent.parent), stdout=out, stderr=err)
    except Exception as e:  # noqa: BLE001 - a failed boot is reported, with the reason
        return None, f"testbed vm: {e}"
    try:
        return json.loads(out.getvalue().decode()), ""
    except ValueError:
        return None, f"testbed vm exited {code} without {what}: {' | '.join(err.lines[-3:])}"


def run_in_vm(topo_path: str | None, mode: str, matrix: Matrix, progress=lambda e, i: None,
              options: dict | None = None, version: str | None = None) -> bool:
    """Run this mode's column inside `testbed vm` (a guest kernel that has IPVS), one boot.

    Returns False when the runner is not installed (the caller then reports why it skipped)."""
    from . import vm

    if os.environ.get("TESTBED_IN_VM") == "1" or vm.available() is not None:
        return False
    col = column(mode, version)
    progress("check", {"behaviour": "booting a guest kernel with IPVS (testbed vm)", "mode": col})
    argv = [vm.guest_python(), "-m", "testbed.cli", "verify", "--mode", mode, "--json", "-"]
    if topo_path:
        argv.insert(4, os.path.abspath(topo_path))
    argv += [flag for flag, on in (("--strict", (options or {}).get("strict")),
                                   ("--rebuild-endpoints", (options or {}).get("rebuild_endpoints"))) if on]
    argv += ["--kube-proxy-version", version] if version else []
    data, why = guest_json(argv, progress, "a matrix")
    if data is None:  # a failed boot is a failed column, with the reason
        matrix.put(BUILD_ROW, col, short=BUILD_SHORT, cell=Cell("fail", why))
        return True
    guest = Matrix.from_json(data)
    for behaviour, row in guest.rows.items():
        for m, cell in row.items():
            reason = cell.reason if behaviour != BUILD_ROW else f"{cell.reason} (in testbed vm)"
            matrix.put(behaviour, m, Cell(cell.status, reason, cell.data), guest.shorts.get(behaviour, ""))
    return True


def run_mode(topo_path: str | None, mode: str, matrix: Matrix, progress=lambda e, i: None, name: str | None = None,
             options: dict | None = None, version: str | None = None) -> None:
    """Build the lab in `mode` (its nodes at kube-proxy `version`, when given), run every row into
    `matrix` (column `mode` or `mode version`), always tear down."""
    from .lab import Lab  # the kernel side only when verifying for real

    col = column(mode, version)
    reason = proxy_modes.missing(mode) or (versions.check_mode(versions.parse(version), mode) if version else None)
    if reason and mode == "ipvs" and proxy_modes.missing(mode) and run_in_vm(topo_path, mode, matrix, progress, options, version):
        return
    if reason:
        matrix.put(BUILD_ROW, col, short=BUILD_SHORT, cell=Cell("skip", reason))
        for behaviour in list(matrix.rows):
            if col not in matrix.rows[behaviour]:
                matrix.put(behaviour, col, Cell("skip", reason))
        return
    progress = _tagged(progress, col)
    lab_name = name or (f"v{version.replace('.', '')}-{mode}" if version else f"verify-{mode}")[:16]
    if name is None and state.read(lab_name) is not None:  # another verify is running: don't collide
        lab_name = f"v{os.getpid() % 100000}-{mode}"[:16]
    try:
        lab = Lab.up(topo_path, name=lab_name, mode=mode, progress=progress, kube_proxy_version=version,
                     **(options or {}))
    except Exception as e:  # the whole column fails with the reason
        matrix.put(BUILD_ROW, col, short=BUILD_SHORT, cell=Cell("fail", str(e)))
        return
    try:
        cluster = lab.cluster()
        matrix.put(BUILD_ROW, col, short=BUILD_SHORT, cell=Cell("pass", f"{len(cluster.nodes)} nodes, {len(cluster.pods)} pods, "
                                                                 f"{len(cluster.services)} services"))
        rows = table_for(topo_path) or derive_rows(cluster)
        for n, row in enumerate(rows, 1):
            progress("check", {"behaviour": row.behaviour, "short": row.short, "mode": col, "n": n, "total": len(rows)})
            try:
                cell = run_row(lab, row, mode)
            except Exception as e:
                cell = Cell("fail", f"{type(e).__name__}: {e}")
            if cell.status == "fail" and mode != "ipvs":
                cell = _with_trace(lab, row, cell)
            matrix.put(row.behaviour, col, cell, row.short)
    finally:
        lab.down()


def _with_trace(lab, row: Row, cell: Cell) -> Cell:
    """A failed packet row gets the trace of one packet through the rules (`testbed trace`), for
    the HTML report. The trace is best effort: where it cannot run, the cell says why."""
    from rich.console import Console

    from .conformance import _resolve_target
    from .trace import run_trace
    from .trace_view import render_tree

    kind, _, name = row.source.partition("/")
    if row.check != "packet" or row.action or kind not in ("pod", "node", "client") or row.proto not in ("tcp", "udp"):
        return cell
    try:
        ip, port, _, _ = _resolve_target(lab.cluster(), row.target, row.proto)
        trace = run_trace(lab, name if kind == "pod" else row.source, f"{ip}:{port}", proto=row.proto)
        with open(os.devnull, "w") as sink:
            out = Console(width=100, record=True, file=sink)
            out.print(render_tree(trace))
        text = out.export_text()
    except Exception as e:  # noqa: BLE001 - the cell's own failure is what matters
        text = f"no trace: {type(e).__name__}: {e}"
    return Cell(cell.status, cell.reason, {**cell.data, "trace": text})


def _tagged(progress, mode: str):
    """The lab's own progress events (fabric, pods, rules), saying which mode's lab they build."""
    return lambda event, info: progress(event, {"mode": mode, **info})


def verify(topo_path: str | None, modes: list[str], progress=lambda e, i: None, options: dict | None = None,
           kube_proxy_versions: list[str] | None = None) -> Matrix:
    """`options`: Lab.up's strict and rebuild_endpoints. With `kube_proxy_versions`, every mode runs
    once per version, the columns side by side (a behaviour that changed between releases shows)."""
    runs = [(m, v) for m in modes for v in (kube_proxy_versions or [None])]
    matrix = Matrix([column(m, v) for m, v in runs])
    # Available modes first, so the rows exist when unavailable columns are filled with skips.
    for m, v in sorted(runs, key=lambda r: proxy_modes.missing(r[0]) is not None):
        run_mode(topo_path, m, matrix, progress=progress, options=options, version=v)
    return matrix
