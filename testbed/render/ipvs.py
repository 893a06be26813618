"""kube-proxy's IPVS mode as pure functions: NodeView -> IpvsPlan (what one node's kernel must hold).

Mirrors `syncProxyRules`/`writeIptablesRules` of pkg/proxy/ipvs/proxier.go (the v1.30+ layout with
KUBE-IPVS-FILTER, KUBE-IPVS-OUT-FILTER and the KUBE-IPVS-IPS set) and pkg/proxy/ipvs/ipset.go:

- the dummy link `kube-ipvs0` holds every ClusterIP, and every externalIP / LoadBalancer IP that is
  not already a node address, as a /32 (the KUBE-IPVS-IPS set lists the same addresses);
- one virtual server per ClusterIP:port, externalIP:port, LB IP:port and per node IP:nodePort, NAT
  forwarding (`-m`), scheduler from --ipvs-scheduler (here: ServicePort.scheduler overrides
  ProxyConfig.ipvs_scheduler), `persistent` + timeout for ClientIP affinity, the `mh-port`
  scheduler flag (upstream's FlagSourceHash, 0x10) for `mh`;
- real servers with weight 1 (syncEndpoint writes Weight: 1 for every selected endpoint, also for
  the serving+terminating fallback); weight 0 only ever appears while the graceful-termination
  manager drains a *removed* TCP real server, which is the applier's business (kernel/ipvs.py);
- all 17 ipsets of `ipsetInfo` (created even when empty) with their entries, in `Entry.String()`
  form (`10.96.0.10,tcp:80`, `10.244.1.3,tcp:9376,10.244.1.3`, `30080`);
- the iptables-restore input of writeIptablesRules (nat first, then filter, as upstream writes
  iptablesData) and the jumps from built-in chains (iptablesJumpChain, EnsureRule(Prepend)).

Functions:
- `plan(view)` -> IpvsPlan (frozen, JSON via to_json/from_json);
- `render_text(plan)` -> the readable text `testbed render --mode ipvs` prints: sysctls, `ip` lines
  for kube-ipvs0, an `ipvsadm-save -n` section, `ipset` lines, the jumps and the restore input;
- `diff(previous, plan)` -> IpvsDiff, what a sync changes (kube-proxy reconciles by difference);
  `describe(diff)` prints it as ipvsadm/ip/ipset command lines.

Documented differences from upstream:
- IPv4 only (upstream runs a second proxier with `KUBE-6-` sets); IPv6 services, endpoints,
  external/LB IPs and source ranges are skipped.
- Services are taken in (svcPortName, protocol) order; upstream iterates a Go map.
- Node addresses are `view.node_ips` (upstream: every address on every interface but kube-ipvs0,
  loopback excluded). NodePort virtual servers are made for those, filtered by
  --nodeport-addresses CIDRs ("primary" = the first IPv4 node IP) when given.
- ipset comments are not given to `ipset create` (upstream does not either: `createSet` passes
  type, family/hashsize/maxelem or range, and -exist); they appear in the iptables rules as
  `-m comment --comment "<comment>"` (getComment) and as `#` lines in render_text.
- Per-Service scheduler overrides are a testbed extension (upstream has one scheduler per proxier).
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field, replace
from typing import Any

from testbed import versions
from testbed.errors import TopologyError
from testbed.proxy import NodeView, ServicePort, categorize, external_policy_local, sort_endpoints

DUMMY_DEVICE = "kube-ipvs0"
DEFAULT_SCHEDULER = "rr"
# pkg/proxy/ipvs/README.md: the schedulers --ipvs-scheduler accepts.
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh")

# utilipvs flags (pkg/proxy/ipvs/util/ipvs.go) = the kernel's IP_VS_SVC_F_*.
FLAG_PERSISTENT = 0x1
FLAG_HASHED = 0x2  # set by the kernel on every service; never written, stripped on read
FLAG_SOURCE_HASH = 0x10  # IP_VS_SVC_F_SCHED2: "mh-port" for mh, "sh-port" for sh

PROTOCOLS = ("tcp", "udp", "sctp")

# Chains (proxier.go constants).
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_SOURCE_RANGES_FIREWALL = "KUBE-SOURCE-RANGES-FIREWALL"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_NODE_PORT = "KUBE-NODE-PORT"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_LOAD_BALANCER = "KUBE-LOAD-BALANCER"
KUBE_IPVS_FILTER = "KUBE-IPVS-FILTER"
KUBE_IPVS_OUT_FILTER = "KUBE-IPVS-OUT-FILTER"

# iptablesChains: (table, chain), the order chains are declared in.
IPTABLES_CHAINS = (
    ("nat", KUBE_SERVICES),
    ("nat", KUBE_POSTROUTING),
    ("nat", KUBE_NODE_PORT),
    ("nat", KUBE_LOAD_BALANCER),
    ("nat", KUBE_MARK_MASQ),
    ("filter", KUBE_FORWARD),
    ("filter", KUBE_NODE_PORT),
    ("filter", KUBE_PROXY_FIREWALL),
    ("filter", KUBE_SOURCE_RANGES_FIREWALL),
    ("filter", KUBE_IPVS_FILTER),
    ("filter", KUBE_IPVS_OUT_FILTER),
)

# iptablesJumpChain: (table, from, to, comment); each installed with EnsureRule(Prepend, ...) as
# `-m comment --comment <comment> -j <to>`, in this order.
JUMP_CHAINS = (
    ("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
    ("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals"),
    ("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
    ("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
    ("filter", "INPUT", KUBE_NODE_PORT, "kubernetes health check rules"),
    ("filter", "INPUT", KUBE_PROXY_FIREWALL, "kube-proxy firewall rules"),
    ("filter", "FORWARD", KUBE_PROXY_FIREWALL, "kube-proxy firewall rules"),
    ("filter", "INPUT", KUBE_IPVS_FILTER, "kubernetes ipvs access filter"),
    ("filter", "OUTPUT", KUBE_IPVS_OUT_FILTER, "kubernetes ipvs access filter"),
)

# ipset names (ipset.go).
LOOP_BACK = "KUBE-LOOP-BACK"
CLUSTER_IP = "KUBE-CLUSTER-IP"
EXTERNAL_IP = "KUBE-EXTERNAL-IP"
EXTERNAL_IP_LOCAL = "KUBE-EXTERNAL-IP-LOCAL"
LOAD_BALANCER = "KUBE-LOAD-BALANCER"
LOAD_BALANCER_FW = "KUBE-LOAD-BALANCER-FW"
LOAD_BALANCER_LOCAL = "KUBE-LOAD-BALANCER-LOCAL"
LOAD_BALANCER_SOURCE_IP = "KUBE-LOAD-BALANCER-SOURCE-IP"
LOAD_BALANCER_SOURCE_CIDR = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
NODE_PORT_TCP = "KUBE-NODE-PORT-TCP"
NODE_PORT_LOCAL_TCP = "KUBE-NODE-PORT-LOCAL-TCP"
NODE_PORT_UDP = "KUBE-NODE-PORT-UDP"
NODE_PORT_LOCAL_UDP = "KUBE-NODE-PORT-LOCAL-UDP"
NODE_PORT_SCTP = "KUBE-NODE-PORT-SCTP-HASH"
NODE_PORT_LOCAL_SCTP = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
HEALTH_CHECK_NODE_PORT = "KUBE-HEALTH-CHECK-NODE-PORT"
IPVS_IPS = "KUBE-IPVS-IPS"

HASH_IP = "hash:ip"
HASH_IP_PORT = "hash:ip,port"
HASH_IP_PORT_IP = "hash:ip,port,ip"
HASH_IP_PORT_NET = "hash:ip,port,net"
BITMAP_PORT = "bitmap:port"

# ipsetInfo (proxier.go), with the comment constants of ipset.go, in upstream order.
IPSET_INFO = (
    (LOOP_BACK, HASH_IP_PORT_IP, "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"),
    (CLUSTER_IP, HASH_IP_PORT, "Kubernetes service cluster ip + port for masquerade purpose"),
    (EXTERNAL_IP, HASH_IP_PORT, "Kubernetes service external ip + port for masquerade and filter purpose"),
    (EXTERNAL_IP_LOCAL, HASH_IP_PORT, "Kubernetes service external ip + port with externalTrafficPolicy=local"),
    (LOAD_BALANCER, HASH_IP_PORT, "Kubernetes service lb portal"),
    (LOAD_BALANCER_FW, HASH_IP_PORT, "Kubernetes service load balancer ip + port for load balancer with sourceRange"),
    (LOAD_BALANCER_LOCAL, HASH_IP_PORT, "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"),
    (LOAD_BALANCER_SOURCE_IP, HASH_IP_PORT_IP,
     "Kubernetes service load balancer ip + port + source IP for packet filter purpose"),
    (LOAD_BALANCER_SOURCE_CIDR, HASH_IP_PORT_NET,
     "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"),
    (NODE_PORT_TCP, BITMAP_PORT, "Kubernetes nodeport TCP port for masquerade purpose"),
    (NODE_PORT_LOCAL_TCP, BITMAP_PORT, "Kubernetes nodeport TCP port with externalTrafficPolicy=local"),
    (NODE_PORT_UDP, BITMAP_PORT, "Kubernetes nodeport UDP port for masquerade purpose"),
    (NODE_PORT_LOCAL_UDP, BITMAP_PORT, "Kubernetes nodeport UDP port with externalTrafficPolicy=local"),
    (NODE_PORT_SCTP, HASH_IP_PORT, "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"),
    (NODE_PORT_LOCAL_SCTP, HASH_IP_PORT,
     "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"),
    (HEALTH_CHECK_NODE_PORT, BITMAP_PORT, "Kubernetes health check node port"),
    (IPVS_IPS, HASH_IP, "Addresses on the ipvs interface"),
)
IPSET_NAMES = tuple(name for name, _, _ in IPSET_INFO)
_IPSET_COMMENT = {name: comment for name, _, comment in IPSET_INFO}

# ipsetWithIptablesChain: (set, table, from, to, matchType, protocolMatch). The -LOCAL node-port
# sets must come before their non-local sets (RETURN before KUBE-MARK-MASQ).
IPSET_WITH_IPTABLES_CHAIN = (
    (LOOP_BACK, "nat", KUBE_POSTROUTING, "MASQUERADE", "dst,dst,src", ""),
    (LOAD_BALANCER, "nat", KUBE_SERVICES, KUBE_LOAD_BALANCER, "dst,dst", ""),
    (LOAD_BALANCER_LOCAL, "nat", KUBE_LOAD_BALANCER, "RETURN", "dst,dst", ""),
    (NODE_PORT_LOCAL_TCP, "nat", KUBE_NODE_PORT, "RETURN", "dst", "tcp"),
    (NODE_PORT_TCP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst", "tcp"),
    (NODE_PORT_LOCAL_UDP, "nat", KUBE_NODE_PORT, "RETURN", "dst", "udp"),
    (NODE_PORT_UDP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst", "udp"),
    (NODE_PORT_LOCAL_SCTP, "nat", KUBE_NODE_PORT, "RETURN", "dst,dst", "sctp"),
    (NODE_PORT_SCTP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst,dst", "sctp"),
    (LOAD_BALANCER_FW, "filter", KUBE_PROXY_FIREWALL, KUBE_SOURCE_RANGES_FIREWALL, "dst,dst", ""),
    (LOAD_BALANCER_SOURCE_CIDR, "filter", KUBE_SOURCE_RANGES_FIREWALL, "RETURN", "dst,dst,src", ""),
    (LOAD_BALANCER_SOURCE_IP, "filter", KUBE_SOURCE_RANGES_FIREWALL, "RETURN", "dst,dst,src", ""),
)

# Sysctls NewProxier sets (conn_reuse_mode is left alone from kernel 5.9 on; strict ARP is off).
SYSCTLS = (
    ("net.ipv4.vs.conntrack", "1"),
    ("net.ipv4.vs.expire_nodest_conn", "1"),
    ("net.ipv4.vs.expire_quiescent_template", "1"),
    ("net.ipv4.ip_forward", "1"),
)

# ipset defaults (setIPSetDefaults; DefaultPortRange).
HASH_SIZE = 1024
MAX_ELEM = 65536
PORT_RANGE = "0-65535"


def _q(text: str) -> str:
    return f'"{text}"'


def _is_v6(ip: str) -> bool:
    return ":" in ip


# --- the plan ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RealServer:
    """One IPVS destination: always NAT (`masq`) in kube-proxy; weight 1 (0 = quiescent)."""

    ip: str
    port: int
    weight: int = 1
    masq: bool = True

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class VirtualServer:
    """One IPVS service (kube-proxy's utilipvs.VirtualServer) and its real servers.

    protocol is lower-case; persistence is the ClientIP affinity timeout (the `persistent` flag is
    then also in `flags`), None without affinity. `service` (svcPortName) and `role`
    ("cluster-ip", "external-ip", "load-balancer", "node-port") only say where it comes from.
    """

    protocol: str
    ip: str
    port: int
    scheduler: str = DEFAULT_SCHEDULER
    persistence: int | None = None
    flags: int = 0
    real_servers: tuple[RealServer, ...] = ()
    service: str = ""
    role: str = ""

    @property
    def key(self) -> str:
        """kube-proxy's VirtualServer.String(): `ip:port/PROTO`."""
        return f"{self.ip}:{self.port}/{self.protocol.upper()}"

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def timeout(self) -> int:
        return self.persistence or 0

    def same_service(self, other: VirtualServer) -> bool:
        """Equal as the kernel sees the service itself (upstream's VirtualServer.Equal)."""
        return (self.key, self.scheduler, self.flags, self.timeout) == (other.key, other.scheduler, other.flags, other.timeout)


@dataclass(frozen=True)
class IpsetSpec:
    """One of kube-proxy's ipsets: name, type, comment (ipset.go) and entries (sorted strings)."""

    name: str
    type: str
    comment: str
    entries: tuple[str, ...] = ()

    @property
    def create_options(self) -> str:
        """What upstream's createSet passes after the type (family inet for the IPv4 proxier)."""
        if self.type == BITMAP_PORT:
            return f"range {PORT_RANGE}"
        return f"family inet hashsize {HASH_SIZE} maxelem {MAX_ELEM}"


@dataclass(frozen=True)
class IpvsPlan:
    """Everything IPVS mode puts in one node's kernel after a sync.

    addresses:       /32s on kube-ipvs0 (sorted like the KUBE-IPVS-IPS entries)
    virtual_servers: in service order (ClusterIP, externalIPs, LB IPs, then one per node IP:nodePort)
    ipsets:          all 17 sets, in ipsetInfo order
    iptables:        the iptables-restore --noflush input (nat, then filter)
    jumps:           (table, builtin chain, comment, target) for EnsureRule(Prepend), in call order
    sysctls:         (key, value) written at start-up
    """

    addresses: tuple[str, ...] = ()
    virtual_servers: tuple[VirtualServer, ...] = ()
    ipsets: tuple[IpsetSpec, ...] = ()
    iptables: str = ""
    jumps: tuple[tuple[str, str, str, str], ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    dummy: str = DUMMY_DEVICE

    def virtual_server(self, key: str) -> VirtualServer | None:
        return next((vs for vs in self.virtual_servers if vs.key == key), None)

    def ipset(self, name: str) -> IpsetSpec | None:
        return next((s for s in self.ipsets if s.name == name), None)

    def to_json(self) -> str:
        return json.dumps({
            "version": 1,
            "dummy": self.dummy,
            "addresses": list(self.addresses),
            "virtual_servers": [{
                "protocol": vs.protocol, "ip": vs.ip, "port": vs.port, "scheduler": vs.scheduler,
                "persistence": vs.persistence, "flags": vs.flags, "service": vs.service, "role": vs.role,
                "real_servers": [{"ip": rs.ip, "port": rs.port, "weight": rs.weight, "masq": rs.masq}
                                 for rs in vs.real_servers],
            } for vs in self.virtual_servers],
            "ipsets": [{"name": s.name, "type": s.type, "comment": s.comment, "entries": list(s.entries)}
                       for s in self.ipsets],
            "iptables": self.iptables,
            "jumps": [list(j) for j in self.jumps],
            "sysctls": [list(s) for s in self.sysctls],
        }, indent=1)

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> IpvsPlan:
        d = json.loads(data) if isinstance(data, (str, bytes)) else data
        if d.get("version") != 1:
            raise ValueError(f"unsupported IpvsPlan version {d.get('version')!r}")
        return cls(
            addresses=tuple(d["addresses"]),
            virtual_servers=tuple(VirtualServer(
                protocol=v["protocol"], ip=v["ip"], port=v["port"], scheduler=v["scheduler"],
                persistence=v["persistence"], flags=v["flags"], service=v.get("service", ""), role=v.get("role", ""),
                real_servers=tuple(RealServer(r["ip"], r["port"], r["weight"], r["masq"]) for r in v["real_servers"]),
            ) for v in d["virtual_servers"]),
            ipsets=tuple(IpsetSpec(s["name"], s["type"], s["comment"], tuple(s["entries"])) for s in d["ipsets"]),
            iptables=d["iptables"],
            jumps=tuple(tuple(j) for j in d["jumps"]),
            sysctls=tuple(tuple(s) for s in d["sysctls"]),
            dummy=d.get("dummy", DUMMY_DEVICE),
        )


# --- building it ---------------------------------------------------------------------------------

def _scheduler(view: NodeView, sp: ServicePort) -> str:
    if sp.scheduler:
        if sp.scheduler not in SCHEDULERS:
            raise TopologyError(None, f"Service {sp.namespace}/{sp.name}", "scheduler",
                                f"unknown IPVS scheduler {sp.scheduler!r}; expected one of {', '.join(SCHEDULERS)}")
        return sp.scheduler
    sched = view.config.ipvs_scheduler or DEFAULT_SCHEDULER
    if sched not in SCHEDULERS:
        raise TopologyError(None, "kube-proxy config", "ipvsScheduler",
                            f"unknown IPVS scheduler {sched!r}; expected one of {', '.join(SCHEDULERS)}")
    return sched


def _node_addresses(view: NodeView) -> list[str]:
    """GetAllLocalAddressesExcept(kube-ipvs0) for IPv4: the node's addresses, loopback excluded."""
    out: list[str] = []
    for ip in view.node_ips:
        if _is_v6(ip) or ip in out or ipaddress.ip_address(ip).is_loopback:
            continue
        out.append(ip)
    return out


def _nodeport_ips(view: NodeView) -> list[str]:
    """The node IPs that get a NodePort virtual server (nodePortAddresses MatchAll, or its CIDRs)."""
    addresses = _node_addresses(view)
    cidrs = []
    for entry in view.config.nodeport_addresses:
        entry = entry.strip()
        if entry == "primary":
            cidrs += [ipaddress.ip_network(ip) for ip in addresses[:1]]
            continue
        net = ipaddress.ip_network(entry, strict=False)
        if net.version == 4:
            cidrs.append(net)
    if not cidrs or any(n.prefixlen == 0 for n in cidrs):
        return addresses
    return [ip for ip in addresses if any(ipaddress.ip_address(ip) in n for n in cidrs)]


def _ipv4_only(sp: ServicePort) -> ServicePort:
    return replace(
        sp,
        endpoints=tuple(e for e in sp.endpoints if not _is_v6(e.ip)),
        external_ips=tuple(ip for ip in sp.external_ips if not _is_v6(ip)),
        load_balancer_ips=tuple(ip for ip in sp.load_balancer_ips if not _is_v6(ip)),
        load_balancer_source_ranges=tuple(
            r for r in sp.load_balancer_source_ranges if ipaddress.ip_network(r.strip(), strict=False).version == 4),
    )


def _services(view: NodeView) -> list[ServicePort]:
    svcs = [_ipv4_only(s) for s in view.services if s.cluster_ip and not _is_v6(s.cluster_ip)]
    return sorted(svcs, key=lambda s: (s.port_name_string, s.proto))


@dataclass
class _Build:
    sets: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in IPSET_NAMES})
    servers: dict[str, VirtualServer] = field(default_factory=dict)
    bind: set[str] = field(default_factory=set)
    lb_no_node_access: list[tuple[str, str, int]] = field(default_factory=list)


