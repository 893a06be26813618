"""Kubernetes' own e2e Service tests (test/e2e/network/service.go) that the conformance rows did
not cover, replayed with real packets on a running lab in each proxy mode (docs/e2e-coverage.md).

Each test names the upstream test it follows; where the lab's outcome differs from upstream's the
docstring says why. Clients are pods on either node, as upstream's exec and pause pods are.
"""
from __future__ import annotations

import pytest

from probes import connect, dnsq
from probes.affinity import affinity
from probes.poll import wait_until
from testbed.conformance import NO_POLICIES_IN_USERSPACE
from testbed.control import dns_ip
from testbed.kernel import wiring
from testbed.lab import Lab

pytestmark = pytest.mark.kernel

LAB = {"apiVersion": "testbed.dev/v1alpha1", "kind": "Lab", "metadata": {"name": "e2e"},
       "spec": {"nodes": [{"name": "node-1"}, {"name": "node-2"}], "clients": []}}


def client(node: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"client-{node}"},
            "spec": {"nodeName": f"node-{node}", "containers": [{"name": "c"}]}}


WEB = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
       "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 9376}]}]}}}}
# upstream's webserver pod for the terminating tests: one pod on node0, a long grace period.
SOLO = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo", "labels": {"app": "solo"}},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 120,
                 "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}}


def service(name: str, selector: str = "web", target: int = 9376, labels: dict | None = None, **spec) -> dict:
    meta = {"name": name, **({"labels": labels} if labels else {})}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"selector": {"app": selector}, "ports": [{"port": 80, "targetPort": target}], **spec}}


def apply(lab, tmp_path, *objects: dict) -> None:
    import yaml

    path = tmp_path / "change.yaml"
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    lab.apply(str(path))


def svc(lab, name):
    return next(s for s in Lab(lab.name).cluster().services if s.service.name == name)


def ns_of(lab, pod: str) -> str:
    return wiring.pod_ns(lab.name, "default", pod)


def node_ip(lab, name: str) -> str:
    return next(n.ip for n in Lab(lab.name).cluster().nodes if n.name == name)


def web_pods(lab) -> set[str]:
    return {p.name for p in Lab(lab.name).cluster().pods if p.owner == "default/web"}


def is_sticky(lab, host: str, port: int) -> bool:
    """upstream's checkAffinity(shouldHold): 15 requests from one client; all one backend, or not."""
    a = affinity(ns_of(lab, "client-1"), host, port, requests=15)
    assert not a.failures, a
    assert set(a.sequence) <= web_pods(lab), a
    return a.sticky


# ------------------------------------------------------------------ session affinity transitions


def test_session_affinity_switched_on_a_running_clusterip_and_nodeport_service(lab_factory, proxy_mode, tmp_path):
    """[Conformance] should be able to switch session affinity for service with type clusterIP and
    for NodePort service: ClientIP (sticky) → None (spread) → ClientIP (sticky again), one client."""
    sticky = service("aff", type="NodePort", sessionAffinity="ClientIP")
    lab = lab_factory(objects=[LAB, client(1), WEB, sticky], mode=proxy_mode)
    info = svc(lab, "aff")
    targets = {"ClusterIP": (info.cluster_ip, 80), "NodePort": (node_ip(lab, "node-1"), info.node_ports[0])}
    seen = {}
    for step, affinity_ in enumerate(["ClientIP", "None", "ClientIP"]):
        if step:
            apply(lab, tmp_path, service("aff", type="NodePort", sessionAffinity=affinity_))
        for kind, (host, port) in targets.items():
            seen[(step, kind)] = is_sticky(lab, host, port)
    assert seen == {(0, "ClusterIP"): True, (0, "NodePort"): True, (1, "ClusterIP"): False,
                    (1, "NodePort"): False, (2, "ClusterIP"): True, (2, "NodePort"): True}, seen
    assert svc(lab, "aff").node_ports == info.node_ports, "the NodePort changed with the affinity"


# ------------------------------------------------------------------ type change ExternalName → NodePort


def test_externalname_changed_to_nodeport_is_served_on_clusterip_and_every_node(lab_factory, proxy_mode, tmp_path):
    """[Conformance] should be able to change the type from ExternalName to NodePort: a ClusterIP
    and a NodePort are allocated, DNS answers an A record, and the Service is reachable by its
    ClusterIP and on every node's address (upstream's CheckServiceReachability)."""
    ext = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "externalname-service"},
           "spec": {"type": "ExternalName", "externalName": "foo.example.com"}}
    lab = lab_factory(objects=[LAB, client(1), WEB, ext], mode=proxy_mode)
    assert svc(lab, "externalname-service").cluster_ip is None
    apply(lab, tmp_path, service("externalname-service", type="NodePort"))
    info = svc(lab, "externalname-service")
    assert info.cluster_ip and info.node_ports[0]
    cluster = Lab(lab.name).cluster()
    fqdn = "externalname-service.default.svc.cluster.local"
    assert dnsq.query(ns_of(lab, "client-1"), dns_ip(cluster.lab), fqdn).data("A") == [info.cluster_ip]
    backends = web_pods(lab)
    for host, port in [(info.cluster_ip, 80)] + [(n.ip, info.node_ports[0]) for n in cluster.nodes]:
        r = connect.tcp_request(ns_of(lab, "client-1"), host, port)
        assert r.ok and r.body in backends, (host, port, r)


# ------------------------------------------------------------------ service.kubernetes.io/headless


HEADLESS = {"service.kubernetes.io/headless": ""}


