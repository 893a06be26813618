"""What the API server and controllers would do, as a pure function of (topology, previous state).

- IPAM: node IPs on the node network, a pod CIDR per node, pod IPs from it (never reusing the IP a
  pod just released, like host-local's round-robin), ClusterIPs from the Service CIDR and NodePorts
  from the range (explicit ones honoured, others allocated and then kept across changes).
- The workload controllers (testbed.workloads): Deployments, ReplicaSets, ReplicationControllers,
  StatefulSets, DaemonSets and Jobs → pods; a deleted pod is replaced as its controller would.
- The scheduler: `nodeName` when given, otherwise the node with the fewest pods among those whose
  labels match the pod's nodeSelector and whose taints it tolerates (none: the pod stays Pending).
  A dumped pod keeps its address (`status.podIP`).
- The EndpointSlice controller: selectors → endpoints of pods in the Service's namespace
  (ready/serving/terminating, nodeName, hostname), named targetPorts resolved per pod. Every slice
  labelled with the Service's name is read, as kube-proxy does, endpoints merged by address; a
  dump's controller-made slices are used as they are (`spec.replay.endpointSlices: rebuild`
  computes them from the pods instead).
- kube-proxy's view per node (`proxy.NodeView`).
"""
from __future__ import annotations

import copy
import ipaddress
from dataclasses import asdict, dataclass, field

from . import versions
from .errors import TopologyError
from .model import ZONE_LABEL, ContainerPort, Service, Topology
from .proxy import Endpoint, NodeView, ProxyConfig, ServicePort
from .workloads import desired_pods, digest, schedulable

# Labels that make kube-proxy ignore a Service (it is served by another proxy, or headless).
IGNORED_SERVICE_LABELS = ("service.kubernetes.io/service-proxy-name", "service.kubernetes.io/headless")


@dataclass(frozen=True)
class NodeInfo:
    name: str
    ip: str
    pod_cidr: str

    @property
    def gateway(self) -> str:
        """The node's address on its pod bridge (the pods' default gateway)."""
        return str(ipaddress.ip_network(self.pod_cidr).network_address + 1)


@dataclass(frozen=True)
class ClientInfo:
    name: str
    ip: str


@dataclass(frozen=True)
class PodInfo:
    name: str
    namespace: str
    node: str
    ip: str
    labels: tuple[tuple[str, str], ...]
    ports: tuple[ContainerPort, ...]
    owner: str | None = None
    ready: bool = True
    terminating: bool = False
    serving: bool = True
    probes: tuple = ()
    grace_period: int = 30
    workload: str = "netexec"
    owner_kind: str | None = None
    hostname: str | None = None  # spec.hostname (a StatefulSet's pods: their own name)
    subdomain: str | None = None
    host_network: bool = False  # runs in its node's namespace; `ip` is the node's

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def has_readiness_probe(self) -> bool:
        return any(p.kind == "readiness" for p in self.probes)

    def snapshot(self) -> dict:
        """What a terminating pod keeps once its manifest or Deployment no longer produces it."""
        return {"labels": [list(x) for x in self.labels], "ports": [[c.port, c.protocol, c.name] for c in self.ports],
                "owner": self.owner, "owner_kind": self.owner_kind}


@dataclass(frozen=True)
class ServiceInfo:
    service: Service
    cluster_ip: str | None
    node_ports: tuple[int | None, ...]  # one per service port
    endpoints: tuple[tuple[Endpoint, ...], ...]  # one tuple per service port
    load_balancer_ips: tuple[str, ...] = ()  # status.loadBalancer.ingress (allocated or kept)
    health_check_node_port: int | None = None
    hostnames: tuple[tuple[str, str], ...] = ()  # endpoint IP → hostname (DNS names under a headless Service)

    @property
    def key(self) -> str:
        return self.service.key

    @property
    def proxied(self) -> bool:
        """kube-proxy ignores headless and ExternalName Services and ones labelled for another proxy."""
        labels = dict(self.service.labels)
        return bool(self.cluster_ip) and not any(k in labels for k in IGNORED_SERVICE_LABELS)


@dataclass
class Allocations:
    """Everything allocated so far: kept across syncs so a change keeps what did not change."""

    nodes: dict[str, dict] = field(default_factory=dict)  # name → {ip, pod_cidr}
    clients: dict[str, str] = field(default_factory=dict)
    cluster_ips: dict[str, str] = field(default_factory=dict)  # svc key → ip
    node_ports: dict[str, int] = field(default_factory=dict)  # "svc key|port|proto" → nodePort
    pods: dict[str, dict] = field(default_factory=dict)  # pod key → {node, ip, owner, serial}
    serials: dict[str, int] = field(default_factory=dict)  # deployment key → next pod serial
    ip_cursor: dict[str, int] = field(default_factory=dict)  # node → last pod IP offset handed out
    lb_ips: dict[str, list[str]] = field(default_factory=dict)  # svc key → LoadBalancer addresses
    health_ports: dict[str, int] = field(default_factory=dict)  # svc key → healthCheckNodePort
    deleted: list[str] = field(default_factory=list)  # pods of Deployments deleted by the user

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict | None) -> "Allocations":
        return cls(**copy.deepcopy(data or {}))  # never alias the caller's (saved) state


