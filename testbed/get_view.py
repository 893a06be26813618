"""`testbed get`, as kubectl prints it: per kind, kubectl's columns (`-o wide` adds its wide ones),
`-o name`, and `-o json|yaml` as a `kind: List` of whole Kubernetes objects (testbed.export's
manifests, with the status fields kubectl shows), so that scripts written for kubectl work on it
and the output loads back into a lab. Pure: a Snapshot of the lab in, text out."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import export
from .cli_view import age, columns
from .control import ClusterState
from .errors import TestbedError

# kubectl's names for the kinds (plural, singular, short), the API group for `-o name`.
KINDS = {
    "pods": ("pod", "po"), "services": ("service", "svc"), "endpoints": ("ep",),
    "endpointslices": ("endpointslice",), "nodes": ("node", "no"), "deployments": ("deployment", "deploy"),
    "replicasets": ("replicaset", "rs"), "statefulsets": ("statefulset", "sts"),
    "daemonsets": ("daemonset", "ds"), "jobs": ("job",), "replicationcontrollers": ("replicationcontroller", "rc"),
    "ingresses": ("ingress", "ing"), "clients": ("client",), "all": (),
}
WORKLOAD_KINDS = {"deployments": "Deployment", "replicasets": "ReplicaSet", "statefulsets": "StatefulSet",
                  "daemonsets": "DaemonSet", "jobs": "Job", "replicationcontrollers": "ReplicationController"}
GROUP = {"Pod": "pod", "Service": "service", "Endpoints": "endpoints", "Node": "node",
         "EndpointSlice": "endpointslice.discovery.k8s.io", "Deployment": "deployment.apps",
         "ReplicaSet": "replicaset.apps", "StatefulSet": "statefulset.apps", "DaemonSet": "daemonset.apps",
         "Job": "job.batch", "ReplicationController": "replicationcontroller", "Ingress": "ingress.networking.k8s.io",
         "Client": "client.testbed.dev"}
# kubectl's `get all`, in its order.
ALL = ("pods", "services", "daemonsets", "deployments", "replicasets", "statefulsets", "jobs", "replicationcontrollers")
NAMESPACED = set(KINDS) - {"nodes", "clients", "all"}
MORE = 3  # kubectl lists at most three endpoints, then "+ N more..."


def kind_of(word: str) -> str:
    for plural, names in KINDS.items():
        if word == plural or word in names:
            return plural
    raise TestbedError(f"get: unknown kind {word!r} (expected one of {', '.join(k for k in KINDS)})")


@dataclass
class Snapshot:
    """What `get` shows of a lab: its cluster state and what only the running lab knows."""

    cluster: ClusterState
    out_of_date: dict[str, str] = field(default_factory=dict)  # node → why its rules are not current
    pods: dict = field(default_factory=dict)  # the lab's pod records (restarts, created)
    since: dict = field(default_factory=dict)  # "Kind/ns/name" → first seen (AGE)
    created: float | None = None  # the lab's (the nodes' AGE)
    now: float = field(default_factory=time.time)

    @classmethod
    def of_lab(cls, lab) -> "Snapshot":
        cluster = lab.cluster()
        s = lab.saved
        return cls(cluster, lab.out_of_date(), s.get("pods", {}), s.get("since", {}), s.get("created"))

    def age_of(self, kind: str, key: str) -> str:
        if kind == "Pod":
            return age(self.pods.get(key, {}).get("created", self.created), self.now)
        return age(self.since.get(f"{kind}/{key}", self.created), self.now)

    def stamp_of(self, kind: str, key: str) -> str | None:
        t = self.pods.get(key, {}).get("created") if kind == "Pod" else self.since.get(f"{kind}/{key}")
        t = t or self.created
        return None if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- rows per kind


def _none(v: str) -> str:
    return v or "<none>"


def _selector(labels) -> str:
    return ",".join(f"{k}={v}" for k, v in dict(labels).items()) or "<none>"


def _pods_rows(snap: Snapshot, namespaces, wide: bool):
    head = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] + (["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
                                                            if wide else [])
    rows = []
    for p in snap.cluster.pods:
        if _in(namespaces, p.namespace):
            restarts = str(snap.pods.get(p.key, {}).get("restarts", 0))
            r = [p.namespace, p.name, "1/1" if p.ready else "0/1", "Terminating" if p.terminating else "Running",
                 restarts, snap.age_of("Pod", p.key)]
            rows.append(r + ([p.ip, p.node, "<none>", "<none>"] if wide else []))
    for key, _why in snap.cluster.pending:
        ns, name = key.split("/", 1)
        if _in(namespaces, ns):
            rows.append([ns, name, "0/1", "Pending", "0", snap.age_of("Pod", key)]
                        + (["<none>", "<none>", "<none>", "<none>"] if wide else []))
    return "Pod", head, rows


def _ports(info) -> str:
    out = [f"{sp.port}{':' + str(np_) if np_ else ''}/{sp.protocol}"
           for sp, np_ in zip(info.service.ports, info.node_ports, strict=True)]
    return ",".join(out) or "<none>"


def _external(info) -> str:
    s = info.service
    if s.type == "ExternalName":
        return s.external_name or "<none>"
    if s.type == "LoadBalancer" and not info.load_balancer_ips:
        return "<pending>"
    return ",".join([*info.load_balancer_ips, *s.external_ips]) or "<none>"


def _cluster_ip(info) -> str:
    if info.service.type == "ExternalName":
        return "<none>"
    return "None" if info.service.headless else (info.cluster_ip or "<none>")


def _services_rows(snap: Snapshot, namespaces, wide: bool):
    head = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"] + (["SELECTOR"] if wide else [])
    rows = []
    for info in snap.cluster.services:
        s = info.service
        if _in(namespaces, s.namespace):
            rows.append([s.namespace, s.name, s.type, _cluster_ip(info), _external(info), _ports(info),
                         snap.age_of("Service", info.key)] + ([_selector(s.selector or ())] if wide else []))
    return "Service", head, rows


def _listed(addresses: list[str], wide: bool) -> str:
    """kubectl's endpoint lists: three, then "+ N more..." (-o wide here lists every one)."""
    if not addresses:
        return "<none>"
    if wide or len(addresses) <= MORE:
        return ",".join(addresses)
    return ",".join(addresses[:MORE]) + f" + {len(addresses) - MORE} more..."


