"""kube-proxy's nftables mode as pure functions: NodeView -> `nft -f` transactions.

Mirrors `syncProxyRules`/`setupNFTables` of pkg/proxy/nftables/proxier.go and writes each operation
exactly as sigs.k8s.io/knftables prints it for `nft -f` (`add table ip kube-proxy { comment … ; }`,
`add chain …`, `flush chain …`, `add rule ip kube-proxy CHAIN …`, `add element … { KEY comment "…"
: VERDICT }`, `delete element … { KEY }`), so a diff against a real node's transaction (kube-proxy
-v=9 logs it) is meaningful.

Versions (testbed.versions, docs/versions.md): since 1.34 the base-chain layout asserted by
upstream's proxier_test.go at commit 81810de6 (`filter-prerouting-pre-dnat`/`filter-output-pre-dnat`
at priority -110, `filter-forward`/`filter-input`/`filter-output` at 0, nat chains at -100/100);
before, the `dstnat - 10` + `filter-output-post-dnat` layout of proxier.go at b0f823e6. No stored
proxier.go has the newer layout, so its `nftablesJumpChains` order was reconstructed from that
test's dump (the order within each chain is exact; the order of the jump rules across chains in
the transaction is ours). Until 1.34 the ClusterIP masquerade rule also matched the port; until 1.33
firewall-ips elements had a comment.

Three functions:
- `desired(view)` — the table kube-proxy leaves behind: NftState (chains and their rules, set/map
  definitions, set/map elements, which chains belong to which Service).
- `render(view)` — a full sync (what kube-proxy writes on start-up): re-creates the table and base
  chains, flushes every set/map it owns (that clears leftovers from an earlier run), adds+flushes
  every per-service chain and writes everything again. Valid whether or not the table exists.
- `sync(previous, view)` — a partial sync against what `previous` says is in the kernel: only the
  chains of Services that changed are flushed and rewritten (all chains of a changed Service, as
  upstream, which tracks changes per Service), set/map elements are diffed (upstream's
  nftElementStorage), stale per-service chains are flushed and stale affinity sets deleted.

Documented differences from upstream:
- Stale chains are deleted (`delete chain`) at the end of the same transaction, after the map
  elements and rules that referenced them are gone. Upstream only flushes them and deletes them in
  a later sync, >1 s later, because kernels before 6.2 release a chain's reference from a deleted
  map element asynchronously. The lab runs on 6.x kernels, where the same-transaction delete works.
- Upstream's first sync after start also does `add chain X` + `delete chain X` for each base chain
  (so changed priorities can be applied); render() always does it, since each lab sync starts
  from a serialised state rather than a running process.
- A full sync cannot list the kernel's chains (render is pure), so chains left by an earlier run
  that the view no longer needs are not flushed by render(); sync() with a previous state does.
- sync() falls back to a full sync (plus stale cleanup) when the base part (base/helper chains,
  set/map definitions) differs from `previous`, e.g. a changed service CIDR or masquerade bit;
  upstream would need a restart for those. nodeport-ips elements are diffed in partial syncs too.
- IPv4 only (`ip kube-proxy`; upstream runs a second proxier for `ip6 kube-proxy`): IPv6
  services, endpoints, external/LB IPs and source ranges are skipped.
- Services are written in (svcPortName, protocol) order; upstream iterates a Go map.
- The ClusterIP masquerade rule is `ip daddr IP ip saddr != CIDR jump mark-for-masquerade`, as at
  81810de6 (before 1.34, as at b0f823e6, also `tcp dport PORT`). With --masquerade-all it is
  `ip daddr IP [tcp dport PORT] jump mark-for-masquerade` (b0f823e6's code; no upstream test).
- The mark is config.masquerade_mark, formatted like upstream's `fmt.Sprintf("%#08x")`: 0x00004000.
  (Upstream's unit tests set the fake proxier's mark to the literal "0x4000".)
- `--nodeport-addresses` CIDRs are matched against `view.node_ips` (standing in for interface
  addresses). Empty means "primary", nftables mode's documented default: the node's first IPv4
  address. Loopback addresses are skipped (nftables mode has no localhost NodePorts); a
  0.0.0.0/0 entry (or only IPv6 entries) means all addresses (`fib daddr type local`).
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field, replace
from typing import Any

from testbed import versions
from testbed.errors import TopologyError
from testbed.proxy import (
    NodeView,
    ServicePort,
    categorize,
    external_policy_local,
    uses_cluster_endpoints,
    uses_local_endpoints,
)
from testbed.render import names

FAMILY = "ip"
TABLE = "kube-proxy"
_T = f"{FAMILY} {TABLE}"

# Helper chains and containers (upstream constants).
SERVICES_CHAIN = "services"
SERVICE_IPS_MAP = "service-ips"
SERVICE_NODEPORTS_MAP = "service-nodeports"
NODEPORT_IPS_SET = "nodeport-ips"
CLUSTER_IPS_SET = "cluster-ips"
SERVICE_ENDPOINTS_CHECK_CHAIN = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK_CHAIN = "nodeport-endpoints-check"
NO_ENDPOINT_SERVICES_MAP = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS_MAP = "no-endpoint-nodeports"
REJECT_CHAIN = "reject-chain"
CLUSTER_IPS_CHECK_CHAIN = "cluster-ips-check"
FIREWALL_IPS_MAP = "firewall-ips"
FIREWALL_CHECK_CHAIN = "firewall-check"
MARK_MASQ_CHAIN = "mark-for-masquerade"
MASQUERADING_CHAIN = "masquerading"

SERVICE_PREFIX = "service-"
LOCAL_PREFIX = "local-"
EXTERNAL_PREFIX = "external-"
FIREWALL_PREFIX = "firewall-"
ENDPOINT_PREFIX = "endpoint-"
AFFINITY_PREFIX = "affinity-"

# (name, type, hook, priority): the layout since 1.34 (#132456; proxier_test.go @ 81810de6).
# knftables prints the numeric priority (ParsePriority), e.g. "dstnat-10" -> -110.
BASE_CHAINS = (
    ("filter-prerouting-pre-dnat", "filter", "prerouting", -110),
    ("filter-output-pre-dnat", "filter", "output", -110),
    ("filter-forward", "filter", "forward", 0),
    ("filter-input", "filter", "input", 0),
    ("filter-output", "filter", "output", 0),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
)

# Before 1.34: the filter chains ran before DNAT (dstnat-10), and cluster-ips-check of locally
# sent traffic ran after it, in filter-output-post-dnat (dstnat+10); proxier.go's order.
OLD_BASE_CHAINS = (
    ("filter-prerouting", "filter", "prerouting", -110),
    ("filter-input", "filter", "input", -110),
    ("filter-forward", "filter", "forward", -110),
    ("filter-output", "filter", "output", -110),
    ("filter-output-post-dnat", "filter", "output", -90),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
)

_CT_NEW = "ct state new"
# nftablesJumpChains: (dst, src, extra). Reject is only valid in input/forward/output hooks (before
# kernel 5.9), hence no endpoints-check jump from prerouting.
JUMP_CHAINS = (
    (NODEPORT_ENDPOINTS_CHECK_CHAIN, "filter-input", _CT_NEW),
    (SERVICE_ENDPOINTS_CHECK_CHAIN, "filter-input", _CT_NEW),
    (SERVICE_ENDPOINTS_CHECK_CHAIN, "filter-forward", _CT_NEW),
    (SERVICE_ENDPOINTS_CHECK_CHAIN, "filter-output", _CT_NEW),
    (FIREWALL_CHECK_CHAIN, "filter-prerouting-pre-dnat", _CT_NEW),
    (FIREWALL_CHECK_CHAIN, "filter-output-pre-dnat", _CT_NEW),
    (SERVICES_CHAIN, "nat-output", ""),
    (SERVICES_CHAIN, "nat-prerouting", ""),
    (MASQUERADING_CHAIN, "nat-postrouting", ""),
    (CLUSTER_IPS_CHECK_CHAIN, "filter-forward", _CT_NEW),
    (CLUSTER_IPS_CHECK_CHAIN, "filter-output", _CT_NEW),
)
# The same jumps in the layout before 1.34 (nftablesJumpChains of 1.33's proxier.go).
_OLD_CHAIN = {"filter-prerouting-pre-dnat": "filter-prerouting", "filter-output-pre-dnat": "filter-output"}
OLD_JUMP_CHAINS = tuple(
    (dst, "filter-output-post-dnat" if dst == CLUSTER_IPS_CHECK_CHAIN and src == "filter-output"
     else _OLD_CHAIN.get(src, src), extra) for dst, src, extra in JUMP_CHAINS)


def base_layout(config) -> tuple[tuple, tuple]:
    """(base chains, jump chains) of the release `config` renders."""
    if config.switch(versions.NFT_PRE_DNAT_CHAINS):
        return BASE_CHAINS, JUMP_CHAINS
    return OLD_BASE_CHAINS, OLD_JUMP_CHAINS

_ADDR_TYPE = "ipv4_addr"
_IP_PORT_KEY = f"{_ADDR_TYPE} . inet_proto . inet_service"
# Containers whose elements kube-proxy tracks in nftElementStorage, in upstream's reset/cleanup order.
ELEMENT_CONTAINERS = (CLUSTER_IPS_SET, SERVICE_IPS_MAP, FIREWALL_IPS_MAP, NO_ENDPOINT_SERVICES_MAP,
                      NO_ENDPOINT_NODEPORTS_MAP, SERVICE_NODEPORTS_MAP)


def _q(text: str) -> str:
    """Go's %q for the plain ASCII comments kube-proxy writes."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _set_spec(type_: str, *, flags: tuple[str, ...] = (), timeout: int | None = None, comment: str | None = None) -> str:
    """knftables' Set/Map writeOperation body: `{ type T ; [flags a,b ;] [timeout Ns ;] [comment "C" ;] }`."""
    out = f"{{ type {type_} ;"
    if flags:
        out += f" flags {','.join(flags)} ;"
    if timeout is not None:
        out += f" timeout {timeout}s ;"
    if comment is not None:
        out += f" comment {_q(comment)} ;"
    return out + " }"


