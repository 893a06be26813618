"""kube-proxy's iptables mode as a pure function: NodeView -> `iptables-restore --noflush` input.

Mirrors `syncProxyRules` of pkg/proxy/iptables/proxier.go (v1.33/1.34): the same chain
declarations, rule text and write order for a full sync, so a diff against a real node's restore
input is meaningful. Older releases differ by the switches of testbed.versions that
`config.switch()` reads (the nfacct counters, the INVALID drop under tcp_be_liberal). Upstream
iterates its service map in Go map order; we iterate services sorted by (svcPortName, protocol)
so output is deterministic (upstream's own tests sort the same way).

Documented differences from upstream:
- No `-m nfacct` matches by default: the lab's kernel/iptables may lack nfacct. Upstream then
  behaves as with missing counters: the INVALID drop has no nfacct match and the metric-only
  `-d 127.0.0.0/8` localhost NodePort rule is not written (the plain NodePort rule already matches
  localhost). `render(..., nfacct=True)` restores both, as in upstream's unit tests.
- IPv4 only (one proxier per family upstream); IPv6 services and endpoints are skipped.
- `--nodeport-addresses` CIDRs are matched against `view.node_ips` plus 127.0.0.1, standing in
  for the node's interface addresses.
- Endpoint categorisation follows upstream's CategorizeEndpoints (see `_categorize`), which
  differs from `testbed.proxy.categorize_endpoints` in two edge cases: unready, non-terminating
  endpoints do not count as "has endpoints" (REJECT, not an empty chain), and an externally
  accessible iTP=Local service still uses Cluster endpoints (for the EXT short-circuit).

Not in the restore input, as upstream: KUBE-PROXY-CANARY (made by the iptables monitor) and the
jumps from built-in chains (EnsureRule; see jump_rules()/bootstrap()). The mark is written as Go's
"%#08x" gives it, 0x00004000; the kernel reads it back as 0x4000.
"""
from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable
from dataclasses import replace

from testbed import versions
from testbed.proxy import (
    Endpoint,
    EndpointCategories,
    NodeView,
    ServicePort,
    categorize,
    external_policy_local,
)
from testbed.proxy import uses_cluster_endpoints as _uses_cluster
from testbed.proxy import uses_local_endpoints as _uses_local
from testbed.render import names

LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000

# "Top-level" chains, in the order syncProxyRules declares them.
FILTER_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL")
NAT_CHAINS = ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")
KUBELET_FIREWALL_CHAIN = "KUBE-FIREWALL"

NFACCT_CT_INVALID = "ct_state_invalid_dropped_pkts"
NFACCT_LOCALHOST_NP = "localhost_nps_accepted_pkts"

_CT_NEW = "-m conntrack --ctstate NEW"
# (table, dst chain, src builtin chain, comment, extra args): upstream's iptablesJumpChains followed
# by iptablesKubeletJumpChains, each installed with EnsureRule(Prepend, ...) in this order.
_JUMP_CHAINS = (
    ("filter", "KUBE-EXTERNAL-SERVICES", "INPUT", "kubernetes externally-visible service portals", _CT_NEW),
    ("filter", "KUBE-EXTERNAL-SERVICES", "FORWARD", "kubernetes externally-visible service portals", _CT_NEW),
    ("filter", "KUBE-NODEPORTS", "INPUT", "kubernetes health check service ports", ""),
    ("filter", "KUBE-SERVICES", "FORWARD", "kubernetes service portals", _CT_NEW),
    ("filter", "KUBE-SERVICES", "OUTPUT", "kubernetes service portals", _CT_NEW),
    ("filter", "KUBE-FORWARD", "FORWARD", "kubernetes forwarding rules", ""),
    ("filter", "KUBE-PROXY-FIREWALL", "INPUT", "kubernetes load balancer firewall", _CT_NEW),
    ("filter", "KUBE-PROXY-FIREWALL", "OUTPUT", "kubernetes load balancer firewall", _CT_NEW),
    ("filter", "KUBE-PROXY-FIREWALL", "FORWARD", "kubernetes load balancer firewall", _CT_NEW),
    ("nat", "KUBE-SERVICES", "OUTPUT", "kubernetes service portals", ""),
    ("nat", "KUBE-SERVICES", "PREROUTING", "kubernetes service portals", ""),
    ("nat", "KUBE-POSTROUTING", "POSTROUTING", "kubernetes postrouting rules", ""),
    ("filter", KUBELET_FIREWALL_CHAIN, "INPUT", "", ""),
    ("filter", KUBELET_FIREWALL_CHAIN, "OUTPUT", "", ""),
)
# iptables-save lists built-in chains in hook order.
_BUILTIN_ORDER = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}