def _real_servers(view: NodeView, sp: ServicePort, only_local: bool) -> tuple[RealServer, ...]:
    """syncEndpoint's choice: cluster endpoints, or local ones when the policy is Local and some
    exist (else the cluster ones, PR #97081, so local pods still reach the service)."""
    cat = categorize(view, sp)
    endpoints = cat.cluster
    if only_local and cat.local:
        endpoints = cat.local
    return tuple(RealServer(e.ip, e.port) for e in sort_endpoints(endpoints))


def _service(b: _Build, view: NodeView, sp: ServicePort) -> None:
    proto = sp.proto
    sched = _scheduler(view, sp)
    flags = FLAG_PERSISTENT if sp.session_affinity_timeout is not None else 0
    if sched == "mh":
        flags |= FLAG_SOURCE_HASH
    persistence = sp.session_affinity_timeout
    ext_local = external_policy_local(sp)
    node_addresses = set(_node_addresses(view))

    def add_vs(ip: str, port: int, role: str, only_local: bool) -> None:
        b.servers[f"{ip}:{port}/{proto.upper()}"] = VirtualServer(
            proto, ip, port, sched, persistence, flags, _real_servers(view, sp, only_local), sp.port_name_string, role)

    # Hairpin: every local endpoint (ready or not) of the service port.
    for e in sp.endpoints:
        if e.node == view.node_name:
            b.sets[LOOP_BACK].add(f"{e.ip},{proto}:{e.port},{e.ip}")

    b.sets[CLUSTER_IP].add(f"{sp.cluster_ip},{proto}:{sp.port}")
    add_vs(sp.cluster_ip, sp.port, "cluster-ip", sp.internal_policy_local)
    b.bind.add(sp.cluster_ip)

    for ip in sp.external_ips:
        b.sets[EXTERNAL_IP_LOCAL if ext_local else EXTERNAL_IP].add(f"{ip},{proto}:{sp.port}")
        add_vs(ip, sp.port, "external-ip", ext_local)
        if ip not in node_addresses:  # never bind an address another interface has
            b.bind.add(ip)

    node_ip = next(iter(_node_addresses(view)), None)
    for ip in sp.load_balancer_ips:
        entry = f"{ip},{proto}:{sp.port}"
        b.sets[LOAD_BALANCER].add(entry)
        if ext_local:
            b.sets[LOAD_BALANCER_LOCAL].add(entry)
        if sp.load_balancer_source_ranges:
            b.sets[LOAD_BALANCER_FW].add(entry)
            allow_from_node = False
            for raw in sp.load_balancer_source_ranges:
                net = ipaddress.ip_network(raw.strip(), strict=False)
                b.sets[LOAD_BALANCER_SOURCE_CIDR].add(f"{entry},{net}")
                if node_ip is not None and ipaddress.ip_address(node_ip) in net:
                    allow_from_node = True
            if allow_from_node:
                # A VIP bound locally loops node->VIP traffic back with the VIP as source.
                b.sets[LOAD_BALANCER_SOURCE_IP].add(f"{entry},{ip}")
            else:
                b.lb_no_node_access.append((ip, proto, sp.port))
        add_vs(ip, sp.port, "load-balancer", ext_local)
        if ip not in node_addresses:
            b.bind.add(ip)

    if sp.node_port:
        nodeport_ips = _nodeport_ips(view)
        if not nodeport_ips:
            return  # upstream `continue`s: no NodePort part (and no health check port) without node IPs
        if proto == "sctp":
            entries = [f"{ip},sctp:{sp.node_port}" for ip in nodeport_ips]
            sets = (NODE_PORT_SCTP, NODE_PORT_LOCAL_SCTP)
        else:
            entries = [str(sp.node_port)]
            sets = {"tcp": (NODE_PORT_TCP, NODE_PORT_LOCAL_TCP), "udp": (NODE_PORT_UDP, NODE_PORT_LOCAL_UDP)}[proto]
        b.sets[sets[0]].update(entries)
        if ext_local:
            b.sets[sets[1]].update(entries)
        for ip in nodeport_ips:
            add_vs(ip, sp.node_port, "node-port", ext_local)

    # upstream's BaseServicePortInfo only carries healthCheckNodePort for eTP=Local LoadBalancers.
    if sp.health_check_node_port and ext_local:
        b.sets[HEALTH_CHECK_NODE_PORT].add(str(sp.health_check_node_port))


