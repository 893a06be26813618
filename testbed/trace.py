"""`testbed trace`: why one packet went where it went, read from the kernel's own rule tracing.

One probe (a crafted TCP SYN or UDP datagram, `probes.handshake`) is sent from a pod, node or
client while every node it crosses runs `nft monitor trace`. A temporary table
`ip testbed-trace-<hex>` sets `meta nftrace set 1` on exactly that packet (its 5-tuple on the
node it enters; on the other nodes the packet as it arrives from the node network), so the kernel
reports every base chain it entered and every rule that matched, with the verdict, in the
iptables-nft tables (`ip nat`, `ip filter`) and in kube-proxy's nftables table (`ip kube-proxy`)
alike. The conntrack entry afterwards shows the NAT that was applied.

Pure parts (unit-tested on captured `nft monitor trace` output): `parse_monitor`, `build_tree`,
`parse_listing`, `parse_iptables_save`, `annotate`, `probe_segments`, `decide_ending`.
Kernel parts: `run_trace` (and the `_Monitor` helper). rich is not used here (see trace_view).

Readiness of a monitor is proven, not waited for: the tracing table also traces (and drops) a UDP
datagram to 127.0.0.1:<ready port> sent from inside the node; the monitor is ready once it has
printed that packet. The same marker, sent after the probe, is a barrier: once a monitor prints
it, every event of the probe (emitted earlier in the same namespace) has been read.
"""
from __future__ import annotations

import ipaddress
import random
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field

from .errors import KernelFeatureError, TestbedError
from .kernel import netns

TRACE_TABLE_PREFIX = "testbed-trace"
TRACE_PRIORITY = -350  # before raw (-300) and conntrack (-200): the packet is marked before anything else sees it
BASE_HOOKS = ("prerouting", "input", "forward", "output", "postrouting", "ingress", "egress")


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class TraceEvent:
    """One line of `nft monitor trace`."""

    trace_id: str
    family: str
    table: str
    chain: str
    kind: str  # packet | rule | policy | return | other
    rule: str | None = None  # rule text as nft printed it (counter values removed), kind == rule
    handle: int | None = None
    verdict: str | None = None  # continue | jump | goto | accept | drop | return | queue | stolen | ...
    target: str | None = None  # the chain of a jump/goto verdict
    fields: tuple[tuple[str, str], ...] = ()  # packet fields (kind == packet), in the order printed
    mark: str | None = None  # meta mark printed on policy/return lines
    raw: str = ""

    @property
    def packet(self) -> dict[str, str]:
        return dict(self.fields)


@dataclass
class Step:
    """One rule (or a base chain's policy) the packet went through, with the kernel's verdict."""

    family: str
    table: str
    chain: str
    kind: str  # rule | policy | return
    verdict: str | None
    target: str | None = None
    rule: str | None = None  # nft text (iptables-nft matches it cannot print are blank)
    handle: int | None = None
    iptables: str | None = None  # the iptables-save line of the same rule, when the table is iptables-nft's
    comment: str | None = None

    @property
    def text(self) -> str:
        """The most readable form of the rule."""
        if self.kind == "policy":
            return f"policy {self.verdict}"
        return self.iptables or self.rule or f"rule handle {self.handle}"

    @property
    def action(self) -> str | None:
        """DNAT | SNAT | MASQUERADE | REJECT | DROP | MARK when the rule does one of those."""
        ipt = self.iptables or ""
        nft = self.rule or ""
        if " -j DNAT" in ipt or re.search(r"\bdnat\b", nft):
            return "DNAT"
        if " -j MASQUERADE" in ipt or re.search(r"\bmasquerade\b", nft):
            return "MASQUERADE"
        if " -j SNAT" in ipt or re.search(r"\bsnat\b", nft):
            return "SNAT"
        if " -j REJECT" in ipt or re.search(r"\breject\b", nft):
            return "REJECT"
        if self.verdict == "drop":
            return "DROP"
        if " -j MARK" in ipt or re.search(r"\bmeta mark set\b", nft):
            return "MARK"
        return None


@dataclass
class ChainPass:
    """One traversal of a base chain (a hook) by the packet, and every rule it matched on the way."""

    family: str
    table: str
    chain: str  # the base chain
    packet: dict[str, str] = field(default_factory=dict)  # the packet as it entered the chain
    steps: list[Step] = field(default_factory=list)
    hook: str | None = None  # prerouting/input/forward/output/postrouting (from the ruleset listing)
    priority: str | None = None

    @property
    def verdict(self) -> str | None:
        """How the pass ended: the policy or the last terminal verdict (accept/drop/...)."""
        for s in reversed(self.steps):
            if s.verdict not in (None, "continue", "jump", "goto", "return"):
                return s.verdict
        return None


