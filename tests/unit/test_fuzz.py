"""No input makes a traceback: property-based tests (Hypothesis) of everything a user's file reaches.

Every input — random text and bytes, random YAML and JSON, deep nesting, huge numbers, odd unicode,
very long names, mutations of real-shaped manifests — either loads or is refused with a
TopologyError that names the file (and the document, object and field where the input has them).
What loads must also reconcile and render on every node in every proxy mode, and `testbed render
FILE` must exit 0 or 2 without a traceback.

Profiles (environment variable TESTBED_FUZZ): `ci` (the default: a few hundred examples in all,
derandomized so a run is repeatable) and `deep` (10,000 examples per property, random):

    TESTBED_FUZZ=deep ./bootstrap test tests/unit/test_fuzz.py

The real-world manifest sets in ../shared/real-world (other projects' files, never copied here) are
mutated too where that folder exists; TESTBED_REAL_WORLD=DIR points elsewhere.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed import cli, manifests, model, modes, schema
from tests.realworld import REAL_WORLD
from testbed.control import reconcile
from testbed.errors import TopologyError

ROOT = Path(__file__).resolve().parents[2]
FILE = "fuzz.yaml"

# ----------------------------------------------------------------------------- profiles

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
            HealthCheck.large_base_example]
PROFILES = {
    # scale: each property's share of the examples (ci: a few hundred in all, well under a minute).
    "ci": dict(scale=1, settings=dict(deadline=None, derandomize=True, database=None,
                                      suppress_health_check=_SLOW_OK, print_blob=True)),
    "deep": dict(scale=None, settings=dict(max_examples=10_000, deadline=None, database=None,
                                           suppress_health_check=_SLOW_OK, print_blob=True)),
}
_profile_name = os.environ.get("TESTBED_FUZZ") or "ci"
if _profile_name not in PROFILES:
    raise pytest.UsageError(f"TESTBED_FUZZ: expected one of {', '.join(PROFILES)}, got {_profile_name!r}")
_PROFILE = PROFILES[_profile_name]


def profile(ci_examples: int):
    """The settings of the chosen profile; `ci_examples` is this property's share under `ci`."""
    kw = dict(_PROFILE["settings"])
    if _PROFILE["scale"] is not None:
        kw["max_examples"] = ci_examples * _PROFILE["scale"]
    return settings(**kw)


# ----------------------------------------------------------------------------- what must hold


def _input_objects(text: str) -> set[str]:
    """`Kind name` and `Kind namespace/name` of every document of the text (when it parses), so an
    error about one of them can be required to say which document it is."""
    try:
        docs = manifests.parse_stream(text, FILE)
    except TopologyError:
        return set()
    out = set()
    for d in docs:
        raw = d.data if isinstance(d.data, dict) else {}
        kind, meta = raw.get("kind"), raw.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        name = meta.get("name")
        if kind == "Lab" and name is None:
            name = "testbed"
        if isinstance(kind, str) and isinstance(name, str):
            ns = meta.get("namespace") if isinstance(meta.get("namespace"), str) else "default"
            out |= {f"{kind} {name}", f"{kind} {ns}/{name}"}
    return out


def assert_refusal(e: TopologyError, file: str, text: str | None = None) -> None:
    """A refusal names the file first, then the object and field it carries; an object that is a
    document of the input is named with its position; the message stays short."""
    msg = str(e)
    assert e.file == file, msg
    assert msg.startswith(f"{file}: "), msg
    assert e.problem and msg.endswith(e.problem), msg
    for part in (e.obj, e.field):
        assert part is None or part in msg, msg
    assert len(msg) < 2000, f"{len(msg)} characters: {msg[:300]}…"
    if text is not None and e.obj:
        m = re.match(r"(\S+) (\S+)", e.obj)
        if m and f"{m[1]} {m[2]}" in _input_objects(text):
            assert "document " in e.obj, msg


