"""`testbed diff`: a real node's rules against what kube-proxy should have installed there.

The expected side is `testbed render`'s output for the node (reconcile the topology, render the
node's first sync in the proxy mode); the node's side is its own tools' dump (noderules reads
iptables-save, nft list ruleset, nft -j list ruleset, ipvsadm-save -n, ipset save). Both are read
into the same normal form, cut into pieces attributed to Service ports (diff_modes), and compared
per Service port:

- missing:   expected, not on the node (a Service added since the node's kube-proxy last synced);
- extra:     on the node, not expected (a deleted Service's stale chains, rules kube-proxy would
             not write);
- different: both, not the same: endpoints, probabilities, weights, marks, affinity, addresses,
             or any other rule (each rule that differs is listed, with -v or when nothing else
             says what differs).

What kube-proxy did not write (a CNI's, Docker's or kubelet's chains, other nft tables, other
ipsets) is listed apart as not kube-proxy's and is no difference. Exit status as diff(1): 0 the
same, 1 differences (2, an error, is the CLI's).
"""
from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass, field

from testbed import diff_modes, model, noderules, versions
from testbed.diff_modes import BASE, CHAIN, Foreign, Side
from testbed.errors import TestbedError
from testbed.noderules import ipvs as nipvs
from testbed.noderules import iptables as nipt
from testbed.noderules import nft as nnft

STATUSES = ("missing", "extra", "different", "same")
FACETS = ("addresses", "endpoints", "local endpoints", "probabilities", "weights", "scheduler", "affinity", "marks")
BASE_LABEL = "kube-proxy's own rules"
WIDTH = 80


@dataclass
class Group:
    """One Service port (or kube-proxy's own rules, or something no Service owns) compared."""

    owner: str
    label: str
    status: str
    facets: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)  # (expected, node)
    only_expected: list[tuple[str, str]] = field(default_factory=list)  # (place, entry)
    only_node: list[tuple[str, str]] = field(default_factory=list)
    reordered: list[str] = field(default_factory=list)  # places with the same entries in another order
    tally: dict[str, int] = field(default_factory=dict)  # what a missing / extra group holds

    @property
    def service(self) -> str | None:
        return self.owner if self.owner and not self.owner.startswith("?") else None

    def to_json(self) -> dict:
        return {
            "service": self.service, "label": self.label, "status": self.status,
            "facets": {k: {"expected": list(e), "node": list(n)} for k, (e, n) in self.facets.items()},
            "only_expected": [{"where": p, "entry": t} for p, t in self.only_expected],
            "only_node": [{"where": p, "entry": t} for p, t in self.only_node],
            "reordered": self.reordered,
        }


@dataclass
class Report:
    node: str
    mode: str
    topology: str
    files: list[tuple[str, str]]
    groups: list[Group]
    foreign: list[Foreign] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(g.status == status for g in self.groups)

    @property
    def exit_code(self) -> int:
        return 1 if any(g.status != "same" for g in self.groups) else 0

    def to_json(self) -> dict:
        return {
            "node": self.node, "mode": self.mode, "topology": self.topology,
            "rules": [{"path": p, "format": f} for p, f in self.files],
            "summary": {s: self.count(s) for s in STATUSES},
            "services": [g.to_json() for g in self.groups],
            "not_kube_proxys": [{"what": f.what, "owner": f.owner, "count": f.count, "unit": f.unit}
                                for f in self.foreign],
            "notes": self.notes,
            "exit_code": self.exit_code,
        }


# --- comparison ----------------------------------------------------------------------------------

def _minus(items: list[str], other: Counter) -> list[str]:
    """The items of `items` beyond what `other` holds, in order (multiset difference)."""
    left = Counter(other)
    out = []
    for t in items:
        if left[t] > 0:
            left[t] -= 1
        else:
            out.append(t)
    return out


def _tally(places: dict[str, list[str]]) -> dict[str, int]:
    out: Counter = Counter()
    for place, entries in places.items():
        kind = place.split(" ", 1)[0]
        for t in entries:
            if t == CHAIN:
                out["chains"] += 1
            elif t.startswith("(definition)"):
                out["sets"] += 1
            elif t.startswith("("):
                continue  # a chain's hook, an ipset's type: part of the chain or set
            elif kind in ("set", "map"):
                out["elements"] += 1
            elif kind == "virtual":
                out["real servers" if t.startswith("-r ") else "virtual servers"] += 1
            elif kind == "ipset":
                out["ipset entries"] += 1
            else:
                out["rules"] += 1
    order = ("chains", "rules", "sets", "elements", "virtual servers", "real servers", "ipset entries")
    return {k: out[k] for k in order if out[k]}