def compute_probability(n: int) -> str:
    """Upstream's computeProbability: fmt.Sprintf("%0.10f", 1.0/float64(n))."""
    return "%0.10f" % (1.0 / n)


def go_mark(bit: int) -> str:
    """The masquerade mark as kube-proxy formats it: Go's fmt.Sprintf("%#08x", 1<<bit) pads the
    digits (not the whole string) to 8, giving 0x00004000 (Python's "#08x" would give 0x004000)."""
    return "0x%08x" % (1 << bit)


def _q(text: str) -> str:
    """Comments with spaces are written double-quoted, exactly as upstream's fmt `"%s ..."`."""
    return f'"{text}"'


def _is_v6(ip: str) -> bool:
    return ":" in ip


# --- endpoint selection -------------------------------------------------------------------------

def _categorize(view: NodeView, sp: ServicePort, endpoints: tuple[Endpoint, ...]) -> EndpointCategories:
    return categorize(view, replace(sp, endpoints=endpoints) if endpoints != sp.endpoints else sp)


_external_policy_local = external_policy_local


# --- rendering ----------------------------------------------------------------------------------

class _Buf:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, *parts: str) -> None:
        self.lines.append(" ".join(p for p in parts if p))


def _nodeport_destinations(view: NodeView) -> list[str] | None:
    """None = NodePorts on every local address; else the node IPs the dispatch is limited to.

    Like upstream's NodePortAddresses for IPv4: only IPv4 CIDRs count, none (or 0.0.0.0/0) means
    all, and "primary" means the node's primary IP.
    """
    cfg = view.config
    primary = [ip for ip in view.node_ips if not _is_v6(ip)][:1]
    cidrs = []
    for entry in cfg.nodeport_addresses:
        if entry.strip() == "primary":
            cidrs += [ipaddress.ip_network(ip) for ip in primary]
            continue
        net = ipaddress.ip_network(entry.strip(), strict=False)
        if net.version == 4:
            cidrs.append(net)
    if not cidrs or any(n.prefixlen == 0 for n in cidrs):
        return None
    out: list[str] = []
    for ip in (*view.node_ips, "127.0.0.1"):
        if _is_v6(ip) or ip in out:
            continue
        addr = ipaddress.ip_address(ip)
        if not any(addr in n for n in cidrs):
            continue
        if addr.is_loopback and not cfg.localhost_nodeports:
            continue  # upstream logs an error and skips it
        out.append(ip)
    return out


def _services(view: NodeView) -> list[ServicePort]:
    svcs = [s for s in view.services if s.cluster_ip and not _is_v6(s.cluster_ip)]
    return sorted(svcs, key=lambda s: (s.port_name_string, s.proto))


def _v4_endpoints(sp: ServicePort) -> tuple[Endpoint, ...]:
    return tuple(e for e in sp.endpoints if not _is_v6(e.ip))


def active_chains(view: NodeView) -> set[str]:
    """Per-service nat chains (KUBE-SVC/SVL/EXT/FW/SEP) that render(view) declares."""
    chains, _ = _sync(view, None, False)["nat"]
    return {c for c in (line[1:].split()[0] for line in chains) if names.is_service_chain_name(c)}


def render(view: NodeView, previous_chains: Iterable[str] | None = None, *, nfacct: bool = False) -> str:
    """The restore input of kube-proxy's full sync for this node.

    `previous_chains`: nat chain names currently in the kernel (e.g. `nat_chains(iptables-save)`);
    stale KUBE-SVC/SVL/EXT/FW/SEP ones among them are flushed and deleted with `-X`, as upstream.
    `nfacct`: emit upstream's nfacct counter matches (needs xt_nfacct and the named counters).
    """
    return _assemble(_sync(view, previous_chains, nfacct))


