"""nftables rulesets in one comparable form: `nft list ruleset` output, and the `nft -f`
transaction kube-proxy (and `testbed render --mode nftables`) writes, read as the state it leaves.

nft prints rules in its own normal form, not as they were written: `mark set mark or 0x00004000`
comes back as `meta mark set meta mark | 0x00004000`, `mark and 0x4000 == 0` as
`meta mark & 0x00004000 == 0x00000000`, `{ 10.96.0.0/12 }` as `10.96.0.0/12`, `a , b` as `a, b`,
priorities by name (`dstnat - 10`), timeouts as `3h`, counters as `counter packets 0 bytes 0`.
`canonical()` maps both forms to one text; nft_json turns `nft -j` output into the listing form.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from testbed.errors import TestbedError
from testbed.render.nftables import element_key  # the same `KEY [comment "C"] [: VERDICT]` form

# nft's named priorities for the ip/inet families (nftables' chain priority table).
_PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
_BINOPS = {"or": "|", "and": "&", "xor": "^", "|": "|", "&": "&", "^": "^"}
_HOST = re.compile(r"^(\d+\.\d+\.\d+\.\d+)/32$")  # nft lists a /32 as the bare address
_DURATION = re.compile(r"(\d+)(d|h|ms|m|s)")
_CHAIN_COMMENT = re.compile(r'comment\s+"(?:[^"\\]|\\.)*"')
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{},;]|[^\s{},;"]+')


@dataclass
class Chain:
    name: str
    hook: tuple | None = None  # (type, hook, priority, policy) for base chains
    comment: str | None = None
    rules: list[str] = field(default_factory=list)  # canonical text


@dataclass
class Set:
    name: str
    kind: str  # set | map
    spec: tuple = ()  # canonical (type, flags, timeout, comment)
    elements: list[str] = field(default_factory=list)  # canonical text


@dataclass
class Table:
    family: str
    name: str
    comment: str | None = None
    chains: dict[str, Chain] = field(default_factory=dict)
    sets: dict[str, Set] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)  # objects we do not compare (flowtables, counters, …)

    @property
    def key(self) -> str:
        return f"{self.family} {self.name}"


@dataclass
class Ruleset:
    tables: dict[str, Table] = field(default_factory=dict)  # "family name" -> Table

    def table(self, family: str, name: str) -> Table:
        return self.tables.setdefault(f"{family} {name}", Table(family, name))


# --- canonical text -------------------------------------------------------------------------------

def tokens(text: str) -> list[str]:
    """nft words: quoted strings whole, braces, commas and semicolons apart."""
    return _TOKEN.findall(text)


def _hex(tok: str) -> str:
    try:
        return f"{int(tok, 0):#x}"
    except ValueError:
        return tok


def _braces(toks: list[str], i: int) -> tuple[list[str], int]:
    """The canonical tokens of the `{ … }` starting at toks[i]: items sorted (sets and maps have no
    order), a one-word set without braces (nft prints `{ 10.96.0.0/12 }` as `10.96.0.0/12`)."""
    items: list[list[str]] = [[]]
    j = i + 1
    while j < len(toks) and toks[j] != "}":
        if toks[j] == "{":
            inner, j = _braces(toks, j)
            items[-1] += inner
            continue
        if toks[j] == ",":
            items.append([])
        else:
            items[-1].append(toks[j])
        j += 1
    items = [it for it in items if it]
    if len(items) == 1 and len(items[0]) == 1:
        return [_HOST.sub(r"\1", items[0][0])], j + 1
    body = sorted(" ".join(_HOST.sub(r"\1", t) for t in it) for it in items)
    return ["{", ", ".join(body), "}"], j + 1


def canonical(rule: str) -> str:
    """One text for a rule (or set element) however nft or knftables wrote it."""
    toks = tokens(rule)
    out: list[str] = []
    i = 0
    masked = False  # after a bitwise operator: its operand and the value compared with are masks (hex)
    hex_next = False
    while i < len(toks):
        t = toks[i]
        i += 1
        if t == "{":
            inner, i = _braces(toks, i - 1)
            out += inner
            hex_next = False
            continue
        if t == "counter":  # `counter` or `counter packets N bytes M`: state, not a rule
            while i + 1 < len(toks) and toks[i] in ("packets", "bytes"):
                i += 2
            continue
        if t == "mark" and (not out or out[-1] not in ("meta", "ct")):
            out += ["meta", "mark"]  # knftables writes `mark`, nft lists `meta mark`
            continue
        if t in _BINOPS and out:
            out.append(_BINOPS[t])
            masked = hex_next = True
            continue
        if t in ("==", "!="):
            if t == "!=":
                out.append(t)  # `==` is implicit: nft lists it only after a bitwise operator
            hex_next = masked
            masked = False
            continue
        if t == "reject" and toks[i:i + 3] == ["with", "icmp", "port-unreachable"]:
            out.append(t)  # the ip family's default: nft lists it as plain `reject`
            i += 3
            continue
        out.append(_hex(t) if hex_next else _HOST.sub(r"\1", t))
        hex_next = False
    return " ".join(out).replace(" , ", ", ")


def priority(expr: str, where: str) -> int:
    """`-110`, `filter`, `dstnat - 10`, `srcnat + 5` -> the number."""
    m = re.fullmatch(r"\s*([a-z]+|-?\d+)\s*(?:([+-])\s*(\d+))?\s*", expr)
    if not m or (not m[1].lstrip("-").isdigit() and m[1] not in _PRIORITIES):
        raise TestbedError(f"{where}: expected a chain priority (a number or raw, mangle, dstnat, filter, "
                           f"security, srcnat), got {expr!r}")
    base = int(m[1]) if m[1].lstrip("-").isdigit() else _PRIORITIES[m[1]]
    return base + (int(m[3]) * (1 if m[2] == "+" else -1) if m[2] else 0)


def seconds(text: str) -> int | None:
    """`10800s`, `3h`, `1d2h`, `10800` -> seconds."""
    if text.isdigit():
        return int(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        return None
    scale = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return int(sum(int(a) * scale[b] for a, b in parts))


def _unquote(tok: str) -> str:
    return tok[1:-1].replace('\\"', '"').replace("\\\\", "\\") if tok.startswith('"') else tok


def _statements(text: str) -> list[list[str]]:
    """`type filter hook input priority 0 ; policy accept ;` -> [[type, …], [policy, accept]]."""
    out: list[list[str]] = [[]]
    for t in tokens(text):
        if t == ";":
            out.append([])
        elif t not in ("{", "}"):
            out[-1].append(t)
    return [s for s in out if s]


def chain_spec(chain: Chain, text: str, where: str) -> None:
    """Read a chain's `type … hook … priority … ; policy … ; comment "…" ;` into chain."""
    for st in _statements(text):
        if st[0] == "type" and "hook" in st and "priority" in st:
            kind, hook = st[1], st[st.index("hook") + 1]
            prio = priority(" ".join(st[st.index("priority") + 1:]), where)
            policy = chain.hook[3] if chain.hook else "accept"
            chain.hook = (kind, hook, prio, policy)
        elif st[0] == "policy" and len(st) > 1:
            chain.hook = (*chain.hook[:3], st[1]) if chain.hook else (None, None, None, st[1])
        elif st[0] == "comment" and len(st) > 1:
            chain.comment = _unquote(st[1])
        # anything else (devices, flags of newer nft versions) says nothing about the rules