_PRINTABLE_NAME = re.compile(r"[^\x00-\x20\x7f]+")


def assert_names_are_printable(topo: model.Topology) -> None:
    """What loaded names its objects with printable text only: names and labels go into rules, comments,
    namespaces and DNS (a newline in one once split an iptables rule)."""
    names = [o.name for o in (*topo.pods, *topo.deployments, *topo.services, *topo.slices)]
    names += [o.namespace for o in (*topo.pods, *topo.deployments, *topo.services, *topo.slices)]
    names += [n.name for n in topo.lab.nodes] + [c.name for c in topo.lab.clients] + list(topo.namespaces)
    names += [x for o in (*topo.pods, *topo.services) for kv in o.labels for x in kv if x]
    names += [p.name for s in topo.services for p in s.ports if p.name]
    for name in names:
        assert _PRINTABLE_NAME.fullmatch(name), repr(name)


def render_everything(topo: model.Topology) -> None:
    """Reconcile, then render every node in every mode: nothing but TopologyError may come out."""
    assert_names_are_printable(topo)
    try:
        cluster, _ = reconcile(topo)
    except TopologyError as e:
        assert_refusal(e, topo.source)
        return
    for node in cluster.nodes:
        view = cluster.node_view(node.name)
        for mode in modes.NAMES:
            modes.get(mode).render(view)


def load_and_render(text: str, file: str = FILE) -> model.Topology | None:
    try:
        topo = model.load_text(text, file=file)
    except TopologyError as e:
        assert_refusal(e, file, text)
        return None
    render_everything(topo)
    return topo


# ----------------------------------------------------------------------------- strategies

# Field names the parsers read (and schema knows), so random mappings reach real code paths.
FIELD_NAMES = sorted({f for fs in schema.SCHEMA.values() for f in fs} | model.LAB_FIELDS | {
    "apiVersion", "kind", "metadata", "spec", "status", "items", "data", "config.conf", "podIP", "podIPs",
    "conditions", "addresses", "ingress", "loadBalancer", "clientIP", "timeoutSeconds", "matchLabels",
    "key", "operator", "values", "effect", "value", "ip", "hostname", "type", "address", "nodeInfo",
    "kubeProxyVersion", "rules", "http", "paths", "path", "pathType", "backend", "service", "number",
    "defaultBackend", "ingressClassName", "tls", "hosts", "controller", "cidrs", "mode", "pool", "enabled",
    "domain", "start", "endpointSlices", "phase", "ready", "serving", "terminating", "app", "k8s-app",
    "kubernetes.io/service-name", "endpointslice.kubernetes.io/managed-by", "testbed.dev/workload",
    "testbed.dev/ipvs-scheduler", "clusterCIDR", "ipvs", "scheduler", "iptables", "masqueradeAll"})
KINDS = sorted({k for _, k in model.KINDS} | {"List", "ConfigMap", "ServiceList", "PodList", "ServiceCIDR",
                                              "CustomResourceDefinition", "Widget", "Sevrice", "NetworkPolicy"})
API_VERSIONS = sorted({a for a, _ in model.KINDS} | {"extensions/v1beta1", "example.com/v1", "v2", "",
                                                     "networking.k8s.io/v1beta1", "apps/v1beta2"})