def _rule_text(rule: str, comment: str | None = None) -> str:
    """A rule as stored and written: knftables appends ` comment "C"` after the rule body."""
    return f"{rule} comment {_q(comment)}" if comment is not None else rule


def _elem(key: list[str] | tuple[str, ...], value: str | None = None, comment: str | None = None) -> str:
    """An element as knftables writes it between the braces: `K . K [comment "C"] [: V]`."""
    out = " . ".join(key)
    if comment is not None:
        out += f" comment {_q(comment)}"
    if value is not None:
        out += f" : {value}"
    return out


def element_key(elem: str) -> str:
    """The key part of an element string (what `delete element` names). IPv4 keys have no ':'."""
    cut = len(elem)
    for sep in (' comment "', " : "):
        i = elem.find(sep)
        if i != -1:
            cut = min(cut, i)
    return elem[:cut]


def is_service_chain_name(name: str) -> bool:
    """Upstream's isServiceChainName: per-service chains are the ones with a '/' in their name."""
    return "/" in name


def is_affinity_set_name(name: str) -> bool:
    return name.startswith(AFFINITY_PREFIX)


# --- the state a sync leaves ---------------------------------------------------------------------

@dataclass(frozen=True)
class NftState:
    """What `ip kube-proxy` holds after a sync. Treat the dicts as read-only.

    chains:   name -> rules, each exactly as written after `add rule ip kube-proxy NAME `
              (comment included).
    headers:  name -> the `{ … }` spec of chains that have one: base chains
              (`{ type filter hook input priority 0 ; }`) and reject-chain's comment.
    sets:     name -> (kind, spec): kind "set" or "map", spec the `{ type … ; }` body.
    elements: set/map name -> element strings as written between `{ }` (comment and verdict
              included), for every set/map whose elements kube-proxy manages (not affinity sets).
    services: "namespace/name" -> the per-service chains and affinity sets of that Service.
    """

    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    sets: dict[str, tuple[str, str]] = field(default_factory=dict)
    elements: dict[str, frozenset[str]] = field(default_factory=dict)
    services: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Not serialised: what the sync that produced this state computed, so the next sync in the
    # same process diffs Service by Service (kube-proxy keeps this in memory too).
    memo: _Memo | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> str:
        """JSON text for the lab's state file (elements sorted, so equal states give equal text);
        made once per state (the state is read-only)."""
        if "_json" not in self.__dict__:
            object.__setattr__(self, "_json", self._dumps())
        return self.__dict__["_json"]

    def serialised(self) -> str | None:
        """to_json()'s text if it has been made (the lab wrote this state), else None."""
        return self.__dict__.get("_json")

    def _dumps(self) -> str:
        # Compact: only then does json use its C encoder (5× faster at 10,000 Services).
        return json.dumps({
            "version": 1,
            "chains": self.chains,
            "headers": self.headers,
            "sets": self.sets,
            "elements": {k: sorted(v) for k, v in self.elements.items()},
            "services": self.services,
        }, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> NftState:
        d = json.loads(data) if isinstance(data, (str, bytes)) else data
        if d.get("version") != 1:
            raise ValueError(f"unsupported NftState version {d.get('version')!r}")
        return cls(
            chains={k: tuple(v) for k, v in d["chains"].items()},
            headers=dict(d["headers"]),
            sets={k: (v[0], v[1]) for k, v in d["sets"].items()},
            elements={k: frozenset(v) for k, v in d["elements"].items()},
            services={k: tuple(v) for k, v in d["services"].items()},
        )

    def service_chain_names(self) -> set[str]:
        return {c for c in self.chains if is_service_chain_name(c)}

    def _base(self) -> tuple:
        """Everything a partial sync never rewrites: compared to decide on a full sync."""
        return (
            {k: v for k, v in self.chains.items() if not is_service_chain_name(k)},
            {k: v for k, v in self.headers.items() if not is_service_chain_name(k)},
            {k: v for k, v in self.sets.items() if not is_affinity_set_name(k)},
        )


@dataclass(frozen=True)
class _Memo:
    base: tuple  # (base text lines, nodeport IPs) of the plan: a partial sync needs them unchanged
    parts: dict[str, tuple]  # service key -> its ports' op tuples (the memoised objects)
    keyed: dict[str, dict[str, str]]  # set/map -> element key -> element as written
    claims: dict[tuple[str, str], dict[str, str]]  # (set/map, element key) -> Service -> its element


# --- the plan: what one view needs, as ordered operations ----------------------------------------
#
# Operations are tuples:
#   ("chain", name, header)         add chain (+header) and flush it (upstream ensureChain)
#   ("rule", chain, text)           add rule
#   ("set", kind, name, spec)       add set/map
#   ("elem", container, element)    add element (a partial sync diffs these)

@dataclass
class _ServicePlan:
    key: str  # "namespace/name": upstream tracks changes per Service, not per port
    parts: list[tuple] = field(default_factory=list)  # one ops tuple per port

    @property
    def ops(self):
        return [op for part in self.parts for op in part]


@dataclass
class _Plan:
    base: list[str]  # full-sync text of setupNFTables, up to and including the container flushes
    base_chains: dict[str, list[str]]
    base_headers: dict[str, str]
    base_sets: dict[str, tuple[str, str]]
    nodeport_ips: list[str] | None  # None: nodePortAddresses matches all (no nodeport-ips set)
    services: list[_ServicePlan]


def _is_v6(ip: str) -> bool:
    return ":" in ip


def _nodeport_ips(view: NodeView) -> list[str] | None:
    """proxyutil.NodePortAddresses for IPv4 with nftables' default ("primary"); None = match all."""
    primary = next((ip for ip in view.node_ips if not _is_v6(ip)), None)
    entries = view.config.nodeport_addresses or ("primary",)
    cidrs: list[ipaddress.IPv4Network] = []
    for entry in entries:
        entry = entry.strip()
        if entry == "primary":
            if primary is not None:
                cidrs.append(ipaddress.ip_network(primary))
            continue
        net = ipaddress.ip_network(entry, strict=False)
        if net.version == 4:
            cidrs.append(net)
    # No CIDR of this family (or 0.0.0.0/0): upstream uses the zero CIDR, i.e. every local address.
    if not cidrs or any(n.prefixlen == 0 for n in cidrs):
        return None
    out: list[str] = []
    for ip in view.node_ips:
        if _is_v6(ip) or ip in out:
            continue
        addr = ipaddress.ip_address(ip)
        if addr.is_loopback:
            continue  # "localhost NodePorts are not supported" (logged and skipped upstream)
        if any(addr in n for n in cidrs):
            out.append(ip)
    return out


class _Writer:
    """Accumulates transaction lines and the state they produce."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.chains: dict[str, list[str]] = {}
        self.headers: dict[str, str] = {}
        self.sets: dict[str, tuple[str, str]] = {}

    def add_chain(self, name: str, header: str = "") -> None:
        self.lines.append(f"add chain {_T} {name}" + (f" {header}" if header else ""))
        self.chains.setdefault(name, [])
        if header:
            self.headers[name] = header

    def ensure_chain(self, name: str, header: str = "") -> None:
        """Upstream ensureChain / base-chain setup: add, then flush (drops rules from earlier syncs)."""
        if name in self.chains:
            return
        self.add_chain(name, header)
        self.lines.append(f"flush chain {_T} {name}")

    def rule(self, chain: str, text: str) -> None:
        self.lines.append(f"add rule {_T} {chain} {text}")
        self.chains[chain].append(text)

    def container(self, kind: str, name: str, spec: str) -> None:
        self.lines.append(f"add {kind} {_T} {name} {spec}")
        self.sets[name] = (kind, spec)


def _base(view: NodeView) -> tuple[_Writer, list[str] | None]:
    """setupNFTables: table, base chains, helper chains and their rules, set/map definitions."""
    cfg = view.config
    mark = cfg.masquerade_mark
    reason = versions.check_mode(cfg.kube_proxy_version, "nftables")
    if reason:
        raise TopologyError(None, None, None, f"{reason}: render another mode or a newer version")
    base_chains, jump_chains = base_layout(cfg)
    w = _Writer()
    w.lines.append(f"add table {_T} {{ comment {_q('rules for kube-proxy')} ; }}")
    # First sync: add+delete every base chain so one with a different type/priority is re-created.
    for name, *_ in base_chains:
        w.lines.append(f"add chain {_T} {name}")
        w.lines.append(f"delete chain {_T} {name}")
    for name, type_, hook, prio in base_chains:
        w.ensure_chain(name, f"{{ type {type_} hook {hook} priority {prio} ; }}")
    for dst, src, extra in jump_chains:
        w.ensure_chain(dst)
        w.rule(src, " ".join(p for p in (extra, "jump", dst) if p))
    for chain in (SERVICES_CHAIN, CLUSTER_IPS_CHECK_CHAIN, MASQUERADING_CHAIN, MARK_MASQ_CHAIN):
        w.ensure_chain(chain)

    w.rule(MARK_MASQ_CHAIN, f"mark set mark or {mark}")
    w.rule(MASQUERADING_CHAIN, f"mark and {mark} == 0 return")
    # Clear the mark so a packet that re-enters the stack is not masqueraded twice.
    w.rule(MASQUERADING_CHAIN, f"mark set mark xor {mark}")
    w.rule(MASQUERADING_CHAIN, "masquerade fully-random")

    w.container("set", CLUSTER_IPS_SET, _set_spec(_ADDR_TYPE, comment="Active ClusterIPs"))
    # A valid ClusterIP on a port no Service uses: reject (iptables mode has no equivalent).
    w.rule(CLUSTER_IPS_CHECK_CHAIN, _rule_text(f"ip daddr @{CLUSTER_IPS_SET} reject",
                                               "Reject traffic to invalid ports of ClusterIPs"))
    service_cidrs = ",".join(c for c in cfg.service_cidrs if ipaddress.ip_network(c, strict=False).version == 4)
    if service_cidrs:
        w.rule(CLUSTER_IPS_CHECK_CHAIN, _rule_text(f"ip daddr {{ {service_cidrs} }} drop",
                                                   "Drop traffic to unallocated ClusterIPs"))

    nodeport_ips = _nodeport_ips(view)
    # "add+delete" rather than "delete": deleting a set that does not exist fails the transaction.
    w.container("set", NODEPORT_IPS_SET, _set_spec(_ADDR_TYPE, comment="IPs that accept NodePort traffic"))
    if nodeport_ips is None:
        w.lines.append(f"delete set {_T} {NODEPORT_IPS_SET}")
        del w.sets[NODEPORT_IPS_SET]
    else:
        w.lines.append(f"flush set {_T} {NODEPORT_IPS_SET}")
        w.lines += [f"add element {_T} {NODEPORT_IPS_SET} {{ {ip} }}" for ip in nodeport_ips]

    w.container("map", NO_ENDPOINT_SERVICES_MAP, _set_spec(
        f"{_IP_PORT_KEY} : verdict", comment="vmap to drop or reject packets to services with no endpoints"))
    w.container("map", NO_ENDPOINT_NODEPORTS_MAP, _set_spec(
        "inet_proto . inet_service : verdict",
        comment="vmap to drop or reject packets to service nodeports with no endpoints"))
    w.ensure_chain(REJECT_CHAIN, f"{{ comment {_q('helper for @no-endpoint-services / @no-endpoint-nodeports')} ; }}")
    w.rule(REJECT_CHAIN, "reject")
    w.rule(SERVICE_ENDPOINTS_CHECK_CHAIN, f"ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES_MAP}")
    np_match = "ip daddr != 127.0.0.0/8" if nodeport_ips is None else f"ip daddr @{NODEPORT_IPS_SET}"
    w.rule(NODEPORT_ENDPOINTS_CHECK_CHAIN, f"{np_match} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS_MAP}")

    w.container("map", FIREWALL_IPS_MAP, _set_spec(
        f"{_IP_PORT_KEY} : verdict", comment="destinations that are subject to LoadBalancerSourceRanges"))
    w.ensure_chain(FIREWALL_CHECK_CHAIN)
    w.rule(FIREWALL_CHECK_CHAIN, f"ip daddr . meta l4proto . th dport vmap @{FIREWALL_IPS_MAP}")

    w.container("map", SERVICE_IPS_MAP, _set_spec(
        f"{_IP_PORT_KEY} : verdict", comment="ClusterIP, ExternalIP and LoadBalancer IP traffic"))
    w.container("map", SERVICE_NODEPORTS_MAP, _set_spec("inet_proto . inet_service : verdict", comment="NodePort traffic"))
    w.rule(SERVICES_CHAIN, f"ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS_MAP}")
    if nodeport_ips is None:
        w.rule(SERVICES_CHAIN,
               f"fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{SERVICE_NODEPORTS_MAP}")
    else:
        w.rule(SERVICES_CHAIN, f"ip daddr @{NODEPORT_IPS_SET} meta l4proto . th dport vmap @{SERVICE_NODEPORTS_MAP}")

    # nftElementStorage.reset(): a full sync starts every managed set/map empty, then re-adds.
    for name in ELEMENT_CONTAINERS:
        w.lines.append(f"flush {w.sets[name][0]} {_T} {name}")
    return w, nodeport_ips


def _ipv4_only(sp: ServicePort) -> ServicePort:
    """What the IPv4 proxier sees: the ServiceChangeTracker/EndpointsChangeTracker filter by family."""
    if not any(":" in x for x in (*(e.ip for e in sp.endpoints), *sp.external_ips, *sp.load_balancer_ips,
                                  *sp.load_balancer_source_ranges)):
        return sp  # already IPv4-only: the same object keeps the ops cache hit cheap
    return replace(
        sp,
        endpoints=tuple(e for e in sp.endpoints if not _is_v6(e.ip)),
        external_ips=tuple(ip for ip in sp.external_ips if not _is_v6(ip)),
        load_balancer_ips=tuple(ip for ip in sp.load_balancer_ips if not _is_v6(ip)),
        load_balancer_source_ranges=tuple(
            r for r in sp.load_balancer_source_ranges if ipaddress.ip_network(r.strip(), strict=False).version == 4),
    )


# A sync recomputes every Service's ops to diff them; an unchanged ServicePort (equal, not only the
# same object: a lab reloads its state) under the same node context gives the same ops, so they are
# memoised. Bounded: cleared whole when it outgrows a few syncs of the largest benchmark.
_OPS_CACHE: dict[tuple, tuple] = {}
_OPS_CACHE_MAX = 200_000
# The last ops per (context, port): `sp is` the same object is checked first, cheaper than hashing it.
_LAST_OPS: dict[tuple, tuple] = {}
_CONTEXTS: list[tuple] = []


def _ops_context(view: NodeView) -> tuple:
    """What besides the ServicePort decides its ops; equal contexts share one object."""
    context = (view.node_name, view.node_ips, view.zone, view.config)
    for known in _CONTEXTS:
        if known == context:
            return known
    _CONTEXTS[:] = _CONTEXTS[-7:] + [context]
    return context


def _service_ops(view: NodeView, sp: ServicePort, context: tuple | None = None) -> tuple[tuple, ...]:
    context = context or _ops_context(view)
    name = (context, sp.port_name_string, sp.proto)
    last = _LAST_OPS.get(name)
    if last is not None and last[0] is sp:
        return last[1]
    key = (context, sp)
    ops = _OPS_CACHE.get(key)
    if ops is None:
        if len(_OPS_CACHE) >= _OPS_CACHE_MAX:
            _OPS_CACHE.clear()
            _LAST_OPS.clear()
        ops = _OPS_CACHE[key] = tuple(_compute_service_ops(view, sp))
    _LAST_OPS[name] = (sp, ops)
    return ops


def _compute_service_ops(view: NodeView, sp: ServicePort) -> list[tuple]:
    """One service port's part of syncProxyRules, in upstream's order."""
    cfg = view.config
    cat = categorize(view, sp)
    proto, port, name = sp.proto, str(sp.port), sp.port_name_string
    base = names.nft_service_base(sp)
    svc_chain, local_chain = SERVICE_PREFIX + base, LOCAL_PREFIX + base
    ext_chain, fw_chain = EXTERNAL_PREFIX + base, FIREWALL_PREFIX + base
    affinity = sp.session_affinity_timeout is not None

    def ep_base(ep):
        return names.nft_endpoint_base(sp, ep)

    ops: list[tuple] = []
    for ep in cat.all_reachable:
        ops.append(("chain", ENDPOINT_PREFIX + ep_base(ep), ""))

    uses_cluster_chain = bool(cat.cluster) and uses_cluster_endpoints(sp)
    if uses_cluster_chain:
        ops.append(("chain", svc_chain, ""))
    uses_local_chain = bool(cat.local) and uses_local_endpoints(sp)
    if uses_local_chain:
        ops.append(("chain", local_chain, ""))

    internal_chain, has_internal = svc_chain, cat.has_any
    if sp.internal_policy_local:
        internal_chain, has_internal = local_chain, cat.has_any and bool(cat.local)
    ext_local = external_policy_local(sp)
    external_policy_chain, has_external = svc_chain, cat.has_any
    if ext_local:
        external_policy_chain, has_external = local_chain, cat.has_any and bool(cat.local)
    # Based on has_any, not has_external: the short-circuit rules are needed even without local endpoints.
    uses_ext_chain = cat.has_any and sp.has_external
    if uses_ext_chain:
        ops.append(("chain", ext_chain, ""))

    if not cat.has_any:
        internal_verdict = external_verdict = f"goto {REJECT_CHAIN}"
    else:
        internal_verdict = "" if has_internal else "drop"
        external_verdict = "" if has_external else "drop"

    def ip_port(ip):
        return [ip, proto, port]

    ops.append(("elem", CLUSTER_IPS_SET, _elem([sp.cluster_ip])))
    if has_internal:
        ops.append(("elem", SERVICE_IPS_MAP, _elem(ip_port(sp.cluster_ip), f"goto {internal_chain}")))
    else:
        ops.append(("elem", NO_ENDPOINT_SERVICES_MAP, _elem(ip_port(sp.cluster_ip), internal_verdict, name)))

    for ip in sp.external_ips:
        if cat.has_any:
            ops.append(("elem", SERVICE_IPS_MAP, _elem(ip_port(ip), f"goto {ext_chain}")))
        if not has_external:
            ops.append(("elem", NO_ENDPOINT_SERVICES_MAP, _elem(ip_port(ip), external_verdict, name)))

    # Unlike iptables mode, the firewall applies even when the service has no endpoints.
    uses_fw_chain = bool(sp.load_balancer_ips) and bool(sp.load_balancer_source_ranges)
    if uses_fw_chain:
        ops.append(("chain", fw_chain, ""))
    for ip in sp.load_balancer_ips:
        if cat.has_any:
            ops.append(("elem", SERVICE_IPS_MAP, _elem(ip_port(ip), f"goto {ext_chain}")))
        if uses_fw_chain:
            comment = name if cfg.switch(versions.NFT_FIREWALL_ELEMENT_COMMENT) else None
            ops.append(("elem", FIREWALL_IPS_MAP, _elem(ip_port(ip), f"goto {fw_chain}", comment)))
    if not has_external:
        for ip in sp.load_balancer_ips:
            ops.append(("elem", NO_ENDPOINT_SERVICES_MAP, _elem(ip_port(ip), external_verdict, name)))

    if sp.node_port:
        # NodePorts are not subject to loadBalancerSourceRanges (as upstream).
        if cat.has_any:
            ops.append(("elem", SERVICE_NODEPORTS_MAP, _elem([proto, str(sp.node_port)], f"goto {ext_chain}")))
        if not has_external:
            ops.append(("elem", NO_ENDPOINT_NODEPORTS_MAP, _elem([proto, str(sp.node_port)], external_verdict, name)))

    # From here on: chain contents, which a partial sync skips for unchanged Services.
    if has_internal:
        # Until 1.34 (#131492) the rule also matched the port, which the service-ips map already had.
        dest = f"ip daddr {sp.cluster_ip}" + (f" {proto} dport {port}" if cfg.switch(versions.NFT_MASQ_MATCHES_PORT)
                                              else "")
        if cfg.masquerade_all:
            ops.append(("rule", internal_chain, f"{dest} jump {MARK_MASQ_CHAIN}"))
        elif cfg.cluster_cidr:
            # Off-cluster traffic to a ClusterIP (a static route to any node) may bounce off-node.
            ops.append(("rule", internal_chain, f"{dest} ip saddr != {cfg.cluster_cidr} jump {MARK_MASQ_CHAIN}"))

    if uses_ext_chain:
        if not ext_local:
            # Cluster endpoints may be on another node: masquerade so replies come back here.
            ops.append(("rule", ext_chain, f"jump {MARK_MASQ_CHAIN}"))
        else:
            if cfg.cluster_cidr:
                # Pod -> external IP acts as if it went out to the LB and back: no traffic policy.
                ops.append(("rule", ext_chain, _rule_text(f"ip saddr {cfg.cluster_cidr} goto {svc_chain}",
                                                          "short-circuit pod traffic")))
            # The node's own traffic gets the external IP's local address as source: masquerade it.
            ops.append(("rule", ext_chain, _rule_text(f"fib saddr type local jump {MARK_MASQ_CHAIN}",
                                                      "masquerade local traffic")))
            ops.append(("rule", ext_chain, _rule_text(f"fib saddr type local goto {svc_chain}",
                                                      "short-circuit local traffic")))
        if has_external:
            ops.append(("rule", ext_chain, f"goto {external_policy_chain}"))

    if uses_fw_chain:
        node_ip = next((ipaddress.ip_address(ip) for ip in view.node_ips if not _is_v6(ip)), None)
        sources: list[str] = []
        allow_from_node = False
        for raw in sp.load_balancer_source_ranges:
            net = ipaddress.ip_network(raw.strip(), strict=False)
            sources.append(str(net))
            if node_ip is not None and node_ip in net:
                allow_from_node = True
        # A VIP bound locally loops node->VIP traffic back with the VIP as source: let it through.
        if allow_from_node:
            sources += list(sp.load_balancer_ips)
        ops.append(("rule", fw_chain, f"ip saddr != {{ {' , '.join(sources)} }} drop"))

    if affinity:
        for ep in cat.all_reachable:
            ops.append(("set", "set", AFFINITY_PREFIX + ep_base(ep), _set_spec(
                _ADDR_TYPE, flags=("dynamic", "timeout"), timeout=sp.session_affinity_timeout)))

    def to_endpoints(chain, endpoints):
        # writeServiceToEndpointRules: affinity hits first, then one numgen vmap (1/N each).
        if affinity:
            for ep in endpoints:
                ops.append(("rule", chain, f"ip saddr @{AFFINITY_PREFIX + ep_base(ep)} goto {ENDPOINT_PREFIX + ep_base(ep)}"))
        vmap = " , ".join(f"{i} : goto {ENDPOINT_PREFIX + ep_base(ep)}" for i, ep in enumerate(endpoints))
        ops.append(("rule", chain, f"numgen random mod {len(endpoints)} vmap {{ {vmap} }}"))

    if uses_cluster_chain:
        to_endpoints(svc_chain, cat.cluster)
    if uses_local_chain:
        to_endpoints(local_chain, cat.local)

    for ep in cat.all_reachable:
        chain = ENDPOINT_PREFIX + ep_base(ep)
        ops.append(("rule", chain, f"ip saddr {ep.ip} jump {MARK_MASQ_CHAIN}"))  # hairpin
        if affinity:
            ops.append(("rule", chain, f"update @{AFFINITY_PREFIX + ep_base(ep)} {{ ip saddr }}"))
        ops.append(("rule", chain, f"meta l4proto {proto} dnat to {ep.address}"))
    return ops


def _plan(view: NodeView) -> _Plan:
    w, nodeport_ips = _base(view)
    ports = sorted((_ipv4_only(sp) for sp in view.services if sp.cluster_ip and not _is_v6(sp.cluster_ip)),
                   key=lambda s: (s.port_name_string, s.proto))
    by_service: dict[str, _ServicePlan] = {}
    context = _ops_context(view)
    for sp in ports:
        key = f"{sp.namespace}/{sp.name}"
        by_service.setdefault(key, _ServicePlan(key)).parts.append(_service_ops(view, sp, context))
    return _Plan(w.lines, w.chains, w.headers, w.sets, nodeport_ips, list(by_service.values()))


def _state(plan: _Plan) -> NftState:
    chains = {k: tuple(v) for k, v in plan.base_chains.items()}
    sets = dict(plan.base_sets)
    # Keyed like the kernel's sets: a later element with the same key replaces the earlier one.
    elements: dict[str, dict[str, str]] = {name: {} for name in ELEMENT_CONTAINERS}
    if plan.nodeport_ips is not None:
        elements[NODEPORT_IPS_SET] = {ip: ip for ip in plan.nodeport_ips}
    services: dict[str, tuple[str, ...]] = {}
    claims: dict[tuple[str, str], dict[str, str]] = {}
    for svc in plan.services:
        owned: list[str] = []
        rules: dict[str, list[str]] = {}
        for op in svc.ops:
            if op[0] != "elem":
                _record_op(op, owned, rules, sets)
            else:
                k = element_key(op[2])
                elements[op[1]][k] = op[2]
                claims.setdefault((op[1], k), {})[svc.key] = op[2]
        chains.update({k: tuple(v) for k, v in rules.items()})
        services[svc.key] = tuple(owned)
    return NftState(
        chains=chains,
        headers=dict(plan.base_headers),
        sets=sets,
        elements={k: frozenset(v.values()) for k, v in elements.items()},
        services=services,
        memo=_Memo(_plan_base(plan), {svc.key: tuple(svc.parts) for svc in plan.services}, elements, claims),
    )


def _record_op(op: tuple, owned: list[str], rules: dict[str, list[str]], sets: dict[str, tuple[str, str]]) -> None:
    """What a chain/rule/set op leaves in the state: the Service owns the chain or set."""
    if op[0] == "chain":
        owned.append(op[1])
        rules.setdefault(op[1], [])
    elif op[0] == "rule":
        rules[op[1]].append(op[2])
    elif op[0] == "set":
        owned.append(op[2])
        sets[op[2]] = (op[1], op[3])


def _plan_base(plan: _Plan) -> tuple:
    return (tuple(plan.base), tuple(plan.nodeport_ips) if plan.nodeport_ips is not None else None)


def desired(view: NodeView) -> NftState:
    """The `ip kube-proxy` table kube-proxy leaves on this node after a sync of `view`."""
    return _state(_plan(view))


def render(view: NodeView) -> str:
    """The full-sync transaction kube-proxy hands to `nft -f` for this node (what
    `testbed render --mode nftables` prints). Valid whether or not the table already exists."""
    return sync(None, view)[0]


# --- transactions --------------------------------------------------------------------------------

def _ensure_elem(lines: list[str], held: dict[str, str], container: str, key: str, elem: str) -> None:
    """Upstream's ensureElem: add a new key; a key held with another value is deleted and re-added."""
    old = held.get(key)
    if old is None:
        lines.append(f"add element {_T} {container} {{ {elem} }}")
    elif old != elem:
        lines.append(f"delete element {_T} {container} {{ {key} }}")
        lines.append(f"add element {_T} {container} {{ {elem} }}")
    held[key] = elem


class _ElementStorage:
    """Upstream's nftElementStorage: what each managed set/map holds, updated as the transaction
    is written, so an element whose key exists with another value is deleted and re-added (also
    when two Services claim the same key within one sync: the later one wins, as upstream)."""

    def __init__(self, elements: dict[str, frozenset[str]] | None = None) -> None:
        self.elements = {name: {element_key(e): e for e in elems} for name, elems in (elements or {}).items()}
        self.leftover = {name: set(keys) for name, keys in self.elements.items()}

    def ensure(self, lines: list[str], container: str, elem: str) -> None:
        key = element_key(elem)
        _ensure_elem(lines, self.elements.setdefault(container, {}), container, key, elem)
        self.leftover.get(container, set()).discard(key)

    def cleanup(self) -> list[str]:
        """`delete element` for every key no op of this sync ensured (cleanupLeftoverKeys)."""
        return [f"delete element {_T} {name} {{ {key} }}"
                for name in sorted(self.leftover, key=_container_rank) for key in sorted(self.leftover[name])]


def _container_rank(name: str) -> tuple:
    """Leftover elements are deleted set by set in kube-proxy's container order, whatever order a
    state was read back in."""
    return (ELEMENT_CONTAINERS.index(name) if name in ELEMENT_CONTAINERS else len(ELEMENT_CONTAINERS), name)


def _write_op(op: tuple) -> list[str]:
    kind = op[0]
    if kind == "chain":
        return [f"add chain {_T} {op[1]}", f"flush chain {_T} {op[1]}"]
    if kind == "rule":
        return [f"add rule {_T} {op[1]} {op[2]}"]
    if kind == "set":
        return [f"add {op[1]} {_T} {op[2]} {op[3]}"]
    if kind == "elem":
        return [f"add element {_T} {op[1]} {{ {op[2]} }}"]
    raise ValueError(op)


def _service_changed(svc: _ServicePlan, new: NftState, previous: NftState) -> bool:
    owned = new.services[svc.key]
    if previous.services.get(svc.key) != owned:
        return True
    for obj in owned:
        if obj in new.chains:
            if previous.chains.get(obj) != new.chains[obj]:
                return True
        elif previous.sets.get(obj) != new.sets.get(obj):
            return True
    return False


def _stale_cleanup(previous: NftState, new: NftState, element_deletes: list[str]) -> list[str]:
    """Flush stale chains, delete stale affinity sets, remove leftover elements, delete the chains.

    Deleting in the same transaction needs kernel >= 6.2 (see the module docstring); by then the
    rules (flushed chains, rewritten service chains) and map elements referring to them are gone.
    """
    # By name: upstream's order is a Go map's; sorted is reproducible whatever order the state has.
    stale_chains = sorted(c for c in previous.chains if is_service_chain_name(c) and c not in new.chains)
    stale_sets = sorted(s for s in previous.sets if is_affinity_set_name(s) and s not in new.sets)
    out = [f"flush chain {_T} {c}" for c in stale_chains]
    out += [f"delete set {_T} {s}" for s in stale_sets]
    out += element_deletes
    out += [f"delete chain {_T} {c}" for c in stale_chains]
    return out


def sync(previous: NftState | None, view: NodeView) -> tuple[str, NftState]:
    """The transaction that takes the kernel from `previous` to `view`, and the resulting state.

    previous=None gives the full sync (same text as render()). Otherwise a partial sync: only
    changed Services' chains are re-added, flushed and rewritten; set/map elements are diffed (a
    changed verdict is `delete element` + `add element`, as nftElementStorage.ensureElem does);
    stale per-service chains and affinity sets go away. No changes give "" (nothing to apply).
    If the base part differs from `previous` (a config change), the result is a full sync followed
    by the stale-object cleanup.
    """
    plan = _plan(view)
    if previous is not None and previous.memo is not None and previous.memo.base == _plan_base(plan):
        return _partial_sync(previous, plan)
    new = _state(plan)
    full = previous is None or previous._base() != new._base()
    # A full sync flushed every managed set/map in plan.base: start from empty storage.
    store = _ElementStorage(None if full else previous.elements)
    lines: list[str] = list(plan.base) if full else []
    if not full:
        for ip in plan.nodeport_ips or ():
            store.ensure(lines, NODEPORT_IPS_SET, ip)
    for svc in plan.services:
        changed = full or _service_changed(svc, new, previous)
        for op in svc.ops:
            if op[0] == "elem":
                store.ensure(lines, op[1], op[2])
            elif changed:
                lines += _write_op(op)
    if previous is not None:
        # Stale chains, sets and elements: only `previous` knows them (render() cannot list the kernel).
        lines += _stale_cleanup(previous, new, store.cleanup())
    return ("\n".join(lines) + "\n" if lines else ""), new


def _partial_sync(previous: NftState, plan: _Plan) -> tuple[str, NftState]:
    """sync() when `previous` came from a sync in this process: only Services whose ops differ
    from the memo are looked at, so a one-Service change costs the same at 10,000 Services as
    at 100 (beyond building the plan, which reuses memoised ops). Same result as the general path,
    and the same text unless two Services claim one element key (then the winner — the later
    Service, as upstream — is re-ensured after the rewritten Services)."""
    memo = previous.memo
    lines: list[str] = []
    chains, sets, services = dict(previous.chains), dict(previous.sets), dict(previous.services)
    keyed = dict(memo.keyed)  # containers are copied on first write
    claims = dict(memo.claims)  # each key's claimants are copied on first write
    parts = dict(memo.parts)
    touched: set[str] = set()
    copied: set[tuple[str, str]] = set()
    contested: set[tuple[str, str]] = set()
    stale_chains: list[str] = []
    stale_sets: list[str] = []
    deletes: dict[tuple[str, str], str] = {}  # element keys to delete -> the element the kernel holds

    def held(container: str) -> dict[str, str]:
        if container not in touched:
            keyed[container] = dict(keyed.get(container, {}))
            touched.add(container)
        return keyed[container]

    def claimants(ck: tuple[str, str]) -> dict[str, str]:
        if ck not in copied:
            claims[ck] = dict(claims.get(ck, {}))
            copied.add(ck)
        return claims.setdefault(ck, {})

    def ensure(container: str, k: str, elem: str) -> None:
        _ensure_elem(lines, held(container), container, k, elem)

    def rewrite(key: str, new_parts: tuple) -> None:
        new_ops = [op for part in new_parts for op in part]
        old_ops = [op for part in memo.parts.get(key, ()) for op in part]
        owned: list[str] = []
        rules: dict[str, list[str]] = {}
        ensured: set[tuple[str, str]] = set()
        for op in new_ops:
            if op[0] == "elem":
                ck = (op[1], element_key(op[2]))
                if ck in deletes:  # given up earlier in this sync, claimed again: it is still in the kernel
                    held(ck[0])[ck[1]] = deletes.pop(ck)
                c = claimants(ck)
                c[key] = op[2]
                ensured.add(ck)
                if len(c) == 1:
                    ensure(ck[0], ck[1], op[2])
                else:
                    contested.add(ck)
                continue
            lines.extend(_write_op(op))
            _record_op(op, owned, rules, sets)
        for op in old_ops:  # elements this Service wrote before and no longer does
            if op[0] == "elem":
                ck = (op[1], element_key(op[2]))
                if ck in ensured or key not in claims.get(ck, {}):
                    continue
                c = claimants(ck)
                del c[key]
                if c:
                    contested.add(ck)
                else:
                    del claims[ck]
                    deletes[ck] = held(ck[0]).pop(ck[1])
        new_owned = set(owned)
        for obj in previous.services.get(key, ()):
            if obj in new_owned:
                continue
            if obj in chains:
                stale_chains.append(obj)
                del chains[obj]
            elif obj in sets:
                stale_sets.append(obj)
                del sets[obj]
        chains.update({c: tuple(r) for c, r in rules.items()})
        if new_parts:
            services[key], parts[key] = tuple(owned), new_parts
        else:
            services.pop(key, None)
            parts.pop(key, None)

    wanted = set()
    for svc in plan.services:
        wanted.add(svc.key)
        new_parts = tuple(svc.parts)
        if memo.parts.get(svc.key) != new_parts:
            rewrite(svc.key, new_parts)
    for key in memo.parts:
        if key not in wanted:
            rewrite(key, ())
    if contested:  # a key several Services claim: the last one in plan order holds it
        rank = {svc.key: i for i, svc in enumerate(plan.services)}
        for ck in sorted(contested, key=lambda ck: (_container_rank(ck[0]), ck[1])):
            c = claims.get(ck)
            if c:
                ensure(ck[0], ck[1], c[max(c, key=rank.__getitem__)])
    stale_chains.sort()
    stale_sets.sort()
    lines += [f"flush chain {_T} {c}" for c in stale_chains]
    lines += [f"delete set {_T} {s}" for s in stale_sets]
    lines += [f"delete element {_T} {c} {{ {k} }}" for c, k in sorted(deletes, key=lambda d: (_container_rank(d[0]), d[1]))]
    lines += [f"delete chain {_T} {c}" for c in stale_chains]
    elements = dict(previous.elements)
    for container in touched:
        elements[container] = frozenset(keyed[container].values())
    new = NftState(chains=chains, headers=previous.headers, sets=sets, elements=elements, services=services,
                   memo=_Memo(memo.base, parts, keyed, claims))
    return ("\n".join(lines) + "\n" if lines else ""), new
