"""nftables mode: a running lab's changes that leave chains stale, checked in the kernel and with
packets. testbed deletes stale chains in the sync that stops using them (kube-proxy waits a sync
on kernels before 6.2; see docs/nftables-kernels.md), so after every change the node's table
holds exactly the chains of the proxier's recorded state.

Two Services share an external IP and port: `service-ips` has one element for that key and, as
kube-proxy's nftElementStorage does, the later Service (svc-b) holds it. The changes: a backend
pod deleted (its endpoint chain goes), svc-a's port renamed (every svc-a chain is replaced),
svc-b deleted while svc-a still claims the element that points at svc-b's chains (the element
moves to svc-a), svc-a deleted. Every step is synchronous, so nothing here depends on timing:
tests/kernel/test_ipvs_in_vm.py runs it in the 6.1 guest too.
"""
from __future__ import annotations

import re

import pytest
import yaml

from probes import connect
from testbed.kernel import nft as knft
from testbed.kernel import wiring
from testbed.lab import Lab
from testbed.render import nftables as rnft

pytestmark = pytest.mark.kernel

SHARED_IP = "192.168.99.22"


def _pod(name: str, app: str, port: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": port}]}]}}


def _service(name: str, app: str, port_name: str | None = None) -> dict:
    port = {"port": 80, "targetPort": 8080, **({"name": port_name} if port_name else {})}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": app}, "externalIPs": [SHARED_IP], "ports": [port]}}


OBJECTS = [
    {"apiVersion": "testbed.dev/v1alpha1", "kind": "Lab", "metadata": {"name": "nftchg"},
     "spec": {"nodes": [{"name": "node-1"}], "clusterDNS": {"enabled": False}}},
    _pod("client", "none", 9999), _pod("pod-a1", "a", 8080), _pod("pod-a2", "a", 8080), _pod("pod-b", "b", 8080),
    _service("svc-a", "a"), _service("svc-b", "b"),
]


def kernel_chains(ns: str) -> set[str]:
    return set(re.findall(r"^\s*chain (\S+) \{", knft.list_table(ns), re.M))


def recorded_chains(lab) -> set[str]:
    saved = Lab(lab.name).saved["nodes"]["node-1"]["nft"]
    state = saved if isinstance(saved, rnft.NftState) else rnft.NftState.from_json(saved)
    return set(state.chains)


def test_changes_that_leave_chains_stale(lab_factory, tmp_path):
    lab = lab_factory(objects=OBJECTS, mode="nftables")
    client = wiring.pod_ns(lab.name, "default", "client")
    node = wiring.host_ns(lab.name, "node-1")

    def answers(ip: str, count: int = 6) -> set[str]:
        got = (connect.tcp_request(client, ip, 80, timeout=2.0) for _ in range(count))
        return {r.body.strip() if r.outcome == "answered" else r.outcome for r in got}

    def of(svc: str) -> set[str]:
        return {c for c in kernel_chains(node) if f"/{svc}/" in c}

    def in_step() -> None:
        assert kernel_chains(node) == recorded_chains(lab), knft.list_table(node)

    def cluster_ip(svc: str) -> str:
        return next(s.cluster_ip for s in Lab(lab.name).cluster().services if s.service.name == svc)

    in_step()
    assert answers(SHARED_IP, 2) == {"pod-b"}  # the later Service holds the shared key
    a_ip = cluster_ip("svc-a")
    before = of("svc-a")

    Lab(lab.name).delete("pod", "pod-a1", grace=0)
    in_step()
    assert len(of("svc-a")) == len(before) - 1  # pod-a1's endpoint chain
    assert answers(a_ip) == {"pod-a2"}

    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(yaml.safe_dump(_service("svc-a", "a", port_name="web")))
    Lab(lab.name).apply(str(renamed))
    in_step()
    assert of("svc-a") and not of("svc-a") & before  # every chain has the port name in it now
    assert answers(a_ip) == {"pod-a2"}

    Lab(lab.name).delete("service", "svc-b")
    in_step()
    assert of("svc-b") == set()
    assert answers(SHARED_IP, 2) == {"pod-a2"}  # the element now points at svc-a's chains

    Lab(lab.name).delete("service", "svc-a")
    in_step()
    assert of("svc-a") == set() and SHARED_IP not in knft.list_table(node)