ODD_STRINGS = [
    "", " ", "80", "0", "-1", "65536", "99999999999999999999", "1" * 5000, "²", "٣", "१२", "½", "1e3", "0x50",
    "TCP", "UDP", "SCTP", "tcp", "None", "null", "~", "true", "yes", "on", "ClusterIP", "NodePort", "LoadBalancer",
    "ExternalName", "Local", "Cluster", "ClientIP", "http", "dns", "10.96.0.10", "10.96.0.0/12", "10.244.0.0/16",
    "10.244.0.0/33", "172.18.0.0/24", "0.0.0.0/0", "255.255.255.255/32", "255.255.255.248/29", "1.2.3.4",
    "::1", "fe80::1", "2001:db8::/64", "300.1.1.1", "10.0.0.1-10.0.0.0", "30000-32767", "1-0", "default",
    "kube-system", "kube-proxy", "web", "a" * 64, "a" * 254, "A", "-a", "a-", "a..b", "a/b", "*", "\x00", "\t",
    "\u200b", "\ufeff", "\U0001f600", "é", "İ", "ǅ", "\ud7ff", "a\nb", "&a", "*a", "!!python/object:os.system",
    "endpointslice-controller.k8s.io", "endpointslicemirroring-controller.k8s.io", "iptables", "ipvs",
    "nftables", "userspace", "rr", "mh", "Prefix", "Exact", "ImplementationSpecific", "IPv4", "IPv6", "FQDN",
    "In", "NotIn", "Exists", "DoesNotExist", "NoSchedule", "NoExecute", "Always", "Succeeded", "Ready", "True",
    "InternalIP", "v1.30.0", "example.com/ingress", "testbed.dev/ingress-controller",
]
HUGE_INTS = [2**31, 2**32, 2**63, 2**64, -(2**63), 10**100, 10**4299, -(10**4299), 65535, 65536, 0, -1, 1, 30000,
             32767, 80, 24, 28, 32, 33]

# A file holds UTF-8: no lone surrogates (st.text() below still feeds them to load_text).
long_strings = st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(60, 20_000))
odd_text = st.text(st.characters(codec="utf-8"), max_size=40)


def one_of_list(items: list):
    """sampled_from, without printing every (huge) item in Hypothesis' statistics."""
    return st.integers(0, len(items) - 1).map(items.__getitem__)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), one_of_list(HUGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True), one_of_list(ODD_STRINGS), odd_text, long_strings,
)
keys = st.one_of(one_of_list(FIELD_NAMES), odd_text, st.integers(-5, 5), st.booleans(), st.none(), long_strings)
values = st.recursive(scalars, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(keys, ch, max_size=5),
                      max_leaves=20)


def _dump_yaml(docs: list) -> str:
    return yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), allow_unicode=True,
                         sort_keys=False)


def _dump_json(docs: list) -> str:
    """A JSON stream (one object after another) or, for one document, that object."""
    return "\n".join(json.dumps(d, ensure_ascii=False) for d in docs)


def serialise(data: st.DataObject, docs: list) -> str:
    fmt = data.draw(st.sampled_from(["yaml", "json", "json-array"]), label="format")
    try:
        if fmt == "yaml":
            return _dump_yaml(docs)
        return json.dumps(docs, ensure_ascii=False) if fmt == "json-array" else _dump_json(docs)
    except (TypeError, ValueError, yaml.YAMLError, RecursionError):
        # A structure the format cannot hold (JSON's non-string keys of odd types, ints beyond
        # Python's str limit): YAML then, which holds any of them.
        return _dump_yaml(docs)


# Text of YAML's and JSON's own syntax, interleaved with random text: reaches the parsers' corners.
SYNTAX = ["\n", "---\n", "...\n", "- ", ": ", "? ", "{", "}", "[", "]", ",", "&a ", "*a", "!!str ", "!!int ",
          "!!binary ", "!!python/tuple ", "!foo ", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "|\n", ">-\n", "'", '"',
          "#", "\t", "  ", "<<: *a\n", "kind: ", "apiVersion: v1\n", "metadata:\n  name: x\n", "\\u0000", "\\x",
          "\r\n", "\ufeff", "\x85", "\u2028", "9" * 5000, "null", "1e999", ".nan", "0o17", "0x1F", "2001-12-14"]
yamlish = st.lists(st.one_of(one_of_list(SYNTAX), one_of_list(ODD_STRINGS), odd_text), max_size=30).map("".join)


# ----------------------------------------------------------------------------- seeds: real-shaped manifests

