"""Cluster replay: a `kubectl get … -A -o yaml` dump rebuilds that cluster without hand edits (no root).

The fixtures under tests/fixtures/replay/ are shaped like real dumps (kind: List, sorted keys,
managedFields, status, uid, resourceVersion, the controller's EndpointSlices):
- upstream-overall.yaml: the objects of kube-proxy's own TestOverallIPTablesRules
  (pkg/proxy/iptables/proxier_test.go), as a cluster would hold them, with kube-proxy's ConfigMap;
- kind.yaml: a three-node kind cluster (control plane tainted), CoreDNS, a Deployment's pods behind
  a NodePort and a LoadBalancer Service, one of them unready when the dump was taken.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from testbed import model
from testbed.control import reconcile
from testbed.errors import TopologyError
from testbed import modes
from testbed.render import iptables as ipt
from tests.unit.test_render_iptables import UPSTREAM_OVERALL, _upstream_overall_view, chains

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "replay"
UPSTREAM = FIXTURES / "upstream-overall.yaml"
KIND = FIXTURES / "kind.yaml"


def test_the_fixtures_are_shaped_like_real_dumps():
    for path in (UPSTREAM, KIND):
        dump = yaml.safe_load(path.read_text())
        assert dump["kind"] == "List" and dump["items"]
        for item in dump["items"]:
            meta = item["metadata"]
            assert meta["uid"] and meta["resourceVersion"] and meta["managedFields"], meta["name"]


def test_replaying_kube_proxys_own_scenario_renders_its_rules_byte_for_byte():
    topo = model.load_file(UPSTREAM)
    assert topo.lab.kube_proxy_version == "1.30"  # the dumped node's kubeProxyVersion (v1.30.3)
    # Upstream's expected rules are the 1.34 tree's (its localhost nfacct counter is 1.31's #125015).
    cluster, _ = reconcile(model.with_kube_proxy_version(topo, "1.34"))
    view = cluster.node_view("test-node")
    want = _upstream_overall_view()
    assert view.node_ips == want.node_ips and view.config.cluster_cidr == want.config.cluster_cidr
    # Two things upstream's fake sets that a real cluster cannot hold: a healthCheckNodePort on an
    # eTP=Cluster Service (the API server refuses it) and a source range with a leading blank (trimmed).
    fix = {"ns5/svc5": dict(health_check_node_port=30000, load_balancer_source_ranges=(" 203.0.113.0/25",))}
    got = tuple(dataclasses.replace(sp, **fix.get(sp.namespaced_name, {})) for sp in view.services)
    assert got == want.services
    # The test's fake has neither --random-fully nor the real mark format; nfacct as in upstream's test.
    view = dataclasses.replace(view, config=dataclasses.replace(view.config, random_fully=False))
    ours = ipt.render(view, nfacct=True).replace("0x00004000", "0x4000")
    assert chains(ours) == chains(UPSTREAM_OVERALL)
    assert sorted(line for line in ours.splitlines() if line.startswith("-")) == sorted(
        line for line in UPSTREAM_OVERALL.splitlines() if line.startswith("-"))


def test_the_lab_is_inferred_around_the_dump_and_says_so():
    topo = model.load_file(UPSTREAM)
    lab = topo.lab
    assert [n.name for n in lab.nodes] == ["test-node"]
    assert (lab.nodes[0].ip, lab.nodes[0].pod_cidr) == ("192.168.0.2", "10.180.0.0/24")
    assert lab.node_network == "192.168.0.0/24"
    assert lab.service_cidr == "172.30.0.0/24"
    assert lab.cluster_cidr == "10.0.0.0/8"  # kube-proxy's --cluster-cidr, from its ConfigMap
    assert lab.node_port_range == (3001, 32767)  # widened for the dump's NodePorts
    assert lab.cluster_dns is False  # the dump has no kube-dns: adding one would add rules it had not
    said = "\n".join(lab.inferred)
    for what in ("nodes test-node", "serviceCIDR 172.30.0.0/24", "clusterCIDR 10.0.0.0/8", "serviceNodePortRange",
                 "clusterDNS off"):
        assert what in said, said


def test_a_lab_document_in_front_of_a_dump_pins_what_it_names():
    lab = yaml.safe_dump({"apiVersion": "testbed.dev/v1alpha1", "kind": "Lab", "metadata": {"name": "r"},
                          "spec": {"serviceCIDR": "172.30.0.0/16", "proxyMode": "nftables"}})
    topo = model.load_text(lab + "---\n" + UPSTREAM.read_text(), file="x.yaml")
    assert topo.lab.service_cidr == "172.30.0.0/16" and topo.lab.proxy_mode == "nftables"
    assert not any("serviceCIDR" in line for line in topo.lab.inferred)


def kind_cluster(**kw):
    topo = model.load_file(KIND, **kw)
    cluster, _ = reconcile(topo)
    return topo, cluster


def test_kind_dump_keeps_nodes_addresses_and_ports():
    topo, cluster = kind_cluster()
    assert [(n.name, n.ip, n.pod_cidr) for n in cluster.nodes] == [
        ("kind-control-plane", "172.18.0.2", "10.244.0.0/24"), ("kind-worker", "172.18.0.3", "10.244.1.0/24"),
        ("kind-worker2", "172.18.0.4", "10.244.2.0/24")]
    assert topo.lab.service_cidr == "10.96.0.0/16"  # kind's, not kubeadm's /12
    assert topo.lab.proxy_mode == "iptables" and topo.lab.cluster_cidr == "10.244.0.0/16"
    pods = {p.name: (p.node, p.ip) for p in cluster.pods}
    assert pods == {"coredns-7db6d8ff4d-4xq9z": ("kind-control-plane", "10.244.0.3"),
                    "web-5d8f9c7b6-2lm8k": ("kind-worker", "10.244.1.2"), "web-5d8f9c7b6-9vx4r": ("kind-worker2", "10.244.2.2"),
                    "web-5d8f9c7b6-qc7fd": ("kind-worker", "10.244.1.3"), "client": ("kind-worker2", "10.244.2.3")}
    svcs = {s.key: s for s in cluster.services}
    assert set(svcs) == {"default/kubernetes", "kube-system/kube-dns", "default/web", "default/web-lb"}  # no add-on copy
    assert svcs["default/web"].cluster_ip == "10.96.142.77" and svcs["default/web"].node_ports == (31380,)
    assert svcs["default/web-lb"].load_balancer_ips == ("172.18.255.200",)
    assert svcs["default/web-lb"].node_ports == (32017,)
    dns_pod = next(p for p in cluster.pods if p.name.startswith("coredns"))
    assert dns_pod.workload == "dns"  # the dump's CoreDNS runs testbed's DNS server
    assert topo.lab.cluster_dns_ip == "10.96.0.10"


def test_a_dumps_endpoint_slices_are_used_as_dumped_unless_rebuilt():
    _, cluster = kind_cluster()
    web = next(s for s in cluster.services if s.key == "default/web")
    got = {(e.ip, e.port, e.ready) for e in web.endpoints[0]}
    assert got == {("10.244.1.2", 8080, True), ("10.244.1.3", 8080, True), ("10.244.2.2", 8080, False)}
    _, rebuilt = kind_cluster(rebuild_endpoints=True)
    web = next(s for s in rebuilt.services if s.key == "default/web")
    assert {(e.ip, e.ready) for e in web.endpoints[0]} == {("10.244.1.2", True), ("10.244.1.3", True), ("10.244.2.2", True)}
    # the API server's own Service: a slice without conditions is ready and serving
    k8s = next(s for s in cluster.services if s.key == "default/kubernetes")
    assert [(e.ip, e.port, e.ready, e.serving) for e in k8s.endpoints[0]] == [("172.18.0.2", 6443, True, True)]


def test_the_replay_renders_what_the_same_objects_written_by_hand_render():
    """The dump against a plain topology that pins the same addresses: every node, every mode."""
    _, replay = kind_cluster()
    hand = model.load_text(HAND_WRITTEN_KIND, file="hand.yaml")
    by_hand, _ = reconcile(hand)
    assert [p.ip for p in by_hand.pods] == [p.ip for p in replay.pods]
    for mode in ("iptables", "nftables", "ipvs"):
        for node in ("kind-control-plane", "kind-worker", "kind-worker2"):
            assert modes.get(mode).render(replay.node_view(node)) == modes.get(mode).render(by_hand.node_view(node)), (mode, node)


HAND_WRITTEN_KIND = """\
apiVersion: testbed.dev/v1alpha1
kind: Lab
metadata: {name: kind}
spec:
  kubeProxy: {version: "1.30"}
  nodeNetwork: 172.18.0.0/24
  serviceCIDR: 10.96.0.0/16
  clusterCIDR: 10.244.0.0/16
  clusterDNS: {ip: 10.96.0.10}
  nodes:
  - {name: kind-control-plane, ip: 172.18.0.2, podCIDR: 10.244.0.0/24,
     taints: [{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}]}
  - {name: kind-worker, ip: 172.18.0.3, podCIDR: 10.244.1.0/24}
  - {name: kind-worker2, ip: 172.18.0.4, podCIDR: 10.244.2.0/24}
