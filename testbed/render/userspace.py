"""kube-proxy's userspace mode as pure functions: NodeView -> proxy table + `iptables-restore` input.

The userspace proxier (pkg/proxy/userspace, removed in Kubernetes 1.26; read at the v1.2x tags)
opens one listening socket per service port (its "proxy port") and programs iptables so that
traffic for the service lands on that socket; the proxy process (`testbed.userspace_proxy`) then
picks an endpoint round robin and copies bytes. This module decides the proxy ports and writes
both halves: `plan()` -> `UserspacePlan` (the table the proxy reads, JSON), and
`iptables_restore(plan, node_ip)` -> the rules.

Rules, as upstream's openPortal/openNodePort write them (proxier.go, `iptablesCommonPortalArgs`,
`iptablesContainerPortalArgs`, `iptablesHostPortalArgs`, `iptablesHostNodePortArgs`,
`iptablesNonLocalNodePortArgs`), with the proxy bound to 0.0.0.0 (kube-proxy's default
--bind-address), so container traffic is REDIRECTed and host traffic DNATed to <nodeIP>:<proxyPort>:

  nat KUBE-PORTALS-CONTAINER   (from PREROUTING, prepended)  ClusterIP, externalIPs, LB ingress IPs
      -m comment --comment ns/svc:port -p tcp -m tcp --dport 80 -d 10.96.0.20/32 -j REDIRECT --to-ports P
  nat KUBE-PORTALS-HOST        (from OUTPUT, prepended)
      ... -d 10.96.0.20/32 -j DNAT --to-destination <nodeIP>:P
  nat KUBE-NODEPORT-CONTAINER  (from PREROUTING, appended, -m addrtype --dst-type LOCAL)
      ... --dport <nodePort> -j REDIRECT --to-ports P
  nat KUBE-NODEPORT-HOST       (from OUTPUT, appended, -m addrtype --dst-type LOCAL)
      ... --dport <nodePort> -j DNAT --to-destination <nodeIP>:P
  filter KUBE-NODEPORT-NON-LOCAL (from INPUT, prepended)
      ... --dport P -m state --state NEW -j ACCEPT          (note: the *proxy* port)

An externalIP ("isExternal" portal) gets two container rules (`-m physdev ! --physdev-is-in`, and
`-m addrtype --dst-type LOCAL`) and a host rule with `-m addrtype --dst-type LOCAL`.

loadBalancerSourceRanges are not applied, as upstream: the userspace proxier never implemented them
(its ServiceInfo has no source ranges; openPortal REDIRECTs an LB ingress IP from any source).

Documented differences from upstream:
- Upstream programs rules one `iptables` call at a time (EnsureRule, in Go map order, never
  deleting a rule it did not know about); here every sync rewrites the five chains in one
  `iptables-restore --noflush` transaction, services sorted by key, so output is deterministic.
  The jumps from the built-in chains are part of the text when `jumps=True` (a node's first sync).
- Proxy ports: upstream takes them from --proxy-port-range at random (or lets the kernel choose)
  and takes a new one whenever a service port's config changes. Here they are allocated
  deterministically (a hash of the key into PROXY_PORT_RANGE, probing upward) and kept for as
  long as the service port exists.
- Endpoints: upstream's userspace proxier read v1 Endpoints (ready addresses only) and ignored
  traffic policies. Here the usable endpoints are `categorize_endpoints`' cluster set with the
  traffic policies ignored: ready ones, falling back to serving+terminating ones.
- SCTP, headless and IPv6 service ports are skipped (upstream's newProxySocket: "SCTP is not
  supported for user space proxy"; its REDIRECT/DNAT rules were IPv4-only, "TODO: Can we REDIRECT
  with IPv6?").
- The proxy process "claims" each node port (holds a socket open on it, as upstream's
  claimNodePort); upstream also claimed external IPs that were local addresses, the proxy does not.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from testbed.proxy import NodeView, ServicePort, categorize_endpoints

PROXY_PORT_RANGE = (36000, 39999)  # inclusive
UDP_IDLE_TIMEOUT = 0.25  # kube-proxy --udp-timeout default (250ms)
DEFAULT_AFFINITY_SECONDS = 10800  # v1.DefaultClientIPServiceAffinitySeconds

CONTAINER_PORTAL_CHAIN = "KUBE-PORTALS-CONTAINER"
HOST_PORTAL_CHAIN = "KUBE-PORTALS-HOST"
CONTAINER_NODEPORT_CHAIN = "KUBE-NODEPORT-CONTAINER"
HOST_NODEPORT_CHAIN = "KUBE-NODEPORT-HOST"
NON_LOCAL_NODEPORT_CHAIN = "KUBE-NODEPORT-NON-LOCAL"

NAT_CHAINS = (CONTAINER_PORTAL_CHAIN, HOST_PORTAL_CHAIN, CONTAINER_NODEPORT_CHAIN, HOST_NODEPORT_CHAIN)
FILTER_CHAINS = (NON_LOCAL_NODEPORT_CHAIN,)

_PORTALS_COMMENT = "handle ClusterIPs; NOTE: this must be before the NodePort rules"
_NODEPORTS_COMMENT = "handle service NodePorts; NOTE: this must be the last rule in the chain"
_NON_LOCAL_COMMENT = "Ensure that non-local NodePort traffic can flow"


@dataclass(frozen=True)
class ProxyService:
    """One proxied service port: what the proxy process listens on and balances over."""

    key: str  # "ns/name[:portname]/proto", e.g. "default/web:http/tcp"
    name: str  # upstream's ServicePortName.String(): the rules' comment
    protocol: str  # "TCP" | "UDP"
    proxy_port: int
    cluster_ip: str
    port: int
    node_port: int | None = None
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    affinity_timeout: int | None = None  # seconds when sessionAffinity=ClientIP, else None
    endpoints: tuple[str, ...] = ()  # "ip:port", kube-proxy's order (sorted by that string)

    @property
    def proto(self) -> str:
        return self.protocol.lower()


@dataclass(frozen=True)
class UserspacePlan:
    services: tuple[ProxyService, ...] = ()  # sorted by key
    udp_idle_timeout: float = UDP_IDLE_TIMEOUT
    shuffle: bool = True  # the proxy shuffles each new endpoint list, as upstream's LoadBalancerRR

    @property
    def ports(self) -> dict[str, int]:
        """key -> proxy port: feed it to the next plan() to keep the ports stable."""
        return {s.key: s.proxy_port for s in self.services}

    def service(self, key: str) -> ProxyService:
        for s in self.services:
            if s.key == key:
                return s
        raise KeyError(key)

    def table(self) -> dict[str, Any]:
        """The JSON document the proxy process reads (`--table FILE`)."""
        services = {}
        for s in self.services:
            d = asdict(s)
            d["external_ips"] = list(s.external_ips)
            d["load_balancer_ips"] = list(s.load_balancer_ips)
            d["endpoints"] = list(s.endpoints)
            services[s.key] = d
        return {"version": 1, "udp_idle_timeout": self.udp_idle_timeout, "shuffle": self.shuffle, "services": services}

    def to_json(self) -> str:
        return json.dumps(self.table(), indent=1)

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> UserspacePlan:
        doc = json.loads(data) if isinstance(data, (str, bytes)) else data
        services = []
        for key, d in doc.get("services", {}).items():
            services.append(ProxyService(
                key=key, name=d["name"], protocol=d["protocol"], proxy_port=int(d["proxy_port"]),
                cluster_ip=d["cluster_ip"], port=int(d["port"]), node_port=d.get("node_port"),
                external_ips=tuple(d.get("external_ips", ())), load_balancer_ips=tuple(d.get("load_balancer_ips", ())),
                affinity_timeout=d.get("affinity_timeout"), endpoints=tuple(d.get("endpoints", ())),
            ))
        return cls(tuple(sorted(services, key=lambda s: s.key)), float(doc.get("udp_idle_timeout", UDP_IDLE_TIMEOUT)),
                   bool(doc.get("shuffle", True)))


def service_key(sp: ServicePort) -> str:
    return f"{sp.port_name_string}/{sp.proto}"


def _proxied(sp: ServicePort) -> bool:
    """upstream ShouldSkipService (headless/ExternalName) plus newProxySocket's TCP/UDP; IPv4 only."""
    return bool(sp.cluster_ip) and sp.cluster_ip != "None" and sp.protocol in ("TCP", "UDP") and ":" not in sp.cluster_ip


