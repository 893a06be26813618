"""hostNetwork pods: in their node's network namespace, with their node's address (root)."""
from __future__ import annotations

import pytest

from testbed.conformance import Row, run_row

pytestmark = pytest.mark.kernel

TOPOLOGY = [
    {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "exporter"},
     "spec": {"selector": {"matchLabels": {"app": "exporter"}},
              "template": {"metadata": {"labels": {"app": "exporter"}},
                           "spec": {"hostNetwork": True, "containers": [{"name": "c", "ports": [{"containerPort": 9100}]}]}}}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "exporter"},
     "spec": {"selector": {"app": "exporter"}, "ports": [{"port": 9100}]}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "labels": {"run": "client"}},
     "spec": {"nodeName": "node-1", "containers": [{"name": "c"}]}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hn-client"},
     "spec": {"hostNetwork": True, "nodeName": "node-2", "containers": [{"name": "c"}]}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
     "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
              "template": {"metadata": {"labels": {"app": "web"}},
                           "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]}}}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
     "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
]


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_host_network_pods_serve_on_their_nodes_address_and_reach_services(lab_factory, mode):
    lab = lab_factory(objects=TOPOLOGY, mode=mode)
    cluster = lab.cluster()
    nodes = {n.name: n.ip for n in cluster.nodes}
    exporters = [p for p in cluster.pods if p.name.startswith("exporter-")]
    assert sorted((p.node, p.ip) for p in exporters) == sorted(nodes.items())
    rows = [
        Row("a Service whose endpoints are host-network pods (node addresses)", "pod/client", "tcp", "svc/exporter:9100",
            backends="svc", balance=True),
        Row("a ClusterIP from a host-network pod: masqueraded to its node", "pod/hn-client", "tcp", "svc/web:80",
            backends="svc", source_seen="node"),
    ]
    for row in rows:
        cell = run_row(lab, row, mode)
        assert cell.status == "pass", (row.behaviour, cell.reason)