def set_spec(text: str) -> tuple:
    """A set's or map's definition -> (type, flags, timeout seconds, comment)."""
    type_, flags, timeout, comment = "", (), None, None
    for st in _statements(text):
        if st[0] in ("type", "typeof"):
            type_ = " ".join(st[1:])
        elif st[0] == "flags":
            # `dynamic` is left out: nft's JSON (1.0.6) does not show it, and a set a rule updates
            # cannot be made without it anyway.
            flags = tuple(sorted(f for f in "".join(st[1:]).split(",") if f and f != "dynamic"))
        elif st[0] == "timeout":
            timeout = seconds("".join(st[1:]))
        elif st[0] == "comment" and len(st) > 1:
            comment = _unquote(st[1])
        # size, gc-interval, policy, auto-merge, counter…: the kernel's, or not kube-proxy's
    return (type_, flags, timeout, comment)


def split_elements(body: str) -> list[str]:
    """`a, b comment "x" : goto c, d` (the inside of `elements = { … }`) -> canonical elements."""
    items: list[list[str]] = [[]]
    depth = 0
    for t in tokens(body):
        if t == "{":
            depth += 1
        elif t == "}":
            depth -= 1
        if t == "," and depth == 0:
            items.append([])
        else:
            items[-1].append(t)
    return [canonical(" ".join(it)) for it in items if it]


