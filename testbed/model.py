"""Topology files → frozen, validated objects.

A topology is whatever `kubectl apply -f` takes (testbed.manifests reads it): an optional
`testbed.dev/v1alpha1` Lab document plus Kubernetes manifests. Modelled: Pod, Deployment,
ReplicaSet, ReplicationController, StatefulSet, DaemonSet, Job, Service, EndpointSlice, v1 Endpoints
(mirrored into EndpointSlices), Namespace, Node, Ingress, IngressClass, and kube-proxy's own
ConfigMap. Every other kind is accepted and summarised once (testbed.manifests' catalogue says which
change traffic). Everything is checked here, before anything touches the kernel; errors name the
file, the document (also inside a List), the object and the field. Fields the lab does not model are
named once per kind and field (testbed.schema says which of them would change behaviour).

A `kubectl get … -o yaml` dump is a replay: Node objects give the nodes, `status.podIP` the pods'
addresses, the controllers' EndpointSlices are kept as they are, and what the Lab document does not
pin is inferred from the objects (testbed.replay).
"""
from __future__ import annotations

import functools
import ipaddress
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import manifests, modes, schema, versions
from .errors import TopologyError
from .errors import show as _show

IPVS_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
LAB_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,14}[a-z0-9])?\Z")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"  # a DNS-subdomain prefix/
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z")  # the name
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
PROTOCOLS = ("TCP", "UDP", "SCTP")
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"^{_OCTET}(\.{_OCTET}){{3}}$")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
TRAFFIC_DISTRIBUTIONS = ("PreferClose", "PreferSameZone", "PreferSameNode")
TOPOLOGY_ANNOTATIONS = ("service.kubernetes.io/topology-mode", "service.kubernetes.io/topology-aware-hints")
ZONE_LABEL = "topology.kubernetes.io/zone"
WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "ReplicationController", "StatefulSet", "DaemonSet", "Job")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
MIRROR_CONTROLLER = "endpointslicemirroring-controller.k8s.io"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


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
    action: str  # http | tcp | exec | grpc (checked as a TCP connection: the gRPC health protocol is not spoken)
    port: int | str | None = None  # a number or a named container port (http, tcp, grpc)
    path: str = "/"
    command: tuple[str, ...] = ()
    period: int = 10
    timeout: int = 1
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay: int = 0


@dataclass(frozen=True)
class Toleration:
    key: str = ""  # "" with operator Exists tolerates every taint
    operator: str = "Equal"  # Equal | Exists
    value: str = ""
    effect: str = ""  # "" matches every effect

    def tolerates(self, taint: "Taint") -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True)
class PodTemplate:
    labels: tuple[tuple[str, str], ...]
    ports: tuple[ContainerPort, ...]
    node_name: str | None = None
    probes: tuple[ProbeSpec, ...] = ()
    grace_period: int = 30
    workload: str = "netexec"
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    hostname: str | None = None  # spec.hostname / spec.subdomain: the pod's DNS name under a headless Service
    subdomain: str | None = None
    host_network: bool = False


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: tuple[tuple[str, str], ...]
    ports: tuple[ContainerPort, ...]
    node_name: str | None = None
    owner: str | None = None  # the workload that made it: its namespace/name
    probes: tuple[ProbeSpec, ...] = ()
    grace_period: int = 30  # terminationGracePeriodSeconds
    workload: str = "netexec"  # what the pod runs: netexec | dns | ingress (annotation testbed.dev/workload)
    ip: str | None = None  # status.podIP of a dumped pod: kept
    owner_kind: str | None = None  # Deployment | ReplicaSet | StatefulSet | … (metadata.ownerReferences)
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    hostname: str | None = None
    subdomain: str | None = None
    ready: bool | None = None  # status.conditions Ready of a dumped pod (None: not dumped)
    host_network: bool = False  # spec.hostNetwork: the pod is its node's network namespace, its IP the node's

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


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
class Workload:
    """A controller that makes pods: Deployment, ReplicaSet, ReplicationController, StatefulSet,
    DaemonSet or Job (testbed.workloads makes their pods as Kubernetes' controllers do)."""

    name: str
    namespace: str
    replicas: int
    selector: Selector
    template: PodTemplate
    kind: str = "Deployment"
    service_name: str | None = None  # StatefulSet: the headless Service that gives its pods DNS names
    ordered: bool = True  # StatefulSet: podManagementPolicy OrderedReady (else Parallel)
    start_ordinal: int = 0  # StatefulSet: spec.ordinals.start
    owner: str | None = None  # a ReplicaSet's Deployment (namespace/name), from metadata.ownerReferences

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ref(self) -> str:
        """Kind and key: a Deployment and a StatefulSet may share a name."""
        return f"{self.kind}/{self.key}"


Deployment = Workload  # the name most code and tests know it by


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
    load_balancer_class: str | None = None  # spec.loadBalancerClass: another controller's LoadBalancer
    allocate_node_ports: bool = True  # spec.allocateLoadBalancerNodePorts
    traffic_distribution: str | None = None  # spec.trafficDistribution: PreferClose | PreferSameZone | PreferSameNode
    topology_mode: str | None = None  # annotation service.kubernetes.io/topology-mode (or topology-aware-hints)
    lb_proxy_ips: tuple[str, ...] = ()  # status.loadBalancer.ingress IPs with ipMode Proxy

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
    hostname: str | None = None
    zone: str | None = None
    hint_zones: tuple[str, ...] = ()  # hints.forZones: the zones whose kube-proxies should use it
    hint_nodes: tuple[str, ...] = ()  # hints.forNodes


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
    managed_by: str = ""  # endpointslice.kubernetes.io/managed-by

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def from_controller(self) -> bool:
        """Made by the EndpointSlice controller for a Service with a selector (as in a cluster dump)."""
        return self.managed_by == SLICE_CONTROLLER


@dataclass(frozen=True)
class NodeSpec:
    name: str
    ip: str | None = None  # pinned node IP on the node network
    pod_cidr: str | None = None  # pinned pod CIDR
    labels: tuple[tuple[str, str], ...] = ()
    taints: tuple[Taint, ...] = ()
    kube_proxy_version: str | None = None  # status.nodeInfo.kubeProxyVersion of a dumped Node, or pinned

    @property
    def label_map(self) -> dict[str, str]:
        """The node's labels, with the ones every kubelet sets."""
        return {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", **dict(self.labels)}


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
    # More ServiceCIDR objects' ranges: the API server allocates from them once serviceCIDR is full.
    extra_service_cidrs: tuple[str, ...] = ()
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
    hairpin_mode: str = "hairpin-veth"  # kubelet's --hairpin-mode: hairpin on every pod's bridge port, or none
    conntrack_tcp_be_liberal: bool = False  # kube-proxy's conntrack.tcpBeLiberal: the nodes' sysctl and its rules
    unfixed: tuple[str, ...] = ()  # spec.kubeProxy.unfixed: upstream fixes taken out (versions.FIXES)
    kube_proxy_version: str | None = None  # spec.kubeProxy.version ("1.31"): whose rules; None: the newest
    rebuild_endpoints: bool = False  # a replay's controller EndpointSlices are rebuilt from its pods
    pinned: frozenset[str] = frozenset()  # the spec fields the Lab document sets (the rest may be inferred)
    inferred: tuple[str, ...] = ()  # what testbed.replay inferred from the objects, said once

    @property
    def service_cidrs(self) -> tuple[str, ...]:
        """Every range ClusterIPs come from, serviceCIDR first (the ServiceCIDR objects of a cluster)."""
        return (self.service_cidr, *self.extra_service_cidrs)


@dataclass(frozen=True)
class Topology:
    """A loaded, validated topology file: the Lab plus the Kubernetes objects."""

    lab: LabSpec
    pods: tuple[Pod, ...] = ()
    deployments: tuple[Workload, ...] = ()  # every workload kind (the name is historical)
    services: tuple[Service, ...] = ()
    slices: tuple[EndpointSlice, ...] = ()
    ingresses: tuple = ()
    ingress_classes: tuple = ()
    namespaces: tuple[str, ...] = ()  # Namespace objects
    source: str = "<memory>"
    warnings: tuple[str, ...] = ()  # fields not modelled, named once per kind and field
    effects: tuple[str, ...] = ()  # what is not modelled and would change traffic: named with how
    not_modelled: tuple[tuple[str, int], ...] = ()  # (kind, count) accepted without modelling
    positions: tuple[tuple[str, str], ...] = ()  # "Kind ns/name" → where in the file
    ignored: tuple[tuple[str, str, int], ...] = ()  # (kind, field path with [] for indices, objects): for a summary

    @property
    def workloads(self) -> tuple[Workload, ...]:
        return self.deployments

    def with_lab(self, **changes) -> "Topology":
        return replace(self, lab=replace(self.lab, **changes))

    @functools.cached_property
    def _positions(self) -> dict[str, str]:
        return dict(self.positions)

    def where(self, kind: str, key: str) -> str:
        """`Kind key (document N)` for error messages about one object."""
        pos = self._positions.get(f"{kind} {key}")
        return f"{kind} {key} ({pos})" if pos else f"{kind} {key}"

    def summary(self) -> list[str]:
        """The kinds accepted without modelling: `3 ServiceAccount, 2 ConfigMap`, then the custom
        resources (`13 custom resources: 8 PrometheusRule, 5 ServiceMonitor`)."""
        builtin = [f"{n} {k}" for k, n in self.not_modelled if not k.endswith("*")]
        custom = [(k[:-1], n) for k, n in self.not_modelled if k.endswith("*")]
        if custom:
            builtin.append(f"{sum(n for _, n in custom)} custom resources ({', '.join(f'{n} {k}' for k, n in custom)})")
        return [", ".join(builtin)] if builtin else []


# ----------------------------------------------------------------------------- notes


class Notes:
    """What the lab does not model, each thing named once.

    - ignored fields, by kind and path (`spec.containers[].env`): first object, count;
    - effects: accepted fields, values or kinds that would change traffic, with how the lab differs;
    - unknown fields: not in Kubernetes' schema (a typo kubectl refuses), named with the effects;
    - kinds: counts of accepted kinds that are not modelled.
    """

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.fields: dict[tuple[str, str, str], list] = {}
        self.effects: dict[tuple[str, str, str], list] = {}
        self.kinds: Counter = Counter()

    def field(self, file: str, kind: str, obj: str, path: str) -> None:
        rec = self.fields.setdefault((file, kind, _generic(path)), [obj, 0, path])
        rec[1] += 1

    def effect(self, file: str, obj: str, what: str, how: str, strict_path: str | None = None) -> None:
        """`what` is not modelled and would change traffic; `strict_path` makes it an error under --strict."""
        if self.strict and strict_path is not None:
            raise TopologyError(file, obj, strict_path, f"not modelled ({how}); --strict refuses it")
        rec = self.effects.setdefault((file, _generic(what), how), [obj, 0, what])
        rec[1] += 1

    def kind(self, label: str) -> None:
        self.kinds[label] += 1

    def merge(self, other: "Notes") -> None:
        for store, theirs in ((self.fields, other.fields), (self.effects, other.effects)):
            for k, (obj, n, path) in theirs.items():
                rec = store.setdefault(k, [obj, 0, path])
                rec[1] += n
        self.kinds.update(other.kinds)

    def ignored_lines(self) -> list[str]:
        return [f"{file}: {obj}{_more(n)}: {path}" for (file, _k, _g), (obj, n, path) in self.fields.items()]

    def effect_lines(self) -> list[str]:
        return [f"{file}: {obj}{_more(n)}: {what + ': ' if what else ''}{how}"
                for (file, _g, how), (obj, n, what) in self.effects.items()]

    def ignored_fields(self) -> tuple[tuple[str, str, int], ...]:
        return tuple((kind, generic, n) for (_f, kind, generic), (_o, n, _p) in self.fields.items())

    def kind_counts(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self.kinds.items(), key=lambda kv: (-kv[1], kv[0])))