# Written for this test in the shape of what projects publish (a microservice with probes, a
# StatefulSet behind a headless Service, an ingress controller's LoadBalancer, a dump with status,
# Nodes, EndpointSlices, kube-proxy's ConfigMap, RBAC and custom resources).
REAL_SHAPED = """
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart, namespace: shop, labels: {app: cart}}
spec:
  replicas: 2
  selector: {matchLabels: {app: cart}}
  strategy: {type: RollingUpdate}
  template:
    metadata: {labels: {app: cart, version: v1}, annotations: {sidecar.istio.io/inject: "false"}}
    spec:
      serviceAccountName: cart
      securityContext: {runAsNonRoot: true}
      containers:
      - name: server
        image: example/cart:1.0
        ports: [{containerPort: 7070, name: grpc}, {containerPort: 8080, name: http}]
        env: [{name: PORT, value: "7070"}]
        resources: {requests: {cpu: 100m}, limits: {memory: 128Mi}}
        readinessProbe: {grpc: {port: 7070}, periodSeconds: 5}
        livenessProbe: {httpGet: {path: /healthz, port: http}, initialDelaySeconds: 3}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  type: ClusterIP
  selector: {app: cart}
  ports: [{name: grpc, port: 7070, targetPort: grpc}, {name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: frontend-external, namespace: shop}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  loadBalancerSourceRanges: [10.0.0.0/8, "2001:db8::/32"]
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
status: {loadBalancer: {ingress: [{ip: 172.18.0.210}, {hostname: lb.example.com}]}}
---
apiVersion: v1
kind: Service
metadata: {name: cassandra, labels: {app: cassandra}}
spec:
  clusterIP: None
  selector: {app: cassandra}
  ports: [{port: 9042}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: cassandra, labels: {app: cassandra}}
spec:
  serviceName: cassandra
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: cassandra}}
  template:
    metadata: {labels: {app: cassandra}}
    spec:
      terminationGracePeriodSeconds: 1800
      containers:
      - name: cassandra
        image: example/cassandra:v13
        ports: [{containerPort: 7000, name: intra-node}, {containerPort: 9042, name: cql}]
        readinessProbe: {exec: {command: [/bin/bash, -c, /ready-probe.sh]}, initialDelaySeconds: 15, timeoutSeconds: 5}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: redis-master, labels: {app: redis, role: master}}
spec:
  replicas: 1
  selector: {app: redis, role: master}
  template:
    metadata: {labels: {app: redis, role: master}}
    spec:
      containers: [{name: redis-master, image: redis:7, ports: [{name: redis-server, containerPort: 6379}]}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-exporter, namespace: monitoring}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: node-exporter}}
  template:
    metadata: {labels: {app.kubernetes.io/name: node-exporter}}
    spec:
      nodeSelector: {kubernetes.io/os: linux}
      tolerations: [{operator: Exists}]
      containers: [{name: node-exporter, image: example/node-exporter, ports: [{containerPort: 9100, name: https}]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: admission-create, namespace: ingress-nginx}
spec:
  ttlSecondsAfterFinished: 0
  template:
    metadata: {labels: {app: admission}}
    spec:
      restartPolicy: OnFailure
      containers: [{name: create, image: example/certgen, args: [create]}]
---
apiVersion: v1
kind: Service
metadata: {name: ingress-nginx-controller, namespace: ingress-nginx}
spec:
  type: LoadBalancer
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv4]
  allocateLoadBalancerNodePorts: true
  selector: {app.kubernetes.io/component: controller}
  ports:
  - {name: http, port: 80, targetPort: http, appProtocol: http}
  - {name: https, port: 443, targetPort: https, appProtocol: https}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: shop
  annotations: {nginx.ingress.kubernetes.io/rewrite-target: /}
spec:
  ingressClassName: nginx
  tls: [{hosts: [shop.example.com], secretName: shop-tls}]
  defaultBackend: {service: {name: cart, port: {name: http}}}
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /cart, pathType: Prefix, backend: {service: {name: cart, port: {number: 80}}}}
      - {path: /exact, pathType: Exact, backend: {service: {name: cart, port: {number: 7070}}}}
  - host: "*.example.com"
    http: {paths: [{path: /, pathType: ImplementationSpecific, backend: {service: {name: cart, port: {name: grpc}}}}]}
---
apiVersion: v1
kind: Service
metadata: {name: external-db}
spec: {ports: [{port: 5432, name: pg}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: external-db-1, labels: {kubernetes.io/service-name: external-db}}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}]
endpoints:
- {addresses: [10.0.0.5], conditions: {ready: true, serving: true, terminating: false}, zone: a}
- {addresses: [10.0.0.6], conditions: {ready: false}, hints: {forZones: [{name: a}]}}
---
apiVersion: v1
kind: Endpoints
metadata: {name: legacy}
subsets:
- addresses: [{ip: 10.0.1.7, hostname: db-0}]
  notReadyAddresses: [{ip: 10.0.1.8}]
  ports: [{port: 3306, name: mysql}]
---
apiVersion: v1
kind: Service
metadata: {name: legacy}
spec: {ports: [{port: 3306, name: mysql}]}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: cart, namespace: shop}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: cart}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: ServiceAccount, name: cart, namespace: shop}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: cart, namespace: shop}
spec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: cart}, minReplicas: 2, maxReplicas: 4}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: cart, namespace: shop}
spec: {selector: {matchLabels: {app: cart}}, endpoints: [{port: http}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cart}
spec: {parentRefs: [{name: gw}]}
"""