# --- `nft list ruleset` ---------------------------------------------------------------------------

def _strip_comment(line: str) -> str:
    """Drop a trailing `# handle N` (nft -a) outside quotes."""
    inq = False
    for i, c in enumerate(line):
        if c == '"':
            inq = not inq
        elif c == "#" and not inq:
            return line[:i]
    return line


def _balance(s: str) -> int:
    return sum(1 if t == "{" else -1 if t == "}" else 0 for t in tokens(s))


def parse_listing(text: str, source: str = "<rules>") -> Ruleset:
    """`nft list ruleset` (or `nft list table …`) output -> Ruleset."""
    out = Ruleset()
    lines = [(_strip_comment(raw).strip(), n) for n, raw in enumerate(text.splitlines(), 1)]
    i = 0

    def block_end(start: int) -> int:
        """Index of the line that closes the block opened on lines[start]."""
        depth = 0
        for j in range(start, len(lines)):
            depth += _balance(lines[j][0])
            if depth <= 0:
                return j
        raise TestbedError(f"{source}: line {lines[start][1]}: `{lines[start][0]}` is never closed with `}}`")

    while i < len(lines):
        line, n = lines[i]
        if not line:
            i += 1
            continue
        m = re.match(r"table\s+(\S+)\s+(\S+)\s*\{$", line)
        if not m:
            raise TestbedError(f"{source}: line {n}: expected `table FAMILY NAME {{`, got {line!r}")
        end = block_end(i)
        _table(out.table(m[1], _unquote(m[2])), lines[i + 1:end], source)
        i = end + 1
    return out


def _table(table: Table, lines: list[tuple[str, int]], source: str) -> None:
    i = 0
    while i < len(lines):
        line, n = lines[i]
        where = f"{source}: line {n}"
        if not line or line == "}":
            i += 1
            continue
        m = re.match(r"(chain|set|map|flowtable|counter|quota|limit|ct\s+\S+|secmark|synproxy)\s+(\S+)\s*\{(.*)$", line)
        if not m:
            if line.startswith("comment "):
                table.comment = _unquote(line.split(None, 1)[1])
                i += 1
                continue
            if line.startswith("flags "):
                i += 1
                continue
            raise TestbedError(f"{where}: expected a chain, set or map in table {table.key}, got {line!r}")
        depth, j = 0, i
        while True:
            depth += _balance(lines[j][0])
            if depth <= 0:
                break
            j += 1
            if j >= len(lines):
                raise TestbedError(f"{where}: `{line}` is never closed with `}}`")
        body = lines[i + 1:j]
        tail = m[3].strip()
        if tail.endswith("}") and j == i:  # `chain x { }` on one line
            body = [(tail[:-1].strip(), n)] if tail[:-1].strip() else []
        kind, name = m[1], _unquote(m[2])
        if kind == "chain":
            table.chains[name] = _chain(name, body, source)
        elif kind in ("set", "map"):
            table.sets[name] = _set(name, kind, body)
        else:
            table.other.append(f"{kind} {name}")
        i = j + 1


