"""kube-proxy's own endpoints on every node of a running lab, scraped as a user would (root)."""
from __future__ import annotations

import json

import pytest

from probes.connect import tcp_request
from probes.poll import wait_until
from testbed.kernel import wiring

pytestmark = pytest.mark.kernel


def test_every_node_serves_healthz_proxy_mode_and_metrics(lab_factory):
    lab = lab_factory(mode="nftables")
    cluster = lab.cluster()
    client = wiring.host_ns(lab.name, cluster.clients[0].name)
    for n in cluster.nodes:
        wait_until(lambda n=n: tcp_request(client, n.ip, 10256, path="/healthz", timeout=1.0).status == 200, timeout=10,
                   message=f"{n.name}:10256/healthz answers")
        r = tcp_request(client, n.ip, 10256, path="/healthz", timeout=1.0)
        assert json.loads(r.body)["nodeEligible"] is True
        # --metrics-bind-address defaults to 127.0.0.1:10249: the node itself asks, as upstream's e2e test does
        node_ns = wiring.host_ns(lab.name, n.name)
        assert tcp_request(node_ns, "127.0.0.1", 10249, path="/proxyMode", timeout=1.0).body == "nftables"
        assert tcp_request(client, n.ip, 10249, path="/proxyMode", timeout=1.0).outcome == "refused"
        metrics = tcp_request(node_ns, "127.0.0.1", 10249, path="/metrics", timeout=1.0).body
        count = next(line for line in metrics.splitlines()
                     if line.startswith("kubeproxy_sync_proxy_rules_duration_seconds_count"))
        assert int(count.split()[1]) >= 1, metrics