def _generic(path: str) -> str:
    return re.sub(r"\[\d+\]", "[]", path)


def _more(n: int) -> str:
    return f" (+{n - 1} more)" if n > 1 else ""


# ----------------------------------------------------------------------------- parsing helpers


class _Doc:
    """Typed access to one document, raising TopologyError with the field path."""

    def __init__(self, file: str, obj: str, data: dict, notes: Notes, kind: str = ""):
        self.file, self.obj, self.data, self.notes, self.kind = file, obj, data, notes, kind

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
            self.fail(path, f"expected a string, got {_show(v)}")
        return v

    def integer(self, path: str, value=None, lo=None, hi=None, default=None) -> int | None:
        v = self.get(path) if value is None else value
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(path, f"expected an integer, got {_show(v)}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.fail(path, f"expected an integer in {lo}-{hi}, got {_show(v)}")
        return v

    def boolean(self, path: str, default=False, value=None) -> bool:
        v = self.get(path) if value is None else value
        if v is None:
            return default
        if not isinstance(v, bool):
            self.fail(path, f"expected true or false, got {_show(v)}")
        return v

    def check_keys(self, path: str, value: dict, modelled: set[str], structure: str | None = None) -> None:
        """Name every key that is not modelled: ignored (a known field), an effect (a known field that
        would change traffic), or unknown (not in Kubernetes' schema: kubectl refuses it too)."""
        for k in value:
            if k in modelled:
                continue
            name = str(k) if len(str(k)) <= 80 else _show(k)  # a 20,000-character key is not printed whole
            where = f"{path}.{name}" if path else name
            if structure is not None and schema.known(structure, k):
                how = schema.EFFECTS.get((structure, k))
                harmless = schema.VALUE_EFFECTS.get((structure, k))
                if harmless is not None:
                    if value[k] in harmless[0] or value[k] is None:
                        continue
                    how = harmless[1]
                if how:
                    self.notes.effect(self.file, self.obj, where, how, strict_path=where)
                else:
                    self.notes.field(self.file, self.kind, self.obj, where)
            elif structure is None and self.kind == "Lab":
                self.fail(where, f"unknown field of the Lab document (known: {', '.join(sorted(modelled))})")
            elif structure is None:
                self.notes.field(self.file, self.kind, self.obj, where)
            else:
                self.notes.effect(self.file, self.obj, where, "unknown field, not in Kubernetes' schema "
                                  "(a typo? kubectl apply refuses it)", strict_path=where)

    def ip(self, path: str, value, network: str | None = None) -> str:
        if not isinstance(value, str):  # ipaddress would take 5 as 0.0.0.5
            self.fail(path, f"expected an IPv4 address as a string, got {_show(value)}")
        if network is None and _IPV4.match(value):
            return value  # already canonical: the common case, without ipaddress' cost
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            self.fail(path, f"expected an IPv4 address, got {_show(value)}")
        if addr.version != 4:
            self.fail(path, f"only IPv4 is modelled, got {_show(value)}")
        if network and addr not in ipaddress.ip_network(network):
            self.fail(path, f"expected an address inside {network}, got {value}")
        return str(addr)

    def cidr(self, path: str, value) -> str:
        if not isinstance(value, str):
            self.fail(path, f"expected a CIDR as a string such as 10.96.0.0/12, got {_show(value)}")
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as e:
            self.fail(path, f"expected a CIDR such as 10.96.0.0/12, got {_show(value)} ({e})")
        if net.version != 4:
            self.fail(path, f"only IPv4 is modelled, got {_show(value)}")
        return str(net)

    def name(self, path: str, value, pattern=DNS_LABEL, max_len=63, what="a DNS-1123 label") -> str:
        v = self.string(path, value, required=True)
        if len(v) > max_len or not pattern.match(v):
            self.fail(path, f"expected {what} (lower-case letters, digits, '-', at most {max_len} characters), got {_show(v)}")
        return v

    def labels(self, path: str, value) -> tuple[tuple[str, str], ...]:
        m = self.mapping(path, value)
        out = []
        for k, v in m.items():
            if not isinstance(k, str) or len(k) > 316 or not LABEL_KEY.match(k):
                self.fail(f"{path}.{_show(k, 60)}", "expected a label key such as app or example.com/tier")
            if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
                self.fail(f"{path}.{k}", f"expected a label value (a string of at most 63 characters; quote numbers "
                                         f"and booleans), got {_show(v)}")
            out.append((k, v))
        return tuple(sorted(out))

    def selector(self, path: str, value, allow_empty: bool = False) -> Selector:
        m = self.mapping(path, value)
        self.check_keys(path, m, {"matchLabels", "matchExpressions"}, "selector")
        exprs = []
        for i, e in enumerate(self.seq(f"{path}.matchExpressions", m.get("matchExpressions"))):
            p = f"{path}.matchExpressions[{i}]"
            e = self.mapping(p, e)
            key = self.string(f"{p}.key", e.get("key"), required=True)
            op = self.string(f"{p}.operator", e.get("operator"), required=True)
            if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
                self.fail(f"{p}.operator", f"expected In, NotIn, Exists or DoesNotExist, got {_show(op)}")
            values = tuple(str(x) for x in self.seq(f"{p}.values", e.get("values")))
            if op in ("In", "NotIn") and not values:
                self.fail(f"{p}.values", f"operator {op} needs at least one value")
            if op in ("Exists", "DoesNotExist") and values:
                self.fail(f"{p}.values", f"operator {op} takes no values")
            exprs.append((key, op, values))
        sel = Selector(self.labels(f"{path}.matchLabels", m.get("matchLabels")), tuple(exprs))
        if not sel.match_labels and not sel.expressions and not allow_empty:
            self.fail(path, "expected matchLabels or matchExpressions (an empty selector would match every pod)")
        return sel

    def protocol(self, path: str, value) -> str:
        v = self.string(path, value, default="TCP")
        if v not in PROTOCOLS:
            self.fail(path, f"expected one of {', '.join(PROTOCOLS)}, got {_show(v)}")
        return v

    def annotations(self) -> dict:
        ann = self.mapping("metadata.annotations")
        for k, how in schema.ANNOTATION_EFFECTS.items():
            if k in ann:
                self.notes.effect(self.file, self.obj, f"metadata.annotations.{k}", how)
        return ann


def _digits(text: str) -> bool:
    """A port written as a string of ASCII digits ("²" and "١" are digits to str.isdigit, not to int)."""
    return text.isascii() and text.isdigit()


def _node_name(doc: "_Doc", path: str, value) -> str | None:
    """A nodeName, validated as the API server does (a node may be inferred from it: testbed.replay)."""
    return None if value is None else doc.name(path, value, pattern=DNS_SUBDOMAIN, max_len=253, what="a node name")


def _port_number(doc: "_Doc", path: str, value) -> int | None:
    """A port given as a number or as a string of digits ("8080", as IntOrString allows)."""
    if isinstance(value, str):
        if len(value) > 5:  # also beyond what int() reads
            doc.fail(path, f"expected an integer in 1-65535, got {_show(value)}")
        value = int(value)
    return doc.integer(path, value, 1, 65535)


@dataclass(frozen=True)
class _PodSpec:
    ports: tuple[ContainerPort, ...]
    probes: tuple[ProbeSpec, ...]
    grace_period: int
    node_name: str | None
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    hostname: str | None = None
    subdomain: str | None = None
    host_network: bool = False


def _probe(doc: _Doc, path: str, kind: str, raw) -> ProbeSpec:
    p = doc.mapping(path, raw)
    doc.check_keys(path, p, {"httpGet", "tcpSocket", "exec", "grpc", "periodSeconds", "timeoutSeconds", "failureThreshold",
                             "successThreshold", "initialDelaySeconds", "terminationGracePeriodSeconds"}, "probe")
    actions = [a for a in ("httpGet", "tcpSocket", "exec", "grpc") if p.get(a) is not None]
    if len(actions) != 1:
        doc.fail(path, f"expected exactly one of httpGet, tcpSocket, exec or grpc, got {', '.join(actions) or 'none'}")
    a = actions[0]
    body = doc.mapping(f"{path}.{a}", p[a])
    kw = {}
    if a in ("httpGet", "tcpSocket", "grpc"):
        doc.check_keys(f"{path}.{a}", body, {"port", "path", "scheme", "host", "httpHeaders", "service"}, a)
        port = body.get("port")
        if a == "grpc":  # the API takes a number only here
            port = doc.integer(f"{path}.grpc.port", port, 1, 65535)
            doc.notes.effect(doc.file, doc.obj, f"{path}.grpc", "checked as a TCP connection to the port "
                             "(testbed's pods do not speak the gRPC health protocol)")
        elif isinstance(port, str) and not _digits(port):
            doc.name(f"{path}.{a}.port", port, max_len=15, what="a port number or a named container port")
        else:
            port = _port_number(doc, f"{path}.{a}.port", port)
        if port is None:
            doc.fail(f"{path}.{a}.port", "is required")
        kw["port"] = port
        if a == "httpGet":
            kw["path"] = doc.string(f"{path}.httpGet.path", body.get("path"), default="/")
            if kw["path"].split("?", 1)[0] not in NETEXEC_PATHS:
                # The application's own health path: testbed's server stands in for it, and its
                # /readyz is what `testbed pod unready` turns off.
                doc.notes.effect(doc.file, doc.obj, f"{path}.httpGet.path", f"the application's own path "
                                 f"{_show(kw['path'], 40)} is checked as netexec's /readyz")
                kw["path"] = "/readyz"
    else:
        doc.check_keys(f"{path}.exec", body, {"command"}, "exec")
        cmd = doc.seq(f"{path}.exec.command", body.get("command"))
        if not cmd or not all(isinstance(x, str) for x in cmd):
            doc.fail(f"{path}.exec.command", "expected a non-empty list of strings")
        foreign = foreign_command(cmd)
        if foreign:
            doc.notes.effect(doc.file, doc.obj, f"{path}.exec", f"{foreign} is the container's own command, not on this "
                             "machine: the probe is taken as passing")
        kw["command"] = tuple(cmd)
    ints = {k: doc.integer(f"{path}.{f}", p.get(f), lo, 3600, default=d) for k, f, lo, d in (
        ("period", "periodSeconds", 1, 10), ("timeout", "timeoutSeconds", 1, 1),
        ("failure_threshold", "failureThreshold", 1, 3), ("success_threshold", "successThreshold", 1, 1),
        ("initial_delay", "initialDelaySeconds", 0, 0))}
    if kind == "liveness" and ints["success_threshold"] != 1:
        doc.fail(f"{path}.successThreshold", "must be 1 for a liveness probe")
    action = {"httpGet": "http", "tcpSocket": "tcp", "exec": "exec", "grpc": "grpc"}[a]
    return ProbeSpec(kind, action, **kw, **ints)


SHELLS = {"sh", "bash", "ash", "dash", "zsh"}
NETEXEC_PATHS = {"/healthz", "/readyz", "/hostname", "/clientip", "/echo", "/whoami"}


def foreign_command(cmd) -> str | None:
    """The program of an exec probe when this machine does not have it (the container image's own,
    like `/ready-probe.sh`, also behind `sh -c`); None when it can run here."""
    program = cmd[0]
    if program.rsplit("/", 1)[-1] in SHELLS and len(cmd) >= 3 and cmd[1] == "-c":
        words = cmd[2].split()
        program = words[0] if words else program
    return None if shutil.which(program) else program


def _tolerations(doc: _Doc, path: str, raw) -> tuple[Toleration, ...]:
    out = []
    for i, t in enumerate(doc.seq(path, raw)):
        tp = f"{path}[{i}]"
        t = doc.mapping(tp, t)
        op = doc.string(f"{tp}.operator", t.get("operator"), default="Equal")
        if op not in ("Equal", "Exists"):
            doc.fail(f"{tp}.operator", f"expected Equal or Exists, got {_show(op)}")
        effect = doc.string(f"{tp}.effect", t.get("effect"), default="")
        if effect and effect not in TAINT_EFFECTS:
            doc.fail(f"{tp}.effect", f"expected one of {', '.join(TAINT_EFFECTS)}, got {_show(effect)}")
        out.append(Toleration(doc.string(f"{tp}.key", t.get("key"), default=""), op,
                              doc.string(f"{tp}.value", t.get("value"), default=""), effect))
    return tuple(out)


def _pod_spec(doc: _Doc, path: str, spec: dict) -> _PodSpec:
    doc.check_keys(path, spec, {"containers", "nodeName", "restartPolicy", "terminationGracePeriodSeconds", "nodeSelector",
                                "tolerations", "hostname", "subdomain", "initContainers", "hostNetwork"}, "pod")
    ports: list[ContainerPort] = []
    probes: list[ProbeSpec] = []
    containers = doc.seq(f"{path}.containers", spec.get("containers"))
    if not containers:
        doc.fail(f"{path}.containers", "expected at least one container")
    # Native sidecars (init containers with restartPolicy: Always) serve ports like containers do.
    sidecars = [(f"{path}.initContainers[{i}]", c)
                for i, c in enumerate(doc.seq(f"{path}.initContainers", spec.get("initContainers")))
                if isinstance(c, dict) and c.get("restartPolicy") == "Always"]
    for cp, c in [(f"{path}.containers[{ci}]", c) for ci, c in enumerate(containers)] + sidecars:
        c = doc.mapping(cp, c)
        doc.check_keys(cp, c, {"name", "image", "ports", "args", "command", "readinessProbe", "livenessProbe", "restartPolicy"},
                       "container")
        for pi, p in enumerate(doc.seq(f"{cp}.ports", c.get("ports"))):
            pp = f"{cp}.ports[{pi}]"
            p = doc.mapping(pp, p)
            doc.check_keys(pp, p, {"containerPort", "protocol", "name"}, "containerPort")
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
    for pr in probes:
        if isinstance(pr.port, str) and pr.port not in names:
            doc.fail(f"{path}.containers", f"a {pr.kind} probe uses port {pr.port!r}, but no container port has that name")
    grace = doc.integer(f"{path}.terminationGracePeriodSeconds", spec.get("terminationGracePeriodSeconds"), 0, 86400, default=30)
    selector = doc.mapping(f"{path}.nodeSelector", spec.get("nodeSelector"))
    for k, v in selector.items():
        if not isinstance(v, str):
            doc.fail(f"{path}.nodeSelector.{k}", f"expected a string, got {_show(v)}")
    hostname = spec.get("hostname")
    if hostname is not None:
        doc.name(f"{path}.hostname", hostname)
    subdomain = spec.get("subdomain")
    if subdomain is not None:
        doc.name(f"{path}.subdomain", subdomain)
    return _PodSpec(tuple(ports), tuple(probes), grace, _node_name(doc, f"{path}.nodeName", spec.get("nodeName")),
                    tuple(sorted((str(k), v) for k, v in selector.items())),
                    _tolerations(doc, f"{path}.tolerations", spec.get("tolerations")), hostname, subdomain,
                    doc.boolean(f"{path}.hostNetwork", value=spec.get("hostNetwork")))


WORKLOADS = ("netexec", "dns", "ingress")


def _workload(doc: _Doc, meta_path: str, labels: tuple = (), namespace: str = "") -> str:
    """Pods run testbed's netexec unless annotated `testbed.dev/workload: dns | ingress`. A kube-system
    pod labelled k8s-app=kube-dns (a dumped cluster's CoreDNS) runs testbed's DNS server."""
    ann = doc.mapping(f"{meta_path}.annotations")
    default = "dns" if namespace == "kube-system" and ("k8s-app", "kube-dns") in labels else "netexec"
    w = ann.get("testbed.dev/workload", default)
    if w not in WORKLOADS:
        doc.fail(f"{meta_path}.annotations.testbed.dev/workload", f"expected one of {', '.join(WORKLOADS)}, got {_show(w)}")
    return w


_NAME_RULES = {  # kind → (pattern, max length, what) as the API server validates metadata.name
    "Service": (DNS_LABEL, 63, "a DNS-1123 label"),
    "Namespace": (DNS_LABEL, 63, "a DNS-1123 label"),
    "Lab": (DNS_LABEL, 63, "a DNS-1123 label"),
}


def _metadata(doc: _Doc, kind: str, namespaced: bool = True) -> tuple[str, str]:
    meta = doc.mapping("metadata")
    doc.check_keys("metadata", meta, schema.SCHEMA["metadata"], "metadata")
    pattern, max_len, what = _NAME_RULES.get(kind, (DNS_SUBDOMAIN, 253, "a DNS-1123 subdomain"))
    name = doc.name("metadata.name", meta.get("name"), pattern=pattern, max_len=max_len, what=what)
    ns = doc.name("metadata.namespace", meta.get("namespace") or "default") if namespaced else ""
    return name, ns


def _controller_ref(doc: _Doc) -> tuple[str | None, str | None]:
    """(kind, name) of the controlling owner in metadata.ownerReferences, if any."""
    for i, ref in enumerate(doc.seq("metadata.ownerReferences")):
        ref = doc.mapping(f"metadata.ownerReferences[{i}]", ref)
        if ref.get("controller") is True:
            return (doc.string(f"metadata.ownerReferences[{i}].kind", ref.get("kind")),
                    doc.string(f"metadata.ownerReferences[{i}].name", ref.get("name")))
    return None, None


# ----------------------------------------------------------------------------- per kind


MAX_LB_POOL = 65_536
LAB_FIELDS = {"proxyMode", "nodes", "clients", "nodeNetwork", "clusterCIDR", "nodeCIDRMaskSize", "serviceCIDR",
              "serviceNodePortRange", "masqueradeAll", "conntrackCleanup", "loadBalancer", "clusterDNS",
              "ingressController", "ipvsScheduler", "replay", "kubeProxy", "additionalServiceCIDRs", "kubelet"}
# kubelet's --hairpin-mode values that testbed wires; promiscuous-bridge (kubenet's cbr0 in promiscuous
# mode plus an ebtables de-duplication rule) is not modelled.
HAIRPIN_MODES = ("hairpin-veth", "none")


def _parse_lab(doc: _Doc) -> LabSpec:
    meta = doc.mapping("metadata")
    name = doc.string("metadata.name", meta.get("name"), default="testbed")
    if not LAB_NAME.match(name):
        doc.fail("metadata.name", f"expected a lab name of at most 16 characters (a-z, 0-9, '-'), got {_show(name)}")
    spec = doc.mapping("spec")
    doc.check_keys("spec", spec, LAB_FIELDS)
    mode = doc.string("spec.proxyMode", default="iptables")
    if mode not in modes.NAMES:
        doc.fail("spec.proxyMode", f"expected one of {', '.join(modes.NAMES)}, got {_show(mode)}")
    node_network = doc.cidr("spec.nodeNetwork", doc.string("spec.nodeNetwork", default="172.18.0.0/24"))
    cluster_cidr = doc.cidr("spec.clusterCIDR", doc.string("spec.clusterCIDR", default="10.244.0.0/16"))
    service_cidr = doc.cidr("spec.serviceCIDR", doc.string("spec.serviceCIDR", default="10.96.0.0/12"))
    mask = doc.integer("spec.nodeCIDRMaskSize", lo=ipaddress.ip_network(cluster_cidr).prefixlen, hi=28, default=24)
    rng = doc.string("spec.serviceNodePortRange", default="30000-32767")
    m = re.fullmatch(r"(\d{1,5})-(\d{1,5})", rng)
    if not m or not (1 <= int(m[1]) <= int(m[2]) <= 65535):
        doc.fail("spec.serviceNodePortRange", f"expected a range such as 30000-32767, got {_show(rng)}")
    nets = {"spec.nodeNetwork": node_network, "spec.clusterCIDR": cluster_cidr, "spec.serviceCIDR": service_cidr}
    items = list(nets.items())
    for i, (pa, a) in enumerate(items):
        for pb, b in items[i + 1:]:
            if ipaddress.ip_network(a).overlaps(ipaddress.ip_network(b)):
                doc.fail(pb, f"expected a range that does not overlap {pa} ({a}), got {b}")

    def hosts(path: str, node: bool):
        out = []
        for i, h in enumerate(doc.seq(path)):
            hp = f"{path}[{i}]"
            h = doc.mapping(hp, h)
            doc.check_keys(hp, h, {"name", "ip"} | ({"podCIDR", "labels", "taints", "kubeProxyVersion"} if node else set()))
            hname = doc.name(f"{hp}.name", h.get("name"), pattern=DNS_SUBDOMAIN, max_len=253, what="a host name")
            ip = doc.ip(f"{hp}.ip", h["ip"], node_network if "nodeNetwork" in spec else None) if h.get("ip") else None
            if not node:
                out.append(ClientSpec(hname, ip))
                continue
            kw = {}
            if h.get("podCIDR"):
                cidr = doc.cidr(f"{hp}.podCIDR", h["podCIDR"])
                if "clusterCIDR" in spec and not ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network(cluster_cidr)):
                    doc.fail(f"{hp}.podCIDR", f"expected a subnet of spec.clusterCIDR ({cluster_cidr}), got {cidr}")
                kw["pod_cidr"] = cidr
            if h.get("kubeProxyVersion") is not None:
                kw["kube_proxy_version"] = _kube_proxy_version(doc, f"{hp}.kubeProxyVersion", h["kubeProxyVersion"])
            out.append(NodeSpec(hname, ip, labels=doc.labels(f"{hp}.labels", h.get("labels")),
                                taints=_taints(doc, f"{hp}.taints", h.get("taints")), **kw))
        return tuple(out)

    nodes = hosts("spec.nodes", True) if doc.get("spec.nodes") is not None else LabSpec.nodes
    if not nodes:
        doc.fail("spec.nodes", "expected at least one node")
    clients = hosts("spec.clients", False) if doc.get("spec.clients") is not None else LabSpec.clients
    lb = doc.mapping("spec.loadBalancer")
    doc.check_keys("spec.loadBalancer", lb, {"pool", "mode"})
    lb_mode = doc.string("spec.loadBalancer.mode", lb.get("mode"), default="nodeport")
    if lb_mode not in ("nodeport", "passthrough"):
        doc.fail("spec.loadBalancer.mode", f"expected nodeport or passthrough, got {_show(lb_mode)}")
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
        size = int(ipaddress.ip_address(last)) - int(ipaddress.ip_address(first)) + 1
        if size > MAX_LB_POOL:  # the simulated cloud lists its pool's addresses on every sync
            doc.fail("spec.loadBalancer.pool", f"expected at most {MAX_LB_POOL:,} addresses (a /16), got {size:,} ({raw})")
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
        doc.fail("spec.ingressController.serviceType", f"expected NodePort, LoadBalancer or ClusterIP, got {_show(ing_type)}")
    replay = doc.mapping("spec.replay")
    doc.check_keys("spec.replay", replay, {"endpointSlices"})
    slices = doc.string("spec.replay.endpointSlices", replay.get("endpointSlices"), default="keep")
    if slices not in ("keep", "rebuild"):
        doc.fail("spec.replay.endpointSlices", f"expected keep or rebuild, got {_show(slices)}")
    extra_cidrs = tuple(doc.cidr(f"spec.additionalServiceCIDRs[{i}]", c)
                        for i, c in enumerate(doc.seq("spec.additionalServiceCIDRs")))
    for i, c in enumerate(extra_cidrs):
        for pa, a in {**nets, **{f"spec.additionalServiceCIDRs[{j}]": x for j, x in enumerate(extra_cidrs[:i])}}.items():
            if ipaddress.ip_network(a).overlaps(ipaddress.ip_network(c)):
                doc.fail(f"spec.additionalServiceCIDRs[{i}]", f"expected a range that does not overlap {pa} ({a}), got {c}")
    kube_proxy = doc.mapping("spec.kubeProxy")
    doc.check_keys("spec.kubeProxy", kube_proxy, {"version", "conntrack", "unfixed"})
    ct = doc.mapping("spec.kubeProxy.conntrack")
    doc.check_keys("spec.kubeProxy.conntrack", ct, {"tcpBeLiberal"})
    be_liberal = doc.boolean("spec.kubeProxy.conntrack.tcpBeLiberal")
    unfixed = []
    for i, fix in enumerate(doc.seq("spec.kubeProxy.unfixed")):
        if fix not in versions.FIX_NAMES:
            doc.fail(f"spec.kubeProxy.unfixed[{i}]", f"expected one of {', '.join(versions.FIX_NAMES)} "
                                                     f"(docs/versions.md), got {_show(fix)}")
        unfixed.append(fix)
    kp_version = (_kube_proxy_version(doc, "spec.kubeProxy.version", kube_proxy["version"])
                  if kube_proxy.get("version") is not None else None)
    kubelet = doc.mapping("spec.kubelet")
    doc.check_keys("spec.kubelet", kubelet, {"hairpinMode"})
    hairpin = doc.string("spec.kubelet.hairpinMode", kubelet.get("hairpinMode"), default="hairpin-veth")
    if hairpin not in HAIRPIN_MODES:
        doc.fail("spec.kubelet.hairpinMode", f"expected one of {', '.join(HAIRPIN_MODES)}, got {_show(hairpin)}"
                 + (" (promiscuous-bridge is not modelled)" if hairpin == "promiscuous-bridge" else ""))
    pinned = set(spec) | ({"clusterDNS.ip"} if dns.get("ip") else set())
    if kp_version is None:
        pinned.discard("kubeProxy")  # only its version pins what a replayed dump's nodes run
    return LabSpec(name=name, proxy_mode=mode, nodes=nodes, clients=clients, node_network=node_network,
                   cluster_dns=doc.boolean("spec.clusterDNS.enabled", default=True), cluster_dns_ip=dns_ip,
                   cluster_domain=domain, ingress_service_type=ing_type,
                   ipvs_scheduler=_scheduler(doc, "spec.ipvsScheduler", spec.get("ipvsScheduler")) or "rr",
                   lb_pool=lb_pool, lb_mode=lb_mode,
                   cluster_cidr=cluster_cidr, node_cidr_mask=mask, service_cidr=service_cidr, extra_service_cidrs=extra_cidrs,
                   node_port_range=(int(m[1]), int(m[2])), masquerade_all=doc.boolean("spec.masqueradeAll"),
                   conntrack_cleanup=doc.boolean("spec.conntrackCleanup", default=True),
                   rebuild_endpoints=slices == "rebuild", pinned=frozenset(pinned), kube_proxy_version=kp_version,
                   hairpin_mode=hairpin, conntrack_tcp_be_liberal=be_liberal, unfixed=tuple(dict.fromkeys(unfixed)))