def _chain(name: str, body: list[tuple[str, int]], source: str) -> Chain:
    chain = Chain(name)
    pending, start = "", 0
    for line, n in body:
        if not line:
            continue
        if line == "}" and not pending:
            continue
        text = f"{pending} {line}".strip() if pending else line
        if not pending:
            start = n
        if _balance(text) > 0:  # a rule whose set or map goes on over lines
            pending = text
            continue
        pending = ""
        where = f"{source}: line {start}"
        if text.startswith(("type ", "policy ", "devices ")) or _CHAIN_COMMENT.fullmatch(text):
            chain_spec(chain, text, where)
        else:
            chain.rules.append(canonical(text))
    if pending:
        raise TestbedError(f"{source}: line {start}: a rule in chain {name} is never closed with `}}`")
    return chain


def _set(name: str, kind: str, body: list[tuple[str, int]]) -> Set:
    text = " ; ".join(line for line, _ in body if line and line != "}")
    elements: list[str] = []
    m = re.search(r"elements\s*=\s*\{", text)
    if m:
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        elements = split_elements(text[m.end():j - 1].replace(" ; ", " "))
        text = text[:m.start()] + text[j:]
    return Set(name, kind, set_spec(text), elements)


# --- `nft -f` transactions ------------------------------------------------------------------------

def _object_words(words: list[str], where: str) -> tuple[str, str, str, str]:
    """`ip kube-proxy NAME rest…` -> (family, table, name, rest)."""
    if len(words) < 3:
        raise TestbedError(f"{where}: expected FAMILY TABLE NAME, got {' '.join(words)!r}")
    return words[0], words[1], words[2], " ".join(words[3:])


def parse_transaction(text: str, source: str = "<rules>") -> Ruleset:
    """An `nft -f` input made of add/flush/delete commands (knftables' form) -> the state it leaves
    on a node that had none of it."""
    out = Ruleset()
    held: dict[tuple[str, str], dict[str, str]] = {}  # (table, set) -> element key -> element
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}: line {n}"
        m = re.match(r"(add|create|flush|delete)\s+(table|chain|rule|set|map|element)\s+(.*)$", line)
        if not m:
            raise TestbedError(f"{where}: expected an nft command (add/flush/delete table|chain|rule|set|map|element), "
                               f"got {line!r}")
        verb, what, rest = m[1], m[2], m[3]
        words = rest.split(" ")
        if what == "table":
            fam, name = words[0], words[1] if len(words) > 1 else ""
            if verb == "delete":
                out.tables.pop(f"{fam} {name}", None)
                continue
            table = out.table(fam, name)
            spec = " ".join(words[2:])
            for st in _statements(spec):
                if st[0] == "comment" and len(st) > 1:
                    table.comment = _unquote(st[1])
            continue
        fam, tname, name, tail = _object_words(words, where)
        table = out.table(fam, tname)
        if what == "chain":
            if verb == "delete":
                table.chains.pop(name, None)
            elif verb == "flush":
                if name in table.chains:
                    table.chains[name].rules = []
            else:
                chain = table.chains.setdefault(name, Chain(name))
                if tail:
                    chain_spec(chain, tail, where)
        elif what == "rule":
            if name not in table.chains:
                raise TestbedError(f"{where}: rule for chain {name}, which is not added before it")
            table.chains[name].rules.append(canonical(tail))
        elif what in ("set", "map"):
            if verb == "delete":
                table.sets.pop(name, None)
                held.pop((table.key, name), None)
            elif verb == "flush":
                held.get((table.key, name), {}).clear()
            else:
                table.sets[name] = Set(name, what, set_spec(tail))
                held.setdefault((table.key, name), {})
        elif what == "element":
            if name not in table.sets:
                raise TestbedError(f"{where}: element of set {name}, which is not added before it")
            body = tail.strip()
            if body.startswith("{") and body.endswith("}"):
                body = body[1:-1]
            elements = held[(table.key, name)]
            for e in split_elements(body):
                elements.pop(element_key(e), None)  # a key holds one element: re-adding replaces it
                if verb != "delete":
                    elements[element_key(e)] = e
    for (key, name), elements in held.items():
        if key in out.tables and name in out.tables[key].sets:
            out.tables[key].sets[name].elements = list(elements.values())
    return out
