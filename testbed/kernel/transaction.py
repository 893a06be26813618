"""A rules transaction that iptables-restore or nft refused, shown where it failed.

Both tools name a line of their input: iptables-restore `Error occurred at line: N` (legacy:
`line N failed`), nft `/dev/stdin:N:COLS: Error: …` for every bad line. The error keeps the input
and shows those lines with a couple around them, numbered, so the offending rule can be read
without rendering it again. iptables-nft checks jump targets when it commits a table, so it
reports "Chain 'X' does not exist" at the COMMIT line: the lines that jump to X are shown too.
"""
from __future__ import annotations

import re

from ..errors import TestbedError, fill

_IPT_LINE = re.compile(r"(?:Error occurred at line: |line )(\d+)")
_IPT_PREFIX = re.compile(r"^[\w.-]*-restore(?: v[\d.]+)?(?: \([\w_]+\))?: ")
_IPT_NOISE = re.compile(r"^(Error occurred at line|Try `)")
_NFT_ERROR = re.compile(r"^(?:/dev/stdin|-):(\d+):[\d-]+: Error: (.*)$")
_MISSING_CHAIN = re.compile(r"Chain '([^']+)' does not exist")

AROUND = 2  # context lines shown on each side of an offending line
WIDTH = 80


def problems(tool: str, stderr: str) -> list[tuple[int | None, str]]:
    """(input line or None, what the tool said about it), in the order the tool said it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if tool == "nft":
        out = [(int(m[1]), m[2]) for m in map(_NFT_ERROR.match, lines) if m]
        return out or [(None, lines[0] if lines else "no message")]
    said = [_IPT_PREFIX.sub("", line) for line in lines if not _IPT_NOISE.match(line)]
    m = _IPT_LINE.search(stderr)
    message = said[0] if said else "no message"
    return [(int(m[1]) if m else None, _IPT_LINE.sub("", message).strip(" :") or message)]


def _jumps_to(text_lines: list[str], at: int, chain: str) -> list[int]:
    """1-based numbers of the lines in the table block that ends at line `at` that jump to `chain`."""
    start = at - 1
    while start > 0 and not text_lines[start - 1].startswith("*"):
        start -= 1
    out = []
    for n in range(start + 1, at):
        tokens = text_lines[n - 1].split()
        if any(t in ("-j", "-g", "--jump", "--goto") and tokens[i + 1:i + 2] == [chain] for i, t in enumerate(tokens)):
            out.append(n)
    return out


def offending_lines(tool: str, text: str, found: list[tuple[int | None, str]]) -> list[int]:
    """The input lines to point at: the ones the tool named, plus, for a missing chain reported at
    COMMIT, the lines that jump to that chain."""
    text_lines = text.splitlines()
    out: set[int] = set()
    for line, message in found:
        if line is None or not 1 <= line <= len(text_lines):
            continue
        out.add(line)
        m = _MISSING_CHAIN.search(message)
        if m and text_lines[line - 1].strip() == "COMMIT":
            out.update(_jumps_to(text_lines, line, m[1]))
    return sorted(out)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _wrap(text: str, width: int) -> list[str]:
    return [text[i:i + width] for i in range(0, len(text), width)] or [""]


def excerpt(text: str, marked: list[int], around: int = AROUND, width: int = WIDTH) -> list[str]:
    """The marked lines (1-based) with `around` lines each side, numbered; marked lines start with
    `>` and wrap, the others are cut to fit `width`; `…` stands for the lines between excerpts."""
    text_lines = text.splitlines()
    shown = sorted({n for m in marked for n in range(max(1, m - around), min(len(text_lines), m + around) + 1)})
    digits = len(str(shown[-1])) if shown else 1
    indent = 3 + digits + 3  # " > " + number + " | "
    out, last = [], 0
    for n in shown:
        if last and n != last + 1:
            out.append(" " * (indent - 2) + "…")
        line = text_lines[n - 1]
        if n in marked:
            first, *rest = _wrap(line, width - indent)
            out.append(f" > {n:>{digits}} | {first}")
            out += [" " * (indent - 2) + "| " + part for part in rest]
        else:
            out.append(_fit(f"   {n:>{digits}} | {line}", width))
        last = n
    return out


class TransactionError(TestbedError):
    """iptables-restore or nft refused a transaction: nothing of the refused table was applied."""

    def __init__(self, tool: str, ns: str, stderr: str, text: str):
        self.tool, self.ns, self.stderr, self.text = tool, ns, stderr, text
        self.problems = problems(tool, stderr)
        self.lines = offending_lines(tool, text, self.problems)
        super().__init__(self.describe(f"in {ns}"))

    def _first(self) -> str:
        line, message = self.problems[0]
        return (f" at line {line}" if line else "") + f": {message}"

    def summary(self) -> str:
        """One line: the tool, the first line it named and what it said."""
        return f"{self.tool} failed{self._first()}"

    def describe(self, where: str) -> str:
        """The summary (`where` says which node), the tool's other complaints, and the numbered
        excerpt of the input."""
        also = [fill(f"also line {n}: {m}") for n, m in self.problems[1:]]
        return "\n".join([fill(f"{self.tool} {where} failed{self._first()}"), *also, *excerpt(self.text, self.lines)])