---
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec: {clusterIP: 10.96.0.1, ports: [{name: https, port: 443, targetPort: 6443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kubernetes, labels: {kubernetes.io/service-name: kubernetes}}
addressType: IPv4
endpoints: [{addresses: [172.18.0.2]}]
ports: [{name: https, port: 6443}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: 10.96.0.10
  selector: {k8s-app: kube-dns}
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}, {name: metrics, port: 9153}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: NodePort, clusterIP: 10.96.142.77, selector: {app: web},
       ports: [{name: http, port: 80, targetPort: http, nodePort: 31380}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec: {type: LoadBalancer, clusterIP: 10.96.201.9, selector: {app: web},
       ports: [{name: http, port: 80, targetPort: 8080, nodePort: 32017}]}
status: {loadBalancer: {ingress: [{ip: 172.18.255.200}]}}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns-7db6d8ff4d-4xq9z, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec: {nodeName: kind-control-plane, containers: [{name: c, ports: [{containerPort: 53, name: dns, protocol: UDP},
       {containerPort: 53, name: dns-tcp}]}]}
status: {podIP: 10.244.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: web-5d8f9c7b6-2lm8k, labels: {app: web}}
spec: {nodeName: kind-worker, containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]}
status: {podIP: 10.244.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: web-5d8f9c7b6-9vx4r, labels: {app: web}}
spec: {nodeName: kind-worker2, readinessProbe: null, containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]}
status: {podIP: 10.244.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: web-5d8f9c7b6-qc7fd, labels: {app: web}}
spec: {nodeName: kind-worker, containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]}
status: {podIP: 10.244.1.3}
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {run: client}}
spec: {nodeName: kind-worker2, containers: [{name: c}]}
status: {podIP: 10.244.2.3}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-x
  labels: {kubernetes.io/service-name: web, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.2], nodeName: kind-worker}
