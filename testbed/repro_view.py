"""`testbed repro`: the catalogue, one reproduction, and the verdict table (rich, CLI only)."""
from __future__ import annotations

import json
import textwrap

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import repro as repros
from .errors import TestbedError
from .repro import catalogue as cat
from .repro import runner

MARK = {cat.REPRODUCED: ("reproduced", "green"), cat.NOT_REPRODUCED: ("not reproduced", "yellow"),
        cat.FIX_FAILS: ("FIX FAILS", "red"), cat.SKIPPED: ("skip", "dim"), cat.ERROR: ("ERROR", "red")}


def _short_upstream(u: str) -> str:
    return u.replace("kubernetes/kubernetes#", "#")


def _wrap(text: str, width: int, indent: str) -> Text:
    """Wrapped plain text: a Text, so "[invalid-drop]" in a label is never read as rich markup."""
    return Text(textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False))


def print_list(items: list[cat.Repro], out: Console, output: str) -> None:
    if output == "name":
        for r in items:
            out.print(r.name, soft_wrap=True)
        return
    if output == "json":
        out.print_json(json.dumps([describe(r) for r in items]))
        return
    width = max(60, out.width)
    # kubectl's way: plain aligned columns, never a truncated value.
    rows = [("NAME", "MODES")] + [(r.name, ",".join(r.modes)) for r in items]
    w = max(len(a) for a, _ in rows) + 3
    for a, b in rows:
        out.print(Text(f"{a:<{w}}{b}", style="bold" if a == "NAME" else ""), soft_wrap=True)
    out.print()
    for r in items:
        extra = ", ".join(_short_upstream(u) for u in r.upstream) + (f"; needs {', '.join(r.needs)}" if r.needs else "")
        out.print(Text(r.name, style="bold") + Text(f" ({extra})"), soft_wrap=True)
        out.print(_wrap(r.mechanism, width, "  "), soft_wrap=True)


def describe(r: cat.Repro) -> dict:
    return {"name": r.name, "title": r.title, "upstream": list(r.upstream), "mechanism": r.mechanism,
            "modes": list(r.modes), "not_in": dict(r.not_in), "needs": list(r.needs), "triggered": r.triggered,
            "measured": r.measured, "fix": r.fix, "bug": r.bug.label, "fixed": r.fixed.label,
            "with_files": r.with_files or None}


def _not_in(r: cat.Repro) -> str:
    """"; not iptables, ipvs: why" — modes grouped by their reason."""
    by_why: dict[str, list[str]] = {}
    for m, why in r.not_in.items():
        by_why.setdefault(why, []).append(m)
    return "".join(f"; not {', '.join(ms)}: {why}" for why, ms in by_why.items())


def print_show(r: cat.Repro, out: Console) -> None:
    width = max(60, out.width)
    out.print(Text(r.name, style="bold"), soft_wrap=True)
    out.print(_wrap(r.title, width, "  "), soft_wrap=True)
    fields = [("upstream", ", ".join(r.upstream)), ("mechanism", r.mechanism),
              ("modes", ", ".join(r.modes) + _not_in(r)),
              ("needs", ", ".join(r.needs) or "nothing beyond the mode"), ("triggered", r.triggered),
              ("measured", r.measured), ("the bug's run", r.bug.label), ("the fix's run", r.fixed.label),
              ("the fix", r.fix), ("your files", r.with_files or "no: the topology is fixed")]
    for k, v in fields:
        out.print(Text(f"{k}:", style="bold"), soft_wrap=True)
        out.print(_wrap(v, width, "  "), soft_wrap=True)
    out.print(Text("topology (the bug's run; the fix's run differs as said above):", style="bold"))
    out.print(yaml.safe_dump_all(r.variant_documents(cat.BUG), sort_keys=False), end="", soft_wrap=True,
              markup=False, highlight=False)


def expected_ok(r: cat.Repro, m: runner.ModeResult, kernel: str) -> bool:
    """Whether a mode's verdict is what the catalogue says it should be on this kernel."""
    if m.verdict == cat.SKIPPED:
        return True
    return m.verdict == r.expected(m.mode, kernel)


