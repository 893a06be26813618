"""What the CLI prints, formatted: kubectl's plain columns, ages, the compact behaviour × mode
matrix, and progress (rich on a terminal, one plain line per step otherwise)."""
from __future__ import annotations

import os
import sys
import textwrap
import time
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

# kubectl's printers.GetNewTabWriter: tabwriter(minwidth 6, padding 3), the last column unpadded.
MIN_WIDTH, PADDING = 6, 3


def columns(headers: list[str], rows: list[list[str]], no_headers: bool = False) -> str:
    """Rows as kubectl prints them: aligned plain columns, every value whole."""
    lines = ([] if no_headers else [headers]) + rows
    if not lines:
        return ""
    widths = [max(MIN_WIDTH, max(len(r[i]) for r in lines) + PADDING) for i in range(len(headers))]
    out = []
    for r in lines:
        out.append("".join(v.ljust(w) for v, w in zip(r[:-1], widths, strict=False)) + r[-1])
    return "\n".join(out) + "\n"


def human_duration(seconds: float) -> str:
    """kubectl's AGE (apimachinery's duration.HumanDuration)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        y, d = h // 24 // 365, h // 24 % 365
        return f"{y}y{d}d" if d else f"{y}y"
    return f"{h // 24 // 365}y"


def age(since: float | None, now: float | None = None) -> str:
    return "<unknown>" if since is None else human_duration((now or time.time()) - since)


# ----------------------------------------------------------------------------- the matrix

MARK = {"pass": ("pass", "green"), "fail": ("FAIL", "bold red"), "skip": ("skip", "yellow")}


def short_name(matrix, behaviour: str) -> str:
    """The row's short name, or the behaviour up to its first colon."""
    return matrix.shorts.get(behaviour) or behaviour.split(": ", 1)[0]


def _whole_column_skips(matrix) -> dict[str, str]:
    """Modes whose every cell is a skip for one reason (a mode this kernel lacks): said once."""
    out = {}
    for m in matrix.modes:
        cells = [r[m] for r in matrix.rows.values() if m in r]
        reasons = {c.reason for c in cells}
        if cells and all(c.status == "skip" for c in cells) and len(reasons) == 1:
            out[m] = reasons.pop()
    return out


def _skips_by_reason(matrix, behaviours: list[str], skipped_modes: dict[str, str]) -> dict[tuple[str, str], list[int]]:
    """(mode, reason) → the numbers of the rows skipped for it: a reason many rows share is said once."""
    out: dict[tuple[str, str], list[int]] = {}
    for i, b in enumerate(behaviours, 1):
        for m in matrix.modes:
            c = matrix.rows[b].get(m)
            if c is not None and c.status == "skip" and m not in skipped_modes:
                out.setdefault((m, c.reason), []).append(i)
    return out


def _numbers(rows: list[int]) -> str:
    """[3, 13, 14, 15] → 'row 3, rows 13–15' (runs of consecutive rows as ranges)."""
    runs: list[list[int]] = []
    for n in rows:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
    return f"row{'s' if len(rows) > 1 else ''} {text}"


def print_matrix(matrix, out: Console, verbose: bool = False) -> None:
    """A mark per cell under short row names, then the evidence of the cells that did not pass
    (every cell with `verbose`), each under the row's full behaviour, wrapped to the console."""
    t = Table(title="behaviour × proxy mode", title_justify="left", box=None, pad_edge=False,
              padding=(0, 1), header_style="bold")
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("row", overflow="fold")
    for m in matrix.modes:
        t.add_column(m, no_wrap=True)
    behaviours = list(matrix.rows)
    for i, b in enumerate(behaviours, 1):
        cells = []
        for m in matrix.modes:
            c = matrix.rows[b].get(m)
            cells.append(Text("-") if c is None else Text(MARK[c.status][0], style=MARK[c.status][1]))
        t.add_row(str(i), short_name(matrix, b), *cells)
    out.print(t)
    width = max(40, out.width)
    skipped_modes = {} if verbose else _whole_column_skips(matrix)
    for m, why in skipped_modes.items():
        out.print(Text(_wrap(f"{m}: every row skipped: {why}", width, "  "), style="yellow"), soft_wrap=True)
    if not verbose:
        for (m, why), rows in _skips_by_reason(matrix, behaviours, skipped_modes).items():
            out.print(Text(_wrap(f"{m}: {_numbers(rows)} skipped: {why}", width, "  "), style="yellow"),
                      soft_wrap=True)
    shown = [(i, b, [(m, c) for m in matrix.modes if (c := matrix.rows[b].get(m)) is not None
                     and m not in skipped_modes and (verbose or c.status == "fail")])
             for i, b in enumerate(behaviours, 1)]
    shown = [s for s in shown if s[2]]
    if not shown:
        return
    out.print("evidence (every cell):" if verbose else "evidence of the cells that did not pass (-v: every cell):")
    pad = max(len(m) for m in matrix.modes)
    for i, b, cells in shown:
        out.print(Text(_wrap(f"{i:>2} {b}", width, "   "), style="bold"), soft_wrap=True)
        for m, c in cells:
            mark, style = MARK[c.status]
            head = Text(f"   {m:<{pad}} ") + Text(mark, style=style)
            body = _wrap(f"{' ' * (pad + 9)}{c.reason or '-'}", width, " " * (pad + 9))[pad + 9:]
            out.print(head + Text(" " + body), soft_wrap=True)