def _is_backend(pod: PodInfo, e: Endpoint) -> bool:
    """An endpoint is this pod's: its address, and for a host-network pod (which shares its node's
    address with the node's other host-network pods) one of its ports too."""
    return pod.ip == e.ip and (not pod.host_network or any(c.port == e.port for c in pod.ports))


@dataclass(frozen=True)
class ClusterState:
    topology: Topology
    nodes: tuple[NodeInfo, ...]
    clients: tuple[ClientInfo, ...]
    pods: tuple[PodInfo, ...]
    services: tuple[ServiceInfo, ...]
    pending: tuple[tuple[str, str], ...] = ()  # pods no node can take: (key, why), as the scheduler reports

    @property
    def lab(self):
        return self.topology.lab

    def node(self, name: str) -> NodeInfo:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} (nodes: {', '.join(n.name for n in self.nodes)})")

    def ready_backends(self, info: ServiceInfo, port_index: int) -> list[PodInfo]:
        """The pods behind the ready endpoints of one Service port, in pod order."""
        return [p for p in self.pods if any(_is_backend(p, e) for e in info.endpoints[port_index] if e.ready)]

    def pods_backing_nothing(self) -> list[PodInfo]:
        """Pods that are no Service's endpoint: where probes send from (like the e2e exec pod)."""
        eps = [e for s in self.services for ports in s.endpoints for e in ports]
        return [p for p in self.pods if not any(_is_backend(p, e) for e in eps)]

    def kube_proxy_version(self, node_name: str | None = None) -> versions.Version:
        """The release a node's kube-proxy renders: its own (a dumped Node's), else the lab's."""
        return node_kube_proxy_version(self.lab, node_name)

    def version_notes(self, mode: str) -> list[str]:
        return version_notes(self.topology, mode)

    def proxy_config(self, node_name: str | None = None) -> ProxyConfig:
        version = self.kube_proxy_version(node_name)
        # kube-proxy knows the Service CIDRs only from ServiceCIDR objects (MultiCIDRServiceAllocator).
        watched = versions.on(versions.SERVICE_CIDRS_WATCHED, version)
        return ProxyConfig(cluster_cidr=self.lab.cluster_cidr, service_cidrs=self.lab.service_cidrs if watched else (),
                           masquerade_all=self.lab.masquerade_all, ipvs_scheduler=self.lab.ipvs_scheduler,
                           kube_proxy_version=version, conntrack_tcp_be_liberal=self.lab.conntrack_tcp_be_liberal,
                           unfixed=frozenset(self.lab.unfixed))

    def node_view(self, node_name: str) -> NodeView:
        node = self.node(node_name)
        config = self.proxy_config(node.name)
        # With LoadBalancerIPMode (1.30+), an ingress IP of ipMode Proxy is not one of kube-proxy's VIPs.
        honour_ip_mode = config.switch(versions.LB_IP_MODE)
        spec = next((n for n in self.lab.nodes if n.name == node.name), None)
        ports = []
        for info in self.services:
            if not info.proxied:
                continue
            s = info.service
            for sp, np_, eps in zip(s.ports, info.node_ports, info.endpoints, strict=True):
                ports.append(ServicePort(
                    namespace=s.namespace, name=s.name, port_name=sp.name, protocol=sp.protocol, port=sp.port,
                    cluster_ip=info.cluster_ip, node_port=np_, external_ips=s.external_ips,
                    load_balancer_ips=tuple(ip for ip in info.load_balancer_ips
                                            if not (honour_ip_mode and ip in s.lb_proxy_ips)),
                    load_balancer_source_ranges=s.load_balancer_source_ranges if s.type == "LoadBalancer" else (),
                    session_affinity_timeout=s.session_affinity_timeout,
                    external_policy_local=s.external_policy_local, internal_policy_local=s.internal_policy_local,
                    health_check_node_port=info.health_check_node_port, scheduler=s.ipvs_scheduler, endpoints=eps,
                    hints_annotation=s.topology_mode not in (None, "", "disabled", "Disabled")))
        ports.sort(key=lambda p: (p.port_name_string, p.protocol))
        return NodeView(node_name=node.name, node_ips=(node.ip,), config=config, services=tuple(ports),
                        zone=spec.label_map.get(ZONE_LABEL) if spec else None)