def usable_endpoints(sp: ServicePort, node_name: str) -> tuple[str, ...]:
    """The endpoints the proxy balances over: the cluster set, traffic policies ignored (the userspace
    proxier never implemented them), IPv4 only, in kube-proxy's order."""
    plain = replace(sp, internal_policy_local=False, external_policy_local=False)
    return tuple(e.address for e in categorize_endpoints(plain, node_name).cluster if ":" not in e.ip)


def _preferred_port(key: str, lo: int, hi: int) -> int:
    return lo + int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % (hi - lo + 1)


def allocate_ports(keys: list[str], ports: dict[str, int] | None = None,
                   port_range: tuple[int, int] = PROXY_PORT_RANGE) -> dict[str, int]:
    """Keep every key's port from `ports`; give new keys their hashed port, probing upward (wrapping)."""
    lo, hi = port_range
    ports = ports or {}
    out: dict[str, int] = {}
    used: set[int] = set()
    for key in sorted(keys):
        p = ports.get(key)
        if isinstance(p, int) and 0 < p < 65536 and p not in used:
            out[key] = p
            used.add(p)
    size = hi - lo + 1
    for key in sorted(keys):
        if key in out:
            continue
        start = _preferred_port(key, lo, hi)
        for i in range(size):
            p = lo + (start - lo + i) % size
            if p not in used:
                break
        else:
            raise RuntimeError(f"proxy port range {lo}-{hi} is exhausted")
        out[key] = p
        used.add(p)
    return out