# The shape of `kubectl get nodes,pods,services,endpointslices,configmaps -A -o yaml`: a List.
DUMP_SHAPED = """
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata: {name: worker-a, labels: {kubernetes.io/hostname: worker-a, topology.kubernetes.io/zone: a}}
  spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, "fd00:10:244:1::/64"],
         taints: [{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}]}
  status:
    addresses: [{type: InternalIP, address: 172.19.0.3}, {type: Hostname, address: worker-a}]
    nodeInfo: {kubeProxyVersion: v1.30.0}
- apiVersion: v1
  kind: Node
  metadata: {name: worker-b}
  spec: {podCIDR: 10.244.2.0/24}
  status: {addresses: [{type: InternalIP, address: 172.19.0.4}]}
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-7d4b9c6f5d-x2k9p
    namespace: default
    labels: {app: web, pod-template-hash: 7d4b9c6f5d}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9c6f5d, controller: true, uid: abc}]
  spec: {nodeName: worker-a, containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]}
  status:
    phase: Running
    podIP: 10.244.1.7
    podIPs: [{ip: 10.244.1.7}, {ip: "fd00:10:244:1::7"}]
    conditions: [{type: Ready, status: "True"}]
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: web, namespace: default}
  spec:
    replicas: 1
    selector: {matchLabels: {app: web}}
    template:
      metadata: {labels: {app: web}}
      spec: {containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]}
- apiVersion: v1
  kind: Service
  metadata: {name: kubernetes, namespace: default}
  spec: {clusterIP: 10.96.0.1, clusterIPs: [10.96.0.1], ports: [{name: https, port: 443, targetPort: 6443}]}
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: default}
  spec: {type: NodePort, clusterIP: 10.96.14.2, selector: {app: web}, ports: [{port: 80, nodePort: 31080}],
         sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: web-abcde
    namespace: default
    labels: {kubernetes.io/service-name: web, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
  addressType: IPv4
  ports: [{port: 80, protocol: TCP, name: ""}]
  endpoints: [{addresses: [10.244.1.7], nodeName: worker-a, conditions: {ready: true}}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: kube-proxy, namespace: kube-system}
  data:
    config.conf: |
      apiVersion: kubeproxy.config.k8s.io/v1alpha1
      kind: KubeProxyConfiguration
      mode: ipvs
      clusterCIDR: 10.244.0.0/16
      ipvs: {scheduler: rr}
      iptables: {masqueradeAll: false}
- apiVersion: networking.k8s.io/v1
  kind: ServiceCIDR
  metadata: {name: kubernetes}
  spec: {cidrs: [10.96.0.0/12]}
"""