def node_kube_proxy_version(lab, node_name: str | None = None) -> versions.Version:
    """The release a node's kube-proxy renders: its own (a dumped Node's), else the lab's."""
    node = next((n for n in lab.nodes if n.name == node_name), None)
    text = (node.kube_proxy_version if node else None) or lab.kube_proxy_version
    return versions.parse(text) if text else versions.DEFAULT


def version_notes(topo: Topology, mode: str) -> list[str]:
    """What rendering the nodes' releases in `mode` means: versions testbed does not know or has not
    checked, and the deprecation notices their users see (no reconcile needed)."""
    by_version: dict[versions.Version, list[str]] = {}
    for n in topo.lab.nodes:
        by_version.setdefault(node_kube_proxy_version(topo.lab, n.name), []).append(n.name)
    external = tuple(s.key for s in topo.services if s.external_ips)
    out = []
    for v, names in sorted(by_version.items()):
        where = "" if len(by_version) == 1 else f" (nodes {', '.join(names)})"
        out += [f"{line}{where}" for line in versions.notes(v, mode) + versions.deprecations(v, mode, external)]
    return out


# ----------------------------------------------------------------------------- IPAM


def _allocate_hosts(topo: Topology, alloc: Allocations) -> tuple[tuple[NodeInfo, ...], tuple[ClientInfo, ...]]:
    lab = topo.lab
    net = ipaddress.ip_network(lab.node_network)
    pinned = {h.ip for h in (*lab.nodes, *lab.clients) if h.ip}
    # .1 is the fabric bridge; the last address is the load balancer's own; the pool is for Services.
    taken = set(pinned) | {str(net.network_address + 1), lb_address(lab)} | set(_pool_addresses(lab))
    for n in lab.nodes:
        prev = alloc.nodes.get(n.name, {}).get("ip")
        if not n.ip and prev and prev not in pinned:
            taken.add(prev)
    for c in lab.clients:
        prev = alloc.clients.get(c.name)
        if not c.ip and prev and prev not in pinned:
            taken.add(prev)

    def next_free(start: int) -> str:
        for off in range(start, net.num_addresses - 1):
            ip = str(net.network_address + off)
            if ip not in taken:
                taken.add(ip)
                return ip
        for off in range(2, start):
            ip = str(net.network_address + off)
            if ip not in taken:
                taken.add(ip)
                return ip
        raise TopologyError(topo.source, topo.where("Lab", lab.name), "spec.nodeNetwork", f"no free address left in {net}")

    cluster = ipaddress.ip_network(lab.cluster_cidr)
    subnets = cluster.subnets(new_prefix=lab.node_cidr_mask)
    pinned_cidrs = [ipaddress.ip_network(n.pod_cidr) for n in lab.nodes if n.pod_cidr]
    used_cidrs = list(pinned_cidrs)
    for n in lab.nodes:
        prev = alloc.nodes.get(n.name, {}).get("pod_cidr")
        if not n.pod_cidr and prev and not any(ipaddress.ip_network(prev).overlaps(c) for c in pinned_cidrs):
            used_cidrs.append(ipaddress.ip_network(prev))

    nodes = []
    new_nodes = {}
    for n in lab.nodes:
        prev = alloc.nodes.get(n.name, {})
        ip = n.ip or (prev.get("ip") if prev.get("ip") and prev.get("ip") not in pinned else None) or next_free(2)
        cidr = n.pod_cidr or prev.get("pod_cidr")
        if cidr and not n.pod_cidr and any(ipaddress.ip_network(cidr).overlaps(c) for c in pinned_cidrs):
            cidr = None
        if not cidr:
            for sub in subnets:
                if not any(sub.overlaps(c) for c in used_cidrs):
                    cidr = str(sub)
                    used_cidrs.append(sub)
                    break
            else:
                raise TopologyError(topo.source, topo.where("Lab", lab.name), "spec.clusterCIDR",
                                    f"{cluster} has no /{lab.node_cidr_mask} left for node {n.name}")
        nodes.append(NodeInfo(n.name, ip, cidr))
        new_nodes[n.name] = {"ip": ip, "pod_cidr": cidr}
    clients = []
    new_clients = {}
    start = 100 if net.num_addresses >= 256 else 2
    for c in lab.clients:
        prev = alloc.clients.get(c.name)
        ip = c.ip or (prev if prev and prev not in pinned else None) or next_free(start)
        clients.append(ClientInfo(c.name, ip))
        new_clients[c.name] = ip
    alloc.nodes, alloc.clients = new_nodes, new_clients
    return tuple(nodes), tuple(clients)