def _endpoints_rows(snap: Snapshot, namespaces, wide: bool):
    rows = []
    for info in snap.cluster.services:
        if _in(namespaces, info.service.namespace) and info.service.type != "ExternalName":
            ready = [f"{e.ip}:{e.port}" for eps in info.endpoints for e in sorted(eps, key=lambda e: e.address)
                     if e.ready]
            rows.append([info.service.namespace, info.service.name, _listed(list(dict.fromkeys(ready)), wide),
                         snap.age_of("Service", info.key)])
    return "Endpoints", ["NAME", "ENDPOINTS", "AGE"], rows


def _slices(snap: Snapshot, namespaces) -> list[dict]:
    by_svc: dict[str, list] = {}
    for sl in snap.cluster.topology.slices:
        by_svc.setdefault(f"{sl.namespace}/{sl.service_name}", []).append(sl)
    out = []
    for info in snap.cluster.services:
        if _in(namespaces, info.service.namespace):
            for m in export.slice_manifests(info, by_svc.get(info.key, [])):
                m["metadata"]["creationTimestamp"] = snap.stamp_of("Service", info.key)
                out.append(m)
    return out


def _slices_rows(snap: Snapshot, namespaces, wide: bool):
    rows = []
    for m in _slices(snap, namespaces):
        ports = ",".join(str(p["port"]) for p in m.get("ports", ())) or "<unset>"
        addrs = [a for e in m.get("endpoints", ()) for a in e["addresses"]]
        rows.append([m["metadata"]["namespace"], m["metadata"]["name"], m["addressType"], ports,
                     _listed(addrs, wide).replace("<none>", "<unset>"),
                     snap.age_of("Service", f"{m['metadata']['namespace']}/{m['metadata']['labels'][_SVC]}")])
    return "EndpointSlice", ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], rows


_SVC = "kubernetes.io/service-name"


def _roles(labels: dict) -> str:
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    return ",".join(r for r in roles if r) or "<none>"