@dataclass
class Segment:
    """Everything the kernel reported under one trace id (a packet's id changes e.g. when NAT rehashes it)."""

    trace_id: str
    passes: list[ChainPass] = field(default_factory=list)

    @property
    def packet(self) -> dict[str, str]:
        return self.passes[0].packet if self.passes else {}

    @property
    def steps(self) -> list[Step]:
        return [s for p in self.passes for s in p.steps]


@dataclass
class NodeTrace:
    node: str
    ns: str
    segments: list[Segment] = field(default_factory=list)
    complete: bool = True  # the barrier came back and the last pass ended with a final verdict

    @property
    def passes(self) -> list[ChainPass]:
        return [p for s in self.segments for p in s.passes]


@dataclass(frozen=True)
class Nat:
    """The conntrack entry of the flow on one node: original and reply tuples."""

    node: str
    proto: str
    orig: str  # "src:sport -> dst:dport"
    reply: str
    dnat_to: str | None  # ip:port the destination was rewritten to
    snat_to: str | None  # ip:port the source was rewritten to
    state: str | None = None


@dataclass(frozen=True)
class Ending:
    kind: str  # received | rejected | dropped | answered | no-reply
    summary: str
    backend: str | None = None  # pod key
    backend_addr: str | None = None  # ip:port the backend saw as destination
    source_seen: str | None = None  # ip:port the backend saw as source
    dialled: str | None = None
    snat: bool | None = None
    node: str | None = None  # where it was rejected/dropped
    step: Step | None = None  # the rule that rejected/dropped it
    how: str | None = None  # icmp port-unreachable | rst | ...


@dataclass
class Trace:
    lab: str
    source: str
    source_ns: str
    client_ip: str
    target: str
    dst_ip: str
    dst_port: int
    proto: str
    sport: int
    service: str | None
    entry_node: str
    nodes: list[NodeTrace]
    nat: list[Nat]
    ending: Ending
    handshake: object | None = None  # probes.handshake.Handshake
    notes: list[str] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict)  # node -> the monitor's whole output

    @property
    def steps(self) -> list[Step]:
        return [s for n in self.nodes for s in n.passes for s in s.steps]


# ----------------------------------------------------------------------------- parsing `nft monitor trace`

_LINE = re.compile(r"^trace id (?P<id>[0-9a-f]+) (?P<family>\S+) (?P<table>\S+) (?P<chain>\S+) (?P<rest>.*?)\s*$")
_VERDICT = re.compile(r"\s*\(verdict (?P<verdict>[a-z]+)(?: (?P<target>\S+?))?\)\s*$")
_HANDLE = re.compile(r"\s*# handle (?P<handle>\d+)\s*$")
_COUNTER = re.compile(r"\bcounter packets \d+ bytes \d+")
_SINGLE_KEYS = {"iif", "oif", "iifname", "oifname", "iiftype", "oiftype"}
_PROTO_WORDS = {"ether", "vlan", "arp", "ip", "ip6", "tcp", "udp", "udplite", "sctp", "dccp", "icmp", "icmpv6",
                "igmp", "th", "meta", "ct", "ah", "esp", "comp", "gre"}


