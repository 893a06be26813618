"""A cluster dump replayed with real packets: `testbed up dump.yaml` rebuilds the cluster's nodes,
addresses and rules, and traffic goes where that cluster's kube-proxy sent it (root)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testbed.conformance import Row, run_row
from testbed.kernel import iptables as kiptables
from testbed.kernel import wiring

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

KIND = Path(__file__).resolve().parent.parent / "fixtures" / "replay" / "kind.yaml"
READY_WEB = {"web-5d8f9c7b6-2lm8k", "web-5d8f9c7b6-qc7fd"}  # 10.244.2.2 was unready in the dump


@pytest.fixture(scope="module")
def replayed(request):
    from testbed.lab import Lab

    name = "rp-kind"
    Lab(name).down()
    lab = Lab.up(str(KIND), name=name)
    request.addfinalizer(lab.down)
    return lab


def test_the_dumped_addresses_are_the_labs(replayed):
    cluster = replayed.cluster()
    assert {(n.name, n.ip) for n in cluster.nodes} == {
        ("kind-control-plane", "172.18.0.2"), ("kind-worker", "172.18.0.3"), ("kind-worker2", "172.18.0.4")}
    for p in cluster.pods:
        ns = wiring.pod_ns(replayed.name, p.namespace, p.name)
        out = subprocess.run(["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True,
                             text=True, check=True).stdout
        assert f"{p.ip}/" in out, (p.key, out)
    rules = kiptables.save(wiring.host_ns(replayed.name, "kind-worker"))
    assert "-d 10.96.142.77/32" in rules and "--dport 31380" in rules


@pytest.mark.parametrize("row", [
    Row("ClusterIP: only the endpoints the dump had ready", "pod/client", "tcp", "svc/web:80", backends="svc",
        balance=True),
    Row("NodePort from outside via a worker", "client/outside", "tcp", "nodeport/web:80@kind-worker2",
        backends="svc", source_seen="node"),
    Row("the LoadBalancer address the cloud gave it", "client/outside", "tcp", "lb/web-lb:80", backends="svc"),
    Row("the cluster's own DNS names it", "pod/client", "udp", "dns/web.default.svc.cluster.local", check="dns",
        answer=("A", "svc/web")),
], ids=lambda r: r.behaviour)
def test_traffic_in_the_replayed_cluster(replayed, row):
    cell = run_row(replayed, row, "iptables")
    assert cell.status == "pass", cell.reason


def test_the_unready_pod_gets_no_traffic_and_a_rebuild_would_give_it_some(replayed):
    from probes import connect

    cluster = replayed.cluster()
    client = next(p for p in cluster.pods if p.name == "client")
    d = connect.distribution(wiring.pod_ns(replayed.name, "default", "client"), "10.96.142.77", 80, count=60)
    assert set(d.counts) == READY_WEB and not d.failures, (d.counts, d.errors)
    assert client.ip == "10.244.2.3"


def test_diff_of_a_replayed_node_against_the_dump(replayed, tmp_path):
    """`testbed diff` with the dump as the topology: the replayed node is what kube-proxy should have;
    the same node a step behind (an endpoint moved) is named."""
    from testbed import diff

    saved = tmp_path / "kind-worker.save"
    saved.write_text(kiptables.save(wiring.host_ns(replayed.name, "kind-worker")))
    report = diff.run(str(KIND), "kind-worker", [str(saved)])
    assert [g for g in report.groups if g.status != "same"] == []
    saved.write_text(saved.read_text().replace("10.244.1.3", "10.244.1.9"))
    report = diff.run(str(KIND), "kind-worker", [str(saved)])
    assert sorted(g.label for g in report.groups if g.status == "different") == ["default/web-lb:http", "default/web:http"]