def _rules(snap: Snapshot, node: str) -> str:
    why = snap.out_of_date.get(node)
    return "UpToDate" if not why else "Syncing" if why == "syncing" else "OutOfDate"


def _nodes_rows(snap: Snapshot, namespaces, wide: bool):
    specs = {n.name: n for n in snap.cluster.lab.nodes}
    head = ["NAME", "STATUS", "ROLES", "AGE", "RULES"] + (["INTERNAL-IP", "POD-CIDR", "PODS"] if wide else [])
    rows = []
    for n in snap.cluster.nodes:
        spec = specs.get(n.name)
        r = ["", n.name, "Ready", _roles(spec.label_map if spec else {}), age(snap.created, snap.now), _rules(snap, n.name)]
        rows.append(r + ([n.ip, n.pod_cidr, str(sum(p.node == n.name for p in snap.cluster.pods))] if wide else []))
    return "Node", head, rows


def _clients_rows(snap: Snapshot, namespaces, wide: bool):
    return "Client", ["NAME", "IP", "AGE"], [["", c.name, c.ip, age(snap.created, snap.now)] for c in snap.cluster.clients]


def _owned(snap: Snapshot, w) -> list:
    return [p for p in snap.cluster.pods if p.owner == w.key and p.owner_kind == w.kind and not p.terminating]


def _workloads(snap: Snapshot, kind: str, namespaces) -> list:
    return [w for w in snap.cluster.topology.workloads if w.kind == kind and _in(namespaces, w.namespace)]


def _workload_rows(plural: str):
    kind = WORKLOAD_KINDS[plural]

    def rows_of(snap: Snapshot, namespaces, wide: bool):
        rows = []
        if kind == "Deployment":
            head = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        elif kind == "StatefulSet":
            head = ["NAME", "READY", "AGE"]
        elif kind == "DaemonSet":
            head = ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"]
        elif kind == "Job":
            head = ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
        else:
            head = ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
        for w in _workloads(snap, kind, namespaces):
            pods = _owned(snap, w)
            ready = sum(p.ready for p in pods)
            a = snap.age_of(kind, w.key)
            if kind == "Deployment":
                r = [f"{ready}/{w.replicas}", str(len(pods)), str(ready), a]
            elif kind == "StatefulSet":
                r = [f"{ready}/{w.replicas}", a]
            elif kind == "DaemonSet":
                sel = _selector(w.template.node_selector)
                r = [str(len(pods))] * 2 + [str(ready), str(len(pods)), str(ready), sel, a]
            elif kind == "Job":  # netexec never exits: a Job's pods run on
                r = ["Running", f"0/{w.replicas}", a, a]
            else:
                r = [str(w.replicas), str(len(pods)), str(ready), a]
            rows.append([w.namespace, w.name, *r] + ([_selector(w.selector.match_labels)] if wide else []))
        return kind, head + (["SELECTOR"] if wide else []), rows
    return rows_of


def _ingress_address(snap: Snapshot) -> str:
    ctl = [s for s in snap.cluster.services if s.service.namespace == "ingress-system"]
    return ",".join(ip for s in ctl for ip in s.load_balancer_ips) or "<none>"


def _ingresses_rows(snap: Snapshot, namespaces, wide: bool):
    rows = []
    for ing in snap.cluster.topology.ingresses:
        if _in(namespaces, ing.namespace):
            hosts = ",".join(dict.fromkeys(r.host for r in ing.rules if r.host)) or "*"
            cls = ing.ingress_class_name or ing.class_annotation or "<none>"
            rows.append([ing.namespace, ing.name, cls, hosts, _ingress_address(snap), "80",
                         snap.age_of("Ingress", ing.key)])
    return "Ingress", ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"], rows


ROWS = {"pods": _pods_rows, "services": _services_rows, "endpoints": _endpoints_rows,
        "endpointslices": _slices_rows, "nodes": _nodes_rows, "clients": _clients_rows,
        "ingresses": _ingresses_rows, **{k: _workload_rows(k) for k in WORKLOAD_KINDS}}


def _in(namespaces, ns: str) -> bool:
    return namespaces is None or ns in namespaces


