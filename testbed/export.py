"""A running lab as one replayable file: `testbed export LAB [--redact]`.

The file is what `kubectl get … -o yaml` would print of the lab's cluster, in front of a Lab
document that pins every address: nodes (IP, podCIDR, labels, taints), clients, the CIDRs and
ranges; every Service with its ClusterIP, NodePorts, healthCheckNodePort and LoadBalancer status;
every workload; every running pod with its node, `status.podIP` and owner (so the workloads adopt
them when the file is replayed, instead of making new ones); the EndpointSlices kube-proxy reads
(the controller's marked as such, so a replay uses them as they were). `testbed up FILE` rebuilds
the same lab: same addresses, same rules on every node.

Only what testbed models is written (nothing of images, env or annotations other than testbed's
own), so `--redact` can rename everything that names something of the user's, consistently:
namespaces, object names, node names, label keys and values, Ingress hosts and path segments,
ExternalName targets. Well-known keys (kubernetes.io/…, pod-template-hash, …) keep their names, and
the values testbed itself derives (pod-template-hash) stay, so the redacted file replays to the
same rules with other names. Addresses are kept: the rules depend on them.
"""
from __future__ import annotations

import re

from . import model
from .control import ClusterState, ServiceInfo

API = {"Deployment": "apps/v1", "ReplicaSet": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
       "Job": "batch/v1", "ReplicationController": "v1"}
OWNER_API = {**API, "ReplicaSet": "apps/v1"}


# ----------------------------------------------------------------------------- model → manifests


def _meta(name: str, namespace: str | None = None, labels=(), annotations: dict | None = None) -> dict:
    m: dict = {"name": name}
    if namespace is not None:
        m["namespace"] = namespace
    if labels:
        m["labels"] = dict(labels)
    if annotations:
        m["annotations"] = annotations
    return m


def _probe(p: model.ProbeSpec) -> dict:
    out: dict = {"periodSeconds": p.period, "timeoutSeconds": p.timeout, "failureThreshold": p.failure_threshold,
                 "successThreshold": p.success_threshold}
    if p.initial_delay:
        out["initialDelaySeconds"] = p.initial_delay
    if p.action == "http":
        out["httpGet"] = {"port": p.port, "path": p.path}
    elif p.action == "exec":
        out["exec"] = {"command": list(p.command)}
    else:
        out["grpc" if p.action == "grpc" else "tcpSocket"] = {"port": p.port}
    return out


def _pod_spec(ports, probes, node_name=None, grace=30, node_selector=(), tolerations=(), hostname=None,
              subdomain=None, host_network=False) -> dict:
    container: dict = {"name": "app"}
    if ports:
        container["ports"] = [{"containerPort": c.port, "protocol": c.protocol, **({"name": c.name} if c.name else {})}
                              for c in ports]
    for p in probes:
        container[f"{p.kind}Probe"] = _probe(p)
    spec: dict = {"containers": [container], "terminationGracePeriodSeconds": grace}
    if node_name:
        spec["nodeName"] = node_name
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [{k: v for k, v in (("key", t.key), ("operator", t.operator), ("value", t.value),
                                                  ("effect", t.effect)) if v} for t in tolerations]
    if hostname:
        spec["hostname"] = hostname
    if subdomain:
        spec["subdomain"] = subdomain
    if host_network:
        spec["hostNetwork"] = True
    return spec


def _workload_annotation(workload: str) -> dict | None:
    return {"testbed.dev/workload": workload} if workload != "netexec" else None


def _selector(sel: model.Selector) -> dict:
    out: dict = {}
    if sel.match_labels:
        out["matchLabels"] = dict(sel.match_labels)
    if sel.expressions:
        out["matchExpressions"] = [{"key": k, "operator": op, **({"values": list(v)} if v else {})}
                                   for k, op, v in sel.expressions]
    return out