def _kube_proxy_version(doc: _Doc, path: str, raw) -> str:
    """A kube-proxy minor release as "1.31" ("v1.31.2" and an unquoted 1.31 are read too)."""
    try:
        return versions.text(versions.parse(raw, "kube-proxy version"))
    except ValueError as e:
        doc.fail(path, str(e))


def _taints(doc: _Doc, path: str, raw) -> tuple[Taint, ...]:
    out = []
    for i, t in enumerate(doc.seq(path, raw)):
        tp = f"{path}[{i}]"
        t = doc.mapping(tp, t)
        effect = doc.string(f"{tp}.effect", t.get("effect"), required=True)
        if effect not in TAINT_EFFECTS:
            doc.fail(f"{tp}.effect", f"expected one of {', '.join(TAINT_EFFECTS)}, got {_show(effect)}")
        out.append(Taint(doc.string(f"{tp}.key", t.get("key"), required=True),
                         doc.string(f"{tp}.value", t.get("value"), default=""), effect))
    return tuple(out)


def _pod_status(doc: _Doc) -> tuple[str | None, bool | None, str | None]:
    """(IPv4 pod IP, Ready condition, phase) of a dumped pod's status."""
    status = doc.mapping("status")
    ips = [status.get("podIP")] + [x.get("ip") for x in doc.seq("status.podIPs", status.get("podIPs")) if isinstance(x, dict)]
    ip = None
    for i, cand in enumerate(x for x in ips if x):
        if isinstance(cand, str) and ":" in cand:
            continue  # the IPv6 address of a dual-stack pod
        ip = doc.ip("status.podIP" if i == 0 and status.get("podIP") else "status.podIPs", cand)
        break
    ready = None
    for c in doc.seq("status.conditions", status.get("conditions")):
        if isinstance(c, dict) and c.get("type") == "Ready":
            ready = c.get("status") == "True"
    phase = status.get("phase") if isinstance(status.get("phase"), str) else None
    return ip, ready, phase


