"""Topology files → frozen, validated objects.

A topology is one multi-document YAML: an optional `testbed.dev/v1alpha1` Lab document plus
ordinary Kubernetes manifests (Pod, Deployment, Service, discovery.k8s.io/v1 EndpointSlice).
Everything is checked here, before anything touches the kernel; errors name the file, the object
and the field. Fields the lab does not model are collected as warnings, once per field.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from .errors import TopologyError

PROXY_MODES = ("iptables", "nftables", "ipvs", "userspace")
IMPLEMENTED_MODES = ("iptables", "nftables", "userspace", "ipvs")
IPVS_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LAB_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,14}[a-z0-9])?$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PROTOCOLS = ("TCP", "UDP", "SCTP")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")


# ----------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True)
class ProbeSpec:
    """A readiness or liveness probe, as a container declares it (run by the lab's agent)."""

    kind: str  # readiness | liveness
    action: str  # http | tcp | exec
    port: int | str | None = None  # a number or a named container port (http, tcp)
    path: str = "/"
    command: tuple[str, ...] = ()
    period: int = 10
    timeout: int = 1
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay: int = 0


@dataclass(frozen=True)
class PodTemplate:
    labels: tuple[tuple[str, str], ...]
    ports: tuple[ContainerPort, ...]
    node_name: str | None = None
    probes: tuple[ProbeSpec, ...] = ()
    grace_period: int = 30
    workload: str = "netexec"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: tuple[tuple[str, str], ...]
    ports: tuple[ContainerPort, ...]
    node_name: str | None = None
    owner: str | None = None  # the Deployment that made it
    probes: tuple[ProbeSpec, ...] = ()
    grace_period: int = 30  # terminationGracePeriodSeconds
    workload: str = "netexec"  # what the pod runs: netexec | dns | ingress (annotation testbed.dev/workload)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class Deployment:
    name: str
    namespace: str
    replicas: int
    selector: "Selector"
    template: PodTemplate

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Selector:
    """A label selector: matchLabels plus matchExpressions (In, NotIn, Exists, DoesNotExist)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        for key, op, values in self.expressions:
            present = key in labels
            if op == "In" and not (present and labels[key] in values):
                return False
            if op == "NotIn" and present and labels[key] in values:
                return False
            if op == "Exists" and not present:
                return False
            if op == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True)
class ServicePortSpec:
    port: int
    protocol: str = "TCP"
    name: str = ""
    target_port: int | str | None = None  # None → same as port
    node_port: int | None = None


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    type: str = "ClusterIP"
    selector: tuple[tuple[str, str], ...] | None = None  # None: no selector (EndpointSlices by hand)
    ports: tuple[ServicePortSpec, ...] = ()
    cluster_ip: str | None = None  # requested; "None" means headless
    external_ips: tuple[str, ...] = ()
    session_affinity_timeout: int | None = None
    external_policy_local: bool = False
    internal_policy_local: bool = False
    load_balancer_source_ranges: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()  # status.loadBalancer.ingress (kept, as from a real cluster)
    load_balancer_ip: str | None = None  # spec.loadBalancerIP (deprecated upstream, still honoured)
    health_check_node_port: int | None = None
    publish_not_ready: bool = False
    external_name: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    ipvs_scheduler: str | None = None  # annotation testbed.dev/ipvs-scheduler (a per-Service choice)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"


@dataclass(frozen=True)
class SliceEndpoint:
    addresses: tuple[str, ...]
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None
    node_name: str | None = None


@dataclass(frozen=True)
class SlicePort:
    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True)
class EndpointSlice:
    name: str
    namespace: str
    service_name: str
    endpoints: tuple[SliceEndpoint, ...]
    ports: tuple[SlicePort, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    ip: str | None = None  # pinned node IP on the node network
    pod_cidr: str | None = None  # pinned pod CIDR


@dataclass(frozen=True)
class ClientSpec:
    name: str
    ip: str | None = None


@dataclass(frozen=True)
class LabSpec:
    name: str = "testbed"
    proxy_mode: str = "iptables"
    nodes: tuple[NodeSpec, ...] = (NodeSpec("node-1"), NodeSpec("node-2"))
    clients: tuple[ClientSpec, ...] = (ClientSpec("outside"),)
    node_network: str = "172.18.0.0/24"
    cluster_cidr: str = "10.244.0.0/16"
    node_cidr_mask: int = 24
    service_cidr: str = "10.96.0.0/12"
    node_port_range: tuple[int, int] = (30000, 32767)
    masquerade_all: bool = False
    conntrack_cleanup: bool = True  # kube-proxy's stale UDP conntrack reconciler; off reproduces the bug
    lb_pool: tuple[str, str] | None = None  # first and last LoadBalancer address; None: the default pool
    lb_mode: str = "nodeport"  # nodeport: full-NAT to the NodePorts | passthrough: to the nodes unchanged
    cluster_dns: bool = True  # the kube-dns add-on (Service kube-system/kube-dns, testbed's DNS server)
    cluster_dns_ip: str | None = None  # default: the Service CIDR's 10th address (10.96.0.10)
    cluster_domain: str = "cluster.local"
    ingress_service_type: str = "NodePort"  # how the ingress controller is exposed (when Ingresses exist)
    ipvs_scheduler: str = "rr"  # kube-proxy's --ipvs-scheduler


@dataclass(frozen=True)
class Topology:
    """A loaded, validated topology file: the Lab plus the Kubernetes objects."""

    lab: LabSpec
    pods: tuple[Pod, ...] = ()
    deployments: tuple[Deployment, ...] = ()
    services: tuple[Service, ...] = ()
    slices: tuple[EndpointSlice, ...] = ()
    ingresses: tuple = ()
    ingress_classes: tuple = ()
    source: str = "<memory>"
    warnings: tuple[str, ...] = ()

    def with_lab(self, **changes) -> "Topology":
        return replace(self, lab=replace(self.lab, **changes))


# ----------------------------------------------------------------------------- parsing helpers


class _Doc:
    """Typed access to one YAML document, raising TopologyError with the field path."""

    def __init__(self, file: str, obj: str, data: dict, ignored: list[str]):
        self.file, self.obj, self.data, self.ignored = file, obj, data, ignored

    def fail(self, path: str, problem: str):
        raise TopologyError(self.file, self.obj, path, problem)

    def get(self, path: str, default=None):
        cur = self.data
        for part in path.split("."):
            if not isinstance(cur, dict):
                self.fail(path, f"expected a mapping at {part!r}, got {type(cur).__name__}")
            if part not in cur or cur[part] is None:
                return default
            cur = cur[part]
        return cur

    def mapping(self, path: str, value=None, default=None) -> dict:
        v = self.get(path) if value is None else value
        if v is None:
            return {} if default is None else default
        if not isinstance(v, dict):
            self.fail(path, f"expected a mapping, got {type(v).__name__}")
        return v

    def seq(self, path: str, value=None) -> list:
        v = self.get(path) if value is None else value
        if v is None:
            return []
        if not isinstance(v, list):
            self.fail(path, f"expected a list, got {type(v).__name__}")
        return v

    def string(self, path: str, value=None, required=False, default=None) -> str | None:
        v = self.get(path) if value is None else value
        if v is None:
            if required:
                self.fail(path, "is required")
            return default
        if not isinstance(v, str):
            self.fail(path, f"expected a string, got {v!r}")
        return v

    def integer(self, path: str, value=None, lo=None, hi=None, default=None) -> int | None:
        v = self.get(path) if value is None else value
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(path, f"expected an integer, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.fail(path, f"expected an integer in {lo}-{hi}, got {v}")
        return v

    def boolean(self, path: str, default=False) -> bool:
        v = self.get(path)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.fail(path, f"expected true or false, got {v!r}")
        return v

    def check_keys(self, path: str, value: dict, known: set[str]) -> None:
        for k in value:
            if k not in known:
                self.ignored.append(f"{self.file}: {self.obj}: {path + '.' if path else ''}{k}")

    def ip(self, path: str, value: str, network: str | None = None) -> str:
        if not isinstance(value, str):  # ipaddress would take 5 as 0.0.0.5
            self.fail(path, f"expected an IPv4 address as a string, got {value!r}")
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            self.fail(path, f"expected an IPv4 address, got {value!r}")
        if addr.version != 4:
            self.fail(path, f"only IPv4 is modelled, got {value!r}")
        if network and addr not in ipaddress.ip_network(network):
            self.fail(path, f"expected an address inside {network}, got {value}")
        return str(addr)

    def cidr(self, path: str, value: str) -> str:
        if not isinstance(value, str):
            self.fail(path, f"expected a CIDR as a string such as 10.96.0.0/12, got {value!r}")
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as e:
            self.fail(path, f"expected a CIDR such as 10.96.0.0/12, got {value!r} ({e})")
        if net.version != 4:
            self.fail(path, f"only IPv4 is modelled, got {value!r}")
        return str(net)

    def name(self, path: str, value, pattern=DNS_LABEL, max_len=63, what="a DNS-1123 label") -> str:
        v = self.string(path, value, required=True)
        if len(v) > max_len or not pattern.match(v):
            self.fail(path, f"expected {what} (lower-case letters, digits, '-', at most {max_len} characters), got {v!r}")
        return v

    def labels(self, path: str, value) -> tuple[tuple[str, str], ...]:
        m = self.mapping(path, value)
        out = []
        for k, v in m.items():
            if not isinstance(k, str) or not LABEL_KEY.match(k):
                self.fail(f"{path}.{k}", "expected a label key such as app or example.com/tier")
            if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
                self.fail(f"{path}.{k}", f"expected a label value (string, at most 63 characters), got {v!r}")
            out.append((k, v))
        return tuple(sorted(out))

    def selector(self, path: str, value) -> Selector:
        m = self.mapping(path, value)
        self.check_keys(path, m, {"matchLabels", "matchExpressions"})
        exprs = []
        for i, e in enumerate(self.seq(f"{path}.matchExpressions", m.get("matchExpressions"))):
            p = f"{path}.matchExpressions[{i}]"
            e = self.mapping(p, e)
            key = self.string(f"{p}.key", e.get("key"), required=True)
            op = self.string(f"{p}.operator", e.get("operator"), required=True)
            if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
                self.fail(f"{p}.operator", f"expected In, NotIn, Exists or DoesNotExist, got {op!r}")
            values = tuple(str(x) for x in self.seq(f"{p}.values", e.get("values")))
            if op in ("In", "NotIn") and not values:
                self.fail(f"{p}.values", f"operator {op} needs at least one value")
            if op in ("Exists", "DoesNotExist") and values:
                self.fail(f"{p}.values", f"operator {op} takes no values")
            exprs.append((key, op, values))
        sel = Selector(self.labels(f"{path}.matchLabels", m.get("matchLabels")), tuple(exprs))
        if not sel.match_labels and not sel.expressions:
            self.fail(path, "expected matchLabels or matchExpressions (an empty selector would match every pod)")
        return sel

    def protocol(self, path: str, value) -> str:
        v = self.string(path, value, default="TCP")
        if v not in PROTOCOLS:
            self.fail(path, f"expected one of {', '.join(PROTOCOLS)}, got {v!r}")
        return v


@dataclass(frozen=True)
class _PodSpec:
    ports: tuple[ContainerPort, ...]
    probes: tuple[ProbeSpec, ...]
    grace_period: int
    node_name: str | None


def _probe(doc: _Doc, path: str, kind: str, raw) -> ProbeSpec:
    p = doc.mapping(path, raw)
    doc.check_keys(path, p, {"httpGet", "tcpSocket", "exec", "periodSeconds", "timeoutSeconds", "failureThreshold",
                             "successThreshold", "initialDelaySeconds", "terminationGracePeriodSeconds"})
    actions = [a for a in ("httpGet", "tcpSocket", "exec") if p.get(a) is not None]
    if len(actions) != 1:
        doc.fail(path, f"expected exactly one of httpGet, tcpSocket or exec, got {actions or 'none'}")
    a = actions[0]
    body = doc.mapping(f"{path}.{a}", p[a])
    kw = {}
    if a in ("httpGet", "tcpSocket"):
        doc.check_keys(f"{path}.{a}", body, {"port", "path", "scheme", "host", "httpHeaders"})
        port = body.get("port")
        if isinstance(port, str) and not port.isdigit():
            doc.name(f"{path}.{a}.port", port, max_len=15, what="a port number or a named container port")
        else:
            port = doc.integer(f"{path}.{a}.port", int(port) if isinstance(port, str) else port, 1, 65535)
            if port is None:
                doc.fail(f"{path}.{a}.port", "is required")
        kw["port"] = port
        if a == "httpGet":
            kw["path"] = doc.string(f"{path}.httpGet.path", body.get("path"), default="/")
    else:
        doc.check_keys(f"{path}.exec", body, {"command"})
        cmd = doc.seq(f"{path}.exec.command", body.get("command"))
        if not cmd or not all(isinstance(x, str) for x in cmd):
            doc.fail(f"{path}.exec.command", "expected a non-empty list of strings")
        kw["command"] = tuple(cmd)
    ints = {k: doc.integer(f"{path}.{f}", p.get(f), lo, 3600, default=d) for k, f, lo, d in (
        ("period", "periodSeconds", 1, 10), ("timeout", "timeoutSeconds", 1, 1),
        ("failure_threshold", "failureThreshold", 1, 3), ("success_threshold", "successThreshold", 1, 1),
        ("initial_delay", "initialDelaySeconds", 0, 0))}
    if kind == "liveness" and ints["success_threshold"] != 1:
        doc.fail(f"{path}.successThreshold", "must be 1 for a liveness probe")
    return ProbeSpec(kind, {"httpGet": "http", "tcpSocket": "tcp", "exec": "exec"}[a], **kw, **ints)


def _pod_spec(doc: _Doc, path: str, spec: dict) -> _PodSpec:
    doc.check_keys(path, spec, {"containers", "nodeName", "restartPolicy", "terminationGracePeriodSeconds"})
    ports: list[ContainerPort] = []
    probes: list[ProbeSpec] = []
    containers = doc.seq(f"{path}.containers", spec.get("containers"))
    if not containers:
        doc.fail(f"{path}.containers", "expected at least one container")
    for ci, c in enumerate(containers):
        cp = f"{path}.containers[{ci}]"
        c = doc.mapping(cp, c)
        doc.check_keys(cp, c, {"name", "image", "ports", "args", "command", "readinessProbe", "livenessProbe"})
        for pi, p in enumerate(doc.seq(f"{cp}.ports", c.get("ports"))):
            pp = f"{cp}.ports[{pi}]"
            p = doc.mapping(pp, p)
            doc.check_keys(pp, p, {"containerPort", "protocol", "name"})
            port = doc.integer(f"{pp}.containerPort", p.get("containerPort"), 1, 65535)
            if port is None:
                doc.fail(f"{pp}.containerPort", "is required")
            name = p.get("name") or ""
            if name:
                doc.name(f"{pp}.name", name, max_len=15, what="an IANA service name")
            ports.append(ContainerPort(port, doc.protocol(f"{pp}.protocol", p.get("protocol")), name))
        for kind, key in (("readiness", "readinessProbe"), ("liveness", "livenessProbe")):
            if c.get(key) is not None:
                probes.append(_probe(doc, f"{cp}.{key}", kind, c[key]))
    seen = set()
    for p in ports:
        if (p.port, p.protocol) in seen:
            doc.fail(f"{path}.containers", f"port {p.port}/{p.protocol} is declared twice")
        seen.add((p.port, p.protocol))
    names = {p.name for p in ports if p.name}
    for i, pr in enumerate(probes):
        if isinstance(pr.port, str) and pr.port not in names:
            doc.fail(f"{path}.containers", f"a {pr.kind} probe uses port {pr.port!r}, but no container port has that name")
    grace = doc.integer(f"{path}.terminationGracePeriodSeconds", spec.get("terminationGracePeriodSeconds"), 0, 86400, default=30)
    return _PodSpec(tuple(ports), tuple(probes), grace, doc.string(f"{path}.nodeName", spec.get("nodeName")))


WORKLOADS = ("netexec", "dns", "ingress")


def _workload(doc: _Doc, meta_path: str) -> str:
    """Pods run testbed's netexec unless annotated `testbed.dev/workload: dns | ingress`."""
    ann = doc.mapping(f"{meta_path}.annotations")
    w = ann.get("testbed.dev/workload", "netexec")
    if w not in WORKLOADS:
        doc.fail(f"{meta_path}.annotations.testbed.dev/workload", f"expected one of {', '.join(WORKLOADS)}, got {w!r}")
    return w


def _metadata(doc: _Doc, kind: str) -> tuple[str, str]:
    meta = doc.mapping("metadata")
    doc.check_keys("metadata", meta, {"name", "namespace", "labels", "annotations", "uid", "resourceVersion",
                                      "creationTimestamp", "generation", "managedFields", "ownerReferences"})
    max_len = 63 if kind in ("Service", "Pod", "Lab") else 253
    pattern = DNS_LABEL if kind in ("Service",) else DNS_SUBDOMAIN
    name = doc.name("metadata.name", meta.get("name"), pattern=pattern, max_len=max_len,
                    what="a DNS-1123 label" if pattern is DNS_LABEL else "a DNS-1123 subdomain")
    ns = doc.name("metadata.namespace", meta.get("namespace") or "default")
    return name, ns


# ----------------------------------------------------------------------------- per kind


def _parse_lab(doc: _Doc) -> LabSpec:
    meta = doc.mapping("metadata")
    name = doc.string("metadata.name", meta.get("name"), default="testbed")
    if not LAB_NAME.match(name):
        doc.fail("metadata.name", f"expected a lab name of at most 16 characters (a-z, 0-9, '-'), got {name!r}")
    spec = doc.mapping("spec")
    doc.check_keys("spec", spec, {"proxyMode", "nodes", "clients", "nodeNetwork", "clusterCIDR", "nodeCIDRMaskSize",
                                  "serviceCIDR", "serviceNodePortRange", "masqueradeAll", "conntrackCleanup",
                                  "loadBalancer", "clusterDNS", "ingressController", "ipvsScheduler"})
    mode = doc.string("spec.proxyMode", default="iptables")
    if mode not in PROXY_MODES:
        doc.fail("spec.proxyMode", f"expected one of {', '.join(PROXY_MODES)}, got {mode!r}")
    node_network = doc.cidr("spec.nodeNetwork", doc.string("spec.nodeNetwork", default="172.18.0.0/24"))
    cluster_cidr = doc.cidr("spec.clusterCIDR", doc.string("spec.clusterCIDR", default="10.244.0.0/16"))
    service_cidr = doc.cidr("spec.serviceCIDR", doc.string("spec.serviceCIDR", default="10.96.0.0/12"))
    mask = doc.integer("spec.nodeCIDRMaskSize", lo=ipaddress.ip_network(cluster_cidr).prefixlen, hi=28, default=24)
    rng = doc.string("spec.serviceNodePortRange", default="30000-32767")
    m = re.fullmatch(r"(\d+)-(\d+)", rng)
    if not m or not (1 <= int(m[1]) <= int(m[2]) <= 65535):
        doc.fail("spec.serviceNodePortRange", f"expected a range such as 30000-32767, got {rng!r}")
    nets = {"spec.nodeNetwork": node_network, "spec.clusterCIDR": cluster_cidr, "spec.serviceCIDR": service_cidr}
    items = list(nets.items())
    for i, (pa, a) in enumerate(items):
        for pb, b in items[i + 1:]:
            if ipaddress.ip_network(a).overlaps(ipaddress.ip_network(b)):
                doc.fail(pb, f"expected a range that does not overlap {pa} ({a}), got {b}")

    def hosts(path: str, cls, extra: set[str]):
        out = []
        for i, h in enumerate(doc.seq(path)):
            hp = f"{path}[{i}]"
            h = doc.mapping(hp, h)
            doc.check_keys(hp, h, {"name", "ip"} | extra)
            hname = doc.name(f"{hp}.name", h.get("name"), max_len=40, what="a host name")
            ip = doc.ip(f"{hp}.ip", h["ip"], node_network) if h.get("ip") else None
            kw = {}
            if "podCIDR" in extra and h.get("podCIDR"):
                cidr = doc.cidr(f"{hp}.podCIDR", h["podCIDR"])
                if not ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network(cluster_cidr)):
                    doc.fail(f"{hp}.podCIDR", f"expected a subnet of spec.clusterCIDR ({cluster_cidr}), got {cidr}")
                kw["pod_cidr"] = cidr
            out.append(cls(hname, ip, **kw))
        return tuple(out)

    nodes = hosts("spec.nodes", NodeSpec, {"podCIDR"}) if doc.get("spec.nodes") is not None else LabSpec.nodes
    if not nodes:
        doc.fail("spec.nodes", "expected at least one node")
    clients = hosts("spec.clients", ClientSpec, set()) if doc.get("spec.clients") is not None else LabSpec.clients
    lb = doc.mapping("spec.loadBalancer")
    doc.check_keys("spec.loadBalancer", lb, {"pool", "mode"})
    lb_mode = doc.string("spec.loadBalancer.mode", lb.get("mode"), default="nodeport")
    if lb_mode not in ("nodeport", "passthrough"):
        doc.fail("spec.loadBalancer.mode", f"expected nodeport or passthrough, got {lb_mode!r}")
    lb_pool = None
    if lb.get("pool") is not None:
        raw = doc.string("spec.loadBalancer.pool", lb.get("pool"))
        if "-" in raw:
            first, last = (doc.ip("spec.loadBalancer.pool", x.strip(), node_network) for x in raw.split("-", 1))
        else:
            net = ipaddress.ip_network(doc.cidr("spec.loadBalancer.pool", raw))
            if not net.subnet_of(ipaddress.ip_network(node_network)):
                doc.fail("spec.loadBalancer.pool", f"expected addresses inside spec.nodeNetwork ({node_network}), got {raw}")
            first, last = str(net.network_address), str(net.broadcast_address)
        if ipaddress.ip_address(first) > ipaddress.ip_address(last):
            doc.fail("spec.loadBalancer.pool", f"expected FIRST-LAST with FIRST <= LAST, got {raw}")
        lb_pool = (first, last)
    dns = doc.mapping("spec.clusterDNS")
    doc.check_keys("spec.clusterDNS", dns, {"enabled", "ip", "domain"})
    dns_ip = doc.ip("spec.clusterDNS.ip", dns["ip"], service_cidr) if dns.get("ip") else None
    domain = doc.name("spec.clusterDNS.domain", dns.get("domain") or "cluster.local", pattern=DNS_SUBDOMAIN,
                      max_len=253, what="a DNS domain")
    ing = doc.mapping("spec.ingressController")
    doc.check_keys("spec.ingressController", ing, {"serviceType"})
    ing_type = doc.string("spec.ingressController.serviceType", ing.get("serviceType"), default="NodePort")
    if ing_type not in ("NodePort", "LoadBalancer", "ClusterIP"):
        doc.fail("spec.ingressController.serviceType", f"expected NodePort, LoadBalancer or ClusterIP, got {ing_type!r}")
    return LabSpec(name=name, proxy_mode=mode, nodes=nodes, clients=clients, node_network=node_network,
                   cluster_dns=doc.boolean("spec.clusterDNS.enabled", default=True), cluster_dns_ip=dns_ip,
                   cluster_domain=domain, ingress_service_type=ing_type,
                   ipvs_scheduler=_scheduler(doc, "spec.ipvsScheduler", spec.get("ipvsScheduler")) or "rr",
                   lb_pool=lb_pool, lb_mode=lb_mode,
                   cluster_cidr=cluster_cidr, node_cidr_mask=mask, service_cidr=service_cidr,
                   node_port_range=(int(m[1]), int(m[2])), masquerade_all=doc.boolean("spec.masqueradeAll"),
                   conntrack_cleanup=doc.boolean("spec.conntrackCleanup", default=True))