def workload_manifest(w: model.Workload, pods=None) -> dict:
    """`pods`: the running pods it owns, for the status kubectl shows (`testbed get`); None for a
    replayable manifest."""
    t = w.template
    spec: dict = {}
    if w.kind not in ("DaemonSet", "Job"):
        spec["replicas"] = w.replicas
    if w.kind == "Job":
        spec["parallelism"] = w.replicas
    if w.kind == "ReplicationController":
        spec["selector"] = dict(w.selector.match_labels)
    elif w.kind != "Job":
        spec["selector"] = _selector(w.selector)
    labels = t.labels
    if w.kind == "Job":  # the controller adds these itself
        labels = tuple((k, v) for k, v in labels if k not in ("batch.kubernetes.io/job-name", "job-name"))
    spec["template"] = {"metadata": _meta_template(labels, t.workload),
                        "spec": _pod_spec(t.ports, t.probes, t.node_name, t.grace_period, t.node_selector, t.tolerations,
                                          t.hostname, t.subdomain, t.host_network)}
    if w.kind == "StatefulSet":
        if w.service_name:
            spec["serviceName"] = w.service_name
        spec["podManagementPolicy"] = "OrderedReady" if w.ordered else "Parallel"
        if w.start_ordinal:
            spec["ordinals"] = {"start": w.start_ordinal}
    meta = _meta(w.name, w.namespace)
    if w.kind == "ReplicaSet" and w.owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": w.owner.split("/", 1)[1],
                                    "controller": True}]
    out = {"apiVersion": API[w.kind], "kind": w.kind, "metadata": meta, "spec": spec}
    if pods is not None:
        out["status"] = _workload_status(w, pods)
    return out


def _workload_status(w: model.Workload, pods) -> dict:
    ready = sum(p.ready for p in pods)
    if w.kind == "DaemonSet":
        return {"currentNumberScheduled": len(pods), "desiredNumberScheduled": len(pods), "numberReady": ready,
                "numberAvailable": ready, "updatedNumberScheduled": len(pods)}
    if w.kind == "Job":  # netexec never exits: the Job's pods stay active
        return {"active": len(pods), "ready": ready}
    status = {"replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready}
    if w.kind in ("Deployment", "StatefulSet"):
        status["updatedReplicas"] = len(pods)
    return status


def _meta_template(labels, workload: str) -> dict:
    m: dict = {"labels": dict(labels)}
    ann = _workload_annotation(workload)
    if ann:
        m["annotations"] = ann
    return m


def service_manifest(info: ServiceInfo) -> dict:
    s = info.service
    spec: dict = {"type": s.type}
    if s.selector is not None:
        spec["selector"] = dict(s.selector)
    ports = []
    for sp, np_ in zip(s.ports, info.node_ports, strict=True):
        p: dict = {"port": sp.port, "protocol": sp.protocol}
        if sp.name:
            p["name"] = sp.name
        if sp.target_port is not None:
            p["targetPort"] = sp.target_port
        if np_:
            p["nodePort"] = np_
        ports.append(p)
    if ports:
        spec["ports"] = ports
    if s.type != "ExternalName":
        spec["clusterIP"] = "None" if s.headless else info.cluster_ip
    if s.external_ips:
        spec["externalIPs"] = list(s.external_ips)
    if s.session_affinity_timeout:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": s.session_affinity_timeout}}
    if s.external_policy_local:
        spec["externalTrafficPolicy"] = "Local"
    if s.internal_policy_local:
        spec["internalTrafficPolicy"] = "Local"
    if s.load_balancer_source_ranges:
        spec["loadBalancerSourceRanges"] = list(s.load_balancer_source_ranges)
    if s.load_balancer_ip:
        spec["loadBalancerIP"] = s.load_balancer_ip
    if info.health_check_node_port:
        spec["healthCheckNodePort"] = info.health_check_node_port
    if s.publish_not_ready:
        spec["publishNotReadyAddresses"] = True
    if s.external_name:
        spec["externalName"] = s.external_name
    if s.load_balancer_class:
        spec["loadBalancerClass"] = s.load_balancer_class
    if s.type == "LoadBalancer" and not s.allocate_node_ports:
        spec["allocateLoadBalancerNodePorts"] = False
    if s.traffic_distribution:
        spec["trafficDistribution"] = s.traffic_distribution
    annotations = {"testbed.dev/ipvs-scheduler": s.ipvs_scheduler} if s.ipvs_scheduler else {}
    if s.topology_mode is not None:
        annotations[model.TOPOLOGY_ANNOTATIONS[0]] = s.topology_mode
    out = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(s.name, s.namespace, s.labels, annotations or None),
           "spec": spec}
    if info.load_balancer_ips:
        out["status"] = {"loadBalancer": {"ingress": [
            {"ip": ip, **({"ipMode": "Proxy"} if ip in s.lb_proxy_ips else {})} for ip in info.load_balancer_ips]}}
    return out