def _parse_pod(doc: _Doc) -> Pod | None:
    name, ns = _metadata(doc, "Pod")
    ps = _pod_spec(doc, "spec", doc.mapping("spec"))
    ip, ready, phase = _pod_status(doc)
    owner_kind, owner = _controller_ref(doc)
    if phase in ("Succeeded", "Failed"):
        doc.notes.effect(doc.file, doc.obj, "status.phase", f"a {phase} pod is not run (it is no endpoint either)")
        return None
    labels = doc.labels("metadata.labels", doc.get("metadata.labels"))
    return Pod(name, ns, labels, ps.ports, ps.node_name, owner=f"{ns}/{owner}" if owner else None, probes=ps.probes,
               grace_period=ps.grace_period, workload=_workload(doc, "metadata", labels, ns), ip=ip, owner_kind=owner_kind,
               node_selector=ps.node_selector, tolerations=ps.tolerations, hostname=ps.hostname, subdomain=ps.subdomain,
               ready=ready, host_network=ps.host_network)


def _parse_workload(doc: _Doc) -> Workload | None:
    kind = doc.kind
    name, ns = _metadata(doc, kind)
    spec = doc.mapping("spec")
    modelled = {"replicas", "selector", "template"} | {
        "StatefulSet": {"serviceName", "podManagementPolicy", "ordinals"},
        "Job": {"parallelism", "completions", "manualSelector"},
        "DaemonSet": set()}.get(kind, set())
    if kind == "DaemonSet":
        modelled.discard("replicas")
    doc.check_keys("spec", spec, modelled, kind)
    tmeta = doc.mapping("spec.template.metadata")
    doc.check_keys("spec.template", doc.mapping("spec.template"), {"metadata", "spec"}, "template")
    labels = doc.labels("spec.template.metadata.labels", tmeta.get("labels"))
    if kind == "ReplicationController":  # a plain map, defaulting to the template's labels
        raw = doc.labels("spec.selector", spec.get("selector")) or labels
        if not raw:
            doc.fail("spec.selector", "expected a selector or spec.template.metadata.labels")
        selector = Selector(raw)
    elif kind == "Job" and not spec.get("manualSelector"):
        # The Job controller labels its pods with the Job's name and selects on that.
        labels = tuple(sorted(dict(labels, **{"batch.kubernetes.io/job-name": name, "job-name": name}).items()))
        selector = Selector((("batch.kubernetes.io/job-name", name),))
    else:
        selector = doc.selector("spec.selector", spec.get("selector"))
    if not selector.matches(dict(labels)):
        doc.fail("spec.selector", "expected a selector that matches spec.template.metadata.labels")
    ps = _pod_spec(doc, "spec.template.spec", doc.mapping("spec.template.spec"))
    if kind == "DaemonSet":
        replicas = 0  # one per eligible node, decided by the controller
    elif kind == "Job":
        parallelism = doc.integer("spec.parallelism", lo=0, hi=10000, default=1)
        completions = doc.integer("spec.completions", value=spec.get("completions"), lo=0, hi=100000)
        replicas = min(parallelism, completions) if completions is not None else parallelism
        doc.notes.effect(doc.file, doc.obj, "spec", "Job pods keep running: they never complete")
    else:
        replicas = doc.integer("spec.replicas", lo=0, hi=10000, default=1)
    kw = {}
    if kind == "StatefulSet":
        kw["service_name"] = doc.string("spec.serviceName")
        if kw["service_name"] is not None:
            doc.name("spec.serviceName", kw["service_name"])
        policy = doc.string("spec.podManagementPolicy", default="OrderedReady")
        if policy not in ("OrderedReady", "Parallel"):
            doc.fail("spec.podManagementPolicy", f"expected OrderedReady or Parallel, got {_show(policy)}")
        kw["ordered"] = policy == "OrderedReady"
        kw["start_ordinal"] = doc.integer("spec.ordinals.start", lo=0, hi=1000000, default=0)
    owner_kind, owner = _controller_ref(doc)
    if kind == "ReplicaSet" and owner_kind == "Deployment":
        kw["owner"] = f"{ns}/{owner}"
    template = PodTemplate(labels, ps.ports, ps.node_name, ps.probes, ps.grace_period,
                           _workload(doc, "spec.template.metadata", labels, ns), ps.node_selector, ps.tolerations,
                           ps.hostname, ps.subdomain, ps.host_network)
    return Workload(name, ns, replicas, selector, template, kind=kind, **kw)