def _parse_pod(doc: _Doc) -> Pod:
    name, ns = _metadata(doc, "Pod")
    ps = _pod_spec(doc, "spec", doc.mapping("spec"))
    return Pod(name, ns, doc.labels("metadata.labels", doc.get("metadata.labels")), ps.ports, ps.node_name,
               probes=ps.probes, grace_period=ps.grace_period, workload=_workload(doc, "metadata"))


def _parse_deployment(doc: _Doc) -> Deployment:
    name, ns = _metadata(doc, "Deployment")
    spec = doc.mapping("spec")
    doc.check_keys("spec", spec, {"replicas", "selector", "template", "strategy", "revisionHistoryLimit"})
    replicas = doc.integer("spec.replicas", lo=0, hi=10000, default=1)
    selector = doc.selector("spec.selector", spec.get("selector"))
    tmeta = doc.mapping("spec.template.metadata")
    labels = doc.labels("spec.template.metadata.labels", tmeta.get("labels"))
    if not selector.matches(dict(labels)):
        doc.fail("spec.selector", "expected a selector that matches spec.template.metadata.labels")
    ps = _pod_spec(doc, "spec.template.spec", doc.mapping("spec.template.spec"))
    return Deployment(name, ns, replicas, selector, PodTemplate(labels, ps.ports, ps.node_name, ps.probes, ps.grace_period,
                                                                _workload(doc, "spec.template.metadata")))