def plan(view: NodeView, ports: dict[str, int] | None = None, *, shuffle: bool = True,
         udp_idle_timeout: float = UDP_IDLE_TIMEOUT, port_range: tuple[int, int] = PROXY_PORT_RANGE) -> UserspacePlan:
    """Assign each proxied service port a proxy port (stable across plans given the last `ports`)."""
    sps = {service_key(sp): sp for sp in view.services if _proxied(sp)}
    assigned = allocate_ports(list(sps), ports, port_range)
    services = []
    for key in sorted(sps):
        sp = sps[key]
        affinity = None
        if sp.session_affinity_timeout is not None:
            affinity = sp.session_affinity_timeout or DEFAULT_AFFINITY_SECONDS
        services.append(ProxyService(
            key=key, name=sp.port_name_string, protocol=sp.protocol, proxy_port=assigned[key],
            cluster_ip=sp.cluster_ip, port=sp.port, node_port=sp.node_port or None,
            external_ips=tuple(ip for ip in sp.external_ips if ":" not in ip),
            load_balancer_ips=tuple(ip for ip in sp.load_balancer_ips if ":" not in ip),
            affinity_timeout=affinity, endpoints=usable_endpoints(sp, view.node_name),
        ))
    return UserspacePlan(tuple(services), udp_idle_timeout, shuffle)


# --- iptables -----------------------------------------------------------------------------------

def _common(s: ProxyService, dest_ip: str | None, dport: int, physdev: bool = False, dst_local: bool = False) -> str:
    """iptablesCommonPortalArgs: comment, protocol, --dport, then -d, physdev, addrtype."""
    parts = [f"-m comment --comment {s.name}", f"-p {s.proto} -m {s.proto}", f"--dport {dport}"]
    if dest_ip is not None:
        parts.append(f"-d {dest_ip}/32")
    if physdev:
        parts.append("-m physdev ! --physdev-is-in")
    if dst_local:
        parts.append("-m addrtype --dst-type LOCAL")
    return " ".join(parts)


def _redirect(s: ProxyService) -> str:
    return f"-j REDIRECT --to-ports {s.proxy_port}"


def _dnat(s: ProxyService, node_ip: str) -> str:
    return f"-j DNAT --to-destination {node_ip}:{s.proxy_port}"


def service_rules(s: ProxyService, node_ip: str) -> dict[str, list[str]]:
    """chain -> rules (without "-A CHAIN") for one service port, in openPortal's order."""
    out: dict[str, list[str]] = {c: [] for c in NAT_CHAINS + FILTER_CHAINS}

    def portal(ip: str, external: bool) -> None:  # openOnePortal
        out[CONTAINER_PORTAL_CHAIN].append(f"{_common(s, ip, s.port, physdev=external)} {_redirect(s)}")
        if external:
            out[CONTAINER_PORTAL_CHAIN].append(f"{_common(s, ip, s.port, dst_local=True)} {_redirect(s)}")
            out[HOST_PORTAL_CHAIN].append(f"{_common(s, ip, s.port, dst_local=True)} {_dnat(s, node_ip)}")
        else:
            out[HOST_PORTAL_CHAIN].append(f"{_common(s, ip, s.port)} {_dnat(s, node_ip)}")

    portal(s.cluster_ip, False)
    for ip in s.external_ips:
        portal(ip, True)
    for ip in s.load_balancer_ips:
        portal(ip, False)
    if s.node_port:  # openNodePort
        out[CONTAINER_NODEPORT_CHAIN].append(f"{_common(s, None, s.node_port)} {_redirect(s)}")
        out[HOST_NODEPORT_CHAIN].append(f"{_common(s, None, s.node_port)} {_dnat(s, node_ip)}")
        out[NON_LOCAL_NODEPORT_CHAIN].append(f"{_common(s, None, s.proxy_port)} -m state --state NEW -j ACCEPT")
    return out