def table(snap: Snapshot, plural: str, namespaces=None, wide: bool = False, no_headers: bool = False,
          prefix: bool = False, only: set[str] | None = None) -> str:
    """One kind as kubectl's table. Namespaced kinds get a NAMESPACE column first when every
    namespace is shown (namespaces None); `prefix` names rows kind/NAME, as `get all` does."""
    kind, head, rows = ROWS[plural](snap, namespaces, wide)
    rows = [r for r in rows if not only or r[1] in only]
    if prefix:
        rows = [[r[0], f"{GROUP[kind]}/{r[1]}", *r[2:]] for r in rows]
    if plural in NAMESPACED and namespaces is None:
        return columns(["NAMESPACE", *head], rows, no_headers)
    return columns(head, [r[1:] for r in rows], no_headers)


def names(snap: Snapshot, plural: str, namespaces=None) -> list[str]:
    kind, _, rows = ROWS[plural](snap, namespaces, False)
    return [f"{GROUP[kind]}/{r[1]}" for r in rows]


def render(snap: Snapshot, kinds: list[str], output: str, namespaces=None, no_headers: bool = False,
           only: set[str] | None = None) -> tuple[str, int]:
    """→ (text for standard output, number of objects); `only`: these names."""
    if output in ("json", "yaml"):
        items = [o for k in kinds for o in objects(snap, k, namespaces) if not only or o["metadata"]["name"] in only]
        if only and len(items) == 1:  # kubectl prints one named object by itself
            return _dump(items[0], output), 1
        return _dump({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}},
                     output), len(items)
    if output == "name":
        found = [n for k in kinds for n in names(snap, k, namespaces) if not only or n.split("/", 1)[1] in only]
        return "".join(f"{n}\n" for n in found), len(found)
    parts, n = [], 0
    for k in kinds:
        count = len([r for r in ROWS[k](snap, namespaces, False)[2] if not only or r[1] in only])
        if count:
            parts.append(table(snap, k, namespaces, output == "wide", no_headers, prefix=len(kinds) > 1, only=only))
            n += count
    return "\n".join(parts), n


def _dump(doc: dict, output: str) -> str:
    if output == "json":
        import json
        return json.dumps(doc, indent=4) + "\n"
    import yaml
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1 << 16)


# ----------------------------------------------------------------------------- objects


def objects(snap: Snapshot, plural: str, namespaces=None) -> list[dict]:
    c = snap.cluster
    if plural == "pods":
        out = [_pod(snap, p) for p in c.pods if _in(namespaces, p.namespace)]
        return out + [export.pending_pod_manifest(k, why) for k, why in c.pending if _in(namespaces, k.split("/")[0])]
    if plural == "services":
        return [_stamped(snap, "Service", i.key, export.service_manifest(i))
                for i in c.services if _in(namespaces, i.service.namespace)]
    if plural == "endpoints":
        return [_stamped(snap, "Service", i.key, export.endpoints_manifest(i))
                for i in c.services if _in(namespaces, i.service.namespace) and i.service.type != "ExternalName"]
    if plural == "endpointslices":
        return _slices(snap, namespaces)
    if plural == "nodes":
        specs = {n.name: n for n in c.lab.nodes}
        return [_stamped(snap, "Node", n.name, export.node_manifest(n, specs.get(n.name), snap.out_of_date.get(n.name)))
                for n in c.nodes]
    if plural == "clients":
        return [export.client_manifest(x) for x in c.clients]
    if plural == "ingresses":
        return [_stamped(snap, "Ingress", i.key, export.ingress_manifest(i))
                for i in c.topology.ingresses if _in(namespaces, i.namespace)]
    kind = WORKLOAD_KINDS[plural]
    return [_stamped(snap, kind, w.key, export.workload_manifest(w, _owned(snap, w)))
            for w in _workloads(snap, kind, namespaces)]


def _stamped(snap: Snapshot, kind: str, key: str, obj: dict) -> dict:
    stamp = snap.stamp_of(kind, key)
    if stamp:
        obj["metadata"]["creationTimestamp"] = stamp
    return obj


def _pod(snap: Snapshot, p) -> dict:
    rec = snap.pods.get(p.key, {})
    return _stamped(snap, "Pod", p.key, export.pod_manifest(p, restarts=rec.get("restarts", 0),
                                                            host_ip=snap.cluster.node(p.node).ip))