def _scheduler(doc: _Doc, path: str, value) -> str | None:
    if value is None:
        return None
    if value not in IPVS_SCHEDULERS:
        doc.fail(path, f"expected an IPVS scheduler ({', '.join(IPVS_SCHEDULERS)}), got {value!r}")
    return value


def _parse_service(doc: _Doc) -> Service:
    name, ns = _metadata(doc, "Service")
    spec = doc.mapping("spec")
    doc.check_keys("spec", spec, {"selector", "ports", "type", "clusterIP", "clusterIPs", "externalIPs",
                                  "sessionAffinity", "sessionAffinityConfig", "externalTrafficPolicy",
                                  "internalTrafficPolicy", "loadBalancerSourceRanges", "loadBalancerIP",
                                  "healthCheckNodePort", "publishNotReadyAddresses", "externalName",
                                  "ipFamilies", "ipFamilyPolicy", "allocateLoadBalancerNodePorts"})
    stype = doc.string("spec.type", default="ClusterIP")
    if stype not in SERVICE_TYPES:
        doc.fail("spec.type", f"expected one of {', '.join(SERVICE_TYPES)}, got {stype!r}")
    # An empty selector is the same as none: the API omits it and no endpoints are managed.
    selector = doc.labels("spec.selector", spec.get("selector")) or None
    ports: list[ServicePortSpec] = []
    raw_ports = doc.seq("spec.ports")
    if not raw_ports and stype != "ExternalName":
        doc.fail("spec.ports", "expected at least one port")
    for i, p in enumerate(raw_ports):
        pp = f"spec.ports[{i}]"
        p = doc.mapping(pp, p)
        doc.check_keys(pp, p, {"name", "protocol", "port", "targetPort", "nodePort", "appProtocol"})
        port = doc.integer(f"{pp}.port", p.get("port"), 1, 65535)
        if port is None:
            doc.fail(f"{pp}.port", "is required")
        pname = p.get("name") or ""
        if pname:
            doc.name(f"{pp}.name", pname)
        elif len(raw_ports) > 1:
            doc.fail(f"{pp}.name", "is required when a Service has more than one port")
        target = p.get("targetPort")
        if isinstance(target, str) and not target.isdigit():
            doc.name(f"{pp}.targetPort", target, max_len=15, what="a port number or an IANA service name")
        elif isinstance(target, str):
            target = doc.integer(f"{pp}.targetPort", int(target), 1, 65535)
        elif target is not None:
            target = doc.integer(f"{pp}.targetPort", target, 1, 65535)
        node_port = doc.integer(f"{pp}.nodePort", p.get("nodePort"), 1, 65535)
        if node_port is not None and stype not in ("NodePort", "LoadBalancer"):
            doc.fail(f"{pp}.nodePort", f"may only be set for type NodePort or LoadBalancer, not {stype}")
        ports.append(ServicePortSpec(port, doc.protocol(f"{pp}.protocol", p.get("protocol")), pname, target, node_port))
    seen_names, seen_ports = set(), set()
    for i, sp in enumerate(ports):
        if sp.name and sp.name in seen_names:
            doc.fail(f"spec.ports[{i}].name", f"duplicate port name {sp.name!r}")
        if (sp.port, sp.protocol) in seen_ports:
            doc.fail(f"spec.ports[{i}].port", f"duplicate port {sp.port}/{sp.protocol}")
        seen_names.add(sp.name)
        seen_ports.add((sp.port, sp.protocol))
    cluster_ip = doc.string("spec.clusterIP")
    if cluster_ip not in (None, "", "None"):
        cluster_ip = doc.ip("spec.clusterIP", cluster_ip)
    affinity = doc.string("spec.sessionAffinity", default="None")
    if affinity not in ("None", "ClientIP"):
        doc.fail("spec.sessionAffinity", f"expected None or ClientIP, got {affinity!r}")
    timeout = None
    if affinity == "ClientIP":
        timeout = doc.integer("spec.sessionAffinityConfig.clientIP.timeoutSeconds", lo=1, hi=86400, default=10800)
    policies = {}
    for key in ("externalTrafficPolicy", "internalTrafficPolicy"):
        v = doc.string(f"spec.{key}", default="Cluster")
        if v not in ("Cluster", "Local"):
            doc.fail(f"spec.{key}", f"expected Cluster or Local, got {v!r}")
        policies[key] = v == "Local"
    ext_ips = tuple(doc.ip(f"spec.externalIPs[{i}]", v) for i, v in enumerate(doc.seq("spec.externalIPs")))
    ranges = tuple(doc.cidr(f"spec.loadBalancerSourceRanges[{i}]", str(v).strip())
                   for i, v in enumerate(doc.seq("spec.loadBalancerSourceRanges")))
    lb_ips = []
    for i, ing in enumerate(doc.seq("status.loadBalancer.ingress")):
        ing = doc.mapping(f"status.loadBalancer.ingress[{i}]", ing)
        if ing.get("ip"):
            lb_ips.append(doc.ip(f"status.loadBalancer.ingress[{i}].ip", ing["ip"]))
    ext_name = doc.string("spec.externalName")
    if stype == "ExternalName" and not ext_name:
        doc.fail("spec.externalName", "is required for type ExternalName")
    return Service(
        name=name, namespace=ns, type=stype, selector=selector, ports=tuple(ports),
        cluster_ip=cluster_ip or None, external_ips=ext_ips, session_affinity_timeout=timeout,
        external_policy_local=policies["externalTrafficPolicy"], internal_policy_local=policies["internalTrafficPolicy"],
        load_balancer_source_ranges=ranges, load_balancer_ips=tuple(lb_ips),
        load_balancer_ip=doc.ip("spec.loadBalancerIP", spec["loadBalancerIP"]) if spec.get("loadBalancerIP") else None,
        health_check_node_port=doc.integer("spec.healthCheckNodePort", lo=1, hi=65535),
        publish_not_ready=doc.boolean("spec.publishNotReadyAddresses"), external_name=ext_name,
        ipvs_scheduler=_scheduler(doc, "metadata.annotations.testbed.dev/ipvs-scheduler",
                                  doc.mapping("metadata.annotations").get("testbed.dev/ipvs-scheduler")),
        labels=doc.labels("metadata.labels", doc.get("metadata.labels")))