def compare(expected: Side, node: Side) -> list[Group]:
    owners = set(expected.entries) | set(node.entries)
    labels = {**expected.labels, **node.labels}
    groups = []
    for owner in sorted(owners, key=lambda o: (o == BASE, o.startswith("?"), o)):
        e, n = expected.entries.get(owner, {}), node.entries.get(owner, {})
        g = Group(owner, BASE_LABEL if owner == BASE else labels.get(owner, owner), "same")
        for place in list(e) + [p for p in n if p not in e]:
            a, b = e.get(place, []), n.get(place, [])
            g.only_expected += [(place, t) for t in _minus(a, Counter(b))]
            g.only_node += [(place, t) for t in _minus(b, Counter(a))]
            if a != b and Counter(a) == Counter(b) and place in expected.ordered | node.ordered:
                g.reordered.append(place)
        fe, fn = expected.facets.get(owner, {}), node.facets.get(owner, {})
        if not n:
            g.status, g.tally = "missing", _tally(e)
            g.facets = {k: (fe[k], ()) for k in FACETS if k in fe}
        elif not e:
            g.status, g.tally = "extra", _tally(n)
            g.facets = {k: ((), fn[k]) for k in FACETS if k in fn}
        elif g.only_expected or g.only_node or g.reordered:
            g.status = "different"
            g.facets = {k: (fe.get(k, ()), fn.get(k, ())) for k in FACETS if fe.get(k, ()) != fn.get(k, ())}
        groups.append(g)
    # missing, extra, different, same; kube-proxy's own rules last in each
    return sorted(groups, key=lambda g: (STATUSES.index(g.status), g.owner == BASE))


# --- the two sides -------------------------------------------------------------------------------

def _sides(mode: str, text: str, rules: noderules.NodeRules, ports) -> tuple[Side, Side, list[str]]:
    notes: list[str] = []
    if mode == "iptables":
        want = nipt.parse(text, "testbed render")
        known = {(t, c) for t, table in want.tables.items() for c in table.chains}
        return (diff_modes.iptables_side(want, ports, known), diff_modes.iptables_side(rules.iptables, ports, known),
                notes)
    if mode == "nftables":
        if diff_modes.TABLE not in rules.nft.tables:
            notes.append(f"the node has no table {diff_modes.TABLE}: kube-proxy in nftables mode has not "
                         "synced there (or the dump is of another table)")
        return diff_modes.nft_side(nnft.parse_transaction(text, "testbed render"), ports), \
            diff_modes.nft_side(rules.nft, ports), notes
    want = nipvs.parse_render(text, "testbed render")
    known = {(t, c) for t, table in want.iptables.tables.items() for c in table.chains}
    have = rules.ipvs or nipvs.IpvsState()
    have.iptables = rules.iptables
    parts = set(have.parts) | ({"iptables"} if rules.iptables is not None else set())
    for part, what in (("ipvsadm", "virtual servers (no `ipvsadm-save -n` output given)"),
                       ("ipset", "ipsets (no `ipset save` output given)"),
                       ("iptables", "iptables rules (no `iptables-save` output given)")):
        if part not in parts:
            notes.append(f"{what}: not compared")
    return diff_modes.ipvs_side(want, ports, known, parts), diff_modes.ipvs_side(have, ports, known, parts), notes


def run(topology: str, node: str, rule_files: list[str], mode: str | None = None,
        kube_proxy_version: str | None = None) -> Report:
    """Compare the node's dumped rules with what kube-proxy should have installed on `node` for
    the objects in `topology` (a topology or dump file, as `testbed render` takes it), as the
    node's kube-proxy release renders them (`kube_proxy_version` overrides it)."""
    from testbed.control import reconcile
    from testbed import modes

    rules = noderules.read(rule_files)
    mode = noderules.mode_of(rules, mode)
    topo = model.load_file(topology)
    if kube_proxy_version:
        topo = model.with_kube_proxy_version(topo, kube_proxy_version)
    cluster, _ = reconcile(topo)
    try:
        cluster.node(node)
    except KeyError as e:
        raise TestbedError(f"{topology}: {e.args[0]}") from None
    view = cluster.node_view(node)
    text = modes.get(mode).render(view, first=True)
    expected, have, notes = _sides(mode, text, rules, diff_modes.ports_by_name(view))
    # What may explain a difference: values inferred from a dump, and what the lab does not model
    # that would change the rules (fields without an effect on Service networking are left out).
    version = versions.text(cluster.kube_proxy_version(node))
    notes = ([f"expected: kube-proxy {version}'s rules (--kube-proxy-version to pick another)"]
             + cluster.version_notes(mode)
             + [f"{topology}: inferred: {x}" for x in topo.lab.inferred]
             + [f"not modelled, changes behaviour: {e}" for e in topo.effects] + notes + have.notes)
    return Report(node, mode, topology, rules.files, compare(expected, have), have.foreign, notes)