def clean_rule(text: str) -> str:
    """nft's rule text without counter values and with the blanks of unprintable xt matches collapsed."""
    text = _COUNTER.sub("counter", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def parse_packet_fields(text: str) -> list[tuple[str, str]]:
    """`iif "cbr0" ether saddr … ip saddr 10.244.0.2 … tcp flags == syn` → [(key, value), …]."""
    try:
        words = shlex.split(text, posix=False)
    except ValueError:
        words = text.split()
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in _SINGLE_KEYS or w.startswith("@"):
            key, i = w, i + 1
        elif w in _PROTO_WORDS and i + 1 < len(words):
            key, i = f"{w} {words[i + 1]}", i + 2
        else:  # something we do not know: keep it under its own name
            key, i = w, i + 1
        vals: list[str] = []
        if i < len(words) and words[i] in ("==", "!="):
            i += 1
        if i < len(words):
            vals.append(words[i])
            i += 1
        while i < len(words) and not (words[i] in _SINGLE_KEYS or words[i] in _PROTO_WORDS or words[i].startswith("@")):
            vals.append(words[i])
            i += 1
        out.append((key, " ".join(v.strip('"') for v in vals)))
    return out


def parse_monitor(text: str) -> list[TraceEvent]:
    """`nft [-a] monitor trace` output → events, in order. Lines that are not trace lines are skipped."""
    events = []
    for line in text.splitlines():
        m = _LINE.match(line.rstrip())
        if not m:
            continue
        tid, fam, table, chain, rest = m["id"], m["family"], m["table"], m["chain"], m["rest"]
        if rest.startswith("unknown rule handle "):
            # The rule was added after the monitor read the ruleset (a sync ran meanwhile): nft knows
            # only its handle; as a rule without text, annotate() reads it from the listing.
            rest = "rule # handle " + rest[len("unknown rule handle "):]
        if rest.startswith("packet:"):
            events.append(TraceEvent(tid, fam, table, chain, "packet",
                                     fields=tuple(parse_packet_fields(rest[len("packet:"):])), raw=line))
        elif rest.startswith("rule ") or rest == "rule":
            body = rest[len("rule"):]
            verdict = target = None
            vm = _VERDICT.search(body)
            if vm:
                verdict, target = vm["verdict"], vm["target"]
                body = body[:vm.start()]
            handle = None
            hm = _HANDLE.search(body)
            if hm:
                handle = int(hm["handle"])
                body = body[:hm.start()]
            events.append(TraceEvent(tid, fam, table, chain, "rule", rule=clean_rule(body), handle=handle,
                                     verdict=verdict, target=target, raw=line))
        elif rest.startswith(("policy", "return")):
            kind, _, after = rest.partition(" ")
            words = after.split()
            verdict = words[0] if words else None
            if kind == "return" and verdict == "verdict" and len(words) > 1:  # "return verdict X"
                verdict = words[1]
            mm = re.search(r"meta mark (\S+)", after)
            events.append(TraceEvent(tid, fam, table, chain, kind, verdict=verdict, mark=mm[1] if mm else None, raw=line))
        else:
            events.append(TraceEvent(tid, fam, table, chain, "other", rule=rest, raw=line))
    return events


def build_tree(events: list[TraceEvent]) -> list[Segment]:
    """Events → segments (one per trace id, in order of first appearance) → chain passes → steps.

    A pass starts at a `packet:` line (the kernel prints the packet once per base chain it enters),
    after a policy line (only base chains have one), or when the table changes (a jump never leaves
    its table).
    """
    segments: dict[str, Segment] = {}
    open_pass: dict[str, ChainPass | None] = {}
    for e in events:
        seg = segments.get(e.trace_id)
        if seg is None:
            seg = segments[e.trace_id] = Segment(e.trace_id)
            open_pass[e.trace_id] = None
        cur = open_pass[e.trace_id]
        if e.kind == "packet":
            cur = ChainPass(e.family, e.table, e.chain, packet=e.packet)
            seg.passes.append(cur)
            open_pass[e.trace_id] = cur
            continue
        if cur is None or (cur.family, cur.table) != (e.family, e.table):
            cur = ChainPass(e.family, e.table, e.chain)
            seg.passes.append(cur)
            open_pass[e.trace_id] = cur
        if e.kind == "rule":
            cur.steps.append(Step(e.family, e.table, e.chain, "rule", e.verdict, e.target, e.rule, e.handle))
        elif e.kind in ("policy", "return"):
            cur.steps.append(Step(e.family, e.table, e.chain, e.kind, e.verdict))
            if e.kind == "policy":
                open_pass[e.trace_id] = None
        else:
            cur.steps.append(Step(e.family, e.table, e.chain, "other", None, rule=e.rule))
    return list(segments.values())


# ----------------------------------------------------------------------------- mapping rules back to their source


@dataclass
class ChainListing:
    name: str
    hook: str | None = None
    priority: str | None = None
    rules: list[tuple[int, str]] = field(default_factory=list)  # (handle, nft text) in order


_CHAIN_HEAD = re.compile(r"^\s*chain (?P<name>\S+) \{(?:\s*# handle \d+)?\s*$")
_CHAIN_TYPE = re.compile(r"^\s*type (?P<type>\S+) hook (?P<hook>\S+)(?: device \S+)? priority (?P<prio>[^;]+);")
_RULE_HANDLE = re.compile(r"^\s*(?P<text>.*?)\s*# handle (?P<handle>\d+)\s*$")


def parse_listing(text: str) -> dict[str, ChainListing]:
    """`nft -a list table FAMILY NAME` → chain name → hook, priority and rules with their handles."""
    chains: dict[str, ChainListing] = {}
    cur: ChainListing | None = None
    for line in text.splitlines():
        m = _CHAIN_HEAD.match(line)
        if m:
            cur = chains[m["name"]] = ChainListing(m["name"])
            continue
        if cur is None:
            continue
        if line.strip() == "}":
            cur = None
            continue
        t = _CHAIN_TYPE.match(line)
        if t:
            cur.hook, cur.priority = t["hook"], t["prio"].strip()
            continue
        r = _RULE_HANDLE.match(line)
        if r:
            cur.rules.append((int(r["handle"]), clean_rule(r["text"])))
    return chains


def parse_iptables_save(text: str) -> dict[str, dict[str, list[str]]]:
    """iptables-save → table → chain → its `-A` lines in order."""
    out: dict[str, dict[str, list[str]]] = {}
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            out.setdefault(table, {})
        elif line.startswith(":") and table:
            out[table].setdefault(line[1:].split()[0], [])
        elif line.startswith("-A ") and table:
            out[table].setdefault(line.split()[1], []).append(line)
    return out


_IPT_COMMENT = re.compile(r'--comment (?:"((?:[^"\\]|\\.)*)"|(\S+))')
_NFT_COMMENT = re.compile(r'\bcomment "((?:[^"\\]|\\.)*)"')


def annotate(segments: list[Segment], listings: dict[tuple[str, str], dict[str, ChainListing]],
             iptables: dict[str, dict[str, list[str]]] | None = None) -> None:
    """Fill each pass's hook and each rule's iptables-save line and comment, in place.

    iptables-nft keeps a chain's rules in iptables order, so the position of a rule's handle in
    the nft listing of the chain is its position among that chain's `-A` lines in iptables-save.
    A sync between the probe and the listing (a readiness change, the agent's first probes on a
    busy machine) rewrites the chain with new handles: a rule whose handle is gone is found by
    its text when exactly one rule of the chain has it.
    """
    iptables = iptables or {}
    for seg in segments:
        for p in seg.passes:
            chains = listings.get((p.family, p.table), {})
            base = chains.get(p.chain)
            if base and base.hook:
                p.hook, p.priority = base.hook, base.priority
            elif p.hook is None:
                p.hook = _guess_hook(p.chain)
            for s in p.steps:
                if s.kind != "rule":
                    continue
                if s.rule:
                    cm = _NFT_COMMENT.search(s.rule)
                    if cm:
                        s.comment = cm[1]
                chain = chains.get(s.chain)
                ipt_chain = iptables.get(s.table, {}).get(s.chain) if p.family == "ip" else None
                if chain is None or s.handle is None:
                    continue
                handles = [h for h, _ in chain.rules]
                if s.handle in handles:
                    idx = handles.index(s.handle)
                else:
                    same = [i for i, (_, text) in enumerate(chain.rules) if s.rule and text == s.rule]
                    if len(same) != 1:
                        continue
                    idx = same[0]
                if not s.rule:
                    s.rule = chain.rules[idx][1]
                if ipt_chain is not None and len(ipt_chain) == len(handles):
                    s.iptables = ipt_chain[idx]
                    cm = _IPT_COMMENT.search(s.iptables)
                    if cm:
                        s.comment = cm[1] if cm[1] is not None else cm[2]


def _guess_hook(chain: str) -> str | None:
    c = chain.lower()
    for h in BASE_HOOKS:
        if h in c:
            return h
    return {"pre": "prerouting", "out": "output", "post": "postrouting", "in": "input", "fwd": "forward"}.get(c)


# ----------------------------------------------------------------------------- choosing the probe's events


def _l4(packet: dict[str, str], proto: str) -> tuple[str | None, str | None]:
    return packet.get(f"{proto} sport"), packet.get(f"{proto} dport")


def probe_segments(by_node: dict[str, list[Segment]], entry_node: str, client_ip: str, dst_ip: str, proto: str,
                   sport: int) -> tuple[dict[str, list[Segment]], str | None]:
    """Keep only the probe's segments on every node; returns them and the probe's IP id.

    The probe is the first packet on the entry node with the probe's 5-tuple (pre-NAT). NAT rewrites
    addresses and ports but never the IP id, so every other segment of the probe, on any node, is
    one whose packet has that IP id (and the same protocol; for TCP the same flags, which tells the
    SYN from the client kernel's RST that follows the SYN-ACK).
    """
    ip_id = flags = None
    for seg in by_node.get(entry_node, []):
        for p in seg.passes:
            pk = p.packet
            if pk.get("ip saddr") == client_ip and pk.get("ip daddr") == dst_ip and _l4(pk, proto)[0] == str(sport):
                ip_id, flags = pk.get("ip id"), pk.get("tcp flags")
                break
        if ip_id is not None:
            break
    if ip_id is None:
        return {n: [] for n in by_node}, None

    def ours(packet: dict[str, str]) -> bool:
        return (packet.get("ip id") == ip_id and _l4(packet, proto)[0] is not None
                and (packet.get("ip daddr") != "127.0.0.1" or dst_ip == "127.0.0.1")  # not a readiness marker
                and (proto != "tcp" or packet.get("tcp flags") == flags))

    out: dict[str, list[Segment]] = {}
    for n, segs in by_node.items():
        kept = []
        for seg in segs:
            # The kernel reuses a trace id for a later packet of the flow (same skb slot, same flow
            # hash), so the choice is made per pass; a pass without a packet line goes with the one before.
            passes, keep = [], False
            for p in seg.passes:
                if p.packet:
                    keep = ours(p.packet)
                if keep:
                    passes.append(p)
            if passes:
                kept.append(Segment(seg.trace_id, passes))
        out[n] = kept
    return out, ip_id


# ----------------------------------------------------------------------------- the ending


def final_verdict_step(nodes: list[NodeTrace]) -> tuple[str | None, Step | None]:
    """The rule whose verdict was drop (a REJECT shows as drop), with its node."""
    for n in nodes:
        for p in n.passes:
            for s in p.steps:
                if s.verdict == "drop":
                    return n.node, s
    return None, None


def _entered_from(nodes: list[NodeTrace], node: str | None, step: Step) -> str | None:
    """The chain whose jump/goto led to `step`'s chain, when that is not the chain itself."""
    for n in nodes:
        if n.node != node:
            continue
        for p in n.passes:
            prev = None
            for s in p.steps:
                if s is step:
                    if prev is not None and prev.chain != step.chain and prev.target == step.chain:
                        return f"{prev.chain}: {prev.comment or prev.rule or ''}".rstrip(": ")
                    return None
                prev = s
    return None


def decide_ending(handshake, nodes: list[NodeTrace], client_sees_replies: bool = True) -> Ending:
    """What became of the probe: received by a backend, rejected/dropped by a rule, or no reply.

    `client_sees_replies` is False for a node source: the probe captures on the node's eth0, but
    replies to a node's own packets may be delivered to it locally (from cbr0) and never seen there.
    """
    h = handshake
    node, drop = final_verdict_step(nodes)
    if h is not None and h.backend:
        src_ip = h.backend_saw_src.rsplit(":", 1)[0] if h.backend_saw_src else None
        client_ip = h.client.rsplit(":", 1)[0]
        snat = src_ip is not None and src_ip != client_ip
        dnat = f"DNAT from {h.dialled}" if h.backend_saw_dst != h.dialled else "no DNAT"
        seen = f"source seen {src_ip}, " + (f"SNATed (client was {client_ip})" if snat else "not SNATed")
        summary = f"received by pod {h.backend} at {h.backend_saw_dst} ({dnat}; {seen})"
        if h.outcome == "refused" or (h.outcome == "dropped" and client_sees_replies):
            summary += f"; the client saw {'no reply' if h.outcome == 'dropped' else h.reply}"
        return Ending("received", summary, h.backend, h.backend_saw_dst, h.backend_saw_src, h.dialled, snat)
    how = h.reply if h is not None and h.outcome == "refused" else None
    if drop is not None:
        kind = "rejected" if drop.action == "REJECT" or how else "dropped"
        where = f"{drop.family} {drop.table} {drop.chain}"
        why = f" ({drop.comment})" if drop.comment else ""
        via = _entered_from(nodes, node, drop)
        if via and not drop.comment:
            why = f" (via {via})"
        summary = f"{kind} by {where}{why}" + (f" ({how})" if how else "")
        return Ending(kind, summary, node=node, step=drop, how=how, dialled=h.dialled if h else None)
    if h is not None and h.outcome == "refused":
        return Ending("rejected", f"refused ({h.reply} from {h.reply_from}); no traced rule dropped it", how=how,
                      dialled=h.dialled)
    if h is not None and h.outcome == "answered":
        return Ending("answered", f"answered ({h.reply} from {h.reply_from}) by no pod that was captured", dialled=h.dialled)
    return Ending("no-reply", "no reply, and no traced rule dropped it", dialled=h.dialled if h else None)


def nat_from_flow(node: str, flow) -> Nat:
    orig = f"{flow.orig_src}:{flow.orig_sport} -> {flow.orig_dst}:{flow.orig_dport}"
    reply = f"{flow.reply_src}:{flow.reply_sport} -> {flow.reply_dst}:{flow.reply_dport}"
    dnatted = (flow.reply_src, flow.reply_sport) != (flow.orig_dst, flow.orig_dport)
    snatted = (flow.reply_dst, flow.reply_dport) != (flow.orig_src, flow.orig_sport)
    dnat = f"{flow.reply_src}:{flow.reply_sport}" if dnatted else None
    snat = f"{flow.reply_dst}:{flow.reply_dport}" if snatted else None
    return Nat(node, flow.proto, orig, reply, dnat, snat, flow.state)


# ----------------------------------------------------------------------------- resolving source and target


@dataclass(frozen=True)
class _Plan:
    source_ns: str
    client_ip: str
    entry_node: str
    dst_ip: str
    dst_port: int
    service: str | None
    candidate_nodes: tuple[str, ...]  # other nodes the packet may be forwarded to


def _find_service(cluster, name: str):
    ns, _, svc = name.rpartition("/")
    for info in cluster.services:
        if info.service.name == svc and (not ns or info.service.namespace == ns):
            return info
    raise TestbedError(f"no service named {name!r} (services: {', '.join(i.service.name for i in cluster.services)})")


def _service_port(info, port: str | None, proto: str) -> int:
    """Index of the service port: by number or name, default the first of the protocol."""
    ports = list(info.service.ports)
    for i, sp in enumerate(ports):
        if sp.protocol.lower() != proto:
            continue
        if port is None or port == str(sp.port) or port == sp.name:
            return i
    have = ", ".join(f"{sp.name or sp.port}:{sp.port}/{sp.protocol}" for sp in ports)
    raise TestbedError(f"service {info.key} has no {proto.upper()} port {port or ''} (ports: {have})".replace("  ", " "))


def plan(lab_name: str, cluster, source: str, target: str, proto: str) -> _Plan:
    from .lab import find_pod, target_namespace

    source_ns = target_namespace(lab_name, cluster, source)
    m = re.fullmatch(r"(node|client)/(.+)", source)
    node_ips = {n.ip: n.name for n in cluster.nodes}
    if m and m[1] == "node":
        client_ip, entry = cluster.node(m[2]).ip, m[2]
    elif m and m[1] == "client":
        client_ip, entry = next(c.ip for c in cluster.clients if c.name == m[2]), None
    else:
        pod = find_pod(cluster, source.removeprefix("pod/"))
        client_ip, entry = pod.ip, pod.node
    service = None
    endpoints_nodes: set[str] | None = None
    t = re.fullmatch(r"(svc|service|nodeport)/([^:@]+)(?:@([^:]+))?(?::(\S+))?", target)
    if t:
        kind, name, at, port = t[1], t[2], t[3], t[4]
        info = _find_service(cluster, name)
        i = _service_port(info, port, proto)
        sp = info.service.ports[i]
        service = f"{info.key}:{sp.name or sp.port}"
        endpoints_nodes = {e.node for e in info.endpoints[i] if e.node}
        if kind == "nodeport" or (m and m[1] == "client"):
            np_ = info.node_ports[i]
            if not np_:
                why = ": a client outside the cluster cannot reach its ClusterIP" if m and m[1] == "client" else ""
                raise TestbedError(f"service {info.key} port {sp.port}/{sp.protocol} has no nodePort{why}")
            node = at or (entry if entry else cluster.nodes[0].name)
            dst_ip, dst_port = cluster.node(node).ip, np_
            if entry is None:
                entry = node
        else:
            if at:
                raise TestbedError("NODE (@NODE) only goes with nodeport/NAME@NODE")
            if not info.cluster_ip:
                raise TestbedError(f"service {info.key} has no ClusterIP")
            dst_ip, dst_port = info.cluster_ip, sp.port
    else:
        a = re.fullmatch(r"(\d+\.\d+\.\d+\.\d+):(\d+)", target)
        if not a:
            raise TestbedError(f"expected --to svc/NAME[:PORT], nodeport/NAME@NODE[:PORT] or IP:PORT, got {target!r}")
        dst_ip, dst_port = a[1], int(a[2])
        ipaddress.ip_address(dst_ip)
        if entry is None:
            entry = node_ips.get(dst_ip)
            if entry is None:
                raise TestbedError(f"from a client, IP:PORT must be a node's address (nodes: "
                                   f"{', '.join(f'{n.name}={n.ip}' for n in cluster.nodes)})")
    others = tuple(n.name for n in cluster.nodes if n.name != entry
                   and (endpoints_nodes is None or n.name in endpoints_nodes))
    return _Plan(source_ns, client_ip, entry, dst_ip, int(dst_port), service, others)


# ----------------------------------------------------------------------------- kernel side


def _nft() -> str:
    path = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if not path:
        raise KernelFeatureError("nft is not installed: install Debian's nftables package (apt-get install nftables)")
    return path


def _nft_run(ns: str, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    # No preexec_fn (Python code between fork and exec is unsafe with the reader threads running):
    # the child inherits the network namespace of the thread that starts it.
    with netns.entered(ns):
        return subprocess.run([_nft(), *args], input=stdin, text=True, capture_output=True, check=False, timeout=30)


def tracing_table(name: str, ready_port: int, probe_match: str | None, arrival_match: str | None) -> str:
    """The temporary table: trace the probe (and the readiness marker, which it then drops)."""
    rules_pre, rules_out = [], []
    if probe_match:
        rules_pre.append(f'{probe_match} meta nftrace set 1 comment "testbed-trace probe"')
        rules_out.append(f'{probe_match} meta nftrace set 1 comment "testbed-trace probe"')
    if arrival_match:
        rules_pre.append(f'{arrival_match} meta nftrace set 1 comment "testbed-trace arrival"')
    rules_out.append(f'ip daddr 127.0.0.1 udp dport {ready_port} meta nftrace set 1 drop comment "testbed-trace ready"')

    def chain(cname: str, hook: str, rules: list[str]) -> str:
        body = "".join(f"\t\t{r}\n" for r in rules)
        return f"\tchain {cname} {{\n\t\ttype filter hook {hook} priority {TRACE_PRIORITY}; policy accept;\n{body}\t}}\n"

    return f"table ip {name} {{\n{chain('pre', 'prerouting', rules_pre)}{chain('out', 'output', rules_out)}}}\n"


class _Monitor:
    """`nft -a monitor trace` in one namespace, read line by line in a thread."""

    def __init__(self, node: str, ns: str, ready_port: int):
        self.node, self.ns, self.ready_port = node, ns, ready_port
        self.lines: list[str] = []
        self.stderr = ""
        self._stopped = False
        self._used_ports: set[int] = set()
        self._cond = threading.Condition()
        with netns.entered(ns):  # the child inherits this thread's namespace (see _nft_run)
            self.proc = subprocess.Popen([_nft(), "-a", "monitor", "trace"], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, name=f"nft-monitor-{ns}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _marker_sport(self) -> int:
        """Send one marker datagram (it is traced, then dropped by the tracing table); its source port.

        Every marker of a monitor has its own source port, so a late print of an earlier marker can
        never be taken for the current one.
        """
        for _ in range(100):
            with netns.entered(self.ns):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
                if port in self._used_ports:
                    continue
                self._used_ports.add(port)
                try:
                    s.sendto(b"testbed-trace", ("127.0.0.1", self.ready_port))
                except OSError:
                    pass  # EPERM: dropped in the output hook, as intended
                return port
            finally:
                s.close()
        raise TestbedError(f"no free marker port in {self.ns}")

    def _saw(self, sport: int, start: int) -> bool:
        needle = f"udp sport {sport} udp dport {self.ready_port} "
        return any(needle in ln for ln in self.lines[start:])

    def barrier(self, timeout: float, retry: float = 0.05) -> bool:
        """Send markers until one is printed: everything the namespace traced before it has been read."""
        deadline = time.monotonic() + timeout
        with self._cond:
            start = len(self.lines)
        sent: list[int] = []
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            sent.append(self._marker_sport())
            until = min(deadline, time.monotonic() + retry)
            with self._cond:
                while True:
                    if any(self._saw(p, start) for p in sent):
                        return True
                    left = until - time.monotonic()
                    if left <= 0 or self.proc.poll() is not None:
                        break
                    self._cond.wait(left)
        return False

    def stop(self) -> str:
        """Terminate the monitor (idempotent); its stderr."""
        if self._stopped:
            return self.stderr
        self._stopped = True
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=3)
        self._thread.join(timeout=3)
        self.stderr = self.proc.stderr.read() if self.proc.stderr else ""
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()
        return self.stderr

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines) + ("\n" if self.lines else "")


def _free_sport(entry_ns: str, client_ip: str, proto: str) -> int:
    """A random source port with no conntrack entry from the client (a reused tuple would not be NEW)."""
    from probes import conntrack

    try:
        used = {f.orig_sport for f in conntrack.table(entry_ns, proto=proto) if f.orig_src == client_ip}
    except (OSError, RuntimeError, KernelFeatureError):
        used = set()  # no conntrack tool: a collision is unlikely anyway
    while True:
        p = random.randint(40000, 60999)
        if p not in used:
            return p


def run_trace(lab, source: str, target: str, proto: str = "tcp", timeout: float = 2.0) -> Trace:
    """Send one probe from SOURCE to TARGET and report every rule the kernel says it went through."""
    from probes import conntrack
    from probes.handshake import handshake

    from .kernel import iptables as kiptables
    from .kernel import wiring
    from .lab import require_root

    require_root()
    proto = proto.lower()
    if proto not in ("tcp", "udp"):
        raise TestbedError(f"--proto: expected tcp or udp, got {proto!r}")
    cluster = lab.cluster()
    pl = plan(lab.name, cluster, source, target, proto)
    node_ns = {n: lab.saved["nodes"][n]["ns"] for n in lab.saved["nodes"]}
    nodes = (pl.entry_node, *pl.candidate_nodes)
    sport = _free_sport(node_ns[pl.entry_node], pl.client_ip, proto)
    ready_port = random.randint(20000, 29999)
    table = f"{TRACE_TABLE_PREFIX}-{uuid.uuid4().hex[:6]}"
    node_ips = sorted({n.ip for n in cluster.nodes} | {pl.client_ip})
    probe_match = f"ip saddr {pl.client_ip} ip daddr {pl.dst_ip} {proto} sport {sport}"
    notes: list[str] = []
    monitors: dict[str, _Monitor] = {}
    installed: list[str] = []
    raw: dict[str, str] = {}
    listings: dict[str, dict[tuple[str, str], dict[str, ChainListing]]] = {}
    ipt: dict[str, dict] = {}
    h = None
    flows: list[Nat] = []
    complete: dict[str, bool] = {}
    try:
        for n in nodes:
            ns = node_ns[n]
            arrival = None
            if n != pl.entry_node:
                cidr = cluster.node(n).pod_cidr
                arrival = (f'iifname "eth0" ip saddr {{ {", ".join(node_ips)} }} ip daddr {cidr} '
                           f"meta l4proto {proto}")
            text = tracing_table(table, ready_port, probe_match if n == pl.entry_node else None, arrival)
            proc = _nft_run(ns, ["-f", "-"], text)
            if proc.returncode != 0:
                raise TestbedError(f"installing the tracing table on {n} failed: {proc.stderr.strip()}")
            installed.append(n)
            # The monitor caches the ruleset when it starts: start it after the tracing table exists.
            monitors[n] = _Monitor(n, ns, ready_port)
        for n, mon in monitors.items():
            if not mon.barrier(timeout=5.0):
                err = mon.stop()
                raise TestbedError(f"`nft monitor trace` on {n} did not report the readiness marker within 5 s"
                                   + (f": {err.strip()}" if err.strip() else ""))
        # Every pod of the lab is a candidate backend: the ones the kernel has (the lab's state), not a recomputation.
        backends = {key: rec["ns"] for key, rec in lab.saved.get("pods", {}).items() if "#" not in key and rec.get("ns")}
        backends = backends or {p.key: wiring.netns_of(lab.name, p) for p in cluster.pods}
        h = handshake(pl.source_ns, pl.client_ip, pl.dst_ip, pl.dst_port, proto, backends=backends,
                      timeout=timeout, sport=sport)
        complete.update({n: mon.barrier(timeout=max(5.0, timeout)) for n, mon in monitors.items()})
        for n, ok in complete.items():
            if not ok:
                notes.append(f"{n}: the monitor did not report the barrier marker; its trace may be incomplete")
        for n, mon in monitors.items():  # everything is read: stop them before running more tools
            mon.stop()
            raw[n] = mon.text()
        # Listings to map handles back to rule text, hooks and iptables-save lines (right after the probe).
        for n in nodes:
            seen = {(e.family, e.table) for e in parse_monitor(raw[n])}
            listings[n] = {}
            for fam, tab in sorted(seen):
                proc = _nft_run(node_ns[n], ["-a", "list", "table", fam, tab])
                if proc.returncode == 0:
                    listings[n][(fam, tab)] = parse_listing(proc.stdout)
            try:
                ipt[n] = parse_iptables_save(kiptables.save(node_ns[n]))
            except (OSError, RuntimeError, KernelFeatureError):
                ipt[n] = {}  # no iptables here (e.g. a pure nftables node): rules stay in nft syntax
        entry_flows = [f for f in conntrack.table(node_ns[pl.entry_node], dst=pl.dst_ip, port=pl.dst_port, proto=proto)
                       if f.orig_src == pl.client_ip and f.orig_sport == sport]
        for f in entry_flows[:1]:
            flows.append(nat_from_flow(pl.entry_node, f))
            if h is not None and h.backend_saw_dst:
                bip, bport = h.backend_saw_dst.rsplit(":", 1)
                for n in pl.candidate_nodes:
                    for g in conntrack.table(node_ns[n], dst=bip, port=int(bport), proto=proto):
                        if g.orig_src == f.reply_dst and g.orig_sport == f.reply_dport:
                            flows.append(nat_from_flow(n, g))
                            break
    finally:
        for n, mon in monitors.items():
            try:
                mon.stop()
            except (OSError, subprocess.SubprocessError) as e:
                notes.append(f"{n}: stopping `nft monitor trace` (pid {mon.proc.pid}) failed: {e}")
            raw.setdefault(n, mon.text())
        for n in installed:
            try:
                proc = _nft_run(node_ns[n], ["delete", "table", "ip", table])
            except (OSError, subprocess.SubprocessError) as e:
                notes.append(f"{n}: deleting {table} failed: {e}")
                continue
            if proc.returncode != 0 and "No such file" not in proc.stderr:
                notes.append(f"{n}: deleting {table} failed: {proc.stderr.strip()}")

    by_node = {n: build_tree(parse_monitor(raw.get(n, ""))) for n in nodes}
    ours, ip_id = probe_segments(by_node, pl.entry_node, pl.client_ip, pl.dst_ip, proto, sport)
    if ip_id is None:
        notes.append(f"{pl.entry_node}: the kernel reported no trace of the probe")
    node_traces = []
    for n in nodes:
        segs = ours.get(n, [])
        if not segs and n != pl.entry_node:
            continue
        annotate(segs, listings.get(n, {}), ipt.get(n, {}))
        last = segs[-1].passes[-1] if segs and segs[-1].passes else None
        node_traces.append(NodeTrace(n, node_ns[n], segs, complete=bool(complete.get(n) and last and last.verdict)))
    return Trace(lab=lab.name, source=source, source_ns=pl.source_ns, client_ip=pl.client_ip, target=target,
                 dst_ip=pl.dst_ip, dst_port=pl.dst_port, proto=proto, sport=sport, service=pl.service,
                 entry_node=pl.entry_node, nodes=node_traces, nat=flows,
                 ending=decide_ending(h, node_traces, client_sees_replies=not source.startswith("node/")),
                 handshake=h, notes=notes, raw=raw)


def without_tracing_table(passes: list[ChainPass]) -> list[ChainPass]:
    """The passes through the lab's own rules (the tracing table is instrumentation)."""
    return [p for p in passes if not p.table.startswith(TRACE_TABLE_PREFIX)]

