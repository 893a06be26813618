"""A real node's rules as its own tools print them, read into comparable forms (no root needed).

Formats, told apart by their first lines: `iptables-save` (either backend; iptables.py),
`nft list ruleset` and the `nft -f` transaction form (nft.py), `nft -j list ruleset`
(nft_json.py), `ipvsadm-save -n` and `ipset save` (ipvs.py). One file may hold several of the
IPVS-mode parts (ipvsadm-save, ipset save and iptables-save output one after the other), or they
may come in separate files. The proxy mode follows from what was given.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from testbed.errors import TestbedError
from testbed.noderules import ipvs, nft, nft_json
from testbed.noderules import iptables as ipt

_NFT_TABLE = re.compile(r"table\s+(ip|ip6|inet|arp|bridge|netdev)\s+\S+\s*\{")
_NFT_COMMAND = re.compile(r"(add|create|flush|delete)\s+(table|chain|rule|set|map|element)\s")
FORMATS = "iptables-save, nft list ruleset, nft -j list ruleset, ipvsadm-save -n or ipset save output"
# Modes `testbed diff` compares; userspace is left out (its proxy ports are chosen at run time).
MODES = ("iptables", "nftables", "ipvs")


@dataclass
class NodeRules:
    """What the files held: one of iptables / nft / ipvs (ipvs may carry iptables glue too)."""

    files: list[tuple[str, str]] = field(default_factory=list)  # (path, format)
    iptables: ipt.Tables | None = None
    nft: nft.Ruleset | None = None
    ipvs: ipvs.IpvsState | None = None

    @property
    def formats(self) -> set[str]:
        return {f for _, f in self.files}


def _split(text: str) -> tuple[str, str]:
    """A file that may mix iptables-save sections (`*table` to `COMMIT`) with ipvsadm-save /
    ipset save lines -> (iptables text, the rest), each with the other's lines blanked so that
    line numbers stay those of the file."""
    ipt_lines, rest = [], []
    inside = False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("*"):
            inside = True
        mine = inside or s.startswith("#")
        ipt_lines.append(line if mine else "")
        rest.append("" if mine else line)
        if s == "COMMIT":
            inside = False
    return "\n".join(ipt_lines) + "\n", "\n".join(rest) + "\n"


def _first_line(text: str) -> tuple[int, str] | None:
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s and not s.startswith("#"):
            return n, s
    return None


def read_text(out: NodeRules, text: str, source: str) -> None:
    """Detect one file's format and add what it holds to `out`."""
    first = _first_line(text)
    if first is None:
        raise TestbedError(f"{source}: empty: expected {FORMATS}")
    if first[1].startswith("{"):
        _add_nft(out, nft_json.parse(text, source), source, "nft -j list ruleset")
        return
    if _NFT_TABLE.match(first[1]):
        _add_nft(out, nft.parse_listing(text, source), source, "nft list ruleset")
        return
    if _NFT_COMMAND.match(first[1]):
        _add_nft(out, nft.parse_transaction(text, source), source, "nft -f input")
        return
    ipt_text, rest = _split(text)
    first_rest = _first_line(rest)
    if first_rest is not None and ipvs.line_kind(first_rest[1]) is None:
        n, line = first_rest
        if line.startswith(("-A ", "-I ", ":")):
            raise TestbedError(f"{source}: line {n}: an iptables rule or chain before any `*table` line "
                               f"(is the start of the iptables-save output missing?): {line[:60]!r}")
        raise TestbedError(f"{source}: line {n}: not {FORMATS}: {line[:60]!r}")
    if _first_line(ipt_text) is not None:
        if out.iptables is not None:
            raise TestbedError(f"{source}: a second iptables-save output (the first came earlier); give one")
        out.iptables = ipt.parse(ipt_text, source)
        out.files.append((source, "iptables-save"))
    if first_rest is not None:
        out.ipvs = ipvs.parse(rest, source, out.ipvs)
        names = {"ipvsadm": "ipvsadm-save -n", "ipset": "ipset save"}
        kinds = {ipvs.line_kind(line.strip()) for line in rest.splitlines() if line.strip() and not line.startswith("#")}
        out.files.append((source, " and ".join(names[k] for k in sorted(kinds))))


def _add_nft(out: NodeRules, ruleset: nft.Ruleset, source: str, fmt: str) -> None:
    if out.nft is not None:
        raise TestbedError(f"{source}: a second nftables ruleset (the first came earlier); give one")
    out.nft = ruleset
    out.files.append((source, fmt))


def read(paths: list[str]) -> NodeRules:
    out = NodeRules()
    for path in paths:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise TestbedError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
        read_text(out, text, path)
    return out


def mode_of(rules: NodeRules, wanted: str | None = None) -> str:
    """The proxy mode the rules are from (or `wanted`, if they can be compared in it)."""
    if wanted is not None and wanted not in MODES:
        raise TestbedError(f"--mode {wanted}: testbed diff compares {', '.join(MODES)} mode rules"
                           + (" (userspace mode's proxy ports are chosen at run time)" if wanted == "userspace" else ""))
    files = ", ".join(p for p, _ in rules.files)
    if rules.nft is not None:
        if rules.iptables is not None or rules.ipvs is not None:
            raise TestbedError(f"{files}: an nftables ruleset together with iptables or IPVS output: "
                               "give the one file of the node's proxy mode")
        found = "nftables"
    elif rules.ipvs is not None:
        found = "ipvs"
    else:
        found = "iptables"
        chains = {c for t in rules.iptables.tables.values() for c in t.chains}
        ipvs_chains = sorted(chains & {"KUBE-IPVS-FILTER", "KUBE-NODE-PORT"})
        if wanted is None and ipvs_chains:
            raise TestbedError(f"{files}: these are IPVS mode's iptables rules (chain {ipvs_chains[0]}): give "
                               "the node's `ipvsadm-save -n` and `ipset save` output too (--rules again), "
                               "or --mode iptables to compare them anyway")
    if wanted is None or wanted == found or (wanted == "ipvs" and found == "iptables"):
        return wanted or found
    reader = {"nftables": "`nft list ruleset` or `nft -j list ruleset`", "iptables": "`iptables-save`",
              "ipvs": "`ipvsadm-save -n` and `ipset save`"}[wanted]
    raise TestbedError(f"--mode {wanted}: {files} holds {found} mode's rules; {wanted} mode's are read "
                       f"from {reader} output")
