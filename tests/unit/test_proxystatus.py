"""kube-proxy's own endpoints (testbed.proxystatus): pure, no root."""
from __future__ import annotations

import json

from testbed import proxystatus as ps


def saved(out_of_date=None, mode="nftables"):
    return {"mode": mode, "created": 1000.0,
            "nodes": {"node-1": {"out_of_date": out_of_date} if out_of_date else {}, "node-2": {}},
            "syncs": [{"at": 1001.0, "to_rules_ms": 120.0, "nodes_ms": {"node-1": 40.0, "node-2": 60.0}},
                      {"at": 1002.0, "to_rules_ms": 2500.0, "nodes_ms": {"node-2": 30.0}}]}


def test_healthz_is_200_with_kube_proxys_json_while_the_node_is_in_step():
    st = ps.node_status(saved(), "node-1")
    code, ctype, body = ps.healthz(st, now=1010.0)
    data = json.loads(body)
    assert code == 200 and ctype == "application/json"
    assert set(data) == {"lastUpdated", "currentTime", "nodeEligible"} and data["nodeEligible"] is True
    assert data["lastUpdated"].startswith("1970-01-01 00:16:41.") and data["lastUpdated"].endswith(" +0000 UTC")
    assert "nodeEligible" not in json.loads(ps.healthz(st, now=1010.0, path="/livez")[2])


def test_healthz_turns_503_once_a_failed_update_waited_longer_than_the_health_timeout():
    st = ps.node_status(saved({"since": 2000.0, "reason": "iptables-restore failed"}), "node-1")
    assert ps.healthz(st, now=2000.0 + ps.HEALTH_TIMEOUT - 1)[0] == 200
    assert ps.healthz(st, now=2000.0 + ps.HEALTH_TIMEOUT + 1)[0] == 503
    # a node that is only being synced right now is not failing
    st = ps.node_status(saved({"since": 2000.0, "reason": "syncing"}), "node-1")
    assert ps.healthz(st, now=9999.0)[0] == 200


def test_metrics_histograms_count_this_nodes_syncs_and_the_programming_latency():
    text = ps.metrics(ps.node_status(saved(), "node-2")).decode()
    assert "kubeproxy_sync_proxy_rules_duration_seconds_count 2" in text
    assert 'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.032"} 1' in text  # 30 ms
    assert 'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.064"} 2' in text  # and 60 ms
    assert "kubeproxy_network_programming_duration_seconds_count 2" in text
    assert 'kubeproxy_network_programming_duration_seconds_bucket{le="0.25"} 1' in text
    assert 'kubeproxy_network_programming_duration_seconds_bucket{le="3"} 2' in text
    assert "kubeproxy_sync_proxy_rules_last_timestamp_seconds 1002" in text
    one = ps.metrics(ps.node_status(saved(), "node-1")).decode()
    assert "kubeproxy_sync_proxy_rules_duration_seconds_count 1" in one


def test_the_metrics_port_serves_proxy_mode_and_404_elsewhere():
    st = ps.node_status(saved(), "node-1")
    assert ps.answer(ps.METRICS_PORT, st, 0, "/proxyMode")[::2] == (200, b"nftables")
    assert ps.answer(ps.METRICS_PORT, st, 0, "/nope")[0] == 404
    assert ps.answer(ps.HEALTHZ_PORT, st, 0, "/metrics")[0] == 404