def print_results(results: list[runner.Result], out: Console, verbose: bool = False) -> bool:
    """The verdict table, then each cell's two measurements. Returns whether every verdict is the expected one."""
    kernel = runner.kernel_release()
    modes = list(dict.fromkeys(m for r in results for m in r.modes))
    t = Table(title=f"reproduction × proxy mode (kernel {kernel})", title_justify="left", box=None, pad_edge=False,
              padding=(0, 1), header_style="bold")
    t.add_column("reproduction", overflow="fold")
    for m in modes:
        t.add_column(m, no_wrap=True)
    good = True
    for r in results:
        cells = []
        for m in modes:
            res = r.modes.get(m)
            if res is None:
                cells.append(Text("-"))
                continue
            word, style = MARK[res.verdict]
            ok = expected_ok(r.repro, res, kernel)
            good &= ok
            cells.append(Text(word if ok or res.verdict in (cat.FIX_FAILS, cat.ERROR) else word + "!", style=style))
        t.add_row(r.repro.name, *cells)
    out.print(t)
    width = max(60, out.width)
    for r in results:
        shown = [(m, res) for m, res in r.modes.items() if verbose or res.verdict != cat.SKIPPED]
        if not shown:
            continue
        out.print(Text(r.repro.name, style="bold"), soft_wrap=True)
        for m, res in r.modes.items():
            if res.verdict == cat.SKIPPED and not verbose:
                continue
            word, style = MARK[res.verdict]
            where = f", in {res.where}" if res.where else ""
            out.print(Text(f"  {m}: ") + Text(word, style=style) + Text(f" ({res.seconds:.0f} s{where})"), soft_wrap=True)
            if res.bug:
                out.print(_wrap(f"bug ({r.repro.bug.label}): {res.bug.summary}", width, "    "), soft_wrap=True)
            if res.fix:
                out.print(_wrap(f"fix ({r.repro.fixed.label}): {res.fix.summary}", width, "    "), soft_wrap=True)
            if res.reason:
                out.print(_wrap(f"why: {res.reason}", width, "    "), soft_wrap=True)
    skipped = [(r.repro.name, m, res.reason) for r in results for m, res in r.modes.items()
               if res.verdict == cat.SKIPPED and not verbose]
    if skipped:
        out.print(Text(f"{len(skipped)} cells skipped (-v: why)", style="dim"))
    return good


def cmd_repro(args, console: Console, err: Console) -> int:
    if args.action == "list":
        print_list(repros.all_repros(), console, args.output)
        return 0
    if args.action == "show":
        if len(args.names) != 1:
            raise TestbedError("repro show: expected one NAME (`testbed repro list` shows them)")
        r = repros.by_name(args.names[0])
        if args.output == "json":
            console.print_json(json.dumps({**describe(r), "documents": r.variant_documents(cat.BUG)}))
        else:
            print_show(r, console)
        return 0
    from .lab import require_root
    from .modes import NAMES as PROXY_MODES
    if args.all == bool(args.names):
        raise TestbedError("repro run: name reproductions (`testbed repro list`) or give --all")
    chosen = repros.all_repros() if args.all else [repros.by_name(n) for n in args.names]
    modes = args.mode or list(PROXY_MODES)
    for m in modes:
        if m not in PROXY_MODES:
            raise TestbedError(f"--mode: expected one of {', '.join(PROXY_MODES)}, got {m!r}")
    if args.with_file and len(chosen) != 1:
        raise TestbedError("--with: one reproduction at a time takes a user's files")
    for r in chosen:  # a file the reproduction cannot take fails before anything is built
        if args.with_file:
            runner.adopt(r, args.with_file)
    require_root()
    from .cli import _progress, _write, write_json
    results = []
    with _progress() as view:
        for r in chosen:
            results.append(runner.run(r, modes, args.with_file, progress=view))
    human = err if args.json == "-" else console
    good = print_results(results, human, args.verbose)
    write_json(runner.to_json(results), args.json)
    if args.markdown:
        _write(args.markdown, runner.to_markdown(results))
    n = {v: sum(res.verdict == v for r in results for res in r.modes.values()) for v in MARK}
    human.print(", ".join(f"{k} {v}" for k, v in n.items() if v) or "nothing run")
    return 0 if good else 1