def _scheduler(doc: _Doc, path: str, value) -> str | None:
    if value is None:
        return None
    if value not in IPVS_SCHEDULERS:
        doc.fail(path, f"expected an IPVS scheduler ({', '.join(IPVS_SCHEDULERS)}), got {_show(value)}")
    return value


def _parse_service(doc: _Doc) -> Service | None:
    name, ns = _metadata(doc, "Service")
    spec = doc.mapping("spec")
    doc.check_keys("spec", spec, {"selector", "ports", "type", "clusterIP", "clusterIPs", "externalIPs",
                                  "sessionAffinity", "sessionAffinityConfig", "externalTrafficPolicy",
                                  "internalTrafficPolicy", "loadBalancerSourceRanges", "loadBalancerIP",
                                  "healthCheckNodePort", "publishNotReadyAddresses", "externalName",
                                  "ipFamilies", "ipFamilyPolicy", "allocateLoadBalancerNodePorts",
                                  "loadBalancerClass", "trafficDistribution"}, "service")
    ann = doc.annotations()
    stype = doc.string("spec.type", default="ClusterIP")
    if stype not in SERVICE_TYPES:
        doc.fail("spec.type", f"expected one of {', '.join(SERVICE_TYPES)}, got {_show(stype)}")
    families = [doc.string(f"spec.ipFamilies[{i}]", f) for i, f in enumerate(doc.seq("spec.ipFamilies"))]
    for i, f in enumerate(families):
        if f not in ("IPv4", "IPv6"):
            doc.fail(f"spec.ipFamilies[{i}]", f"expected IPv4 or IPv6, got {_show(f)}")
    if families and families[0] == "IPv6":
        doc.notes.effect(doc.file, doc.obj, "spec.ipFamilies", "an IPv6 Service is not modelled (testbed is IPv4 "
                         "only): the Service is left out", strict_path="spec.ipFamilies")
        return None
    if "IPv6" in families:
        doc.notes.effect(doc.file, doc.obj, "spec.ipFamilies", "only the IPv4 family is programmed (testbed is IPv4 only)")
    # An empty selector is the same as none: the API omits it and no endpoints are managed.
    selector = doc.labels("spec.selector", spec.get("selector")) or None
    ports: list[ServicePortSpec] = []
    raw_ports = doc.seq("spec.ports")
    if not raw_ports and stype != "ExternalName" and spec.get("clusterIP") != "None":
        doc.fail("spec.ports", "expected at least one port")
    for i, p in enumerate(raw_ports):
        pp = f"spec.ports[{i}]"
        p = doc.mapping(pp, p)
        doc.check_keys(pp, p, {"name", "protocol", "port", "targetPort", "nodePort", "appProtocol"}, "servicePort")
        port = doc.integer(f"{pp}.port", p.get("port"), 1, 65535)
        if port is None:
            doc.fail(f"{pp}.port", "is required")
        pname = p.get("name") or ""
        if pname:
            doc.name(f"{pp}.name", pname)
        elif len(raw_ports) > 1:
            doc.fail(f"{pp}.name", "is required when a Service has more than one port")
        target = p.get("targetPort")
        if isinstance(target, str) and not _digits(target):
            doc.name(f"{pp}.targetPort", target, max_len=15, what="a port number or an IANA service name")
        elif target is not None:
            target = _port_number(doc, f"{pp}.targetPort", target)
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
    cluster_ips = [doc.string(f"spec.clusterIPs[{i}]", x) for i, x in enumerate(doc.seq("spec.clusterIPs"))]
    if cluster_ip in (None, "") and cluster_ips:
        cluster_ip = cluster_ips[0]
    if cluster_ip not in (None, "", "None"):
        cluster_ip = doc.ip("spec.clusterIP", cluster_ip)
    affinity = doc.string("spec.sessionAffinity", default="None")
    if affinity not in ("None", "ClientIP"):
        doc.fail("spec.sessionAffinity", f"expected None or ClientIP, got {_show(affinity)}")
    timeout = None
    if affinity == "ClientIP":
        timeout = doc.integer("spec.sessionAffinityConfig.clientIP.timeoutSeconds", lo=1, hi=86400, default=10800)
    policies = {}
    for key in ("externalTrafficPolicy", "internalTrafficPolicy"):
        v = doc.string(f"spec.{key}", default="Cluster")
        if v not in ("Cluster", "Local"):
            doc.fail(f"spec.{key}", f"expected Cluster or Local, got {_show(v)}")
        policies[key] = v == "Local"
    ext_ips = tuple(doc.ip(f"spec.externalIPs[{i}]", v) for i, v in enumerate(doc.seq("spec.externalIPs")))
    ranges = []
    for i, v in enumerate(doc.seq("spec.loadBalancerSourceRanges")):
        v = doc.string(f"spec.loadBalancerSourceRanges[{i}]", v, required=True).strip()  # a null item too
        if ":" in v:
            doc.notes.effect(doc.file, doc.obj, f"spec.loadBalancerSourceRanges[{i}]", "an IPv6 range is not modelled")
            continue
        ranges.append(doc.cidr(f"spec.loadBalancerSourceRanges[{i}]", v))
    lb_ips, lb_proxy_ips = [], []
    for i, ing in enumerate(doc.seq("status.loadBalancer.ingress")):
        ing = doc.mapping(f"status.loadBalancer.ingress[{i}]", ing)
        if isinstance(ing.get("ip"), str) and ":" in ing["ip"]:
            continue  # the IPv6 address of a dual-stack load balancer
        if ing.get("ip"):
            lb_ips.append(doc.ip(f"status.loadBalancer.ingress[{i}].ip", ing["ip"]))
            mode = doc.string(f"status.loadBalancer.ingress[{i}].ipMode", ing.get("ipMode"), default="VIP")
            if mode not in ("VIP", "Proxy"):
                doc.fail(f"status.loadBalancer.ingress[{i}].ipMode", f"expected VIP or Proxy, got {_show(mode)}")
            if mode == "Proxy":
                lb_proxy_ips.append(lb_ips[-1])
        elif ing.get("hostname"):
            doc.notes.effect(doc.file, doc.obj, f"status.loadBalancer.ingress[{i}].hostname",
                             "a load balancer known by hostname only (as AWS's) gets an address from the simulated cloud")
    ext_name = doc.string("spec.externalName")
    if stype == "ExternalName" and not ext_name:
        doc.fail("spec.externalName", "is required for type ExternalName")
    lb_class = doc.string("spec.loadBalancerClass")
    if lb_class is not None and stype != "LoadBalancer":
        doc.fail("spec.loadBalancerClass", f"may only be set for type LoadBalancer, not {stype}")
    allocate = doc.boolean("spec.allocateLoadBalancerNodePorts", default=True)
    distribution = doc.string("spec.trafficDistribution")
    if distribution is not None and distribution not in TRAFFIC_DISTRIBUTIONS:
        doc.fail("spec.trafficDistribution", f"expected one of {', '.join(TRAFFIC_DISTRIBUTIONS)}, got {_show(distribution)}")
    topology_mode = next((ann[k] for k in TOPOLOGY_ANNOTATIONS if isinstance(ann.get(k), str)), None)
    return Service(
        traffic_distribution=distribution, topology_mode=topology_mode, lb_proxy_ips=tuple(lb_proxy_ips),
        name=name, namespace=ns, type=stype, selector=selector, ports=tuple(ports),
        cluster_ip=cluster_ip or None, external_ips=ext_ips, session_affinity_timeout=timeout,
        external_policy_local=policies["externalTrafficPolicy"], internal_policy_local=policies["internalTrafficPolicy"],
        load_balancer_source_ranges=tuple(ranges), load_balancer_ips=tuple(lb_ips),
        load_balancer_ip=doc.ip("spec.loadBalancerIP", spec["loadBalancerIP"]) if spec.get("loadBalancerIP") else None,
        health_check_node_port=doc.integer("spec.healthCheckNodePort", lo=1, hi=65535),
        publish_not_ready=doc.boolean("spec.publishNotReadyAddresses"), external_name=ext_name,
        ipvs_scheduler=_scheduler(doc, "metadata.annotations.testbed.dev/ipvs-scheduler",
                                  doc.mapping("metadata.annotations").get("testbed.dev/ipvs-scheduler")),
        labels=doc.labels("metadata.labels", doc.get("metadata.labels")), load_balancer_class=lb_class,
        allocate_node_ports=allocate or stype != "LoadBalancer")


def _condition(doc: _Doc, path: str, value) -> bool | None:
    if value is not None and not isinstance(value, bool):
        doc.fail(path, f"expected true or false, got {_show(value)}")
    return value