def _wrap(text: str, width: int, indent: str) -> str:
    return textwrap.fill(text, width, subsequent_indent=indent, break_on_hyphens=False, break_long_words=True)


# ----------------------------------------------------------------------------- progress


class RichView:
    """The library's progress events as rich progress bars (a terminal): the step being done,
    then the checks of each mode; a finished bar goes away."""

    def __init__(self, progress: Progress, notes):
        self.p = progress
        self.task = None
        self.checks = None
        self.notes = notes

    def _drop(self, task) -> None:
        if task is not None:
            self.p.remove_task(task)

    def __call__(self, event: str, info: dict) -> None:
        mode = f"{info['mode']}: " if info.get("mode") else ""
        if event == "step":
            self._drop(self.task)
            self.task = self.p.add_task(escape(mode + info["what"]), total=info.get("total") or 1)
        elif event == "advance" and self.task is not None:
            self.p.update(self.task, advance=1, description=escape(mode + info["what"]))
        elif event == "notes":
            self.notes(info["topology"], self.p.console)
        elif event == "guest":  # a line of the verify running inside `testbed vm`
            self._drop(self.task)
            self.task = self.p.add_task(escape(f"testbed vm: {info['what']}"), total=None)
        elif event == "check":
            self._drop(self.task)
            self.task = None
            if self.checks is None or self.p.tasks[-1].id != self.checks or info.get("n", 1) == 1:
                self._drop(self.checks)
                self.checks = self.p.add_task("checks", total=info.get("total"))
            what = info.get("short") or info["behaviour"]
            self.p.update(self.checks, completed=info.get("n", 1) - 1, description=escape(mode + what))


class PlainView:
    """The same events as one plain line per step on stderr (a CI log, a pipe): no bars, no
    rewriting, and not a line per pod."""

    def __init__(self, out, notes):
        self.out = out
        self.notes = notes
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", file=self.out, flush=True)

    def __call__(self, event: str, info: dict) -> None:
        mode = f"{info['mode']}: " if info.get("mode") else ""
        if event == "step":
            total = info.get("total")
            self.say(f"{mode}{info['what']}" + (f" ({total})" if total else ""))
        elif event == "notes":
            self.notes(info["topology"], None)
        elif event == "check":
            n, total = info.get("n"), info.get("total")
            count = f"{n}/{total} " if n and total else ""
            self.say(f"{mode}{count}{info.get('short') or info['behaviour']}")
        elif event == "guest":
            self.say(f"[testbed vm] {info['what']}")
        elif event == "failed":
            self.say(f"{mode}failed: {info.get('what')}: {info.get('error')}")
        elif event == "rollback":
            self.say(f"{mode}rolling back")


@contextmanager
def progress(console: Console, notes):
    """A progress callback for the library: rich on a terminal, plain lines otherwise. Inside
    `testbed vm` stderr is the guest's serial line, relayed to the host as lines: plain there too."""
    if console.is_terminal and os.environ.get("TESTBED_IN_VM") != "1":
        p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                     TimeElapsedColumn(), console=console, transient=True)
        with p:
            yield RichView(p, notes)
    else:
        yield PlainView(console.file or sys.stderr, notes)
