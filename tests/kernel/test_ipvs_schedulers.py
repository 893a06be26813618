"""IPVS mode's schedulers behave as their definitions say (runs where the kernel has IPVS: the
`testbed vm` guest — see test_ipvs_in_vm.py — or a VM/host with IPVS).

rr (and wrr with kube-proxy's equal weights) alternates; sh keeps a source on one backend; dh keeps
a destination on one backend; lc, sed and nq send a new connection away from a backend that holds
an open connection.

IPVS state is per node: every node's kube-proxy programs its own virtual servers, and a
connection is counted (ActiveConn/InActConn) only by the IPVS of the node its client pod sits on.
So the least-loaded tests hold the busy connection from `client` and open the new ones from
`neighbour`, a different pod pinned to the same node; `client-2` is pinned to the other node (the
dh test uses it to show both nodes' IPVS agree).
"""
import pytest

from probes import connect
from testbed.kernel import wiring

pytestmark = [pytest.mark.kernel, pytest.mark.kernel_feature("ipvs")]

SCHEDULERS = ("rr", "sh", "dh", "lc", "sed", "nq", "wrr", "mh")


def objects():
    docs = [
        {"apiVersion": "testbed.dev/v1alpha1", "kind": "Lab", "metadata": {"name": "sched"},
         "spec": {"nodes": [{"name": "node-1"}, {"name": "node-2"}], "clients": [], "clusterDNS": {"enabled": False}}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 9376}]}]}}}},
    ]
    for name, node in (("client", "node-1"), ("neighbour", "node-1"), ("client-2", "node-2")):
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                     "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]}})
    for sched in SCHEDULERS:
        docs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": f"s-{sched}", "annotations": {"testbed.dev/ipvs-scheduler": sched}},
                     "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 9376}]}})
    return docs


@pytest.fixture(scope="module")
def lab():
    from testbed.pytest_plugin import _write_objects
    from testbed.lab import Lab
    import os
    import uuid

    path = _write_objects(objects())
    lab = Lab.up(path, name=f"i{uuid.uuid4().hex[:7]}", mode="ipvs")
    try:
        yield lab
    finally:
        lab.down()
        os.unlink(path)


def vip(lab, sched):
    return next(s for s in lab.cluster().services if s.service.name == f"s-{sched}").cluster_ip


def client(lab, name="client"):
    return wiring.pod_ns(lab.name, "default", name)


def sequence(lab, sched, n=8, who="client"):
    out = []
    for _ in range(n):
        r = connect.tcp_request(client(lab, who), vip(lab, sched), 80)
        assert r.ok, r
        out.append(r.body)
    return out


def test_the_schedulers_are_programmed(lab):
    from testbed.kernel import ipvs as kipvs

    table = kipvs.read(lab.saved["nodes"]["node-1"]["ns"])
    text = str(table)
    for sched in SCHEDULERS:
        assert f"'{sched}'" in text or f'"{sched}"' in text, (sched, text[:500])


@pytest.mark.parametrize("sched", ["rr", "wrr"])
def test_rr_alternates(lab, sched):
    # wrr: kube-proxy gives every real server weight 1, so it is rr.
    seq = sequence(lab, sched, 8)
    assert all(a != b for a, b in zip(seq, seq[1:], strict=False)), seq
    assert len(set(seq)) == 2


def test_sh_keeps_a_source_on_one_backend(lab):
    assert len(set(sequence(lab, "sh", 10))) == 1


def test_dh_keeps_a_destination_on_one_backend(lab):
    a = sequence(lab, "dh", 6, "client")
    b = sequence(lab, "dh", 6, "client-2")
    assert len(set(a + b)) == 1, (a, b)


def _pod(lab, name):
    return next(p for p in lab.cluster().pods if p.namespace == "default" and p.name == name)


def _counts(lab, node, ip):
    """{backend pod IP: (active, inactive)} of the ClusterIP's virtual server in `node`'s IPVS."""
    from testbed.kernel import ipvs as kipvs

    table = kipvs.read(lab.saved["nodes"][node]["ns"], stats=True)
    dests = table["services"][f"{ip}:80/TCP"]["destinations"].values()
    return {d["ip"]: (d["active"], d["inactive"]) for d in dests}


@pytest.mark.parametrize("sched", ["lc", "sed", "nq"])
def test_least_loaded_schedulers_avoid_a_busy_backend(lab, sched):
    ip = vip(lab, sched)
    node = _pod(lab, "client").node
    assert _pod(lab, "neighbour").node == node  # the same IPVS sees both pods' connections
    with connect.held_open(client(lab), ip, 80) as busy:
        busy_ip = _pod(lab, busy).ip
        counts = _counts(lab, node, ip)
        assert counts[busy_ip][0] == 1, (sched, busy, counts)  # the held connection is active
        assert all(active == 0 for a, (active, _) in counts.items() if a != busy_ip), counts
        for _ in range(4):
            r = connect.tcp_request(client(lab, "neighbour"), ip, 80)
            assert r.ok and r.body != busy, (sched, busy, r.body, _counts(lab, node, ip))
        assert _counts(lab, node, ip)[busy_ip][0] == 1  # still held throughout