@lru_cache(maxsize=None)
def seed_sets() -> tuple[tuple[str, tuple], ...]:
    """(name, documents) of every seed: the shipped topologies and the real-shaped sets above."""
    out = []
    for path in sorted((ROOT / "topologies").glob("*.yaml")):
        out.append((path.name, tuple(yaml.safe_load_all(path.read_text()))))
    out.append(("real-shaped", tuple(yaml.safe_load_all(REAL_SHAPED))))
    out.append(("dump-shaped", tuple(yaml.safe_load_all(DUMP_SHAPED))))
    return tuple((n, tuple(d for d in docs if d is not None)) for n, docs in out)


def real_world_dir() -> Path | None:
    return REAL_WORLD if REAL_WORLD.is_dir() else None


@lru_cache(maxsize=None)
def real_world_sets() -> tuple[tuple[str, tuple], ...]:
    folder = real_world_dir()
    if folder is None:
        return ()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple((p.name, tuple(d for d in yaml.load_all(p.read_text(), Loader=loader) if d is not None))
                 for p in sorted(folder.glob("*.yaml")))


# ----------------------------------------------------------------------------- mutations


def _containers(node, path=()):
    """Every (path, container) inside a document: where a mutation can act."""
    yield path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        if isinstance(v, (dict, list)):
            yield from _containers(v, path + (k,))


def mutate(data: st.DataObject, docs: list) -> list:
    """One random edit of the kinds a user (or a bad tool) makes to a manifest set."""
    op = data.draw(st.sampled_from(["replace", "replace", "replace", "delete", "insert", "rename", "duplicate",
                                    "wrap-list", "wrap-typed-list", "kind", "apiVersion", "stringify", "nest",
                                    "drop-doc", "scalar-doc", "transplant", "transplant"]), label="mutation")
    if not docs:
        return [data.draw(values)]
    i = data.draw(st.integers(0, len(docs) - 1), label="document")
    doc = docs[i]
    if op == "duplicate":
        return docs[: i + 1] + [copy.deepcopy(doc)] + docs[i + 1:]
    if op == "drop-doc":
        return docs[:i] + docs[i + 1:]
    if op == "scalar-doc":
        return docs[:i] + [data.draw(scalars)] + docs[i + 1:]
    if op in ("wrap-list", "wrap-typed-list"):
        j = data.draw(st.integers(i, len(docs)), label="to")
        items = docs[i:j]
        if op == "wrap-typed-list":
            kind = items[0].get("kind") if items and isinstance(items[0], dict) else "Service"
            lst = {"apiVersion": "v1", "kind": f"{kind}List",
                   "items": [{k: v for k, v in d.items() if k not in ("kind", "apiVersion")} if isinstance(d, dict) else d
                             for d in items]}
        else:
            lst = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}
        return docs[:i] + [lst] + docs[j:]
    if not isinstance(doc, (dict, list)):
        return docs[:i] + [data.draw(values)] + docs[i + 1:]
    if op in ("kind", "apiVersion") and isinstance(doc, dict):
        doc[op] = data.draw(st.sampled_from(KINDS if op == "kind" else API_VERSIONS) | scalars, label=op)
        return docs
    places = list(_containers(doc))
    _path, where = places[data.draw(st.integers(0, len(places) - 1), label="place")]
    fields = [(k, v) for d in docs for _p, c in _containers(d) if isinstance(c, dict) for k, v in c.items()]
    if op == "transplant" and isinstance(where, dict) and fields:
        # A field of the set, valid where it was, put somewhere else: valid values in new combinations
        # reach reconcile and the renderers more often than random ones do.
        k, v = fields[data.draw(st.integers(0, len(fields) - 1), label="field")]
        where[k] = copy.deepcopy(v)
        return docs
    if isinstance(where, dict):
        if op == "insert" or not where:
            where[data.draw(keys, label="new key")] = data.draw(values, label="value")
            return docs
        key = data.draw(st.sampled_from(list(where)), label="key")
        if op == "delete":
            del where[key]
        elif op == "rename":
            where[data.draw(one_of_list(FIELD_NAMES) | keys, label="renamed")] = where.pop(key)
        elif op == "stringify":
            where[key] = str(where[key]) if not isinstance(where[key], str) else data.draw(values)
        elif op == "nest":
            v = where[key]
            for _ in range(data.draw(st.integers(1, 150), label="depth")):
                v = [v] if data.draw(st.booleans()) else {"a": v}
            where[key] = v
        else:
            where[key] = data.draw(values, label="value")
    else:
        if op in ("insert", "nest") or not where:
            where.insert(data.draw(st.integers(0, len(where)), label="at"), data.draw(values, label="value"))
            return docs
        idx = data.draw(st.integers(0, len(where) - 1), label="index")
        if op == "delete":
            del where[idx]
        elif op == "stringify":
            where[idx] = str(where[idx])
        else:
            where[idx] = data.draw(values, label="value")
    return docs