def _parse_slice(doc: _Doc) -> EndpointSlice | None:
    name, ns = _metadata(doc, "EndpointSlice")
    labels = dict(doc.labels("metadata.labels", doc.get("metadata.labels")))
    at = doc.string("addressType", required=True)
    if at not in ("IPv4", "IPv6", "FQDN"):
        doc.fail("addressType", f"expected IPv4, IPv6 or FQDN, got {_show(at)}")
    svc = labels.get(SERVICE_NAME_LABEL)
    if not svc:
        doc.notes.effect(doc.file, doc.obj, "metadata.labels", f"not used: kube-proxy reads only EndpointSlices "
                         f"labelled {SERVICE_NAME_LABEL}")
        return None
    if at != "IPv4":
        doc.notes.effect(doc.file, doc.obj, "addressType", f"an {at} EndpointSlice is not used (testbed is IPv4 only"
                         + (")" if at == "IPv6" else "; kube-proxy ignores FQDN slices)"))
        return None
    eps = []
    for i, e in enumerate(doc.seq("endpoints")):
        ep = f"endpoints[{i}]"
        e = doc.mapping(ep, e)
        doc.check_keys(ep, e, {"addresses", "conditions", "nodeName", "targetRef", "zone", "hostname", "hints"}, "endpoint")
        addrs = tuple(doc.ip(f"{ep}.addresses[{j}]", a) for j, a in enumerate(doc.seq(f"{ep}.addresses", e.get("addresses"))))
        if not addrs:
            doc.fail(f"{ep}.addresses", "expected at least one address")
        cond = doc.mapping(f"{ep}.conditions", e.get("conditions"))
        doc.check_keys(f"{ep}.conditions", cond, {"ready", "serving", "terminating"}, "conditions")
        flags = {c: _condition(doc, f"{ep}.conditions.{c}", cond.get(c)) for c in ("ready", "serving", "terminating")}
        hints = doc.mapping(f"{ep}.hints", e.get("hints"))
        doc.check_keys(f"{ep}.hints", hints, {"forZones", "forNodes"})
        hinted = {k: tuple(doc.string(f"{ep}.hints.{k}[{j}].name", doc.mapping(f"{ep}.hints.{k}[{j}]", h).get("name"),
                                      required=True) for j, h in enumerate(doc.seq(f"{ep}.hints.{k}", hints.get(k))))
                  for k in ("forZones", "forNodes")}
        eps.append(SliceEndpoint(addrs, flags["ready"], flags["serving"], flags["terminating"],
                                 _node_name(doc, f"{ep}.nodeName", e.get("nodeName")),
                                 doc.string(f"{ep}.hostname", e.get("hostname")),
                                 doc.string(f"{ep}.zone", e.get("zone")), hinted["forZones"], hinted["forNodes"]))
    ports = []
    for i, p in enumerate(doc.seq("ports")):
        pp = f"ports[{i}]"
        p = doc.mapping(pp, p)
        doc.check_keys(pp, p, {"port", "protocol", "name", "appProtocol"}, "slicePort")
        port = doc.integer(f"{pp}.port", p.get("port"), 0, 65535)
        if port is None:
            doc.fail(f"{pp}.port", "is required")
        ports.append(SlicePort(port, doc.protocol(f"{pp}.protocol", p.get("protocol")),
                               doc.string(f"{pp}.name", p.get("name"), default="")))
    return EndpointSlice(name, ns, svc, tuple(eps), tuple(ports), labels.get(MANAGED_BY, ""))


def _parse_endpoints(doc: _Doc) -> EndpointSlice | None:
    """v1 Endpoints → the EndpointSlice the mirroring controller makes of it (used only for a Service
    without a selector: that is all the controller mirrors; the rest is decided once all is read)."""
    name, ns = _metadata(doc, "Endpoints")
    labels = dict(doc.labels("metadata.labels", doc.get("metadata.labels")))
    if labels.get("endpointslice.kubernetes.io/skip-mirror") == "true":
        return None
    eps: list[SliceEndpoint] = []
    ports: list[SlicePort] = []
    for i, sub in enumerate(doc.seq("subsets")):
        sp = f"subsets[{i}]"
        sub = doc.mapping(sp, sub)
        doc.check_keys(sp, sub, {"addresses", "notReadyAddresses", "ports"}, "subset")
        sub_ports = []
        for j, p in enumerate(doc.seq(f"{sp}.ports", sub.get("ports"))):
            pp = f"{sp}.ports[{j}]"
            p = doc.mapping(pp, p)
            port = doc.integer(f"{pp}.port", p.get("port"), 1, 65535)
            if port is None:
                doc.fail(f"{pp}.port", "is required")
            sub_ports.append(SlicePort(port, doc.protocol(f"{pp}.protocol", p.get("protocol")),
                                       doc.string(f"{pp}.name", p.get("name"), default="")))
        if i and sub_ports != ports:
            doc.notes.effect(doc.file, doc.obj, sp, "subsets with different ports are mirrored with the first subset's ports")
        ports = ports or sub_ports
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for j, a in enumerate(doc.seq(f"{sp}.{key}", sub.get(key))):
                ap = f"{sp}.{key}[{j}]"
                a = doc.mapping(ap, a)
                ip = a.get("ip")
                if isinstance(ip, str) and ":" in ip:
                    continue
                eps.append(SliceEndpoint((doc.ip(f"{ap}.ip", ip),), ready, ready, False,
                                         _node_name(doc, f"{ap}.nodeName", a.get("nodeName")),
                                         doc.string(f"{ap}.hostname", a.get("hostname"))))
    return EndpointSlice(f"{name}-mirror", ns, name, tuple(eps), tuple(ports), MIRROR_CONTROLLER)


def _parse_node(doc: _Doc) -> NodeSpec:
    name, _ = _metadata(doc, "Node", namespaced=False)
    spec = doc.mapping("spec")
    doc.check_keys("spec", spec, {"podCIDR", "podCIDRs", "taints"}, "node")
    cidrs = [spec.get("podCIDR")] + list(doc.seq("spec.podCIDRs"))
    pod_cidr = next((doc.cidr("spec.podCIDR", c) for c in cidrs if isinstance(c, str) and ":" not in c), None)
    ip = None
    for i, a in enumerate(doc.seq("status.addresses")):
        a = doc.mapping(f"status.addresses[{i}]", a)
        if a.get("type") == "InternalIP" and isinstance(a.get("address"), str) and ":" not in a["address"]:
            ip = doc.ip(f"status.addresses[{i}].address", a["address"])
            break
    version = doc.get("status.nodeInfo.kubeProxyVersion")
    labels = tuple((k, v) for k, v in doc.labels("metadata.labels", doc.get("metadata.labels"))
                   if k not in ("kubernetes.io/hostname", "kubernetes.io/os"))
    if version is not None:
        try:
            version = versions.text(versions.parse(version))
        except ValueError:
            doc.notes.effect(doc.file, doc.obj, "status.nodeInfo.kubeProxyVersion", f"{_show(version)} is not a "
                             "kube-proxy version: the node renders the lab's")
            version = None
    return NodeSpec(name, ip, pod_cidr, labels, _taints(doc, "spec.taints", spec.get("taints")), version)


def _parse_namespace(doc: _Doc) -> str:
    name, _ = _metadata(doc, "Namespace", namespaced=False)
    return name


def _parse_ingress(doc: _Doc):
    from .ingress import parse_ingress
    doc.annotations()
    return parse_ingress(doc)


def _parse_ingress_class(doc: _Doc):
    from .ingress import parse_ingress_class
    return parse_ingress_class(doc)


KINDS = {
    ("testbed.dev/v1alpha1", "Lab"): _parse_lab,
    ("networking.k8s.io/v1", "Ingress"): _parse_ingress,
    ("networking.k8s.io/v1", "IngressClass"): _parse_ingress_class,
    ("v1", "Pod"): _parse_pod,
    ("apps/v1", "Deployment"): _parse_workload,
    ("apps/v1", "ReplicaSet"): _parse_workload,
    ("apps/v1", "StatefulSet"): _parse_workload,
    ("apps/v1", "DaemonSet"): _parse_workload,
    ("batch/v1", "Job"): _parse_workload,
    ("v1", "ReplicationController"): _parse_workload,
    ("v1", "Service"): _parse_service,
    ("discovery.k8s.io/v1", "EndpointSlice"): _parse_slice,
    ("v1", "Endpoints"): _parse_endpoints,
    ("v1", "Node"): _parse_node,
    ("v1", "Namespace"): _parse_namespace,
}
CLUSTER_SCOPED = {"Lab", "Node", "Namespace", "IngressClass"}


# ----------------------------------------------------------------------------- loading


def _key(o) -> str:
    return getattr(o, "key", None) or getattr(o, "name", None) or str(o)


_FIELDS = {"Pod": "pods", "Service": "services", "EndpointSlice": "slices", "Ingress": "ingresses",
           "IngressClass": "ingress_classes", **{k: "deployments" for k in WORKLOAD_KINDS}}


@dataclass
class _Draft:
    """What parse_documents collects before the Lab is completed and everything is cross-checked."""

    lab: LabSpec | None = None
    objs: dict[str, dict] = field(default_factory=lambda: {f: {} for f in set(_FIELDS.values())})
    nodes: list[NodeSpec] = field(default_factory=list)
    namespaces: dict[str, None] = field(default_factory=dict)
    endpoints: list[tuple[EndpointSlice, str]] = field(default_factory=list)  # mirrored, with the object name
    kube_proxy: dict | None = None  # kube-system/kube-proxy's KubeProxyConfiguration
    service_cidrs: list[str] = field(default_factory=list)  # networking.k8s.io ServiceCIDR objects
    positions: dict[str, str] = field(default_factory=dict)
    dumped: bool = False  # an object carries what only a cluster writes (uid, resourceVersion): a replay


def _identity(raw: dict, where: str) -> tuple[str | None, str | None, str]:
    api, kind = raw.get("apiVersion"), raw.get("kind")
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    name = meta.get("name")
    kind_s = kind[:60] if isinstance(kind, str) and kind else "object"
    name_s = name[:80] if isinstance(name, str) and name else "?"
    obj = f"{kind_s} {name_s} ({where})"
    return (api if isinstance(api, str) else None), (kind if isinstance(kind, str) else None), obj


def _not_modelled(draft: _Draft, doc_obj: str, raw: dict, api: str, kind: str, file: str, notes: Notes, custom: bool) -> None:
    if notes.strict:
        what = "a custom resource" if custom else "a kind testbed does not model"
        raise TopologyError(file, doc_obj, "kind", f"{kind} ({api}) is {what}; --strict refuses it")
    group = manifests.group_of(api)
    how = manifests.TRAFFIC_GROUPS.get(group) if custom else manifests.NOT_MODELLED.get(kind)
    notes.kind(f"{kind}*" if custom else kind)
    if how:
        notes.effect(file, f"{kind} ({api})", "", how)
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    if kind == "ConfigMap" and meta.get("name") == "kube-proxy" and meta.get("namespace") == "kube-system":
        draft.kube_proxy = _kube_proxy_config(raw, file, doc_obj, notes)
    elif kind == "ServiceCIDR" and group == "networking.k8s.io":
        spec = raw.get("spec") if isinstance(raw.get("spec"), dict) else {}
        cidrs = spec.get("cidrs") if isinstance(spec.get("cidrs"), list) else []
        # The API server's validation first: the Service CIDRs are inferred from them (testbed.replay).
        v4 = [_Doc(file, doc_obj, raw, notes, kind).cidr(f"spec.cidrs[{i}]", c) for i, c in enumerate(cidrs)
              if not (isinstance(c, str) and ":" in c)]  # not the IPv6 range of a dual-stack cluster
        # The API server's own (from --service-cluster-ip-range) is named kubernetes: the default one.
        draft.service_cidrs[0:0] = v4 if meta.get("name") == "kubernetes" else []
        draft.service_cidrs.extend(v4 if meta.get("name") != "kubernetes" else [])