def _parse_slice(doc: _Doc) -> EndpointSlice:
    name, ns = _metadata(doc, "EndpointSlice")
    labels = dict(doc.labels("metadata.labels", doc.get("metadata.labels")))
    svc = labels.get("kubernetes.io/service-name")
    if not svc:
        doc.fail("metadata.labels", "expected the label kubernetes.io/service-name naming the Service")
    doc.check_keys("", doc.data, {"apiVersion", "kind", "metadata", "addressType", "endpoints", "ports"})
    at = doc.string("addressType", required=True)
    if at != "IPv4":
        doc.fail("addressType", f"only IPv4 is modelled, got {at!r}")
    eps = []
    for i, e in enumerate(doc.seq("endpoints")):
        ep = f"endpoints[{i}]"
        e = doc.mapping(ep, e)
        doc.check_keys(ep, e, {"addresses", "conditions", "nodeName", "targetRef", "zone", "hints", "hostname"})
        addrs = tuple(doc.ip(f"{ep}.addresses[{j}]", a) for j, a in enumerate(doc.seq(f"{ep}.addresses", e.get("addresses"))))
        if not addrs:
            doc.fail(f"{ep}.addresses", "expected at least one address")
        cond = doc.mapping(f"{ep}.conditions", e.get("conditions"))
        doc.check_keys(f"{ep}.conditions", cond, {"ready", "serving", "terminating"})
        flags = {}
        for c in ("ready", "serving", "terminating"):
            v = cond.get(c)
            if v is not None and not isinstance(v, bool):
                doc.fail(f"{ep}.conditions.{c}", f"expected true or false, got {v!r}")
            flags[c] = v
        eps.append(SliceEndpoint(addrs, flags["ready"], flags["serving"], flags["terminating"],
                                 doc.string(f"{ep}.nodeName", e.get("nodeName"))))
    ports = []
    for i, p in enumerate(doc.seq("ports")):
        pp = f"ports[{i}]"
        p = doc.mapping(pp, p)
        doc.check_keys(pp, p, {"port", "protocol", "name", "appProtocol"})
        port = doc.integer(f"{pp}.port", p.get("port"), 1, 65535)
        if port is None:
            doc.fail(f"{pp}.port", "is required")
        ports.append(SlicePort(port, doc.protocol(f"{pp}.protocol", p.get("protocol")), p.get("name") or ""))
    return EndpointSlice(name, ns, svc, tuple(eps), tuple(ports))