def _owner_ref(p) -> list[dict] | None:
    """The pod's controller as Kubernetes names it: a Deployment's pods belong to its ReplicaSet."""
    if not p.owner or not p.owner_kind:
        return None
    name = p.owner.split("/", 1)[1]
    kind = p.owner_kind
    if kind == "Deployment":
        kind, name = "ReplicaSet", f"{name}-{dict(p.labels).get('pod-template-hash', '')}"
    return [{"apiVersion": OWNER_API.get(kind, "v1"), "kind": kind, "name": name, "controller": True}]


def pod_manifest(p, restarts: int | None = None, host_ip: str | None = None) -> dict:
    """`restarts`, `host_ip`: the running lab's, for the status kubectl shows (`testbed get`)."""
    meta = _meta(p.name, p.namespace, p.labels, _workload_annotation(p.workload))
    ref = _owner_ref(p)
    if ref:
        meta["ownerReferences"] = ref
    spec = _pod_spec(p.ports, p.probes, p.node, p.grace_period, hostname=p.hostname, subdomain=p.subdomain,
                     host_network=p.host_network)
    ready = "True" if p.ready else "False"
    status: dict = {"phase": "Running", "podIP": p.ip, "conditions": [{"type": "Ready", "status": ready}]}
    if host_ip:
        status["hostIP"] = host_ip
        status["podIPs"] = [{"ip": p.ip}]
        status["conditions"] += [{"type": "ContainersReady", "status": ready}, {"type": "PodScheduled", "status": "True"}]
    if restarts is not None:
        status["containerStatuses"] = [{"name": "app", "ready": p.ready, "restartCount": restarts,
                                        "started": True, "state": {"running": {}}}]
    if p.terminating and restarts is not None:
        meta["deletionGracePeriodSeconds"] = p.grace_period
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def pending_pod_manifest(key: str, why: str) -> dict:
    """A pod no node can take, as the scheduler leaves it."""
    ns, name = key.split("/", 1)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _meta(name, ns), "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                            "reason": "Unschedulable", "message": why}]}}


def endpoints_manifest(info: ServiceInfo) -> dict:
    """The v1 Endpoints object the endpoints controller keeps beside the slices: a subset per
    Service port, ready and not-ready addresses apart."""
    s = info.service
    subsets = []
    for sp, eps in zip(s.ports, info.endpoints, strict=True):
        if not eps:
            continue
        port = {"port": eps[0].port, "protocol": sp.protocol, **({"name": sp.name} if sp.name else {})}
        sub: dict = {}
        for field_, want in (("addresses", True), ("notReadyAddresses", False)):
            addrs = [{"ip": e.ip, **({"nodeName": e.node} if e.node else {})}
                     for e in sorted(eps, key=lambda e: e.address) if e.ready == want]
            if addrs:
                sub[field_] = addrs
        sub["ports"] = [port]
        subsets.append(sub)
    out = {"apiVersion": "v1", "kind": "Endpoints", "metadata": _meta(s.name, s.namespace, s.labels)}
    if subsets:
        out["subsets"] = subsets
    return out


def node_manifest(n, spec: model.NodeSpec | None, out_of_date: str | None = None) -> dict:
    """A Node as `kubectl get node -o yaml` shows it (what a replay reads back: InternalIP,
    podCIDR, labels, taints), with a condition saying whether its kube-proxy rules are current."""
    labels = spec.label_map if spec else {"kubernetes.io/hostname": n.name}
    node_spec: dict = {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr]}
    if spec and spec.taints:
        node_spec["taints"] = [{k: v for k, v in (("key", t.key), ("value", t.value), ("effect", t.effect)) if v}
                               for t in spec.taints]
    rules = {"type": "KubeProxyRulesUpToDate", "status": "False" if out_of_date else "True",
             "reason": "UpToDate" if not out_of_date else "Syncing" if out_of_date == "syncing" else "OutOfDate"}
    if out_of_date:
        rules["message"] = out_of_date
    return {"apiVersion": "v1", "kind": "Node", "metadata": _meta(n.name, None, tuple(labels.items())),
            "spec": node_spec,
            "status": {"addresses": [{"type": "InternalIP", "address": n.ip}, {"type": "Hostname", "address": n.name}],
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}, rules]}}


def client_manifest(c) -> dict:
    """An outside client (no Kubernetes kind: testbed's own)."""
    return {"apiVersion": "testbed.dev/v1alpha1", "kind": "Client", "metadata": {"name": c.name},
            "status": {"addresses": [{"type": "InternalIP", "address": c.ip}]}}