def _kube_proxy_config(raw: dict, file: str, obj: str, notes: Notes) -> dict | None:
    """kube-proxy's own configuration (its ConfigMap's config.conf, a KubeProxyConfiguration), as kubeadm
    writes it: the mode, --cluster-cidr and the IPVS scheduler the dumped cluster's nodes run with."""
    import yaml

    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    text = data.get("config.conf")
    if not isinstance(text, str):
        return None
    try:
        conf = yaml.load(text, Loader=manifests.SafeLoader)  # what its constructors cannot read is a YAMLError
    except yaml.YAMLError:
        notes.effect(file, obj, "data.config.conf", "not valid YAML: kube-proxy's settings are not taken from it")
        return None
    if not isinstance(conf, dict):
        return None
    # What testbed.replay takes from it, checked as kube-proxy checks its flags at start-up.
    cidr = conf.get("clusterCIDR")
    if cidr not in (None, ""):
        try:
            for part in cidr.split(","):
                if ":" not in part:  # IPv6 parts of a dual-stack cluster are not modelled
                    ipaddress.ip_network(part.strip(), strict=False)
        except (ValueError, AttributeError):
            raise TopologyError(file, obj, "data.config.conf", f"clusterCIDR: expected a CIDR such as 10.244.0.0/16, "
                                f"got {_show(cidr)}") from None
    ipvs = conf.get("ipvs") if isinstance(conf.get("ipvs"), dict) else {}
    if ipvs.get("scheduler") not in (None, "", *IPVS_SCHEDULERS):
        raise TopologyError(file, obj, "data.config.conf", f"ipvs.scheduler: expected an IPVS scheduler "
                            f"({', '.join(IPVS_SCHEDULERS)}), got {_show(ipvs['scheduler'])}")
    return conf


def parse_documents(docs: list, file: str, base: Topology | None = None, require_lab: bool = False,
                    strict: bool = False, rebuild_endpoints: bool | None = None) -> Topology:
    """Validate documents (raw mappings or manifests.Document) into a Topology, merged over `base`
    when given (objects of the same kind and name replace base's)."""
    from . import replay

    notes = Notes(strict)
    flat: list[manifests.Document] = []
    for i, raw in enumerate(docs):
        if isinstance(raw, manifests.Document):
            flat.append(raw)
        elif raw is not None:
            manifests.flatten(raw, f"document {i + 1}", file, flat)
    draft = _Draft(lab=base.lab if base else None)
    if base:
        for f in _FIELDS.values():
            draft.objs[f].update({_key(o): o for o in getattr(base, f)})
        draft.namespaces.update(dict.fromkeys(base.namespaces))
        draft.positions.update(dict(base.positions))
    seen: dict[tuple[str, str], str] = {}
    modelled = set(KINDS)
    for d in flat:
        raw = d.data
        if not isinstance(raw, dict):
            raise TopologyError(file, d.where, None, f"expected a mapping with apiVersion and kind, got {type(raw).__name__}")
        api, kind, obj = _identity(raw, d.where)
        if not kind:
            raise TopologyError(file, obj, "kind", f"is required (every manifest names its kind), got {_show(raw.get('kind'))}")
        if not api:
            raise TopologyError(file, obj, "apiVersion", f"is required (e.g. v1 or apps/v1), got {_show(raw.get('apiVersion'))}")
        cls = manifests.classify(api, kind, modelled)
        if cls == "removed":
            new, since = manifests.REMOVED_VERSIONS[(api, kind)]
            raise TopologyError(file, obj, "apiVersion", f"{api} {kind} was removed in Kubernetes {since}: use {new}")
        if cls == "wrong-version":
            want = ", ".join(a for a, k in modelled if k == kind)
            raise TopologyError(file, obj, "apiVersion", f"expected {want} for {kind}, got {_show(api)}")
        if cls == "typo":
            raise TopologyError(file, obj, "kind", f"{kind!r} is not a Kubernetes kind (did you mean "
                                                   f"{manifests.close_kind(kind, {k for _, k in modelled})}?)")
        if cls in ("not-modelled", "custom"):
            _not_modelled(draft, obj, raw, api, kind, file, notes, custom=cls == "custom")
            continue
        meta = raw.get("metadata")
        if isinstance(meta, dict) and ("uid" in meta or "resourceVersion" in meta):
            draft.dumped = True
        doc = _Doc(file, obj, raw, notes, kind)
        top = {"apiVersion", "kind", "metadata", "spec", "status"} | {
            "EndpointSlice": {"addressType", "endpoints", "ports"}, "Endpoints": {"subsets"}}.get(kind, set())
        doc.check_keys("", raw, top, None if kind == "Lab" else "top")
        parsed = KINDS[(api, kind)](doc)
        if kind == "Lab":
            if ("Lab", "") in seen:
                raise TopologyError(file, obj, None, f"expected one Lab document, found a second (the first: {seen['Lab', '']})")
            seen["Lab", ""] = d.where
            draft.positions[f"Lab {parsed.name}"] = d.where
            draft.lab = parsed
            continue
        if parsed is None:  # accepted, named in the notes, not modelled (an IPv6 Service, a finished pod, …)
            continue
        key = parsed if kind == "Namespace" else (parsed.name if kind == "Node" else _key(parsed))
        if (kind, key) in seen:
            raise TopologyError(file, obj, "metadata.name", f"duplicate {kind} {key} (also {seen[kind, key]})")
        seen[kind, key] = d.where
        draft.positions[f"{kind} {key}"] = d.where
        if kind == "Node":
            draft.nodes.append(parsed)
        elif kind == "Namespace":
            draft.namespaces[parsed] = None
        elif kind == "Endpoints":
            draft.endpoints.append((parsed, obj))
        else:
            draft.objs[_FIELDS[kind]][key] = parsed
    if draft.lab is None:
        if require_lab:
            raise TopologyError(file, None, None, "expected a Lab document (apiVersion testbed.dev/v1alpha1)")
        draft.lab = LabSpec()
    if rebuild_endpoints is not None:
        draft.lab = replace(draft.lab, rebuild_endpoints=rebuild_endpoints)
    _mirror_endpoints(draft, file, notes)
    topo = Topology(draft.lab, **{f: tuple(v.values()) for f, v in draft.objs.items()},
                    namespaces=tuple(draft.namespaces), source=file, positions=tuple(draft.positions.items()))
    if base is None:  # a change to a running lab keeps the lab it runs on
        topo = replay.complete(topo, draft.nodes, draft.kube_proxy, draft.service_cidrs, notes, draft.dumped)
    warnings = (base.warnings if base else ()) + tuple(notes.ignored_lines())
    effects = (base.effects if base else ()) + tuple(notes.effect_lines())
    counts = Counter(dict(base.not_modelled)) if base else Counter()
    counts.update(dict(notes.kind_counts()))
    topo = replace(topo, warnings=tuple(dict.fromkeys(warnings)), effects=tuple(dict.fromkeys(effects)),
                   not_modelled=tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
                   ignored=(base.ignored if base else ()) + notes.ignored_fields())
    validate(topo)
    return topo


def _mirror_endpoints(draft: _Draft, file: str, notes: Notes) -> None:
    """The EndpointSlice mirroring controller: v1 Endpoints of a Service without a selector become an
    EndpointSlice (replacing slices it mirrored before, as a dump has them); others are not read by
    kube-proxy."""
    services = draft.objs["services"]
    slices = draft.objs["slices"]
    for mirrored, obj in draft.endpoints:
        svc = services.get(f"{mirrored.namespace}/{mirrored.service_name}")
        if svc is None:
            notes.effect(file, obj, "metadata.name",
                         "not used: no Service of that name (only a Service's Endpoints are mirrored)")
            continue
        if svc.selector is not None:
            notes.field(file, "Endpoints", obj, "(the Endpoints controller's output; kube-proxy reads EndpointSlices)")
            continue
        for k in [k for k, s in slices.items() if s.namespace == mirrored.namespace
                  and s.service_name == mirrored.service_name and s.managed_by == MIRROR_CONTROLLER]:
            del slices[k]
        slices[mirrored.key] = mirrored


def load_text(text: str, file: str = "<string>", base: Topology | None = None, strict: bool = False,
              rebuild_endpoints: bool | None = None) -> Topology:
    docs = manifests.parse_stream(text, file)
    return parse_documents(docs, file, base, strict=strict, rebuild_endpoints=rebuild_endpoints)


def load_file(path: str | Path, base: Topology | None = None, strict: bool = False,
              rebuild_endpoints: bool | None = None) -> Topology:
    """A file (or `-`, standard input) → Topology. An empty file is refused, as `kubectl apply` does."""
    docs, name = manifests.load_documents(path)
    if not docs:
        raise TopologyError(name, None, None, "holds no objects (expected a Lab document and/or Kubernetes manifests)")
    return parse_documents(docs, name, base, strict=strict, rebuild_endpoints=rebuild_endpoints)


TOPOLOGY_DIR = Path(__file__).resolve().parent.parent / "topologies"


def builtin(name: str = "default") -> Path:
    """A topology shipped in topologies/ (the default lab when no file is given)."""
    return TOPOLOGY_DIR / f"{name}.yaml"


# ----------------------------------------------------------------------------- cross-object checks