def _parse_ingress(doc: _Doc):
    from .ingress import parse_ingress
    return parse_ingress(doc)


def _parse_ingress_class(doc: _Doc):
    from .ingress import parse_ingress_class
    return parse_ingress_class(doc)


KINDS = {
    ("testbed.dev/v1alpha1", "Lab"): _parse_lab,
    ("networking.k8s.io/v1", "Ingress"): _parse_ingress,
    ("networking.k8s.io/v1", "IngressClass"): _parse_ingress_class,
    ("v1", "Pod"): _parse_pod,
    ("apps/v1", "Deployment"): _parse_deployment,
    ("v1", "Service"): _parse_service,
    ("discovery.k8s.io/v1", "EndpointSlice"): _parse_slice,
}


# ----------------------------------------------------------------------------- loading


def _key(o) -> str:
    return getattr(o, "key", None) or o.name


def parse_documents(docs: list, file: str, base: Topology | None = None, require_lab: bool = False) -> Topology:
    """Validate a list of YAML documents into a Topology (merged over `base` when given)."""
    ignored: list[str] = []
    lab = base.lab if base else None
    # kind → Topology field; objects are keyed by namespace/name (IngressClass: cluster-scoped name)
    fields = {"Pod": "pods", "Deployment": "deployments", "Service": "services", "EndpointSlice": "slices",
              "Ingress": "ingresses", "IngressClass": "ingress_classes"}
    objs = {f: {_key(o): o for o in getattr(base, f, ())} for f in fields.values()}
    seen: set[tuple[str, str]] = set()
    for i, raw in enumerate(docs):
        if raw is None:
            continue
        where = f"document {i + 1}"
        if not isinstance(raw, dict):
            raise TopologyError(file, where, None, f"expected a mapping with apiVersion and kind, got {type(raw).__name__}")
        if raw.get("kind") == "List" and isinstance(raw.get("items"), list):
            sub = parse_documents(raw["items"], file, None)
            for f in fields.values():
                for o in getattr(sub, f):
                    objs[f][_key(o)] = o
            ignored.extend(sub.warnings)
            continue
        api, kind = raw.get("apiVersion"), raw.get("kind")
        name = (raw.get("metadata") or {}).get("name") if isinstance(raw.get("metadata"), dict) else None
        obj = f"{kind if isinstance(kind, str) else '?'} {name if isinstance(name, str) else '?'} ({where})"
        parser = KINDS.get((api, kind)) if isinstance(api, str) and isinstance(kind, str) else None
        if parser is None:
            known = ", ".join(f"{k} ({a})" for a, k in KINDS)
            raise TopologyError(file, obj, "kind", f"expected one of {known}, got {kind!r} with apiVersion {api!r}")
        doc = _Doc(file, obj, raw, ignored)
        doc.check_keys("", raw, {"apiVersion", "kind", "metadata", "spec", "status"} |
                       ({"addressType", "endpoints", "ports"} if kind == "EndpointSlice" else set()))
        parsed = parser(doc)
        if kind == "Lab":
            if ("Lab", "") in seen:
                raise TopologyError(file, obj, None, "expected one Lab document, found a second")
            seen.add(("Lab", ""))
            lab = parsed
            continue
        key = (kind, _key(parsed))
        if key in seen:
            raise TopologyError(file, obj, "metadata.name", f"duplicate {kind} {_key(parsed)}")
        seen.add(key)
        objs[fields[kind]][_key(parsed)] = parsed
    if lab is None:
        if require_lab:
            raise TopologyError(file, None, None, "expected a Lab document (apiVersion testbed.dev/v1alpha1)")
        lab = LabSpec()
    topo = Topology(lab, **{f: tuple(v.values()) for f, v in objs.items()},
                    source=file, warnings=tuple(dict.fromkeys((base.warnings if base else ()) + tuple(ignored))))
    validate(topo)
    return topo