- {addresses: [10.244.1.3], nodeName: kind-worker}
- {addresses: [10.244.2.2], nodeName: kind-worker2, conditions: {ready: false, serving: false}}
ports: [{name: http, port: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-lb-x
  labels: {kubernetes.io/service-name: web-lb, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.2], nodeName: kind-worker}
- {addresses: [10.244.1.3], nodeName: kind-worker}
- {addresses: [10.244.2.2], nodeName: kind-worker2, conditions: {ready: false, serving: false}}
ports: [{name: http, port: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-x
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
addressType: IPv4
endpoints: [{addresses: [10.244.0.3], nodeName: kind-control-plane}]
ports: [{name: dns-tcp, port: 53}, {name: dns, port: 53, protocol: UDP}, {name: metrics, port: 9153}]
"""


def test_a_running_lab_keeps_a_lab_document_that_pins_the_inferred_lab():
    topo = model.load_file(KIND)
    kept = model.kept_documents(model.manifests.load_documents(KIND)[0], topo.lab)
    assert kept[0]["kind"] == "Lab" and all(d["kind"] != "ConfigMap" for d in kept)
    assert all("managedFields" not in d["metadata"] for d in kept[1:])
    again = model.parse_documents(kept, "<lab>")
    assert again.lab == dataclasses.replace(topo.lab, pinned=again.lab.pinned, inferred=())
    assert reconcile(again)[0].pods == reconcile(topo)[0].pods


def test_a_pod_address_outside_its_nodes_pod_cidr_is_replaced_with_a_note():
    text = KIND.read_text().replace("podIP: 10.244.1.3", "podIP: 10.99.0.7")
    topo = model.load_text(text, file="d.yaml")
    pod = next(p for p in topo.pods if p.name == "web-5d8f9c7b6-qc7fd")
    assert pod.ip is None
    assert any("10.99.0.7" in e and "new address" in e for e in topo.effects), topo.effects


def test_two_dumped_pods_with_one_address_are_refused():
    text = KIND.read_text().replace("podIP: 10.244.1.3", "podIP: 10.244.1.2")
    with pytest.raises(TopologyError) as ei:
        model.load_text(text, file="d.yaml")
    assert ei.value.field == "status.podIP" and "10.244.1.2" in ei.value.problem
    assert "document 1, items[" in ei.value.obj