def mutated(data: st.DataObject, sets) -> tuple[str, list]:
    name, docs = sets[data.draw(st.integers(0, len(sets) - 1), label="seed")]
    if len(docs) > 12:  # a large set (a CRD bundle): a window of it, so an example stays cheap
        start = data.draw(st.integers(0, len(docs) - 12), label="window")
        docs = docs[start:start + 12]
    docs = copy.deepcopy(list(docs))
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        docs = mutate(data, docs)
    return name, docs


# ----------------------------------------------------------------------------- properties: the model


@profile(60)
@given(st.one_of(st.text(), yamlish, st.text(st.characters(codec="utf-8")), long_strings))
def test_random_text_loads_or_names_the_file(text):
    load_and_render(text)


@profile(40)
@given(st.one_of(st.binary(), st.binary().map(lambda b: b"apiVersion: v1\nkind: Service\n" + b),
                 st.sampled_from([b"\xff\xfe\x00a", b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf", b"\x00" * 10,
                                  "kind: Pod\n".encode("utf-16"), b"\xef\xbb\xbfapiVersion: v1\nkind: List\nitems: []\n"])))
def test_random_bytes_load_file_or_names_the_file(tmp_dir, raw):
    path = tmp_dir / "input.yaml"
    path.write_bytes(raw)
    try:
        topo = model.load_file(path)
    except TopologyError as e:
        assert_refusal(e, str(path), None)
        return
    render_everything(topo)


@profile(60)
@given(st.data(), st.lists(values, min_size=1, max_size=4))
def test_random_yaml_and_json_documents(data, docs):
    load_and_render(serialise(data, docs))


@profile(60)
@given(st.data(), st.lists(st.fixed_dictionaries(
    {"apiVersion": st.sampled_from(API_VERSIONS), "kind": st.sampled_from(KINDS),
     "metadata": st.fixed_dictionaries({"name": st.sampled_from(["x", "web", "a" * 300]) | scalars},
                                       optional={"namespace": scalars, "labels": values, "annotations": values}),
     "spec": values}, optional={"status": values, "items": values, "data": values}), min_size=1, max_size=4))
def test_random_manifests_of_every_kind(data, docs):
    load_and_render(serialise(data, docs))


