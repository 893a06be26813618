"""Every published manifest set loads as published, renders in every mode, and makes the pods and
endpoints its controllers would (no root). The sets are read from ../shared/real-world/."""
from __future__ import annotations

import pytest

from testbed import model, modes
from testbed.control import reconcile
from tests.realworld import all_sets, real_world

# set → (Services, {workload kind: count}, pods made, pod names that must be there)
EXPECTED = {
    "argocd-install.yaml": (8, {"Deployment": 6, "StatefulSet": 1}, 8, {"argocd-application-controller-0"}),
    "bookinfo.yaml": (4, {"Deployment": 6}, 7, set()),
    # OrderedReady with a readiness probe: cassandra-1 waits until cassandra-0 is ready
    "cassandra-statefulset.yaml": (1, {"StatefulSet": 1}, 2, {"cassandra-0"}),
    "cert-manager-crds.yaml": (0, {}, 1, set()),
    "guestbook-go-rc.yaml": (3, {"Deployment": 1, "ReplicationController": 2}, 7, set()),
    "guestbook.yaml": (3, {"Deployment": 3}, 7, set()),
    "ingress-nginx-cloud.yaml": (2, {"Deployment": 1, "Job": 2}, 4, set()),
    "ingress-nginx-multi-tls.yaml": (2, {"ReplicationController": 2}, 4, set()),
    # node-exporter and MetalLB's speaker are hostNetwork DaemonSets: a pod on each node, in its namespace
    "kube-prometheus.yaml": (8, {"Deployment": 5, "DaemonSet": 1}, 9, set()),
    "metallb-native.yaml": (1, {"Deployment": 1, "DaemonSet": 1}, 4, set()),
    "microservices-demo.yaml": (12, {"Deployment": 12}, 13, set()),
    "podinfo-kustomize.yaml": (1, {"Deployment": 1}, 2, set()),
    "tf-serving-ingress.yaml": (1, {"Deployment": 1}, 3, set()),
}


def test_every_published_set_is_known_here():
    assert all_sets(), "no published sets found"
    assert set(all_sets()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_published_set_loads_as_published(name):
    topo = model.load_file(real_world(name))
    services, kinds, pods, must = EXPECTED[name]
    assert len(topo.services) == services
    got: dict[str, int] = {}
    for w in topo.workloads:
        got[w.kind] = got.get(w.kind, 0) + 1
    assert got == kinds
    cluster, _ = reconcile(topo)
    assert len(cluster.pods) == pods, sorted(p.key for p in cluster.pods)
    assert must <= {p.name for p in cluster.pods}
    # every Service with a selector that matches a workload's pods has endpoints
    for info in cluster.services:
        s = info.service
        if s.selector and any(all(dict(p.labels).get(k) == v for k, v in s.selector) and p.namespace == s.namespace
                              for p in cluster.pods):
            assert any(info.endpoints), s.key
    for mode in modes.NAMES:
        for node in cluster.nodes:
            assert modes.get(mode).render(cluster.node_view(node.name))


def test_what_a_set_holds_but_testbed_does_not_model_is_named():
    topo = model.load_file(real_world("kube-prometheus.yaml"))
    (line,) = topo.summary()
    assert "36 ConfigMap" in line and "custom resources" in line and "ServiceMonitor" in line
    effects = "\n".join(topo.effects)
    assert "NetworkPolicy" in effects and "hostPort" in effects
    cluster, _ = reconcile(topo)
    exporters = [p for p in cluster.pods if p.name.startswith("node-exporter-")]
    assert {p.node for p in exporters} == {n.name for n in cluster.nodes}
    assert all(p.host_network and p.ip == cluster.node(p.node).ip for p in exporters)


def test_strict_refuses_a_published_set_at_its_first_kind_not_modelled():
    with pytest.raises(model.TopologyError) as ei:
        model.load_file(real_world("bookinfo.yaml"), strict=True)
    assert ei.value.field == "kind" and "ServiceAccount" in ei.value.problem