def render_partial(view: NodeView, previous_chains: Iterable[str] | None, unchanged: Iterable[str], *,
                   nfacct: bool = False, active_out: set[str] | None = None) -> str:
    """A partial sync's restore input (upstream's MinimizeIPTablesRestore, the default since 1.27):
    like render(), but the per-service chains of the Services in `unchanged` ("namespace/name")
    are neither declared nor written, so iptables-restore --noflush leaves them as they are. The
    top-level chains (KUBE-SERVICES, KUBE-NODEPORTS, …) are always rewritten whole. `active_out`
    receives the per-service chains the view uses (what active_chains() gives), at no extra cost."""
    return _assemble(_sync(view, previous_chains, nfacct, frozenset(unchanged), active_out))


def service_fingerprints(view: NodeView) -> dict[str, str]:
    """"namespace/name" -> a digest of everything that shapes its chains on this node (its ports
    with their endpoints, the node, the config, large-cluster mode): equal digests, equal chains."""
    import hashlib

    services = _services(view)
    large = sum(len(_v4_endpoints(sp)) for sp in services) > LARGE_CLUSTER_ENDPOINTS_THRESHOLD
    context = repr((view.node_name, view.node_ips, view.zone, view.config, large))
    by_service: dict[str, list[str]] = {}
    for sp in services:
        by_service.setdefault(sp.namespaced_name, []).append(repr(sp))
    return {k: hashlib.sha1("\n".join([context, *v]).encode()).hexdigest() for k, v in by_service.items()}


def _assemble(tables: dict[str, tuple[list[str], list[str]]]) -> str:
    out: list[str] = []
    for table, (chains, rules) in tables.items():
        out += [f"*{table}", *chains, *rules, "COMMIT"]
    return "\n".join(out) + "\n"