def slice_manifests(info: ServiceInfo, user_slices) -> list[dict]:
    """The EndpointSlices kube-proxy reads for one Service: the user's own as they are, and, for a
    Service with a selector, the controller's: one per Service port (kube-proxy merges them)."""
    s = info.service
    out = [_user_slice(sl) for sl in user_slices]
    if s.selector is None:
        return out
    hostnames = dict(info.hostnames)
    for sp, eps in zip(s.ports, info.endpoints, strict=True):
        if not eps:
            continue
        ports = sorted({e.port for e in eps})
        for port in ports:
            endpoints = []
            for e in sorted((e for e in eps if e.port == port), key=lambda e: e.address):
                ep: dict = {"addresses": [e.ip], "conditions": {"ready": e.ready, "serving": e.serving,
                                                                "terminating": e.terminating}}
                if e.node:
                    ep["nodeName"] = e.node
                if hostnames.get(e.ip):
                    ep["hostname"] = hostnames[e.ip]
                ep.update(_hints(e.zone_hints, e.node_hints))
                endpoints.append(ep)
            suffix = re.sub(r"[^a-z0-9-]", "-", (sp.name or str(sp.port)).lower())
            out.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": _meta(f"{s.name}-{suffix}-{port}"[:253], s.namespace,
                                          ((model.SERVICE_NAME_LABEL, s.name), (model.MANAGED_BY, model.SLICE_CONTROLLER))),
                        "addressType": "IPv4",
                        "ports": [{"port": port, "protocol": sp.protocol, **({"name": sp.name} if sp.name else {})}],
                        "endpoints": endpoints})
    return out


def _hints(zones, nodes) -> dict:
    """An endpoint's topology hints as an EndpointSlice writes them."""
    hints = {k: [{"name": n} for n in v] for k, v in (("forZones", zones), ("forNodes", nodes)) if v}
    return {"hints": hints} if hints else {}


def _user_slice(sl: model.EndpointSlice) -> dict:
    labels = {model.SERVICE_NAME_LABEL: sl.service_name}
    if sl.managed_by:
        labels[model.MANAGED_BY] = sl.managed_by
    eps = []
    for e in sl.endpoints:
        ep: dict = {"addresses": list(e.addresses)}
        cond = {k: v for k, v in (("ready", e.ready), ("serving", e.serving), ("terminating", e.terminating)) if v is not None}
        if cond:
            ep["conditions"] = cond
        if e.node_name:
            ep["nodeName"] = e.node_name
        if e.hostname:
            ep["hostname"] = e.hostname
        if e.zone:
            ep["zone"] = e.zone
        ep.update(_hints(e.hint_zones, e.hint_nodes))
        eps.append(ep)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": _meta(sl.name, sl.namespace, tuple(labels.items())), "addressType": "IPv4",
            "ports": [{"port": p.port, "protocol": p.protocol, **({"name": p.name} if p.name else {})} for p in sl.ports],
            "endpoints": eps}


def _backend(b) -> dict:
    port = {"number": b.port} if isinstance(b.port, int) else {"name": b.port}
    return {"service": {"name": b.service, "port": port}}


def ingress_manifest(ing) -> dict:
    spec: dict = {}
    if ing.ingress_class_name:
        spec["ingressClassName"] = ing.ingress_class_name
    if ing.default_backend:
        spec["defaultBackend"] = _backend(ing.default_backend)
    rules = []
    for r in ing.rules:
        rule: dict = {}
        if r.host:
            rule["host"] = r.host
        if r.paths:
            rule["http"] = {"paths": [{"path": p.path, "pathType": p.path_type, "backend": _backend(p.backend)}
                                      if p.path else {"pathType": p.path_type, "backend": _backend(p.backend)}
                                      for p in r.paths]}
        rules.append(rule)
    if rules:
        spec["rules"] = rules
    ann = {"kubernetes.io/ingress.class": ing.class_annotation} if ing.class_annotation else None
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": _meta(ing.name, ing.namespace, (), ann),
            "spec": spec}


def ingress_class_manifest(c) -> dict:
    ann = {"ingressclass.kubernetes.io/is-default-class": "true"} if c.is_default else None
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": _meta(c.name, None, (), ann),
            "spec": {"controller": c.controller}}