# --- text ----------------------------------------------------------------------------------------

def _wrap(text: str, indent: str, hang: str | None = None) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=hang if hang is not None else indent,
                         break_long_words=True, break_on_hyphens=False) or [indent.rstrip()]


def _facet_lines(g: Group) -> list[str]:
    out = []
    for name, (e, n) in g.facets.items():
        head = f"  {name:<15}"
        if g.status == "missing":
            out += _wrap(", ".join(e), head, " " * 17)
        elif g.status == "extra":
            out += _wrap(", ".join(n), head, " " * 17)
        else:
            out += _wrap(", ".join(e) or "none", f"{head}expected ", " " * 26)
            out += _wrap(", ".join(n) or "none", f"{' ' * 17}node     ", " " * 26)
    return out


def _count(n: int, unit: str) -> str:
    """`3 rules`, `1 rule`, `1 ipset entry`, `1 rule not jumping to …`: the first word singular."""
    if n == 1:
        words = unit.split(" ")
        i = 1 if words[0] in ("real", "virtual", "ipset") and len(words) > 1 else 0
        words[i] = words[i][:-3] + "y" if words[i].endswith("ies") else words[i].removesuffix("s")
        unit = " ".join(words)
    return f"{n} {unit}"


def _tally_text(tally: dict[str, int]) -> str:
    return ", ".join(_count(v, k) for k, v in tally.items())


def _entry_lines(sign: str, items: list[tuple[str, str]]) -> list[str]:
    out = []
    for place, text in items:
        out += _wrap(f"{place}: {text}", f"    {sign} ", "        ")
    return out


def format_text(report: Report, verbose: bool = False) -> str:
    """The report as plain text, every line at most 80 columns."""
    counts = ", ".join(f"{report.count(s)} {s}" for s in STATUSES)
    lines = _wrap(f"node {report.node}, {report.mode} mode: {counts}", "")
    lines += _wrap(f"testbed render of {report.topology}", "  expected  ", " " * 12)
    for path, fmt in report.files:
        lines += _wrap(f"{path} ({fmt})", "  node      ", " " * 12)
    same = []
    for g in report.groups:
        if g.status == "same":
            same.append(g.label)
            continue
        lines.append("")
        lines += _wrap(g.label, f"{g.status:<10} ", " " * 11)
        lines += _facet_lines(g)
        if g.status == "missing":
            lines += _wrap(f"not on the node: {_tally_text(g.tally)}", "  ")
        elif g.status == "extra":
            stale = " (stale: no such Service port now)" if g.owner != BASE else ""
            lines += _wrap(f"on the node, not expected{stale}: {_tally_text(g.tally)}", "  ")
        else:
            if g.only_expected or g.only_node:
                unit = "entries" if report.mode == "ipvs" else "rules"
                lines += _wrap(f"{len(g.only_expected)} expected, not on the node; {len(g.only_node)} on the "
                               f"node, not expected", f"  {unit:<15}", " " * 17)
            if g.reordered:
                lines += _wrap(f"in another order: {', '.join(g.reordered)}", f"  {'order':<15}", " " * 17)
            if verbose or not g.facets:
                lines += _entry_lines("-", g.only_expected) + _entry_lines("+", g.only_node)
        if verbose and g.status != "different":
            lines += _entry_lines("-" if g.status == "missing" else "+", g.only_expected or g.only_node)
    if same:
        lines.append("")
        if len(same) > 8 and not verbose:
            ports = len(same) - (BASE_LABEL in same)
            same = [f"{ports} Service ports" + (f" and {BASE_LABEL}" if BASE_LABEL in same else "") + " (-v names them)"]
        lines += _wrap(", ".join(same), f"{'same':<10} ", " " * 11)
    if report.foreign:
        lines += ["", "not kube-proxy's (not compared, not a difference):"]
        by_owner: dict[str, list[str]] = {}
        for f in report.foreign:
            by_owner.setdefault(f.owner, []).append(f"{f.what} ({_count(f.count, f.unit)})")
        for owner in sorted(by_owner, key=lambda o: (o == "other", o)):
            if len(owner) > 12:
                lines += _wrap(owner, "  ")
                lines += _wrap(", ".join(by_owner[owner]), " " * 15)
            else:
                lines += _wrap(", ".join(by_owner[owner]), f"  {owner:<12} ", " " * 15)
    if report.notes:
        lines += ["", "notes:"]
        for note in report.notes:
            lines += _wrap(note, "  - ", "    ")
    return "\n".join(lines) + "\n"