NESTINGS = {
    "json-array": lambda n: "[" * n + "]" * n,
    "json-object": lambda n: '{"a": ' * n + "1" + "}" * n,
    "flow-mapping": lambda n: "{a: " * n + "b" + "}" * n,
    "flow-in-block": lambda n: "kind: Service\napiVersion: v1\nmetadata: {name: x}\nspec: " + "[" * n + "]" * n,
    "block-mapping": lambda n: "".join("  " * i + "a:\n" for i in range(n)),
    "block-sequence": lambda n: "- " * n + "x\n",
    "list-of-lists": lambda n: "apiVersion: v1\nkind: List\nitems:\n" + "".join(
        "  " * (i + 1) + "- apiVersion: v1\n" + "  " * (i + 2) + "kind: List\n" + "  " * (i + 2) + "items:\n"
        for i in range(n)),
    "selector": lambda n: ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: "
                           + "{matchLabels: " * n + "{}" + "}" * n + "\n"),
    "alias-cycle": lambda n: "&a [*a]\n" if n % 2 else "b: &b {c: *b}\n",
}


@profile(40)
@given(st.sampled_from(sorted(NESTINGS)), st.integers(1, 5000))
def test_deep_nesting_beyond_the_recursion_limit(form, depth):
    text = NESTINGS[form](depth if form not in ("block-mapping", "list-of-lists") else min(depth, 1200))
    load_and_render(text)


@profile(100)
@given(st.data())
def test_mutated_topologies_and_real_shaped_manifests(data):
    _name, docs = mutated(data, seed_sets())
    load_and_render(serialise(data, docs))


@profile(40)
@given(st.data())
def test_mutated_real_world_manifests(data):
    sets = real_world_sets()
    if not sets:
        pytest.skip("no real-world manifest sets (../shared/real-world, or TESTBED_REAL_WORLD) on this machine")
    _name, docs = mutated(data, sets)
    load_and_render(serialise(data, docs))


def test_every_seed_loads_and_renders():
    """The seeds themselves load (so mutations start from valid input) and render everywhere."""
    for name, docs in seed_sets():
        topo = model.load_text(_dump_yaml(list(docs)), file=name)
        render_everything(topo)


# ----------------------------------------------------------------------------- properties: the CLI


@pytest.fixture(scope="module")
def tmp_dir():
    with tempfile.TemporaryDirectory(prefix="testbed-fuzz-") as d:
        yield Path(d)


def run_cli(argv: list[str], stdin: bytes | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    try:
        if stdin is not None:
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(argv)
    finally:
        sys.stdin = old_stdin
    return rc, out.getvalue(), err.getvalue()


cli_inputs = st.one_of(
    st.binary(max_size=200),
    st.text().map(str.encode),
    yamlish.map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@profile(40)
@given(st.data(), st.sampled_from(["file", "file", "stdin"]),
       st.sampled_from([[], ["--mode", "iptables"], ["--mode", "nftables"], ["--mode", "ipvs"],
                        ["--mode", "userspace"], ["--node", "node-1"], ["--node", "nope"], ["--bootstrap"],
                        ["--strict"]]))
def test_cli_render_exits_0_or_2_without_a_traceback(tmp_dir, data, how, extra):
    if data.draw(st.booleans(), label="manifests"):
        _name, docs = mutated(data, seed_sets())
        raw = serialise(data, docs).encode("utf-8", "surrogatepass")
    else:
        raw = data.draw(cli_inputs, label="raw")
    if how == "file":
        path = tmp_dir / "cli.yaml"
        path.write_bytes(raw)
        rc, out, err = run_cli(["render", str(path), *extra])
        name = str(path)
    else:
        rc, out, err = run_cli(["render", "-", *extra], stdin=raw)
        name = "<stdin>"
    assert rc in (0, 2), (rc, err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out
    if rc == 2:  # one error line, naming the file (or the --node that the file's lab does not have)
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, err[-2000:]
        assert name in errors[0] or (extra[:1] == ["--node"] and f"no node named {extra[1]!r}" in errors[0]), errors[0]