def jump_rules() -> dict[str, list[str]]:
    """iptablesInit's jumps, as iptables-save lists them on a fresh node (table -> rules)."""
    return {
        "filter": [f'-A INPUT -m comment --comment "{_NON_LOCAL_COMMENT}" -j {NON_LOCAL_NODEPORT_CHAIN}'],
        "nat": [
            f'-A PREROUTING -m comment --comment "{_PORTALS_COMMENT}" -j {CONTAINER_PORTAL_CHAIN}',
            f'-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "{_NODEPORTS_COMMENT}" '
            f'-j {CONTAINER_NODEPORT_CHAIN}',
            f'-A OUTPUT -m comment --comment "{_PORTALS_COMMENT}" -j {HOST_PORTAL_CHAIN}',
            f'-A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment "{_NODEPORTS_COMMENT}" -j {HOST_NODEPORT_CHAIN}',
        ],
    }


def _jump_lines() -> dict[str, list[str]]:
    """The same jumps as restore input: portal jumps are EnsureRule(Prepend) (-I ... 1), node-port
    jumps EnsureRule(Append) (-A), so the portals come before anything else and the node ports last."""
    return {
        "filter": [f'-I INPUT 1 -m comment --comment "{_NON_LOCAL_COMMENT}" -j {NON_LOCAL_NODEPORT_CHAIN}'],
        "nat": [
            f'-I PREROUTING 1 -m comment --comment "{_PORTALS_COMMENT}" -j {CONTAINER_PORTAL_CHAIN}',
            f'-I OUTPUT 1 -m comment --comment "{_PORTALS_COMMENT}" -j {HOST_PORTAL_CHAIN}',
            f'-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "{_NODEPORTS_COMMENT}" '
            f'-j {CONTAINER_NODEPORT_CHAIN}',
            f'-A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment "{_NODEPORTS_COMMENT}" -j {HOST_NODEPORT_CHAIN}',
        ],
    }


def iptables_restore(plan: UserspacePlan, node_ip: str, *, jumps: bool = True) -> str:
    """`iptables-restore --noflush` input: the five chains (declared, so rewritten whole) and their rules.

    `node_ip`: the DNAT target for host traffic (upstream's hostIP). `jumps`: also insert the jumps
    from PREROUTING/OUTPUT/INPUT; meant for the first sync only (with --noflush they would be
    added again on every sync).
    """
    per_chain: dict[str, list[str]] = {c: [] for c in NAT_CHAINS + FILTER_CHAINS}
    for s in plan.services:
        for chain, rules in service_rules(s, node_ip).items():
            per_chain[chain] += [f"-A {chain} {r}" for r in rules]
    jl = _jump_lines() if jumps else {"filter": [], "nat": []}
    out = ["*filter", *(f":{c} - [0:0]" for c in FILTER_CHAINS), *jl["filter"]]
    for c in FILTER_CHAINS:
        out += per_chain[c]
    out += ["COMMIT", "*nat", *(f":{c} - [0:0]" for c in NAT_CHAINS), *jl["nat"]]
    for c in NAT_CHAINS:
        out += per_chain[c]
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def cleanup_restore() -> str:
    """Remove the jumps and the chains (upstream CleanupLeftovers), for a node that has them."""
    out = ["*filter"]
    out += [r.replace("-A ", "-D ", 1) for r in jump_rules()["filter"]]
    out += [f":{c} - [0:0]" for c in FILTER_CHAINS] + [f"-X {c}" for c in FILTER_CHAINS] + ["COMMIT", "*nat"]
    out += [r.replace("-A ", "-D ", 1) for r in jump_rules()["nat"]]
    out += [f":{c} - [0:0]" for c in NAT_CHAINS] + [f"-X {c}" for c in NAT_CHAINS] + ["COMMIT"]
    return "\n".join(out) + "\n"