def documents(cluster: ClusterState) -> list[dict]:
    """The lab as a replayable list of manifests: a pinned Lab document, then the objects."""
    from dataclasses import replace

    topo = cluster.topology
    lab = topo.lab
    by_name = {n.name: n for n in cluster.nodes}
    nodes = tuple(replace(n, ip=by_name[n.name].ip, pod_cidr=by_name[n.name].pod_cidr) for n in lab.nodes)
    clients = tuple(replace(c, ip=next(x.ip for x in cluster.clients if x.name == c.name)) for c in lab.clients)
    from .control import dns_ip
    lab = replace(lab, nodes=nodes, clients=clients, cluster_dns_ip=dns_ip(lab) if lab.cluster_dns else lab.cluster_dns_ip)
    docs = [model.lab_document(lab)]
    docs += [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in topo.namespaces]
    docs += [workload_manifest(w) for w in sorted(topo.workloads, key=lambda w: w.ref)]
    docs += [service_manifest(info) for info in cluster.services]
    slices_by_svc: dict[str, list] = {}
    for sl in topo.slices:
        slices_by_svc.setdefault(f"{sl.namespace}/{sl.service_name}", []).append(sl)
    for info in cluster.services:
        docs += slice_manifests(info, slices_by_svc.pop(info.key, []))
    docs += [_user_slice(sl) for sls in slices_by_svc.values() for sl in sls]  # slices of no Service
    docs += [pod_manifest(p) for p in cluster.pods if not p.terminating]
    docs += [ingress_manifest(i) for i in topo.ingresses]
    docs += [ingress_class_manifest(c) for c in topo.ingress_classes]
    return docs


# ----------------------------------------------------------------------------- redaction

KEEP_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease", "ingress-system"}
KEEP_KEY = re.compile(r"^((.+\.)?(kubernetes\.io|k8s\.io|testbed\.dev)/.*|pod-template-hash|controller-revision-hash"
                      r"|job-name|controller-uid|k8s-app)$")
# Values that are testbed's or Kubernetes' own vocabulary, not the user's names: kept.
KEEP_VALUES = {"pod-template-hash", "controller-revision-hash", "apps.kubernetes.io/pod-index", model.MANAGED_BY,
               "endpointslice.kubernetes.io/skip-mirror", "kubernetes.io/os", "kubernetes.io/arch"}


class Redactor:
    """Consistent renaming: the same name is always the same new name, per kind of name."""

    def __init__(self):
        self.maps: dict[str, dict[str, str]] = {}
        self.workloads: dict[tuple[str, str], str] = {}  # (namespace, old name) → new name

    def name(self, space: str, value: str, prefix: str | None = None) -> str:
        m = self.maps.setdefault(space, {})
        if value not in m:
            m[value] = f"{prefix or space}-{len(m) + 1}"
        return m[value]

    def namespace(self, ns: str) -> str:
        return ns if ns in KEEP_NAMESPACES else self.name("namespace", ns, "ns")

    def obj(self, ns: str, name: str) -> str:
        """Object names are one space per namespace: a Service, its workload and its StatefulSet's
        serviceName often share a name, and keep sharing the new one."""
        if ns in ADDON_NAMESPACES:
            return name  # the add-ons' own (and a dump's kube-dns, which its pods are found by)
        return self.name(f"obj:{ns}", name, "app")

    def pod(self, ns: str, name: str) -> str:
        """A pod's name made from its workload's (`web-5d8f9-x7k2p`, `db-0`) follows the workload's new
        name, the generated rest stays; another pod gets a name of its own."""
        if ns in ADDON_NAMESPACES:
            return name
        for (wns, old), new in sorted(self.workloads.items(), key=lambda kv: -len(kv[0][1])):
            if wns == ns and name.startswith(f"{old}-"):
                return new + name[len(old):]
        return self.name(f"obj:{ns}", name, "pod")

    def label_key(self, key: str) -> str:
        return key if KEEP_KEY.match(key) else self.name("labelkey", key, "key")

    def label_value(self, key: str, value: str, ns: str) -> str:
        if not value or key in KEEP_VALUES or ns in ADDON_NAMESPACES:
            return value
        if key == model.SERVICE_NAME_LABEL:
            return self.obj(ns, value)
        if key == "statefulset.kubernetes.io/pod-name":
            return self.pod(ns, value)
        return self.name(f"value:{key}", value, "v")

    def labels(self, labels: dict | None, ns: str) -> dict | None:
        if labels is None:
            return None
        return {self.label_key(k): self.label_value(k, v, ns) for k, v in labels.items()}

    def host(self, host: str) -> str:
        if host.startswith("*."):
            return "*." + self.host(host[2:])
        return self.name("host", host, "host") + ".example.invalid"

    def path(self, path: str) -> str:
        return "/".join(self.name("segment", seg, "p") if seg else seg for seg in path.split("/"))


ADDON_NAMESPACES = ("kube-system", "ingress-system")