def load_text(text: str, file: str = "<string>", base: Topology | None = None) -> Topology:
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        raise TopologyError(file, where, None, f"expected valid YAML: {getattr(e, 'problem', e)}") from None
    return parse_documents(docs, file, base)


def load_file(path: str | Path, base: Topology | None = None) -> Topology:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise TopologyError(str(p), None, None, f"cannot read the file: {e.strerror}") from None
    return load_text(text, str(p), base)


TOPOLOGY_DIR = Path(__file__).resolve().parent.parent / "topologies"


def builtin(name: str = "default") -> Path:
    """A topology shipped in topologies/ (the default lab when no file is given)."""
    return TOPOLOGY_DIR / f"{name}.yaml"


# ----------------------------------------------------------------------------- cross-object checks


def validate(topo: Topology) -> None:
    lab, file = topo.lab, topo.source
    hosts = [("spec.nodes", n) for n in lab.nodes] + [("spec.clients", c) for c in lab.clients]
    names, ips = {}, {}
    net = ipaddress.ip_network(lab.node_network)
    for path, h in hosts:
        if h.name in ("fabric", "lb"):
            raise TopologyError(file, f"Lab {lab.name}", path, f"the host name {h.name!r} is reserved (the lab's node network and load balancer)")
        if h.name in names:
            raise TopologyError(file, f"Lab {lab.name}", path, f"duplicate host name {h.name!r} (nodes and clients share one namespace of names)")
        names[h.name] = path
        if h.ip:
            if h.ip in ips:
                raise TopologyError(file, f"Lab {lab.name}", path, f"duplicate IP {h.ip} (also {ips[h.ip]})")
            if h.ip in (str(net.network_address), str(net.broadcast_address), str(net.network_address + 1)):
                raise TopologyError(file, f"Lab {lab.name}", path, f"{h.ip} is reserved (network, broadcast or the fabric's own address)")
            ips[h.ip] = h.name
    if len(hosts) > net.num_addresses - 3:
        raise TopologyError(file, f"Lab {lab.name}", "spec.nodeNetwork", f"{lab.node_network} is too small for {len(hosts)} hosts")
    cidrs = {}
    for n in lab.nodes:
        if n.pod_cidr:
            for other, c in cidrs.items():
                if ipaddress.ip_network(n.pod_cidr).overlaps(ipaddress.ip_network(c)):
                    raise TopologyError(file, f"Lab {lab.name}", "spec.nodes", f"podCIDR {n.pod_cidr} of {n.name} overlaps {c} of {other}")
            cidrs[n.name] = n.pod_cidr
    node_names = {n.name for n in lab.nodes}
    for p in topo.pods:
        if p.node_name and p.node_name not in node_names:
            raise TopologyError(file, f"Pod {p.key}", "spec.nodeName", f"expected one of the lab's nodes ({', '.join(sorted(node_names))}), got {p.node_name!r}")
    for d in topo.deployments:
        if d.template.node_name and d.template.node_name not in node_names:
            raise TopologyError(file, f"Deployment {d.key}", "spec.template.spec.nodeName", f"expected one of the lab's nodes ({', '.join(sorted(node_names))}), got {d.template.node_name!r}")
    svc_net = ipaddress.ip_network(lab.service_cidr)
    lo, hi = lab.node_port_range
    used_ips, used_np = {}, {}
    for s in topo.services:
        obj = f"Service {s.key}"
        if s.cluster_ip and not s.headless:
            if ipaddress.ip_address(s.cluster_ip) not in svc_net:
                raise TopologyError(file, obj, "spec.clusterIP", f"expected an address inside the Service CIDR {lab.service_cidr}, got {s.cluster_ip}")
            if s.cluster_ip in (str(svc_net.network_address), str(svc_net.broadcast_address)):
                raise TopologyError(file, obj, "spec.clusterIP", f"{s.cluster_ip} is the network or broadcast address of {lab.service_cidr}")
            if s.cluster_ip in used_ips:
                raise TopologyError(file, obj, "spec.clusterIP", f"{s.cluster_ip} is already allocated to Service {used_ips[s.cluster_ip]}")
            used_ips[s.cluster_ip] = s.key
        for i, p in enumerate(s.ports):
            if p.node_port is not None:
                if not lo <= p.node_port <= hi:
                    raise TopologyError(file, obj, f"spec.ports[{i}].nodePort", f"expected a port in the NodePort range {lo}-{hi}, got {p.node_port}")
                k = (p.node_port, p.protocol)
                if k in used_np:
                    raise TopologyError(file, obj, f"spec.ports[{i}].nodePort", f"{p.node_port}/{p.protocol} is already allocated to Service {used_np[k]}")
                used_np[k] = s.key
        if s.load_balancer_ip and s.type != "LoadBalancer":
            raise TopologyError(file, obj, "spec.loadBalancerIP", f"may only be set for type LoadBalancer, not {s.type}")
        if s.health_check_node_port is not None and not (s.type == "LoadBalancer" and s.external_policy_local):
            raise TopologyError(file, obj, "spec.healthCheckNodePort", "may only be set for type LoadBalancer with externalTrafficPolicy Local")
        for i, ip in enumerate(s.external_ips):
            if ipaddress.ip_address(ip) in svc_net or ipaddress.ip_address(ip) in ipaddress.ip_network(lab.cluster_cidr):
                raise TopologyError(file, obj, f"spec.externalIPs[{i}]", f"expected an address outside the Service and cluster CIDRs, got {ip}")
    svc_keys = {s.key for s in topo.services}
    for sl in topo.slices:
        if f"{sl.namespace}/{sl.service_name}" not in svc_keys:
            continue  # Kubernetes allows a slice before its Service; it is simply unused
        svc = next(s for s in topo.services if s.key == f"{sl.namespace}/{sl.service_name}")
        if svc.selector is not None:
            raise TopologyError(file, f"EndpointSlice {sl.key}", "metadata.labels",
                                f"Service {svc.key} has a selector, so its EndpointSlices are managed by the control plane; remove the selector or this slice")
        for i, e in enumerate(sl.endpoints):
            if e.node_name and e.node_name not in node_names:
                raise TopologyError(file, f"EndpointSlice {sl.key}", f"endpoints[{i}].nodeName", f"expected one of the lab's nodes, got {e.node_name!r}")