def _static_band(size: int) -> int:
    """The low part of a range Kubernetes keeps for explicit requests (min(max(16, size/16), 256))."""
    return min(max(16, size // 16), 256)


def _allocate_cluster_ips(topo: Topology, alloc: Allocations) -> dict[str, str | None]:
    """ClusterIPs as the API server allocates them: explicit ones kept, the others from the Service
    CIDR, then (when it is full) from the further ServiceCIDR objects' ranges, in order."""
    nets = [ipaddress.ip_network(c) for c in topo.lab.service_cidrs]
    out: dict[str, str | None] = {}
    used = {s.cluster_ip for s in topo.services if s.cluster_ip and not s.headless}
    if topo.lab.cluster_dns:
        used.add(dns_ip(topo.lab))  # kube-dns' address, taken by the add-on (or the dump's own kube-dns)
    keep = {}
    for s in topo.services:
        if s.type == "ExternalName" or s.headless:
            continue
        prev = alloc.cluster_ips.get(s.key)
        if not s.cluster_ip and prev and prev not in used and any(ipaddress.ip_address(prev) in n for n in nets):
            keep[s.key] = prev
            used.add(prev)
    for s in sorted(topo.services, key=lambda s: s.key):
        if s.type == "ExternalName" or s.headless:
            out[s.key] = None
            continue
        ip = s.cluster_ip or keep.get(s.key)
        if not ip:
            ip = next((cand for net in nets for cand in _free_in(net, s.key, used)), None)
            if ip is None:
                raise TopologyError(topo.source, topo.where("Service", s.key), "spec.clusterIP",
                                    f"the Service CIDR {', '.join(map(str, nets))} is full")
            used.add(ip)
        out[s.key] = ip
    alloc.cluster_ips = {k: v for k, v in out.items() if v}
    return out


def _free_in(net, key: str, used: set):
    """The free addresses of `net` a Service's hash starts from, above the static band."""
    size = net.num_addresses
    band = _static_band(size)
    span = size - band - 1
    start = digest(key) % span
    for i in range(span):
        cand = str(net.network_address + band + (start + i) % span)
        if cand not in used:
            yield cand


def _allocate_node_ports(topo: Topology, alloc: Allocations) -> dict[str, tuple[int | None, ...]]:
    lo, hi = topo.lab.node_port_range
    size = hi - lo + 1
    used = {(p.node_port, p.protocol) for s in topo.services for p in s.ports if p.node_port}
    keep = {}
    for s in topo.services:
        if s.type not in ("NodePort", "LoadBalancer"):
            continue
        for p in s.ports:
            k = f"{s.key}|{p.port}|{p.protocol}"
            prev = alloc.node_ports.get(k)
            if not p.node_port and prev and lo <= prev <= hi and (prev, p.protocol) not in used:
                keep[k] = prev
                used.add((prev, p.protocol))
    out, new = {}, {}
    for s in sorted(topo.services, key=lambda s: s.key):
        ports = []
        for p in s.ports:
            if s.type not in ("NodePort", "LoadBalancer") or (not s.allocate_node_ports and not p.node_port):
                ports.append(None)
                continue
            k = f"{s.key}|{p.port}|{p.protocol}"
            np_ = p.node_port or keep.get(k)
            if not np_:
                band = _static_band(size) if size > 32 else 0
                span = size - band
                start = digest(k) % span
                for i in range(span):
                    cand = lo + band + (start + i) % span
                    if (cand, p.protocol) not in used:
                        np_ = cand
                        break
                else:
                    raise TopologyError(topo.source, topo.where("Service", s.key), "spec.ports",
                                        f"the NodePort range {lo}-{hi} is full")
                used.add((np_, p.protocol))
            ports.append(np_)
            new[k] = np_
        out[s.key] = tuple(ports)
    alloc.node_ports = new
    return out


def lb_address(lab) -> str:
    """The simulated cloud load balancer's own address: the node network's last usable one."""
    net = ipaddress.ip_network(lab.node_network)
    return str(net.broadcast_address - 1)


def _pool_addresses(lab) -> list[str]:
    """The LoadBalancer pool: spec.loadBalancer.pool, or .200-.249 of a /24 (or larger) node network."""
    net = ipaddress.ip_network(lab.node_network)
    if lab.lb_pool:
        first, last = (int(ipaddress.ip_address(x)) for x in lab.lb_pool)
    elif net.num_addresses >= 256:
        first, last = int(net.network_address) + 200, int(net.network_address) + 249
    else:
        return []
    return [str(ipaddress.ip_address(i)) for i in range(first, last + 1)]


def _allocate_load_balancers(topo: Topology, alloc: Allocations, hosts: set[str]) -> dict[str, tuple[str, ...]]:
    """The cloud provider's part: an address per LoadBalancer Service, published in its status.

    A manifest that already carries status.loadBalancer.ingress keeps that address (as one dumped
    from a real cluster does); spec.loadBalancerIP is honoured; otherwise the next free pool
    address, kept across syncs. An exhausted pool leaves the Service pending, as a cloud would."""
    # A loadBalancerClass names another controller: the simulated cloud leaves it alone (pending),
    # unless the object carries the address that controller gave it.
    lbs = sorted((s for s in topo.services if s.type == "LoadBalancer"
                  and (not s.load_balancer_class or s.load_balancer_ips)), key=lambda s: s.key)
    used = {ip for s in lbs for ip in s.load_balancer_ips} | {s.load_balancer_ip for s in lbs if s.load_balancer_ip}
    out: dict[str, tuple[str, ...]] = {}
    for s in lbs:
        prev = alloc.lb_ips.get(s.key)
        if s.load_balancer_ips:
            out[s.key] = s.load_balancer_ips
        elif s.load_balancer_ip:
            out[s.key] = (s.load_balancer_ip,)
        elif prev and not set(prev) & (used | hosts):
            out[s.key] = tuple(prev)
            used |= set(prev)
    for s in lbs:
        if s.key in out:
            continue
        free = next((ip for ip in _pool_addresses(topo.lab) if ip not in used and ip not in hosts), None)
        out[s.key] = (free,) if free else ()
        if free:
            used.add(free)
    alloc.lb_ips = {k: list(v) for k, v in out.items() if v}
    return out


def _allocate_health_ports(topo: Topology, alloc: Allocations, node_ports: dict[str, tuple]) -> dict[str, int]:
    """healthCheckNodePort for LoadBalancer Services with externalTrafficPolicy: Local."""
    lo, hi = topo.lab.node_port_range
    used = {np_ for ports in node_ports.values() for np_ in ports if np_}
    used |= {s.health_check_node_port for s in topo.services if s.health_check_node_port}
    out = {}
    for s in sorted(topo.services, key=lambda s: s.key):
        if s.type != "LoadBalancer" or not s.external_policy_local:
            continue
        port = s.health_check_node_port or alloc.health_ports.get(s.key)
        if not port or (port in used and port != s.health_check_node_port):
            start = digest(f"{s.key}#health") % (hi - lo + 1)
            port = next((lo + (start + i) % (hi - lo + 1) for i in range(hi - lo + 1)
                         if lo + (start + i) % (hi - lo + 1) not in used), None)
        if port:
            used.add(port)
            out[s.key] = port
    alloc.health_ports = dict(out)
    return out


# ----------------------------------------------------------------------------- controllers


def _schedule_and_address(topo: Topology, alloc: Allocations, nodes: tuple[NodeInfo, ...]
                          ) -> tuple[tuple[PodInfo, ...], tuple[tuple[str, str], ...]]:
    """Place and address every desired pod: (pods, pending pods with the scheduler's reason)."""
    terminating = {k: r for k, r in alloc.pods.items() if r.get("terminating")}
    desired = [(p, o) for p, o in desired_pods(topo, alloc) if p.key not in terminating]
    by_node = {n.name: n for n in nodes}
    specs = {n.name: n for n in topo.lab.nodes}
    order = {n.name: i for i, n in enumerate(nodes)}
    load = {n.name: 0 for n in nodes}
    used: dict[str, set[str]] = {n.name: set() for n in nodes}
    placed: dict[str, dict] = {}
    out, pending = [], []
    # Terminating pods keep their node and IP (and get no new traffic) until their grace period ends.
    for key, rec in terminating.items():
        if rec.get("node") not in by_node:
            continue
        snap = rec.get("snapshot", {})
        ns, name = key.split("/", 1)
        used[rec["node"]].add(rec["ip"])
        placed[key] = rec
        out.append(PodInfo(name, ns, rec["node"], rec["ip"], tuple(tuple(x) for x in snap.get("labels", ())),
                           tuple(ContainerPort(p, proto, n) for p, proto, n in snap.get("ports", ())), snap.get("owner"),
                           ready=False, terminating=True, serving=rec.get("ready", True), owner_kind=snap.get("owner_kind")))
    # A dumped pod's address is its own: reserved before any other pod is addressed.
    pinned = {pod.ip: pod.key for pod, _owner in desired if pod.ip and pod.node_name in by_node}
    for pod, _owner in desired:
        if pod.ip in pinned:
            used[pod.node_name].add(pod.ip)
    host_ports: dict[str, set] = {n.name: set() for n in nodes}  # a host-network pod's ports are its node's

    def ports_of(pod) -> set:
        return {(c.port, c.protocol) for c in pod.ports}

    for pod, _owner in desired:
        rec = alloc.pods.get(pod.key, {})
        if pod.host_network:
            if rec.get("node") in by_node and (not pod.node_name or pod.node_name == rec["node"]) \
                    and not ports_of(pod) & host_ports[rec["node"]]:
                rec = alloc.pods[pod.key] = {**rec, "ip": by_node[rec["node"]].ip}
                placed[pod.key] = rec
                load[rec["node"]] += 1
                host_ports[rec["node"]] |= ports_of(pod)
            continue
        if pod.ip and pod.node_name in by_node:
            if rec.get("ip") != pod.ip or rec.get("node") != pod.node_name:
                rec = alloc.pods[pod.key] = {**rec, "node": pod.node_name, "ip": pod.ip}
        if rec.get("node") in by_node and rec.get("ip") and (not pod.node_name or pod.node_name == rec["node"]) \
                and ipaddress.ip_address(rec["ip"]) in ipaddress.ip_network(by_node[rec["node"]].pod_cidr) \
                and pinned.get(rec["ip"], pod.key) == pod.key:
            placed[pod.key] = rec
            load[rec["node"]] += 1
            used[rec["node"]].add(rec["ip"])
    for pod, owner in desired:
        rec = dict(alloc.pods.get(pod.key, {}))
        if pod.key not in placed:
            node = pod.node_name
            pod_ports = ports_of(pod)  # bound in the lambda below: this turn's pod
            free = (lambda n, pod_ports=pod_ports: not pod_ports & host_ports[n]) if pod.host_network else (lambda n: True)
            if node is None:
                fits = [n for n in load if schedulable(specs[n], pod.tolerations, pod.node_selector) and free(n)] \
                    if specs else [n for n in load if free(n)]
                if not fits:
                    pending.append((pod.key, f"0/{len(nodes)} nodes are available: none matches the pod's "
                                             f"nodeSelector, tolerates its node's taints"
                                             + (" and has its ports free (hostNetwork)" if pod.host_network else "")))
                    continue
                node = min(fits, key=lambda n: (load[n], order[n]))
            elif pod.host_network and not free(node):
                pending.append((pod.key, f"node {node} has the pod's ports in use by another host-network pod"))
                continue
            load[node] += 1
            if pod.host_network:
                host_ports[node] |= ports_of(pod)
                rec.update(node=node, ip=by_node[node].ip)
                placed[pod.key] = rec
        if pod.key not in placed:
            net = ipaddress.ip_network(by_node[node].pod_cidr)
            cursor = alloc.ip_cursor.get(node, 1)
            span = net.num_addresses - 3  # network, gateway (.1), broadcast
            for i in range(1, span + 1):
                off = 2 + (cursor - 2 + i) % span
                ip = str(net.network_address + off)
                if ip not in used[node]:
                    break
            else:
                raise TopologyError(topo.source, topo.where("Pod", pod.key), "spec.nodeName",
                                    f"node {node}'s pod CIDR {net} is full")
            used[node].add(ip)
            alloc.ip_cursor[node] = off
            rec.update(node=node, ip=ip)
            placed[pod.key] = rec
        rec.setdefault("owner", owner)
        rec.setdefault("serial", 0)
        placed[pod.key] = rec
        # Without a readiness probe a running pod is ready; with one, only once the probe passed.
        ready = rec.get("ready", not any(p.kind == "readiness" for p in pod.probes))
        out.append(PodInfo(pod.name, pod.namespace, rec["node"], rec["ip"], pod.labels, pod.ports, pod.owner,
                           ready=ready, serving=ready, probes=pod.probes, grace_period=pod.grace_period,
                           workload=pod.workload, owner_kind=pod.owner_kind, hostname=pod.hostname,
                           subdomain=pod.subdomain, host_network=pod.host_network))
    alloc.pods = placed
    return tuple(sorted(out, key=lambda p: p.key)), tuple(pending)


def _resolve_target(sp, pod: PodInfo) -> int | None:
    """The pod port a Service port sends to: a number, a named container port, or the port itself."""
    t = sp.target_port
    if t is None:
        return sp.port
    if isinstance(t, int):
        return t
    if t.isdigit():
        return int(t)
    for cp in pod.ports:
        if cp.name == t and cp.protocol == sp.protocol:
            return cp.port
    return None


def _hints(svc: Service, node: str, zones: dict[str, str], version: versions.Version) -> dict:
    """The hints the EndpointSlice controller's trafficDistribution heuristic gives an endpoint
    (staging/src/k8s.io/endpointslice/trafficdist): its own zone (PreferClose, PreferSameZone),
    and its own node too (PreferSameNode); none for an endpoint whose node has no zone label."""
    td = svc.traffic_distribution
    if td is None or svc.topology_mode not in (None, "", "disabled", "Disabled") \
            or not versions.on(versions.TRAFFIC_DISTRIBUTION, version):
        return {}  # the topology-mode annotation takes precedence (its Auto hints are not computed)
    if td != "PreferClose" and not versions.on(versions.PREFER_SAME_NODE, version):
        return {}  # the API server refuses the value before 1.34 (alpha gate off)
    zone = zones.get(node)
    out = {"zone_hints": (zone,)} if zone else {}
    if td == "PreferSameNode":
        out["node_hints"] = (node,)
    return out


def _from_pods(svc: Service, members: list[PodInfo], sp, zones: dict[str, str] | None = None,
               version: versions.Version = versions.DEFAULT) -> list[tuple[Endpoint, str | None]]:
    """The EndpointSlice controller's endpoints for one Service port, with each pod's hostname."""
    eps = []
    for p in members:
        port = _resolve_target(sp, p)
        if port is None:
            continue
        # The EndpointSlice controller (podToEndpoint): serving is the pod's readiness; ready is never
        # true for a terminating pod, unless publishNotReadyAddresses publishes every pod as ready.
        serving = p.serving
        ready = svc.publish_not_ready or (serving and not p.terminating)
        hostname = p.hostname if p.hostname and p.subdomain == svc.name else None
        eps.append((Endpoint(p.ip, port, p.node, ready=ready, serving=serving, terminating=p.terminating,
                             **_hints(svc, p.node, zones or {}, version)), hostname))
    return eps


def _from_slices(slices: list, sp) -> list[tuple[Endpoint, str | None]]:
    """What kube-proxy reads from EndpointSlices for one Service port (pkg/proxy/endpointslicecache.go):
    the slice port of the same name and protocol, the first address of each endpoint, a missing ready
    or serving condition taken as true."""
    eps = []
    for sl in slices:
        for port in sl.ports:
            if port.name != sp.name or port.protocol != sp.protocol or not port.port:
                continue
            for e in sl.endpoints:
                ready = e.ready is not False
                serving = e.serving is not False
                eps.append((Endpoint(e.addresses[0], port.port, e.node_name, ready=ready, serving=serving,
                                     terminating=bool(e.terminating), zone_hints=e.hint_zones,
                                     node_hints=e.hint_nodes), e.hostname))
    return eps


def _select(index: dict[tuple[str, str, str], list[PodInfo]], namespace: str, selector) -> list[PodInfo]:
    """The pods of `namespace` whose labels hold every pair of a Service's selector (pod order kept)."""
    lists = [index.get((namespace, k, v), []) for k, v in selector]
    if not lists:
        return []
    lists.sort(key=len)
    keep = set.intersection(*(set(map(id, ps)) for ps in lists[1:])) if len(lists) > 1 else None
    return [p for p in lists[0] if keep is None or id(p) in keep]


def _service_endpoints(svc: Service, pod_index: dict, slices: list, rebuild: bool, zones: dict[str, str] | None = None,
                       version: versions.Version = versions.DEFAULT
                       ) -> tuple[tuple[tuple[Endpoint, ...], ...], tuple[tuple[str, str], ...]]:
    """Per Service port, the endpoints every node's kube-proxy sees; and endpoint IP → hostname."""
    slices = sorted(slices, key=lambda sl: sl.name)
    computed = svc.selector is not None and (rebuild or not any(sl.from_controller for sl in slices))
    read = [sl for sl in slices if not (computed and sl.from_controller)]
    members = _select(pod_index, svc.namespace, svc.selector) if computed else []
    per_port, hostnames = [], {}
    for sp in svc.ports:
        merged: dict[str, Endpoint] = {}
        # Endpoints are keyed by ip:port across slices, as kube-proxy does: the first one wins.
        for e, hostname in (_from_pods(svc, members, sp, zones, version) if computed else []) + _from_slices(read, sp):
            merged.setdefault(e.address, e)
            if hostname:
                hostnames.setdefault(e.ip, hostname)
        per_port.append(tuple(merged.values()))
    return tuple(per_port), tuple(sorted(hostnames.items()))


DNS_LABELS = (("k8s-app", "kube-dns"),)
INGRESS_NAMESPACE = "ingress-system"
INGRESS_CONTROLLER = "testbed.dev/ingress-controller"
INGRESS_LABELS = (("app.kubernetes.io/name", "ingress-controller"),)


def dns_ip(lab) -> str:
    """The cluster DNS Service's address: spec.clusterDNS.ip, or the Service CIDR's 10th (10.96.0.10)."""
    return lab.cluster_dns_ip or str(ipaddress.ip_network(lab.service_cidr).network_address + 10)


def with_addons(topo: Topology) -> Topology:
    """The cluster add-ons a real cluster runs, unless the topology brings its own:

    - kube-dns: Service kube-system/kube-dns at 10.96.0.10 (53/UDP `dns`, 53/TCP `dns-tcp`) in front of
      a `coredns` Deployment whose pod runs testbed's DNS server;
    - when there are Ingresses: an ingress controller (Deployment and Service in ingress-system,
      exposed as spec.ingressController.serviceType) and its IngressClass `testbed`, the default
      class unless another is marked default.
    """
    from dataclasses import replace

    from .model import ContainerPort, Deployment, PodTemplate, Selector, Service, ServicePortSpec

    lab = topo.lab
    services, deployments, classes = list(topo.services), list(topo.deployments), list(topo.ingress_classes)
    have = {s.key for s in services}
    if lab.cluster_dns and "kube-system/kube-dns" not in have:
        services.append(Service("kube-dns", "kube-system", selector=DNS_LABELS, cluster_ip=dns_ip(lab),
                                ports=(ServicePortSpec(53, "UDP", "dns", 53), ServicePortSpec(53, "TCP", "dns-tcp", 53)),
                                labels=DNS_LABELS + (("kubernetes.io/name", "CoreDNS"),)))
        deployments.append(Deployment("coredns", "kube-system", 1, Selector(DNS_LABELS), PodTemplate(
            DNS_LABELS, (ContainerPort(53, "UDP", "dns"), ContainerPort(53, "TCP", "dns-tcp")), workload="dns")))
    if topo.ingresses and f"{INGRESS_NAMESPACE}/ingress-controller" not in have:
        services.append(Service("ingress-controller", INGRESS_NAMESPACE, type=lab.ingress_service_type,
                                selector=INGRESS_LABELS, ports=(ServicePortSpec(80, "TCP", "http", "http"),),
                                labels=INGRESS_LABELS))
        deployments.append(Deployment("ingress-controller", INGRESS_NAMESPACE, 1, Selector(INGRESS_LABELS), PodTemplate(
            INGRESS_LABELS, (ContainerPort(80, "TCP", "http"),), workload="ingress")))
        if not any(c.controller == INGRESS_CONTROLLER for c in classes):
            from .ingress import IngressClass
            classes.append(IngressClass("testbed", INGRESS_CONTROLLER, not any(c.is_default for c in classes)))
    return replace(topo, services=tuple(services), deployments=tuple(deployments), ingress_classes=tuple(classes))


def reconcile(topo: Topology, alloc: Allocations | None = None) -> tuple[ClusterState, Allocations]:
    """Desired topology + previous allocations → the cluster state, and the allocations to keep."""
    topo = with_addons(topo)
    alloc = Allocations.from_json(alloc.to_json()) if alloc else Allocations()
    for key in alloc.deleted:
        alloc.pods.pop(key, None)
    alloc.deleted = []
    nodes, clients = _allocate_hosts(topo, alloc)
    cips = _allocate_cluster_ips(topo, alloc)
    nps = _allocate_node_ports(topo, alloc)
    pods, pending = _schedule_and_address(topo, alloc, nodes)
    lbs = _allocate_load_balancers(topo, alloc, {n.ip for n in nodes} | {c.ip for c in clients})
    health = _allocate_health_ports(topo, alloc, nps)
    pod_index: dict[tuple[str, str, str], list[PodInfo]] = {}  # (namespace, label, value) → pods
    for p in pods:
        for k, v in p.labels:
            pod_index.setdefault((p.namespace, k, v), []).append(p)
    slices_by_svc: dict[str, list] = {}
    for sl in topo.slices:
        slices_by_svc.setdefault(f"{sl.namespace}/{sl.service_name}", []).append(sl)
    services = []
    # The EndpointSlice controller sets an endpoint's zone from its node's label; its release is the lab's.
    zones = {n.name: n.label_map[ZONE_LABEL] for n in topo.lab.nodes if n.label_map.get(ZONE_LABEL)}
    version = versions.parse(topo.lab.kube_proxy_version) if topo.lab.kube_proxy_version else versions.DEFAULT
    for s in sorted(topo.services, key=lambda s: s.key):
        eps, hostnames = _service_endpoints(s, pod_index, slices_by_svc.get(s.key, []), topo.lab.rebuild_endpoints,
                                            zones, version)
        services.append(ServiceInfo(s, cips.get(s.key), nps.get(s.key, tuple(None for _ in s.ports)), eps,
                                    lbs.get(s.key, ()), health.get(s.key), hostnames))
    return ClusterState(topo, nodes, clients, pods, tuple(services), pending), alloc