def redact(docs: list[dict]) -> list[dict]:
    """The same documents with the user's names replaced consistently (see the module's docstring)."""
    r = Redactor()
    lab = docs[0]
    for n in lab["spec"]["nodes"]:
        n["name"] = r.name("node", n["name"], "node")
        if "labels" in n:
            n["labels"] = r.labels(n["labels"], "")
    for d in docs[1:]:  # workloads first, so that their pods' names follow theirs
        if d["kind"] in API:
            ns = d["metadata"].get("namespace", "default")
            r.workloads[(ns, d["metadata"]["name"])] = r.obj(ns, d["metadata"]["name"])
    for d in docs[1:]:
        kind, meta = d["kind"], d["metadata"]
        ns = meta.get("namespace") or ""
        if kind == "Namespace":
            meta["name"] = r.namespace(meta["name"])
            continue
        if kind == "Pod":
            meta["name"] = r.pod(ns, meta["name"])
        elif kind == "IngressClass":
            meta["name"] = meta["name"] if meta["name"] == "testbed" else r.name("ingressclass", meta["name"], "class")
        else:
            meta["name"] = r.obj(ns, meta["name"])
        if "labels" in meta:
            meta["labels"] = r.labels(meta["labels"], ns)
        for ref in meta.get("ownerReferences", ()):
            ref["name"] = r.workloads.get((ns, ref["name"])) or r.pod(ns, ref["name"])  # a Deployment's ReplicaSet
        if ns:
            meta["namespace"] = r.namespace(ns)
        spec = d.get("spec", {})
        if kind in API:
            t = spec["template"]
            t["metadata"]["labels"] = r.labels(t["metadata"].get("labels"), ns)
            sel = spec.get("selector")
            if kind == "ReplicationController" and sel:
                spec["selector"] = r.labels(sel, ns)
            elif sel:
                if "matchLabels" in sel:
                    sel["matchLabels"] = r.labels(sel["matchLabels"], ns)
                for e in sel.get("matchExpressions", ()):
                    key = e["key"]
                    e["key"] = r.label_key(key)
                    if "values" in e:
                        e["values"] = [r.label_value(key, v, ns) for v in e["values"]]
            _redact_pod_spec(r, t["spec"], ns)
            if spec.get("serviceName"):
                spec["serviceName"] = r.obj(ns, spec["serviceName"])
        elif kind == "Pod":
            _redact_pod_spec(r, spec, ns)
        elif kind == "Service":
            if "selector" in spec:
                spec["selector"] = r.labels(spec["selector"], ns)
            if spec.get("externalName"):
                spec["externalName"] = r.host(spec["externalName"])
        elif kind == "EndpointSlice":
            for e in d.get("endpoints", ()):
                if "nodeName" in e:
                    e["nodeName"] = r.name("node", e["nodeName"], "node")
                if e.get("hostname"):
                    e["hostname"] = r.pod(ns, e["hostname"])
                # Zones as the nodes' zone labels are renamed, nodes as nodeName: hints keep pointing right.
                if e.get("zone"):
                    e["zone"] = r.label_value(model.ZONE_LABEL, e["zone"], "")
                for h in e.get("hints", {}).get("forZones", ()):
                    h["name"] = r.label_value(model.ZONE_LABEL, h["name"], "")
                for h in e.get("hints", {}).get("forNodes", ()):
                    h["name"] = r.name("node", h["name"], "node")
        elif kind == "Ingress":
            _redact_ingress(r, spec, ns)
    return docs


def _redact_pod_spec(r: Redactor, spec: dict, ns: str) -> None:
    if spec.get("nodeName"):
        spec["nodeName"] = r.name("node", spec["nodeName"], "node")
    if spec.get("nodeSelector"):
        spec["nodeSelector"] = r.labels(spec["nodeSelector"], "")
    if spec.get("subdomain"):
        spec["subdomain"] = r.obj(ns, spec["subdomain"])
    if spec.get("hostname"):
        spec["hostname"] = r.pod(ns, spec["hostname"])


def _redact_ingress(r: Redactor, spec: dict, ns: str) -> None:
    def backend(b: dict) -> None:
        b["service"]["name"] = r.obj(ns, b["service"]["name"])

    if "defaultBackend" in spec:
        backend(spec["defaultBackend"])
    for rule in spec.get("rules", ()):
        if rule.get("host"):
            rule["host"] = r.host(rule["host"])
        for p in rule.get("http", {}).get("paths", ()):
            if p.get("path"):
                p["path"] = r.path(p["path"])
            backend(p["backend"])