def iptables_chains(config) -> tuple[tuple[str, str], ...]:
    """iptablesChains of the release `config` renders: KUBE-IPVS-OUT-FILTER since 1.29 (#119791)."""
    return tuple(c for c in IPTABLES_CHAINS if c[1] != KUBE_IPVS_OUT_FILTER or config.switch(versions.IPVS_OUT_FILTER))


def _iptables(view: NodeView, sets: dict[str, set[str]], lb_no_node_access: list[tuple[str, str, int]]) -> str:
    """writeIptablesRules + createAndLinkKubeChain's chain lines, as upstream's iptablesData."""
    cfg = view.config
    mark = cfg.masquerade_mark
    chains = iptables_chains(cfg)
    nat_chains = ["*nat"] + [f":{c} - [0:0]" for t, c in chains if t == "nat"]
    filter_chains = ["*filter"] + [f":{c} - [0:0]" for t, c in chains if t == "filter"]
    nat: list[str] = []
    flt: list[str] = []

    def comment(name: str) -> str:
        return f"-m comment --comment {_q(_IPSET_COMMENT[name])}"

    def match(name: str, kind: str) -> str:
        return f"-m set --match-set {name} {kind}"

    # Dismiss connections from localhost early in the service chain.
    nat.append(f"-A {KUBE_SERVICES} -s 127.0.0.0/8 -j RETURN")

    for name, table, src, dst, kind, proto in IPSET_WITH_IPTABLES_CHAIN:
        if not sets[name]:
            continue
        parts = [f"-A {src}"] + ([f"-p {proto}"] if proto else []) + [comment(name), match(name, kind), f"-j {dst}"]
        (flt if table == "filter" else nat).append(" ".join(parts))

    if sets[CLUSTER_IP]:
        head = f"-A {KUBE_SERVICES} {comment(CLUSTER_IP)} -m set --match-set {CLUSTER_IP}"
        if cfg.masquerade_all:
            nat.append(f"{head} dst,dst -j {KUBE_MARK_MASQ}")
        elif cfg.cluster_cidr:
            # Off-cluster traffic to a service VIP (a static route to any node) may bounce off-node.
            nat.append(f"{head} dst,dst ! -s {cfg.cluster_cidr} -j {KUBE_MARK_MASQ}")
        else:
            # Node-originated traffic picks a VIP on kube-ipvs0 as source: masquerade VIP -> VIP.
            nat.append(f"{head} src,dst -j {KUBE_MARK_MASQ}")

    def external_ip_rules(head: str) -> None:
        # Off-machine traffic (not from a bridge, not from a local process), and traffic to an
        # external IP that is also a local address, is accepted.
        nat.append(f"{head} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT")
        nat.append(f"{head} -m addrtype --dst-type LOCAL -j ACCEPT")

    if sets[EXTERNAL_IP]:
        head = f"-A {KUBE_SERVICES} {comment(EXTERNAL_IP)} {match(EXTERNAL_IP, 'dst,dst')}"
        nat.append(f"{head} -j {KUBE_MARK_MASQ}")
        external_ip_rules(head)
    if sets[EXTERNAL_IP_LOCAL]:
        external_ip_rules(f"-A {KUBE_SERVICES} {comment(EXTERNAL_IP_LOCAL)} {match(EXTERNAL_IP_LOCAL, 'dst,dst')}")

    nat.append(f"-A {KUBE_SERVICES} -m addrtype --dst-type LOCAL -j {KUBE_NODE_PORT}")
    nat.append(f"-A {KUBE_LOAD_BALANCER} -j {KUBE_MARK_MASQ}")
    flt.append(f"-A {KUBE_SOURCE_RANGES_FIREWALL} -j DROP")
    for ip, proto, port in lb_no_node_access if cfg.switch(versions.IPVS_OUT_FILTER) else ():
        # For IPVS, node -> LB VIP has the VIP as both source and destination.
        flt.append(f"-A {KUBE_IPVS_OUT_FILTER} -s {ip} -m ipvs --vaddr {ip} --vproto {proto} --vport {port} -j DROP")

    # acceptIPVSTraffic: must be at the end of KUBE-SERVICES.
    for name in (CLUSTER_IP, LOAD_BALANCER):
        if sets[name]:
            nat.append(f"-A {KUBE_SERVICES} {match(name, 'dst,dst')} -j ACCEPT")

    flt.append(f"-A {KUBE_FORWARD} -m comment --comment {_q('kubernetes forwarding rules')} "
               f"-m mark --mark {mark}/{mark} -j ACCEPT")
    flt.append(f"-A {KUBE_FORWARD} -m comment --comment {_q('kubernetes forwarding conntrack rule')} "
               "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    flt.append(f"-A {KUBE_NODE_PORT} {comment(HEALTH_CHECK_NODE_PORT)} {match(HEALTH_CHECK_NODE_PORT, 'dst')} -j ACCEPT")

    # KUBE-IPVS-FILTER: no access to other host ports through a VIP (#72236).
    for name, kind in ((LOAD_BALANCER, "dst,dst"), (CLUSTER_IP, "dst,dst"), (EXTERNAL_IP, "dst,dst"),
                       (EXTERNAL_IP_LOCAL, "dst,dst"), (HEALTH_CHECK_NODE_PORT, "dst")):
        flt.append(f"-A {KUBE_IPVS_FILTER} {match(name, kind)} -j RETURN")
    flt.append(f"-A {KUBE_IPVS_FILTER} -m conntrack --ctstate NEW {match(IPVS_IPS, 'dst')} -j REJECT")

    nat.append(f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN")
    nat.append(f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}")
    nat.append(f"-A {KUBE_POSTROUTING} -m comment --comment {_q('kubernetes service traffic requiring SNAT')} "
               "-j MASQUERADE" + (" --random-fully" if cfg.random_fully else ""))
    nat.append(f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}")

    return "\n".join(nat_chains + nat + ["COMMIT"] + filter_chains + flt + ["COMMIT"]) + "\n"


def plan(view: NodeView) -> IpvsPlan:
    """What kube-proxy in IPVS mode leaves in this node's kernel after a sync of `view`."""
    b = _Build()
    for sp in _services(view):
        _service(b, view, sp)
    b.sets[IPVS_IPS] = set(b.bind)
    ipsets = tuple(IpsetSpec(name, type_, comment, tuple(sorted(b.sets[name]))) for name, type_, comment in IPSET_INFO)
    return IpvsPlan(
        addresses=tuple(sorted(b.bind)),
        virtual_servers=tuple(b.servers.values()),
        ipsets=ipsets,
        iptables=_iptables(view, b.sets, b.lb_no_node_access),
        jumps=tuple((t, src, comment, dst) for t, src, dst, comment in JUMP_CHAINS
                    if dst != KUBE_IPVS_OUT_FILTER or view.config.switch(versions.IPVS_OUT_FILTER)),
        sysctls=SYSCTLS,
    )


# --- text ----------------------------------------------------------------------------------------

_IPVSADM_PROTO = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}


def sched_flag_names(scheduler: str, flags: int) -> list[str]:
    """ipvsadm's names for IP_VS_SVC_F_SCHED1..3 (print_sched_flags)."""
    if scheduler in ("sh", "mh"):
        names = (f"{scheduler}-fallback", f"{scheduler}-port", "flag-3")
    else:
        names = ("flag-1", "flag-2", "flag-3")
    return [n for bit, n in zip((0x8, 0x10, 0x20), names, strict=True) if flags & bit]


def ipvsadm_service_line(vs: VirtualServer, verb: str = "-A") -> str:
    line = f"{verb} {_IPVSADM_PROTO[vs.protocol]} {vs.address} -s {vs.scheduler}"
    if vs.flags & FLAG_PERSISTENT:
        line += f" -p {vs.timeout}"
    sched_flags = sched_flag_names(vs.scheduler, vs.flags)
    if sched_flags:
        line += " -b " + ",".join(sched_flags)
    return line


def ipvsadm_dest_line(vs: VirtualServer, rs: RealServer, verb: str = "-a") -> str:
    fwd = "-m" if rs.masq else "-g"
    return f"{verb} {_IPVSADM_PROTO[vs.protocol]} {vs.address} -r {rs.address} {fwd} -w {rs.weight}"


def ipvsadm_save(virtual_servers) -> str:
    """`ipvsadm-save -n` form of virtual servers (real servers in address order)."""
    lines: list[str] = []
    for vs in virtual_servers:
        lines.append(ipvsadm_service_line(vs))
        lines += [ipvsadm_dest_line(vs, rs) for rs in vs.real_servers]
    return "\n".join(lines) + ("\n" if lines else "")


def ipset_lines(spec: IpsetSpec) -> list[str]:
    return [f"ipset create {spec.name} {spec.type} {spec.create_options}"] + [
        f"ipset add {spec.name} {e}" for e in spec.entries]


def jump_command(jump: tuple[str, str, str, str]) -> str:
    table, chain, comment, target = jump
    return f"iptables -t {table} -I {chain} -m comment --comment {_q(comment)} -j {target}"


def render_text(p: IpvsPlan) -> str:
    """The readable, diff-able form of a plan (what `testbed render --mode ipvs` prints)."""
    out = ["# sysctls (kube-proxy start-up)"]
    out += [f"{k} = {v}" for k, v in p.sysctls]
    out.append(f"# {p.dummy} (dummy; kube-proxy leaves it down)")
    out.append(f"ip link add {p.dummy} type dummy")
    out += [f"ip addr add {ip}/32 dev {p.dummy}" for ip in p.addresses]
    out.append("# ipvsadm-save -n")
    out += ipvsadm_save(p.virtual_servers).splitlines()
    out.append("# ipsets (ipset -exist create; entries synced by difference)")
    for spec in p.ipsets:
        out.append(f"# {spec.name}: {_q(spec.comment)}")
        out += ipset_lines(spec)
    out.append("# jumps from built-in chains (EnsureRule Prepend, in this order)")
    out += [jump_command(j) for j in p.jumps]
    out.append("# iptables-restore --noflush")
    return "\n".join(out) + "\n" + p.iptables


# --- difference between two syncs ----------------------------------------------------------------

@dataclass(frozen=True)
class DestChange:
    """Real-server changes of one virtual server that exists before and after."""

    vs: VirtualServer
    add: tuple[RealServer, ...] = ()
    update: tuple[RealServer, ...] = ()
    delete: tuple[RealServer, ...] = ()


@dataclass(frozen=True)
class IpsetChange:
    """create: the set is new (ipset create -exist, flush, add everything); else add/del only."""

    spec: IpsetSpec
    create: bool = False
    add: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()


@dataclass(frozen=True)
class IpvsDiff:
    bind: tuple[str, ...] = ()
    unbind: tuple[str, ...] = ()
    add_services: tuple[VirtualServer, ...] = ()
    edit_services: tuple[VirtualServer, ...] = ()
    delete_services: tuple[VirtualServer, ...] = ()
    destinations: tuple[DestChange, ...] = ()
    ipsets: tuple[IpsetChange, ...] = ()
    destroy_ipsets: tuple[str, ...] = ()
    iptables: bool = False
    jumps: bool = False
    sysctls: bool = False

    @property
    def empty(self) -> bool:
        return not (self.bind or self.unbind or self.add_services or self.edit_services or self.delete_services
                    or self.destinations or self.ipsets or self.destroy_ipsets or self.iptables or self.jumps
                    or self.sysctls)


def ipset_changes(previous: tuple[IpsetSpec, ...] | None,
                  sets: tuple[IpsetSpec, ...]) -> tuple[tuple[IpsetChange, ...], tuple[str, ...]]:
    """Per-set entry differences (syncIPSetEntries) and the sets to destroy (in previous only)."""
    before = {s.name: s for s in previous or ()}
    changes: list[IpsetChange] = []
    for spec in sets:
        old = before.get(spec.name)
        if old is None or old.type != spec.type:
            changes.append(IpsetChange(spec, True, spec.entries))
            continue
        old_set, new_set = set(old.entries), set(spec.entries)  # once per set, not per entry
        add = tuple(e for e in spec.entries if e not in old_set)
        delete = tuple(e for e in old.entries if e not in new_set)
        if add or delete:
            changes.append(IpsetChange(spec, False, add, delete))
    wanted = {s.name for s in sets}
    destroy = tuple(name for name in before if name not in wanted)
    return tuple(changes), destroy


def diff(previous: IpvsPlan | None, new: IpvsPlan) -> IpvsDiff:
    """What a sync from `previous` (None: an empty node) to `new` changes, object by object."""
    prev = previous or IpvsPlan(dummy=new.dummy)
    old_addrs, new_addrs = set(prev.addresses), set(new.addresses)
    old_vs = {vs.key: vs for vs in prev.virtual_servers}
    new_vs = {vs.key: vs for vs in new.virtual_servers}
    add_services, edit_services, dests = [], [], []
    for key, vs in new_vs.items():
        old = old_vs.get(key)
        if old is None:
            add_services.append(vs)
            continue
        if not vs.same_service(old):
            edit_services.append(vs)
        before = {rs.address: rs for rs in old.real_servers}
        after = {rs.address: rs for rs in vs.real_servers}
        change = DestChange(
            vs,
            add=tuple(rs for a, rs in after.items() if a not in before),
            update=tuple(rs for a, rs in after.items() if a in before and before[a] != rs),
            delete=tuple(rs for a, rs in before.items() if a not in after),
        )
        if change.add or change.update or change.delete:
            dests.append(change)
    ipsets, destroy = ipset_changes(prev.ipsets if previous is not None else None, new.ipsets)
    return IpvsDiff(
        bind=tuple(a for a in new.addresses if a not in old_addrs),
        unbind=tuple(a for a in prev.addresses if a not in new_addrs),
        add_services=tuple(add_services),
        edit_services=tuple(edit_services),
        delete_services=tuple(vs for key, vs in old_vs.items() if key not in new_vs),
        destinations=tuple(dests),
        ipsets=ipsets,
        destroy_ipsets=destroy,
        iptables=prev.iptables != new.iptables,
        jumps=prev.jumps != new.jumps,
        sysctls=prev.sysctls != new.sysctls,
    )


def describe(d: IpvsDiff, dummy: str = DUMMY_DEVICE) -> str:
    """A diff as the commands that would make it (ipvsadm -A/-E/-D/-a/-e/-d, ip addr, ipset), in
    the order kernel/ipvs.apply() performs it. Empty diff: ""."""
    out: list[str] = []
    if d.sysctls:
        out.append("sysctl (IPVS-mode values)")
    for ch in d.ipsets:
        if ch.create:
            out.append(f"ipset create {ch.spec.name} {ch.spec.type} {ch.spec.create_options} -exist")
            out.append(f"ipset flush {ch.spec.name}")
        out += [f"ipset del {ch.spec.name} {e}" for e in ch.delete]
        out += [f"ipset add {ch.spec.name} {e}" for e in ch.add]
    unbound = list(d.bind)
    for vs in d.add_services:  # syncService (virtual server, then its address), then syncEndpoint
        out.append("ipvsadm " + ipvsadm_service_line(vs, "-A"))
        if vs.ip in unbound:
            unbound.remove(vs.ip)
            out.append(f"ip addr add {vs.ip}/32 dev {dummy}")
        out += ["ipvsadm " + ipvsadm_dest_line(vs, rs, "-a") for rs in vs.real_servers]
    for vs in d.edit_services:
        out.append("ipvsadm " + ipvsadm_service_line(vs, "-E"))
    out += [f"ip addr add {a}/32 dev {dummy}" for a in unbound]
    for ch in d.destinations:
        out += ["ipvsadm " + ipvsadm_dest_line(ch.vs, rs, "-a") for rs in ch.add]
        out += ["ipvsadm " + ipvsadm_dest_line(ch.vs, rs, "-e") for rs in ch.update]
        out += [f"ipvsadm -d {_IPVSADM_PROTO[ch.vs.protocol]} {ch.vs.address} -r {rs.address}" for rs in ch.delete]
    if d.jumps:
        out.append("iptables jumps (EnsureRule Prepend)")
    if d.iptables:
        out.append("iptables-restore --noflush")
    out += [f"ip addr del {a}/32 dev {dummy}" for a in d.unbind]
    out += [f"ipvsadm -D {_IPVSADM_PROTO[vs.protocol]} {vs.address}" for vs in d.delete_services]
    out += [f"ipset destroy {name}" for name in d.destroy_ipsets]
    return "\n".join(out) + ("\n" if out else "")
