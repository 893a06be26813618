"""What kube-proxy on one node knows: the input every proxy-mode renderer takes.

This mirrors kube-proxy's ServicePortMap + EndpointsMap after change tracking, reduced to the
fields the renderers use. It is pure data: `control` builds it, `render.*` turn it into rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from testbed import versions


@dataclass(frozen=True)
class Endpoint:
    """One EndpointSlice endpoint for one service port (kube-proxy's BaseEndpointInfo)."""

    ip: str
    port: int
    node: str | None = None
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    zone_hints: tuple[str, ...] = ()  # EndpointSlice hints.forZones
    node_hints: tuple[str, ...] = ()  # hints.forNodes

    @property
    def address(self) -> str:
        """`ip:port` as kube-proxy formats it (net.JoinHostPort); the sort key too."""
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service (kube-proxy's ServicePortName + BaseServicePortInfo)."""

    namespace: str
    name: str
    port_name: str  # "" for an unnamed port
    protocol: str  # "TCP" | "UDP" | "SCTP"
    port: int
    cluster_ip: str | None  # None for headless / ExternalName (kube-proxy skips those)
    node_port: int | None = None
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    load_balancer_source_ranges: tuple[str, ...] = ()
    session_affinity_timeout: int | None = None  # seconds when sessionAffinity=ClientIP
    external_policy_local: bool = False  # externalTrafficPolicy: Local
    internal_policy_local: bool = False  # internalTrafficPolicy: Local
    health_check_node_port: int | None = None
    scheduler: str | None = None  # IPVS only: per-Service scheduler override
    hints_annotation: bool = False  # topology-mode annotation set (and not disabled): 1.30 and older need it
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def namespaced_name(self) -> str:
        """`ns/name`: kube-proxy tracks changes per Service, not per port."""
        return f"{self.namespace}/{self.name}"

    @property
    def port_name_string(self) -> str:
        """kube-proxy's ServicePortName.String(): `ns/name` plus `:port` only if named."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port_name}" if self.port_name else base

    @property
    def proto(self) -> str:
        return self.protocol.lower()

    @property
    def has_external(self) -> bool:
        """kube-proxy's ExternallyAccessible(): NodePort, externalIPs or LB IPs."""
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)


@dataclass(frozen=True)
class ProxyConfig:
    """kube-proxy's flags that change the rules it writes."""

    cluster_cidr: str | None = "10.244.0.0/16"  # --cluster-cidr: the local-traffic detector
    service_cidrs: tuple[str, ...] = ("10.96.0.0/12",)
    masquerade_all: bool = False
    masquerade_bit: int = 14
    localhost_nodeports: bool = True  # iptables mode only (route_localnet)
    nodeport_addresses: tuple[str, ...] = ()  # () = all local addresses, as kube-proxy's default
    ipvs_scheduler: str = "rr"
    random_fully: bool = True  # MASQUERADE --random-fully when the iptables binary has it
    conntrack_tcp_be_liberal: bool = False  # --conntrack-tcp-be-liberal (kube-proxy also sets the sysctl)
    unfixed: frozenset[str] = frozenset()  # versions.FIXES taken back out, to reproduce their bugs
    kube_proxy_version: versions.Version = versions.DEFAULT  # which release's rules to write

    def fixed(self, name: str) -> bool:
        """Whether the upstream fix `name` (versions.FIXES) is in the rules: always, unless unfixed."""
        return name not in self.unfixed

    def switch(self, name: str) -> bool:
        """One of testbed.versions' named differences between releases, at this version."""
        return versions.on(name, self.kube_proxy_version)

    @property
    def masquerade_mark(self) -> str:
        """As kube-proxy formats it: Go's "%#08x" pads the digits to 8, giving 0x00004000."""
        return "0x%08x" % (1 << self.masquerade_bit)


@dataclass(frozen=True)
class NodeView:
    """Everything one node's proxy renders from."""

    node_name: str
    node_ips: tuple[str, ...]
    config: ProxyConfig = field(default_factory=ProxyConfig)
    services: tuple[ServicePort, ...] = ()
    zone: str | None = None  # the node's topology.kubernetes.io/zone label


@dataclass(frozen=True)
class EndpointCategories:
    """kube-proxy's CategorizeEndpoints result (pkg/proxy/topology.go)."""

    cluster: tuple[Endpoint, ...]
    local: tuple[Endpoint, ...]
    all_reachable: tuple[Endpoint, ...]
    has_any: bool


def categorize(view: NodeView, sp: ServicePort) -> EndpointCategories:
    """categorize_endpoints for this node of `view`, its zone and its release's rules."""
    return categorize_endpoints(sp, view.node_name, view.zone, view.config)


def sort_endpoints(endpoints) -> tuple[Endpoint, ...]:
    """kube-proxy orders endpoints by their `ip:port` string (so 10.0.0.10 sorts before 10.0.0.2)."""
    return tuple(sorted(endpoints, key=lambda e: e.address))


def external_policy_local(sp: ServicePort) -> bool:
    """Upstream only honours externalTrafficPolicy: Local for externally accessible ports."""
    return sp.external_policy_local and sp.has_external


def uses_cluster_endpoints(sp: ServicePort) -> bool:
    """Even with eTP=Local, cluster endpoints are needed for the pod/host short-circuit."""
    return not sp.internal_policy_local or sp.has_external


def uses_local_endpoints(sp: ServicePort) -> bool:
    return sp.internal_policy_local or external_policy_local(sp)


def topology_filter(sp: ServicePort, endpoints, node_name: str, zone: str | None, config: ProxyConfig | None):
    """pkg/proxy/topology.go topologyModeFromHints: "node", "zone" or "" (no topology).

    Hints are used only if every ready endpoint has one of the kind and one names this node (or
    its zone); node hints since 1.34, and before 1.31 only with the topology-mode annotation.
    Anything else (a missing hint, none for here, a node without a zone label) falls back to all."""
    if config is not None and not config.switch(versions.HINTS_WITHOUT_ANNOTATION) and not sp.hints_annotation:
        return ""
    ready = [e for e in endpoints if e.ready]
    if not ready:
        return ""
    if (config is None or config.switch(versions.PREFER_SAME_NODE)) and all(e.node_hints for e in ready) \
            and any(node_name in e.node_hints for e in ready):
        return "node"
    if zone and all(e.zone_hints for e in ready) and any(zone in e.zone_hints for e in ready):
        return "zone"
    return ""


def categorize_endpoints(sp: ServicePort, node_name: str, zone: str | None = None,
                         config: ProxyConfig | None = None) -> EndpointCategories:
    """pkg/proxy/topology.go CategorizeEndpoints.

    Ready endpoints first, falling back to serving-and-terminating ones, separately for the cluster
    and the local set. The cluster set keeps only the ready endpoints topology hints give this node
    or zone (topology_filter); the terminating fallback ignores hints. hasAnyEndpoints counts only
    usable endpoints (ready, or serving and terminating): a Service whose endpoints are all unready
    gets "has no endpoints" (REJECT).
    """
    eps = sort_endpoints(sp.endpoints)
    cluster: tuple[Endpoint, ...] = ()
    has_any = False
    if uses_cluster_endpoints(sp):
        mode = topology_filter(sp, eps, node_name, zone, config)
        if mode == "node":
            cluster = tuple(e for e in eps if e.ready and node_name in e.node_hints)
        elif mode == "zone":
            cluster = tuple(e for e in eps if e.ready and zone in e.zone_hints)
        else:
            cluster = tuple(e for e in eps if e.ready)
        cluster = cluster or tuple(e for e in eps if e.serving and e.terminating)
        has_any = bool(cluster)
    if not uses_local_endpoints(sp):
        return EndpointCategories(cluster, (), cluster, has_any)
    has_any = has_any or any(e.ready or (e.serving and e.terminating) for e in eps)
    mine = tuple(e for e in eps if e.node == node_name)
    local_ready = tuple(e for e in mine if e.ready)
    local = local_ready or tuple(e for e in mine if e.serving and e.terminating)
    if not uses_cluster_endpoints(sp):
        return EndpointCategories((), local, local, has_any)
    if local_ready:
        return EndpointCategories(cluster, local, cluster, has_any)  # local ⊆ cluster
    merged = {e.address: e for e in cluster + local}
    return EndpointCategories(cluster, local, sort_endpoints(merged.values()), has_any)