def validate(topo: Topology) -> None:
    """Everything that needs more than one object; linear in the number of objects."""
    lab, file = topo.lab, topo.source
    hosts = [("spec.nodes", n) for n in lab.nodes] + [("spec.clients", c) for c in lab.clients]
    names, ips = {}, {}
    net = ipaddress.ip_network(lab.node_network)
    lab_obj = topo.where("Lab", lab.name)
    for path, h in hosts:
        if h.name in ("fabric", "lb"):
            raise TopologyError(file, lab_obj, path,
                                f"the host name {h.name!r} is reserved (the lab's node network and load balancer)")
        if h.name in names:
            raise TopologyError(file, lab_obj, path,
                                f"duplicate host name {h.name!r} (nodes and clients share one namespace of names)")
        names[h.name] = path
        if h.ip:
            if ipaddress.ip_address(h.ip) not in net:
                ip_field = f"{path}.ip" if path == "spec.clients" or not _from_node_object(topo, h) else "status.addresses"
                raise TopologyError(file, _host_obj(topo, path, h), ip_field,
                                    f"expected an address inside the node network {net}, got {h.ip}")
            if h.ip in ips:
                raise TopologyError(file, _host_obj(topo, path, h), path, f"duplicate IP {h.ip} (also {ips[h.ip]})")
            if h.ip in (str(net.network_address), str(net.broadcast_address), str(net.network_address + 1)):
                raise TopologyError(file, _host_obj(topo, path, h), path, f"{h.ip} is reserved in {net} (network, broadcast "
                                                                         f"or the fabric's own address): pin spec.nodeNetwork")
            ips[h.ip] = h.name
    if len(hosts) > net.num_addresses - 3:
        raise TopologyError(file, lab_obj, "spec.nodeNetwork", f"{lab.node_network} is too small for {len(hosts)} hosts")
    cluster = ipaddress.ip_network(lab.cluster_cidr)
    if lab.node_cidr_mask < cluster.prefixlen:  # also for a clusterCIDR inferred from a dump, or the default mask
        raise TopologyError(file, lab_obj, "spec.nodeCIDRMaskSize", f"expected a mask of at least /{cluster.prefixlen} "
                            f"(the clusterCIDR {cluster} is split into the nodes' pod CIDRs), got /{lab.node_cidr_mask}")
    cidrs = []
    for n in lab.nodes:
        if n.pod_cidr:
            c = ipaddress.ip_network(n.pod_cidr)
            if not c.subnet_of(cluster):
                raise TopologyError(file, _host_obj(topo, "spec.nodes", n), "spec.podCIDR",
                                    f"expected a subnet of the cluster CIDR {cluster}, got {c}")
            for other, oc in cidrs:
                if c.overlaps(oc):
                    raise TopologyError(file, lab_obj, "spec.nodes", f"podCIDR {c} of {n.name} overlaps {oc} of {other}")
            cidrs.append((n.name, c))
    node_names = {n.name for n in lab.nodes}
    pod_ips: dict[str, str] = {}
    for p in topo.pods:
        if p.node_name and p.node_name not in node_names:
            raise TopologyError(file, topo.where("Pod", p.key), "spec.nodeName",
                                f"expected one of the lab's nodes ({_names(node_names)}), got {p.node_name!r}")
        if p.ip and not p.host_network:  # host-network pods share their node's address
            if p.ip in pod_ips:
                raise TopologyError(file, topo.where("Pod", p.key), "status.podIP",
                                    f"{p.ip} is also Pod {pod_ips[p.ip]}'s address")
            pod_ips[p.ip] = p.key
    for d in topo.deployments:
        if d.template.node_name and d.template.node_name not in node_names:
            raise TopologyError(file, topo.where(d.kind, d.key), "spec.template.spec.nodeName",
                                f"expected one of the lab's nodes ({_names(node_names)}), got {d.template.node_name!r}")
    svc_nets = [ipaddress.ip_network(c) for c in lab.service_cidrs]
    svc_net = svc_nets[0]
    lo, hi = lab.node_port_range
    used_ips, used_np = {}, {}
    if lab.cluster_dns and not lab.cluster_dns_ip and svc_net.num_addresses < 16:
        raise TopologyError(file, lab_obj, "spec.serviceCIDR", f"{svc_net} is too small for the cluster DNS Service "
                            "(its 10th address, as kubeadm gives kube-dns): expected a /28 or larger, or set "
                            "spec.clusterDNS.ip or spec.clusterDNS.enabled: false")
    dns = str(svc_net.network_address + 10) if not lab.cluster_dns_ip else lab.cluster_dns_ip
    for s in topo.services:
        obj = topo.where("Service", s.key)
        if s.cluster_ip and not s.headless:
            net = next((n for n in svc_nets if ipaddress.ip_address(s.cluster_ip) in n), None)
            if net is None:
                raise TopologyError(file, obj, "spec.clusterIP", f"expected an address inside the Service CIDR "
                                    f"{', '.join(lab.service_cidrs)}, got {s.cluster_ip}")
            if s.cluster_ip in (str(net.network_address), str(net.broadcast_address)):
                raise TopologyError(file, obj, "spec.clusterIP", f"{s.cluster_ip} is the network or broadcast address of {net}")
            if s.cluster_ip in used_ips:
                raise TopologyError(file, obj, "spec.clusterIP",
                                    f"{s.cluster_ip} is already allocated to Service {used_ips[s.cluster_ip]}")
            if lab.cluster_dns and s.cluster_ip == dns and s.key != "kube-system/kube-dns":
                raise TopologyError(file, obj, "spec.clusterIP", f"{s.cluster_ip} is the cluster DNS Service's address "
                                    "(kube-system/kube-dns; spec.clusterDNS.ip in the Lab document moves it)")
            used_ips[s.cluster_ip] = s.key
        for i, p in enumerate(s.ports):
            if p.node_port is not None:
                if not lo <= p.node_port <= hi:
                    raise TopologyError(file, obj, f"spec.ports[{i}].nodePort",
                                        f"expected a port in the NodePort range {lo}-{hi}, got {p.node_port}")
                k = (p.node_port, p.protocol)
                if k in used_np:
                    raise TopologyError(file, obj, f"spec.ports[{i}].nodePort",
                                        f"{p.node_port}/{p.protocol} is already allocated to Service {used_np[k]}")
                used_np[k] = s.key
        if s.load_balancer_ip and s.type != "LoadBalancer":
            raise TopologyError(file, obj, "spec.loadBalancerIP", f"may only be set for type LoadBalancer, not {s.type}")
        if s.health_check_node_port is not None and not (s.type == "LoadBalancer" and s.external_policy_local):
            raise TopologyError(file, obj, "spec.healthCheckNodePort",
                                "may only be set for type LoadBalancer with externalTrafficPolicy Local")
        for i, ip in enumerate(s.external_ips):
            if ipaddress.ip_address(ip) in svc_net or ipaddress.ip_address(ip) in cluster:
                raise TopologyError(file, obj, f"spec.externalIPs[{i}]",
                                    f"expected an address outside the Service and cluster CIDRs, got {ip}")
    for sl in topo.slices:
        for i, e in enumerate(sl.endpoints):
            if e.node_name and e.node_name not in node_names:
                raise TopologyError(file, topo.where("EndpointSlice", sl.key), f"endpoints[{i}].nodeName",
                                    f"expected one of the lab's nodes ({_names(node_names)}), got {e.node_name!r}")


def _names(names) -> str:
    shown = sorted(names)
    return ", ".join(shown[:8]) + (f", … ({len(shown)} in all)" if len(shown) > 8 else "")


def _from_node_object(topo: Topology, h) -> bool:
    return f"Node {h.name}" in dict(topo.positions)


def _host_obj(topo: Topology, path: str, h) -> str:
    return topo.where("Node", h.name) if path == "spec.nodes" and _from_node_object(topo, h) else topo.where("Lab", topo.lab.name)


# ----------------------------------------------------------------------------- writing a Lab back


def lab_document(lab: LabSpec) -> dict:
    """The Lab document that pins everything `lab` holds: what a running lab keeps (so re-reading its
    objects never infers anything anew) and what `testbed export` writes in front of them."""
    def node(n: NodeSpec) -> dict:
        out: dict = {"name": n.name}
        if n.ip:
            out["ip"] = n.ip
        if n.pod_cidr:
            out["podCIDR"] = n.pod_cidr
        if n.labels:
            out["labels"] = dict(n.labels)
        if n.taints:
            out["taints"] = [{"key": t.key, "value": t.value, "effect": t.effect} if t.value else
                             {"key": t.key, "effect": t.effect} for t in n.taints]
        if n.kube_proxy_version:
            out["kubeProxyVersion"] = n.kube_proxy_version
        return out

    spec: dict = {
        "proxyMode": lab.proxy_mode, "nodes": [node(n) for n in lab.nodes],
        "clients": [{"name": c.name, **({"ip": c.ip} if c.ip else {})} for c in lab.clients],
        "nodeNetwork": lab.node_network, "clusterCIDR": lab.cluster_cidr, "nodeCIDRMaskSize": lab.node_cidr_mask,
        "serviceCIDR": lab.service_cidr, **({"additionalServiceCIDRs": list(lab.extra_service_cidrs)}
                                            if lab.extra_service_cidrs else {}),
        "serviceNodePortRange": f"{lab.node_port_range[0]}-{lab.node_port_range[1]}",
        "masqueradeAll": lab.masquerade_all, "conntrackCleanup": lab.conntrack_cleanup,
        "loadBalancer": {"mode": lab.lb_mode, **({"pool": f"{lab.lb_pool[0]}-{lab.lb_pool[1]}"} if lab.lb_pool else {})},
        "clusterDNS": {"enabled": lab.cluster_dns, "domain": lab.cluster_domain,
                       **({"ip": lab.cluster_dns_ip} if lab.cluster_dns_ip else {})},
        "ingressController": {"serviceType": lab.ingress_service_type}, "ipvsScheduler": lab.ipvs_scheduler,
        "replay": {"endpointSlices": "rebuild" if lab.rebuild_endpoints else "keep"},
    }
    kube_proxy = {**({"version": lab.kube_proxy_version} if lab.kube_proxy_version else {}),
                  **({"conntrack": {"tcpBeLiberal": True}} if lab.conntrack_tcp_be_liberal else {}),
                  **({"unfixed": list(lab.unfixed)} if lab.unfixed else {})}
    if kube_proxy:
        spec["kubeProxy"] = kube_proxy
    if lab.hairpin_mode != LabSpec.hairpin_mode:
        spec["kubelet"] = {"hairpinMode": lab.hairpin_mode}
    return {"apiVersion": "testbed.dev/v1alpha1", "kind": "Lab", "metadata": {"name": lab.name}, "spec": spec}


def with_kube_proxy_version(topo: Topology, version) -> Topology:
    """`topo` rendered as kube-proxy `version` on every node (--kube-proxy-version): it wins over
    the Lab document's and the Node objects' versions."""
    try:
        text = versions.text(versions.parse(version, "kube-proxy version"))
    except ValueError as e:
        raise TopologyError(None, None, "--kube-proxy-version", str(e)) from None
    nodes = tuple(replace(n, kube_proxy_version=None) for n in topo.lab.nodes)
    return topo.with_lab(kube_proxy_version=text, nodes=nodes, pinned=topo.lab.pinned | {"kubeProxy"})


def kept_documents(docs: list, lab: LabSpec) -> list[dict]:
    """What a running lab stores of a file: the pinned Lab document and the modelled objects, without
    their managedFields (the rest is summarised at `up` and changes nothing later)."""
    out = [lab_document(lab)]
    for d in docs:
        raw = d.data if isinstance(d, manifests.Document) else d
        if not isinstance(raw, dict) or (raw.get("apiVersion"), raw.get("kind")) not in KINDS or raw.get("kind") == "Lab":
            continue
        meta = raw.get("metadata")
        if isinstance(meta, dict) and "managedFields" in meta:
            raw = {**raw, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
        out.append(raw)
    return out