def test_headless_label_makes_kube_proxy_ignore_a_service_and_removing_it_restores_it(lab_factory, proxy_mode,
                                                                                      tmp_path):
    """should implement service.kubernetes.io/headless: a Service created with the label is never
    served although it has a ClusterIP; another one goes down when the label is added and up again
    when it is removed."""
    lab = lab_factory(objects=[LAB, client(1), WEB, service("service-headless", labels=HEADLESS),
                               service("service-headless-toggled")], mode=proxy_mode)
    labelled, toggled = svc(lab, "service-headless"), svc(lab, "service-headless-toggled")
    assert labelled.cluster_ip and toggled.cluster_ip

    def up(info) -> bool:
        r = connect.tcp_request(ns_of(lab, "client-1"), info.cluster_ip, 80, timeout=1.0)
        assert r.ok == (r.body in web_pods(lab)), r
        return r.ok

    steps = [(up(toggled), up(labelled))]
    apply(lab, tmp_path, service("service-headless-toggled", labels=HEADLESS))
    steps.append((up(toggled), up(labelled)))
    apply(lab, tmp_path, service("service-headless-toggled"))
    steps.append((up(toggled), up(labelled)))
    assert steps == [(True, False), (False, False), (True, False)], steps


# ------------------------------------------------------------------ terminating endpoints


def _only_solo_terminating(lab) -> None:
    lab.delete("pod", "solo")
    eps = [e for eps in svc(lab, "cluster").endpoints for e in eps]
    assert [(e.ready, e.serving, e.terminating) for e in eps] == [(False, True, True)], eps


def answered_by_solo(lab, client_pod: str, host: str, port: int, times: int = 5) -> list[str]:
    """upstream's execHostnameTest, `times` times: the hostname each request got ("" if none)."""
    out = []
    for _ in range(times):
        r = connect.tcp_request(ns_of(lab, client_pod), host, port, timeout=2.0)
        out.append(r.body if r.ok else "")
    return out


def test_cluster_policies_fall_back_to_terminating_endpoints(lab_factory, proxy_mode):
    """should fallback to terminating endpoints when there are no ready endpoints with
    internalTrafficPolicy=Cluster / externallTrafficPolicy=Cluster, and should be able to connect
    to terminating and unready endpoints if PublishNotReadyAddresses is true: the only pod is
    deleted (grace 120 s); from pods on both nodes the ClusterIP and the NodePort still reach it."""
    lab = lab_factory(objects=[LAB, client(1), client(2), SOLO, service("cluster", "solo", 80),
                               service("np-cluster", "solo", 80, type="NodePort"),
                               service("pnra", "solo", 80, type="NodePort", publishNotReadyAddresses=True)],
                      mode=proxy_mode)
    _only_solo_terminating(lab)
    n1 = node_ip(lab, "node-1")
    for c in ("client-1", "client-2"):
        assert answered_by_solo(lab, c, svc(lab, "cluster").cluster_ip, 80) == ["solo"] * 5, c
        assert answered_by_solo(lab, c, n1, svc(lab, "np-cluster").node_ports[0]) == ["solo"] * 5, c
    pnra = svc(lab, "pnra")
    for host, port in [(pnra.cluster_ip, 80), (n1, pnra.node_ports[0]), (node_ip(lab, "node-2"), pnra.node_ports[0])]:
        assert answered_by_solo(lab, "client-2", host, port) == ["solo"] * 5, (host, port)


def test_local_policies_fall_back_to_local_terminating_endpoints_and_health_check_fails(lab_factory, proxy_mode):
    """should fallback to local terminating endpoints when there are no ready endpoints with
    internalTrafficPolicy=Local / externalTrafficPolicy=Local, and should fail health check node
    port if there are only terminating endpoints: the only pod (on node-1) is deleted; only node-1
    keeps serving it locally, and node-1's healthCheckNodePort turns 200 → 503 while its NodePort
    still reaches the pod."""
    if proxy_mode == "userspace":
        pytest.skip(NO_POLICIES_IN_USERSPACE)
    lab = lab_factory(objects=[LAB, client(1), client(2), SOLO, service("cluster", "solo", 80),
                               service("itp", "solo", 80, internalTrafficPolicy="Local"),
                               service("etp", "solo", 80, type="NodePort", externalTrafficPolicy="Local"),
                               service("lb", "solo", 80, type="LoadBalancer", externalTrafficPolicy="Local")],
                      mode=proxy_mode)
    n1, n2 = node_ip(lab, "node-1"), node_ip(lab, "node-2")
    lb = svc(lab, "lb")
    hc = lb.health_check_node_port

    def health(node: str) -> int | None:
        return connect.tcp_request(ns_of(lab, "client-1"), node, hc, path="/healthz", timeout=1.0).status

    assert hc
    wait_until(lambda: health(n1) == 200, timeout=10, message="node-1's healthCheckNodePort answers 200")
    assert health(n2) == 503
    _only_solo_terminating(lab)
    wait_until(lambda: health(n1) == 503, timeout=10, message="node-1's healthCheckNodePort turns 503")
    assert answered_by_solo(lab, "client-1", n1, lb.node_ports[0]) == ["solo"] * 5

    itp = svc(lab, "itp").cluster_ip
    assert answered_by_solo(lab, "client-1", itp, 80) == ["solo"] * 5
    assert answered_by_solo(lab, "client-2", itp, 80, times=2) == [""] * 2
    etp = svc(lab, "etp").node_ports[0]
    assert answered_by_solo(lab, "client-1", n2, etp, times=2) == [""] * 2  # external, no local endpoint
    assert answered_by_solo(lab, "client-1", n1, etp) == ["solo"] * 5
    assert answered_by_solo(lab, "client-2", n1, etp) == ["solo"] * 5

