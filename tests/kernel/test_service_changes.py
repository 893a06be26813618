"""Changing a running lab's Services and Ingresses with `apply`, as Kubernetes would."""
import textwrap

import pytest

from probes import connect, dnsq, http
from testbed.control import dns_ip
from testbed.lab import Lab
from testbed.kernel import wiring

pytestmark = pytest.mark.kernel

BASE = """\
apiVersion: testbed.dev/v1alpha1
kind: Lab
metadata: {name: chg}
spec:
  nodes: [{name: node-1}, {name: node-2}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 9999}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: target}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def svc(lab, name):
    return next(s for s in Lab(lab.name).cluster().services if s.service.name == name)


def a_record(lab, name):
    cluster = Lab(lab.name).cluster()
    return dnsq.query(wiring.pod_ns(lab.name, "default", "client"), dns_ip(cluster.lab), f"{name}.default.svc.cluster.local")


def test_service_type_changes_allocate_and_release(lab_factory, tmp_path):
    lab = lab_factory(write(tmp_path, "base.yaml", BASE))
    client = wiring.pod_ns(lab.name, "default", "client")
    first = svc(lab, "target")
    assert first.cluster_ip and first.node_ports == (None,)
    assert a_record(lab, "target").data("A") == [first.cluster_ip]

    # ClusterIP → NodePort: a NodePort is allocated, the ClusterIP is kept.
    lab.apply(write(tmp_path, "np.yaml", """\
        apiVersion: v1
        kind: Service
        metadata: {name: target}
        spec: {type: NodePort, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
        """))
    np_ = svc(lab, "target")
    assert np_.cluster_ip == first.cluster_ip and np_.node_ports[0]
    node_ip = Lab(lab.name).cluster().nodes[0].ip
    assert connect.tcp_request(client, node_ip, np_.node_ports[0]).ok

    # NodePort → ExternalName: ClusterIP and NodePort released, DNS answers a CNAME, no rules left.
    lab.apply(write(tmp_path, "ext.yaml", """\
        apiVersion: v1
        kind: Service
        metadata: {name: target}
        spec: {type: ExternalName, externalName: other.example.com}
        """))
    ext = svc(lab, "target")
    assert ext.cluster_ip is None and ext.node_ports == ()
    answer = dnsq.query(client, dns_ip(Lab(lab.name).cluster().lab), "target.default.svc.cluster.local", "CNAME")
    assert answer.data("CNAME") == ["other.example.com."]
    assert not connect.tcp_request(client, first.cluster_ip, 80, timeout=1.0).ok
    assert not connect.tcp_request(client, node_ip, np_.node_ports[0], timeout=1.0).ok

    # ExternalName → ClusterIP: a ClusterIP is allocated again, DNS switches back to A.
    lab.apply(write(tmp_path, "back.yaml", """\
        apiVersion: v1
        kind: Service
        metadata: {name: target}
        spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
        """))
    back = svc(lab, "target")
    assert back.cluster_ip
    assert a_record(lab, "target").data("A") == [back.cluster_ip]
    assert connect.tcp_request(client, back.cluster_ip, 80).ok


INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site}
spec:
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: target, port: {number: 80}}}}
"""


def test_ingress_changes_take_effect(lab_factory, tmp_path):
    lab = lab_factory(write(tmp_path, "base.yaml", BASE + "---\n" + INGRESS))
    client = wiring.pod_ns(lab.name, "default", "client")
    cluster = Lab(lab.name).cluster()
    ctrl = next(s for s in cluster.services if s.service.name == "ingress-controller")
    node_ip, port = cluster.nodes[0].ip, ctrl.node_ports[0]
    web = {p.name for p in cluster.pods if p.owner == "default/web"}
    assert http.get(client, node_ip, port, "a.example.com", "/hostname").pod in web
    assert http.get(client, node_ip, port, "b.example.com", "/hostname").status == 404
    # Move the rule to another host: the controller reloads its routes on the next sync.
    lab.apply(write(tmp_path, "ing2.yaml", INGRESS.replace("a.example.com", "b.example.com")))
    assert http.get(client, node_ip, port, "b.example.com", "/hostname").pod in web
    assert http.get(client, node_ip, port, "a.example.com", "/hostname").status == 404


def test_programming_latency_is_seen_by_traffic_in_every_mode(lab_factory, proxy_mode, tmp_path):
    """`testbed latency`: each change is observed by traffic (not just timed to the rules), the
    backend made unready comes back, the Service edit is undone, and the results stay in the lab."""
    from testbed import latency

    path = tmp_path / "lab.yaml"
    path.write_text(BASE.replace("replicas: 2", "replicas: 3"))
    lab = lab_factory(str(path), mode=proxy_mode)
    results = latency.measure(lab, "target", repeat=1, limit=10.0)
    assert [m.change for m in results] == list(latency.CHANGES)
    for m in results:
        assert m.mode == proxy_mode and m.service == "default/target"
        assert m.observed_ms is not None and m.observed_ms >= 0, m
        assert m.rules_ms > 0 and m.connections > 20, m
    after = Lab(lab.name)
    cluster = after.cluster()
    assert all(p.ready for p in cluster.pods), "pod-unready/pod-ready left a pod unready"
    (target,) = [s for s in cluster.services if s.service.name == "target"]
    assert [p.port for p in target.service.ports] == [80], "the Service edit was not undone"
    assert len(after.saved["latency"]) == 4
    assert {s["change"] for s in after.saved["syncs"]} >= {"lab up", "apply", "delete pod", "readiness"}