def _sync(view: NodeView, previous_chains: Iterable[str] | None, nfacct: bool,
          unchanged: frozenset[str] = frozenset(), active_out: set[str] | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """syncProxyRules' four line buffers: {table: (chain declarations, rules)}. `unchanged`:
    "namespace/name" of Services whose per-service chains a partial sync leaves as they are."""
    cfg = view.config
    mark = go_mark(cfg.masquerade_bit)
    services = _services(view)

    filter_chains, filter_rules, nat_chains, nat_rules = _Buf(), _Buf(), _Buf(), _Buf()
    for chain in FILTER_CHAINS:
        filter_chains.write(f":{chain} - [0:0]")
    for chain in NAT_CHAINS:
        nat_chains.write(f":{chain} - [0:0]")

    nat_rules.write("-A KUBE-POSTROUTING", f"-m mark ! --mark {mark}/{mark}", "-j RETURN")
    # Clear the mark so a packet re-traversing the stack is not masqueraded twice.
    nat_rules.write("-A KUBE-POSTROUTING", f"-j MARK --xor-mark {mark}")
    nat_rules.write(
        "-A KUBE-POSTROUTING", "-m comment --comment", _q("kubernetes service traffic requiring SNAT"),
        "-j MASQUERADE", "--random-fully" if cfg.random_fully else "",
    )
    nat_rules.write("-A KUBE-MARK-MASQ", f"-j MARK --or-mark {mark}")

    if cfg.localhost_nodeports and cfg.fixed(versions.LOCALNET_DROP):
        # route_localnet opens a hole (CVE-2020-8558); kubelet keeps an identical copy of this rule.
        filter_chains.write(f":{KUBELET_FIREWALL_CHAIN} - [0:0]")
        filter_rules.write(
            f"-A {KUBELET_FIREWALL_CHAIN}", "-m comment --comment", _q("block incoming localnet connections"),
            "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
        )

    if cfg.cluster_cidr:
        if_local, if_not_local = f"-s {cfg.cluster_cidr}", f"! -s {cfg.cluster_cidr}"
    else:
        if_local = if_not_local = None  # no local-traffic detector

    # upstream's proxier.nodeIP: the node's primary IP of this family.
    node_ip = next((ipaddress.ip_address(ip) for ip in view.node_ips if not _is_v6(ip)), None)
    per_service = [(sp, _v4_endpoints(sp)) for sp in services]
    large_cluster = sum(len(eps) for _, eps in per_service) > LARGE_CLUSTER_ENDPOINTS_THRESHOLD

    def svc_comment(text: str) -> str:
        return "" if large_cluster else f"-m comment --comment {text}"

    active: set[str] = set()
    for sp, eps in per_service:
        cat = _categorize(view, sp, eps)
        name = sp.port_name_string
        proto = sp.proto
        match = f"-m {proto} -p {proto}"
        port = str(sp.port)
        ext_local = _external_policy_local(sp)

        svc_chain = names.service_chain(sp)
        svl_chain = names.local_chain(sp)
        ext_chain = names.external_chain(sp)
        fw_chain = names.firewall_chain(sp)

        uses_cluster_chain = bool(cat.cluster) and _uses_cluster(sp)
        uses_local_chain = bool(cat.local) and _uses_local(sp)

        internal_chain = svl_chain if sp.internal_policy_local else svc_chain
        has_internal = cat.has_any and not (sp.internal_policy_local and not cat.local)
        external_policy_chain = svl_chain if ext_local else svc_chain
        has_external = cat.has_any and not (ext_local and not cat.local)
        uses_ext_chain = cat.has_any and sp.has_external
        uses_fw = cat.has_any and bool(sp.load_balancer_ips) and bool(sp.load_balancer_source_ranges)
        lb_chain = fw_chain if uses_fw else ext_chain

        if not cat.has_any:
            int_target = ext_target = "REJECT"
            int_comment = ext_comment = _q(f"{name} has no endpoints")
        else:
            int_target = ext_target = int_comment = ext_comment = ""
            if not has_internal:
                int_target, int_comment = "DROP", _q(f"{name} has no local endpoints")
            if not has_external:
                ext_target, ext_comment = "DROP", _q(f"{name} has no local endpoints")

        # Capture the cluster IP.
        if has_internal:
            nat_rules.write(
                "-A KUBE-SERVICES", "-m comment --comment", _q(f"{name} cluster IP"), match,
                f"-d {sp.cluster_ip} --dport {port}", f"-j {internal_chain}",
            )
        else:
            filter_rules.write(
                "-A KUBE-SERVICES", f"-m comment --comment {int_comment}", match,
                f"-d {sp.cluster_ip} --dport {port}", f"-j {int_target}",
            )

        # Capture external IPs.
        for ip in sp.external_ips:
            if cat.has_any:
                nat_rules.write(
                    "-A KUBE-SERVICES", "-m comment --comment", _q(f"{name} external IP"), match,
                    f"-d {ip} --dport {port}", f"-j {ext_chain}",
                )
            if not has_external:
                filter_rules.write(
                    "-A KUBE-EXTERNAL-SERVICES", f"-m comment --comment {ext_comment}", match,
                    f"-d {ip} --dport {port}", f"-j {ext_target}",
                )

        # Capture load-balancer ingress.
        for ip in sp.load_balancer_ips:
            if cat.has_any:
                nat_rules.write(
                    "-A KUBE-SERVICES", "-m comment --comment", _q(f"{name} loadbalancer IP"), match,
                    f"-d {ip} --dport {port}", f"-j {lb_chain}",
                )
            if uses_fw:
                filter_rules.write(
                    "-A KUBE-PROXY-FIREWALL", "-m comment --comment", _q(f"{name} traffic not accepted by {fw_chain}"),
                    match, f"-d {ip} --dport {port}", "-j DROP",
                )
        if not has_external:
            for ip in sp.load_balancer_ips:
                filter_rules.write(
                    "-A KUBE-EXTERNAL-SERVICES", f"-m comment --comment {ext_comment}", match,
                    f"-d {ip} --dport {port}", f"-j {ext_target}",
                )

        # Capture node ports.
        if sp.node_port:
            np = str(sp.node_port)
            if cat.has_any:
                if cfg.localhost_nodeports and nfacct and cfg.switch(versions.IPT_NFACCT_LOCALHOST):
                    nat_rules.write(
                        "-A KUBE-NODEPORTS", f"-m comment --comment {name}", match,
                        f"-d 127.0.0.0/8 --dport {np}", f"-m nfacct --nfacct-name {NFACCT_LOCALHOST_NP}",
                        f"-j {ext_chain}",
                    )
                nat_rules.write(
                    "-A KUBE-NODEPORTS", f"-m comment --comment {name}", match, f"--dport {np}", f"-j {ext_chain}",
                )
            if not has_external:
                filter_rules.write(
                    "-A KUBE-EXTERNAL-SERVICES", f"-m comment --comment {ext_comment}",
                    "-m addrtype --dst-type LOCAL", match, f"--dport {np}", f"-j {ext_target}",
                )

        # Health check node port: upstream only keeps it for LoadBalancers with eTP=Local.
        if sp.health_check_node_port and ext_local:
            filter_rules.write(
                "-A KUBE-NODEPORTS", "-m comment --comment", _q(f"{name} health check node port"),
                f"-m tcp -p tcp --dport {sp.health_check_node_port}", "-j ACCEPT",
            )

        # The service's own chains. A partial sync (upstream's MinimizeIPTablesRestore) leaves out
        # those of unchanged Services: still active (not deleted), just not rewritten.
        svc_chains, svc_rules = (_Buf(), _Buf()) if sp.namespaced_name in unchanged else (nat_chains, nat_rules)

        # Internal traffic: masquerade off-cluster sources reaching the cluster IP.
        if has_internal:
            args = ("-m comment --comment", _q(f"{name} cluster IP"), match, f"-d {sp.cluster_ip} --dport {port}")
            if cfg.masquerade_all:
                svc_rules.write(f"-A {internal_chain}", *args, "-j KUBE-MARK-MASQ")
            elif if_not_local:
                svc_rules.write(f"-A {internal_chain}", *args, if_not_local, "-j KUBE-MARK-MASQ")

        # External traffic: everything for NodePort/externalIP/LB goes through the EXT chain.
        if uses_ext_chain:
            svc_chains.write(f":{ext_chain} - [0:0]")
            active.add(ext_chain)
            if not ext_local:
                svc_rules.write(
                    f"-A {ext_chain}", "-m comment --comment", _q(f"masquerade traffic for {name} external destinations"),
                    "-j KUBE-MARK-MASQ",
                )
            else:
                if if_local:
                    # Pod -> external destination is short-circuited to the cluster chain.
                    svc_rules.write(
                        f"-A {ext_chain}", "-m comment --comment", _q(f"pod traffic for {name} external destinations"),
                        if_local, f"-j {svc_chain}",
                    )
                svc_rules.write(
                    f"-A {ext_chain}", "-m comment --comment",
                    _q(f"masquerade LOCAL traffic for {name} external destinations"),
                    "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
                )
                svc_rules.write(
                    f"-A {ext_chain}", "-m comment --comment", _q(f"route LOCAL traffic for {name} external destinations"),
                    f"-m addrtype --src-type LOCAL -j {svc_chain}",
                )
            if has_external:
                svc_rules.write(f"-A {ext_chain}", f"-j {external_policy_chain}")

        # LoadBalancer source ranges.
        if uses_fw:
            svc_chains.write(f":{fw_chain} - [0:0]")
            active.add(fw_chain)
            head = (f"-A {fw_chain}", "-m comment --comment", _q(f"{name} loadbalancer IP"))
            allow_from_node = False
            for raw in sp.load_balancer_source_ranges:
                net = ipaddress.ip_network(raw.strip(), strict=False)
                svc_rules.write(*head, f"-s {net}", f"-j {ext_chain}")
                if node_ip is not None and node_ip in net:
                    allow_from_node = True
            # An LB VIP bound locally loops node->VIP traffic back with the VIP as source.
            if allow_from_node:
                for ip in sp.load_balancer_ips:
                    svc_rules.write(*head, f"-s {ip}", f"-j {ext_chain}")
            svc_rules.write(
                f"-A {fw_chain}", "-m comment --comment",
                _q(f"other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL"),
            )

        if uses_cluster_chain:
            svc_chains.write(f":{svc_chain} - [0:0]")
            active.add(svc_chain)
            _write_service_to_endpoints(svc_rules, sp, svc_chain, cat.cluster, svc_comment)
        if uses_local_chain:
            svc_chains.write(f":{svl_chain} - [0:0]")
            active.add(svl_chain)
            _write_service_to_endpoints(svc_rules, sp, svl_chain, cat.local, svc_comment)

        for ep in cat.all_reachable:
            sep = names.endpoint_chain(sp, ep)
            svc_chains.write(f":{sep} - [0:0]")
            active.add(sep)
            head = (f"-A {sep}", svc_comment(name))
            svc_rules.write(*head, f"-s {ep.ip}", "-j KUBE-MARK-MASQ")  # hairpin
            affinity = f"-m recent --name {sep} --set" if sp.session_affinity_timeout else ""
            svc_rules.write(*head, affinity, match, f"-j DNAT --to-destination {ep.address}")

    if active_out is not None:
        active_out.update(active)
    # Stale per-service chains: a chain line flushes them, then -X deletes them.
    for chain in sorted(set(previous_chains or ()) - active):
        if names.is_service_chain_name(chain):
            nat_chains.write(f":{chain} - [0:0]")
            nat_rules.write(f"-X {chain}")

    # NodePort dispatch: must be the last rule of KUBE-SERVICES.
    np_comment = _q("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
    destinations = _nodeport_destinations(view)
    if destinations is None:
        nat_rules.write(
            "-A KUBE-SERVICES", f"-m comment --comment {np_comment}", "-m addrtype --dst-type LOCAL",
            "" if cfg.localhost_nodeports else "! -d 127.0.0.0/8", "-j KUBE-NODEPORTS",
        )
    else:
        for ip in destinations:
            nat_rules.write("-A KUBE-SERVICES", f"-m comment --comment {np_comment}", f"-d {ip}", "-j KUBE-NODEPORTS")

    # INVALID drop works around spurious RSTs (#74839) unless conntrack is liberal (since 1.29).
    if cfg.fixed(versions.INVALID_DROP) and \
            not (cfg.conntrack_tcp_be_liberal and cfg.switch(versions.IPT_INVALID_DROP_UNLESS_LIBERAL)):
        filter_rules.write(
            "-A KUBE-FORWARD -m conntrack --ctstate INVALID",
            f"-m nfacct --nfacct-name {NFACCT_CT_INVALID}" if nfacct and cfg.switch(versions.IPT_NFACCT_INVALID)
            else "", "-j DROP",
        )
    filter_rules.write(
        "-A KUBE-FORWARD", "-m comment --comment", _q("kubernetes forwarding rules"),
        f"-m mark --mark {mark}/{mark}", "-j ACCEPT",
    )
    filter_rules.write(
        "-A KUBE-FORWARD", "-m comment --comment", _q("kubernetes forwarding conntrack rule"),
        "-m conntrack --ctstate RELATED,ESTABLISHED", "-j ACCEPT",
    )

    return {"filter": (filter_chains.lines, filter_rules.lines), "nat": (nat_chains.lines, nat_rules.lines)}


def _write_service_to_endpoints(buf: _Buf, sp: ServicePort, chain: str, endpoints, svc_comment) -> None:
    """writeServiceToEndpointRules: affinity checks first, then the probability cascade."""
    name = sp.port_name_string
    if sp.session_affinity_timeout:
        for ep in endpoints:
            sep = names.endpoint_chain(sp, ep)
            buf.write(
                f"-A {chain}", svc_comment(_q(f"{name} -> {ep.address}")),
                f"-m recent --name {sep} --rcheck --seconds {sp.session_affinity_timeout} --reap", f"-j {sep}",
            )
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        stat = f"-m statistic --mode random --probability {compute_probability(n - i)}" if i < n - 1 else ""
        buf.write(f"-A {chain}", svc_comment(_q(f"{name} -> {ep.address}")), stat, f"-j {names.endpoint_chain(sp, ep)}")


# --- first-sync jump rules ----------------------------------------------------------------------

def _jump_spec(comment: str, extra: str, dst: str) -> str:
    parts = [extra] if extra else []
    if comment:
        parts.append(f"-m comment --comment {_q(comment)}")
    parts.append(f"-j {dst}")
    return " ".join(parts)


def jump_rules() -> dict[str, list[str]]:
    """Jumps from built-in chains, in iptables-save order after kube-proxy's EnsureRule(Prepend) calls
    on chains that had none of them (a fresh node). Each prepend lands at position 1, so within a
    built-in chain the list order is reversed; KUBE-FIREWALL (prepended last) ends up first. On real
    nodes kubelet usually created that jump earlier, leaving it below kube-proxy's."""
    per_chain: dict[tuple[str, str], list[str]] = {}
    for table, dst, src, comment, extra in _JUMP_CHAINS:
        per_chain.setdefault((table, src), []).insert(0, f"-A {src} {_jump_spec(comment, extra, dst)}")
    out: dict[str, list[str]] = {}
    for table, builtins in _BUILTIN_ORDER.items():
        out[table] = [rule for src in builtins for rule in per_chain.get((table, src), [])]
    return out


def bootstrap(view: NodeView, previous_chains: Iterable[str] | None = None, *, nfacct: bool = False,
              active_out: set[str] | None = None) -> str:
    """render(view) plus the built-in-chain jumps, in one `iptables-restore --noflush` transaction.

    Meant for a node's first sync (jumps not present yet): the jumps are inserted at the top of each
    built-in chain (`-I CHAIN n`) so the saved order equals jump_rules(). Built-in chains are not
    declared, so other rules in them (and their policies) are kept.
    """
    tables = _sync(view, previous_chains, nfacct, active_out=active_out)
    builtins = {c for chains in _BUILTIN_ORDER.values() for c in chains}
    for table, rules in jump_rules().items():
        chains, body = tables[table]
        declared = {line[1:].split()[0] for line in chains}
        # upstream EnsureChain()s every jump target, e.g. KUBE-FIREWALL without localhost NodePorts.
        targets = {rule.rsplit("-j ", 1)[1] for rule in rules}
        chains = chains + [f":{c} - [0:0]" for c in sorted(targets - declared - builtins)]
        position: dict[str, int] = {}
        inserts = []
        for rule in rules:
            _, chain, spec = rule.split(" ", 2)
            position[chain] = position.get(chain, 0) + 1
            inserts.append(f"-I {chain} {position[chain]} {spec}")
        tables[table] = (chains, inserts + body)
    return _assemble(tables)


# --- iptables-save comparison -------------------------------------------------------------------

_BASE_OPTS = {"-s": "-s", "--source": "-s", "-d": "-d", "--destination": "-d", "-p": "-p", "--protocol": "-p",
              "-i": "-i", "--in-interface": "-i", "-o": "-o", "--out-interface": "-o"}
_BASE_ORDER = ("-s", "-d", "-i", "-o", "-p")
# Options iptables-save adds with their default values.
_DEFAULT_MATCH_OPTS = {"recent": {("--mask", "255.255.255.255"), ("--rsource", "")}}
_DEFAULT_TARGET_OPTS = {"REJECT": {("--reject-with", "icmp-port-unreachable")}}


def _norm_addr(value: str) -> str:
    return value.removesuffix("/32")


def _norm_probability(value: str) -> str:
    """Map the kernel's u32 read-back (`%.11f`) and our `%0.10f` to the same 1/n string."""
    p = float(value)
    q = round(p * 0x80000000)
    if p > 0:
        n = round(1.0 / p)
        if n >= 1 and round(0x80000000 / n) == q:
            return compute_probability(n)
    return "%.11f" % (q / 0x80000000)


def _norm_mark_target(opts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """libxt_MARK saves --or-mark/--xor-mark/--set-mark as --set-xmark value/mask."""
    out = []
    for opt, val in opts:
        if opt == "--or-mark":
            out.append(("--set-xmark", f"{val}/{val}"))
        elif opt == "--xor-mark":
            out.append(("--set-xmark", f"{val}/0x0"))
        elif opt == "--set-mark":
            v, _, m = val.partition("/")
            out.append(("--set-xmark", f"{v}/{m or '0xffffffff'}"))
        elif opt == "--and-mark":
            out.append(("--set-xmark", f"0x0/{int(val, 0) ^ 0xFFFFFFFF:#x}"))
        else:
            out.append((opt, val))
    return out


def _norm_hex(val: str) -> str:
    """0x00004000/0x4000 and 0x4000/0x4000 mean the same mark."""
    parts = val.split("/")
    try:
        return "/".join(f"{int(p, 0):#x}" for p in parts)
    except ValueError:
        return val


def _normalize_rule(table: str, tokens: list[str]) -> str:
    chain = tokens[1]
    base: list[tuple[str, str, str]] = []
    matches: list[tuple[str, list[tuple[str, str]]]] = []
    target = ""
    target_opts: list[tuple[str, str]] = []
    module: list[tuple[str, str]] | None = None
    neg = ""
    i = 2
    while i < len(tokens):
        tok = tokens[i]
        if tok == "!":
            neg = "! "
            i += 1
            continue
        if tok in _BASE_OPTS:
            opt = _BASE_OPTS[tok]
            val = tokens[i + 1]
            base.append((neg, opt, _norm_addr(val) if opt in ("-s", "-d") else val))
            neg = ""
            i += 2
            continue
        if tok in ("-m", "--match"):
            module = []
            matches.append((tokens[i + 1], module))
            i += 2
            continue
        if tok in ("-j", "--jump", "-g", "--goto"):
            target = ("-g " if tok in ("-g", "--goto") else "-j ") + tokens[i + 1]
            rest = tokens[i + 2:]
            j = 0
            while j < len(rest):
                vals = []
                k = j + 1
                while k < len(rest) and not rest[k].startswith("-"):
                    vals.append(rest[k])
                    k += 1
                target_opts.append((rest[j], " ".join(vals)))
                j = k
            break
        # A match option: it takes the following non-option tokens as its value.
        vals = []
        k = i + 1
        while k < len(tokens) and not tokens[k].startswith("-") and tokens[k] != "!":
            vals.append(tokens[k])
            k += 1
        value = " ".join(vals)
        if tok == "--probability":
            value = _norm_probability(value)
        elif tok == "--mark":
            value = _norm_hex(value)
        if module is None:
            module = []
            matches.append(("", module))
        module.append((neg + tok, value))
        neg = ""
        i = k

    parts = [f"{table} -A {chain}"]
    for opt in _BASE_ORDER:
        parts.extend(f"{n}{o} {v}" for n, o, v in sorted(base) if o == opt)
    for mod, opts in sorted(matches, key=lambda m: (m[0], sorted(m[1]))):
        kept = sorted(set(opts) - _DEFAULT_MATCH_OPTS.get(mod, set()))
        parts.append(f"-m {mod}" + "".join(f" {o} {shlex.quote(v)}" if v else f" {o}" for o, v in kept))
    if target:
        name = target.split()[1]
        opts = _norm_mark_target(target_opts) if name == "MARK" else target_opts
        opts = [(o, _norm_hex(v)) if o == "--set-xmark" else (o, v) for o, v in opts]
        kept = sorted(set(opts) - _DEFAULT_TARGET_OPTS.get(name, set()))
        parts.append(target + "".join(f" {o} {v}" if v else f" {o}" for o, v in kept))
    return " ".join(parts)


def _normalize(text: str) -> list[str]:
    """The state a restore input leaves (or a save shows): rules and chains, not actions."""
    out: list[str] = []
    deleted: set[str] = set()
    table = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and "]" in line:  # iptables-save -c counters
            line = line.split("]", 1)[1].strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = line[1:]
            continue
        if line.startswith(":"):
            out.append(f"{table} :{line[1:].split()[0]}")
            continue
        tokens = shlex.split(line)
        if tokens[0] in ("-X", "--delete-chain"):
            deleted.update(f"{table} :{c}" for c in tokens[1:])
            continue
        if tokens[0] in ("-F", "--flush"):
            continue
        if tokens[0] in ("-I", "--insert"):
            # -I CHAIN [N] rule...: same rule as -A for comparison purposes.
            rest = tokens[2:]
            if rest and rest[0].isdigit():
                rest = rest[1:]
            tokens = ["-A", tokens[1], *rest]
        out.append(_normalize_rule(table, tokens))
    # A chain declared only to be flushed and deleted (-X) in the same input is not state.
    return [line for line in out if line not in deleted]


def normalize_saved(text: str) -> list[str]:
    """`iptables-save` output -> normal form lines (`<table> -A CHAIN …` / `<table> :CHAIN`), in input order.

    Undoes what iptables does to rules on the way back: /32 suffixes, %.11f probabilities, match
    and option reordering, MARK shorthand rewritten as --set-xmark, default options added.
    """
    return _normalize(text)


def normalize_rendered(text: str) -> list[str]:
    """render()/bootstrap() output in the same normal form as normalize_saved.

    `-I CHAIN n` counts as the rule it inserts; chains deleted with `-X` are left out.
    """
    return _normalize(text)


def nat_chains(saved: str) -> set[str]:
    """Chain names declared in the *nat section of iptables-save output (GetChainsFromTable)."""
    out: set[str] = set()
    table = ""
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":") and table == "nat":
            out.add(line[1:].split()[0])
    return out
