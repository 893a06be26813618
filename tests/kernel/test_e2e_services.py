"""Kubernetes' own e2e Service tests (test/e2e/network/service.go, conntrack.go) that the
conformance rows did not cover, replayed with real packets on a running lab in each proxy mode (docs/e2e-coverage.md).

Each test names the upstream test it follows; where the lab's outcome differs from upstream's the
docstring says why. Clients are pods on either node, as upstream's exec and pause pods are.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from probes import connect, dnsq
from probes.affinity import affinity
from probes.poll import wait_until
from testbed import state, supervisor
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


def test_session_affinity_expires_after_its_timeout_on_clusterip_and_nodeport(lab_factory, proxy_mode):
    """should have session affinity timeout work for service with type clusterIP and for NodePort
    service: sticky while requests keep coming; after an idle period longer than
    sessionAffinityConfig.clientIP.timeoutSeconds (2 s) a new connection may go elsewhere, and
    within 10 idle periods one does (upstream's execAffinityTestForSessionAffinityTimeout)."""
    timed = service("affinity-timeout", type="NodePort", sessionAffinity="ClientIP",
                    sessionAffinityConfig={"clientIP": {"timeoutSeconds": 2}})
    lab = lab_factory(objects=[LAB, client(1), WEB, timed], mode=proxy_mode)
    info = svc(lab, "affinity-timeout")
    for host, port in [(info.cluster_ip, 80), (node_ip(lab, "node-1"), info.node_ports[0])]:
        assert is_sticky(lab, host, port), (host, port)
        hosts = set()
        for _ in range(10):
            r = connect.tcp_request(ns_of(lab, "client-1"), host, port)
            assert r.ok and r.body in web_pods(lab), r
            hosts.add(r.body)
            if len(hosts) > 1:
                break
            # The stimulus, not a wait for a condition: the client stays idle past the timeout.
            time.sleep(3)
        assert len(hosts) > 1, (host, port, hosts)


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
OTHER_PROXY = {"service.kubernetes.io/service-proxy-name": "foo-bar"}


@pytest.mark.parametrize("label", [HEADLESS, OTHER_PROXY], ids=["headless", "service-proxy-name"])
def test_ignore_labels_created_and_toggled_on_a_running_service(lab_factory, proxy_mode, tmp_path, label):
    """should implement service.kubernetes.io/headless, and should implement
    service.kubernetes.io/service-proxy-name: a Service created with the label is never served
    although it has a ClusterIP; another one goes down when the label is added and up again when
    it is removed."""
    lab = lab_factory(objects=[LAB, client(1), WEB, service("service-disabled", labels=label),
                               service("service-toggled")], mode=proxy_mode)
    labelled, toggled = svc(lab, "service-disabled"), svc(lab, "service-toggled")
    assert labelled.cluster_ip and toggled.cluster_ip

    def up(info) -> bool:
        r = connect.tcp_request(ns_of(lab, "client-1"), info.cluster_ip, 80, timeout=1.0)
        assert r.ok == (r.body in web_pods(lab)), r
        return r.ok

    steps = [(up(toggled), up(labelled))]
    apply(lab, tmp_path, service("service-toggled", labels=label))
    steps.append((up(toggled), up(labelled)))
    apply(lab, tmp_path, service("service-toggled"))
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


PROBED = {**SOLO, "metadata": {"name": "webserver-pod", "labels": {"app": "probed"}},
          "spec": {**SOLO["spec"], "containers": [{"name": "c", "ports": [{"containerPort": 80}], "readinessProbe": {
              "httpGet": {"path": "/readyz", "port": 80}, "periodSeconds": 1, "failureThreshold": 1}}]}}


def test_terminating_and_unready_endpoint_is_used_only_with_publish_not_ready_addresses(lab_factory, proxy_mode):
    """should (not) be able to connect to terminating and unready endpoints if
    PublishNotReadyAddresses is true (false): the only pod fails its readiness probe and is
    deleted (upstream's pod is deleted, then netexec --delay-shutdown fails /readyz); its endpoint is ready for the publishing
    Service only (ready = publishNotReadyAddresses || (serving && !terminating)), so from a pod on
    the other node the ClusterIP and both NodePorts reach it there and nothing reaches it through
    the other Service."""
    lab = lab_factory(objects=[LAB, client(2), PROBED,
                               service("svc-tolerate-unready", "probed", 80, type="NodePort",
                                       publishNotReadyAddresses=True),
                               service("svc-not-tolerate-unready", "probed", 80, type="NodePort")],
                      mode=proxy_mode, ready=True)

    def conditions(name: str):
        return [(e.ready, e.serving, e.terminating) for eps in svc(lab, name).endpoints for e in eps]

    # Unready first, then deleted: the lab's prober stops probing a pod once it terminates (the
    # kubelet keeps probing it), so this order gives the endpoint upstream's conditions.
    lab.stage("webserver-pod", "unready")
    wait_until(lambda: conditions("svc-not-tolerate-unready") == [(False, False, False)], timeout=10,
               message="the pod turns unready")
    lab.delete("pod", "webserver-pod")
    assert conditions("svc-not-tolerate-unready") == [(False, False, True)]
    assert conditions("svc-tolerate-unready") == [(True, False, True)]
    for name, expect in [("svc-tolerate-unready", ["webserver-pod"] * 3), ("svc-not-tolerate-unready", [""] * 3)]:
        info = svc(lab, name)
        for host, port in [(info.cluster_ip, 80), (node_ip(lab, "node-1"), info.node_ports[0]),
                           (node_ip(lab, "node-2"), info.node_ports[0])]:
            got = [(r.body if (r := connect.tcp_request(ns_of(lab, "client-2"), host, port, timeout=1.5)).ok else "")
                   for _ in range(3)]
            assert got == expect, (name, host, port, got)


def test_publish_not_ready_addresses_toggled_on_an_unready_terminating_pod(lab_factory, proxy_mode, tmp_path):
    """should create endpoints for unready pods: an unready pod is reached through a Service with
    publishNotReadyAddresses; once it is terminating (upstream scales its RC to zero) and the field
    is turned off it is not, and turned on again it is reached again."""
    tolerate = service("tolerate-unready", "probed", 80, publishNotReadyAddresses=True)
    lab = lab_factory(objects=[LAB, client(2), PROBED, tolerate], mode=proxy_mode, ready=True)
    lab.stage("webserver-pod", "unready")
    wait_until(lambda: [e.serving for eps in svc(lab, "tolerate-unready").endpoints for e in eps] == [False],
               timeout=10, message="the pod turns unready")
    ip = svc(lab, "tolerate-unready").cluster_ip

    def reached() -> bool:
        r = connect.tcp_request(ns_of(lab, "client-2"), ip, 80, timeout=1.5)
        assert r.body in ("", "webserver-pod"), r
        return r.ok

    steps = [reached()]
    lab.delete("pod", "webserver-pod")
    steps.append(reached())
    apply(lab, tmp_path, service("tolerate-unready", "probed", 80, publishNotReadyAddresses=False))
    steps.append(reached())
    apply(lab, tmp_path, tolerate)
    steps.append(reached())
    assert steps == [True, True, False, True], steps


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



# ------------------------------------------------------------------ Services created, deleted, recreated


def test_services_up_and_down_and_recreated(lab_factory, proxy_mode, tmp_path):
    """should be able to up and down services, and should work after the service has been
    recreated: a deleted Service stops answering while another keeps answering; the same Service
    created again answers on its (new) ClusterIP."""
    lab = lab_factory(objects=[LAB, client(1), WEB, service("up-down-1"), service("up-down-2")], mode=proxy_mode)
    one, two = svc(lab, "up-down-1").cluster_ip, svc(lab, "up-down-2").cluster_ip
    backends = web_pods(lab)

    def up(ip: str) -> bool:
        r = connect.tcp_request(ns_of(lab, "client-1"), ip, 80, timeout=1.0)
        assert r.ok == (r.body in backends), r
        return r.ok

    assert (up(one), up(two)) == (True, True)
    lab.delete("service", "up-down-1")
    assert (up(one), up(two)) == (False, True)
    apply(lab, tmp_path, service("up-down-1"))
    again = svc(lab, "up-down-1").cluster_ip
    assert again != two and (up(again), up(two)) == (True, True)


def test_services_work_after_restarting_the_node_agent(lab_factory, proxy_mode, tmp_path):
    """should work after restarting kube-proxy [Disruptive]: the lab's per-node agent (its
    kube-proxy stand-in: health servers, :10256/:10249, the prober) is SIGKILLed; both Services
    keep answering, the next command starts the agent again, and a Service added after it is
    served beside them, each on its own ClusterIP."""
    lab = lab_factory(objects=[LAB, client(1), WEB, service("restart-proxy-1"), service("restart-proxy-2")],
                      mode=proxy_mode)
    ips = [svc(lab, n).cluster_ip for n in ("restart-proxy-1", "restart-proxy-2")]
    backends = web_pods(lab)

    def all_up(addresses) -> bool:
        got = [connect.tcp_request(ns_of(lab, "client-1"), ip, 80, timeout=1.0) for ip in addresses]
        return all(r.ok and r.body in backends for r in got)

    assert all_up(ips)
    old = state.read(lab.name)["agent"]
    os.kill(old["pid"], signal.SIGKILL)
    wait_until(lambda: supervisor.gone(old["pid"], old["start"]), timeout=15, message="agent dead")
    assert all_up(ips)
    apply(lab, tmp_path, service("restart-proxy-3"))
    new = state.read(lab.name)["agent"]
    assert new["pid"] != old["pid"] and supervisor.alive(new["pid"], new["start"])
    third = svc(lab, "restart-proxy-3").cluster_ip
    assert third not in ips and all_up(ips + [third])


# ------------------------------------------------------------------ one port number, two protocols


MULTIPROTOCOL_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pod1", "labels": {"app": "multiport"}},
                     "spec": {"nodeName": "node-2", "containers": [{"name": "c", "ports": [
                         {"name": "tcp-port", "containerPort": 80},
                         {"name": "udp-port", "containerPort": 80, "protocol": "UDP"}]}]}}
TCP80 = {"name": "tcp-port", "port": 80, "targetPort": 80, "protocol": "TCP"}
UDP80 = {"name": "udp-port", "port": 80, "targetPort": 80, "protocol": "UDP"}


def multiprotocol(*ports: dict, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "multiprotocol-test"},
            "spec": {"selector": {"app": "multiport"}, "ports": list(ports), **spec}}


def tcp_udp(lab, host: str, tcp: int, udp: int) -> tuple[bool, bool]:
    """(TCP answered by pod1, UDP answered by pod1)."""
    t = connect.tcp_request(ns_of(lab, "client-1"), host, tcp, timeout=1.0)
    u = connect.udp_request(ns_of(lab, "client-1"), host, udp, timeout=1.0)
    assert t.body in ("", "pod1") and u.body in ("", "pod1"), (t, u)
    return t.ok, u.ok


def test_same_port_two_protocols_then_one_then_the_other(lab_factory, proxy_mode, tmp_path):
    """[Conformance] should serve endpoints on same port and different protocols: TCP and UDP on
    80 both forward; with only the TCP port left UDP stops; with only UDP, TCP stops."""
    lab = lab_factory(objects=[LAB, client(1), MULTIPROTOCOL_POD, multiprotocol(TCP80, UDP80)], mode=proxy_mode)
    ip = svc(lab, "multiprotocol-test").cluster_ip
    seen = [tcp_udp(lab, ip, 80, 80)]
    apply(lab, tmp_path, multiprotocol(TCP80))
    seen.append(tcp_udp(lab, ip, 80, 80))
    apply(lab, tmp_path, multiprotocol(UDP80))
    seen.append(tcp_udp(lab, ip, 80, 80))
    assert seen == [(True, True), (True, False), (False, True)], seen


def test_clusterip_updated_to_nodeport_then_to_tcp_and_udp_on_one_port(lab_factory, proxy_mode, tmp_path):
    """should be able to update service type to NodePort listening on same port number but
    different protocols: ClusterIP → NodePort (TCP) → NodePort TCP+UDP on port 80; two NodePorts
    are allocated and both protocols answer on a node's address."""
    lab = lab_factory(objects=[LAB, client(1), MULTIPROTOCOL_POD, multiprotocol(TCP80)], mode=proxy_mode)
    apply(lab, tmp_path, multiprotocol(TCP80, type="NodePort"))
    info = svc(lab, "multiprotocol-test")
    n2 = node_ip(lab, "node-2")
    assert tcp_udp(lab, info.cluster_ip, 80, 80) == (True, False)
    assert connect.tcp_request(ns_of(lab, "client-1"), n2, info.node_ports[0]).body == "pod1"
    apply(lab, tmp_path, multiprotocol(TCP80, UDP80, type="NodePort"))
    info = svc(lab, "multiprotocol-test")
    assert len(info.node_ports) == 2 and all(info.node_ports), info.node_ports
    assert tcp_udp(lab, info.cluster_ip, 80, 80) == (True, True)
    assert tcp_udp(lab, n2, info.node_ports[0], info.node_ports[1]) == (True, True)


def test_load_balancer_with_one_port_over_tcp_and_udp_serves_both_inside_the_cluster(lab_factory, proxy_mode):
    """should serve endpoints on same port and different protocol for internal traffic on Type
    LoadBalancer: port 80 over TCP and UDP answers on the ClusterIP and on both NodePorts."""
    lab = lab_factory(objects=[LAB, client(1), MULTIPROTOCOL_POD, multiprotocol(TCP80, UDP80, type="LoadBalancer")],
                      mode=proxy_mode)
    info = svc(lab, "multiprotocol-test")
    assert tcp_udp(lab, info.cluster_ip, 80, 80) == (True, True)
    assert tcp_udp(lab, node_ip(lab, "node-1"), *info.node_ports) == (True, True)


# ------------------------------------------------------------------ externalIPs not on any node


def test_external_ip_not_assigned_to_a_node_is_reachable_from_a_pod(lab_factory, proxy_mode):
    """should be possible to connect to a service via ExternalIP when the external IP is not
    assigned to a node: 203.0.113.250 (TEST-NET-3) is on no interface; a pod's connection to it is
    captured by its node's rules and reaches a backend."""
    lab = lab_factory(objects=[LAB, client(1), WEB, service("externalip-test", externalIPs=["203.0.113.250"])],
                      mode=proxy_mode)
    got = [connect.tcp_request(ns_of(lab, "client-1"), "203.0.113.250", 80, timeout=1.5) for _ in range(3)]
    if proxy_mode == "userspace":
        # The userspace proxier's portal for a non-local external IP matched `-m physdev
        # ! --physdev-is-in`: a pod's packets come in through a bridge port, so they are not
        # captured; routed out and unanswered, as upstream's was.
        assert [r.outcome for r in got] == ["timeout"] * 3, got
    else:
        assert all(r.ok and r.body in web_pods(lab) for r in got), got


# ------------------------------------------------------------------ iTP Local and host-network pods


def hn_client(name: str, node: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"hostNetwork": True, "nodeName": f"node-{node}", "containers": [{"name": "c"}]}}


def test_itp_local_from_host_network_pods_and_to_a_host_network_endpoint(lab_factory, proxy_mode):
    """should respect internalTrafficPolicy=Local Pod (hostNetwork: true) to Pod, and Pod and
    Node, to Pod (hostNetwork: true): clients on the endpoint's node (pod or host-network pod)
    reach it through the ClusterIP, clients on the other node get no answer."""
    if proxy_mode == "userspace":
        pytest.skip(NO_POLICIES_IN_USERSPACE)
    hn_server = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo-hostname-hn", "labels": {"app": "hn"}},
                 "spec": {"hostNetwork": True, "nodeName": "node-1",
                          "containers": [{"name": "c", "ports": [{"containerPort": 10180}]}]}}
    lab = lab_factory(objects=[LAB, client(1), client(2), hn_client("pause-pod-0", 1), hn_client("pause-pod-1", 2),
                               SOLO, hn_server,
                               service("svc-itp", "solo", 80, internalTrafficPolicy="Local"),
                               service("svc-itp-hn", "hn", 10180, internalTrafficPolicy="Local")], mode=proxy_mode)
    hosts = {"pause-pod-0": wiring.host_ns(lab.name, "node-1"), "pause-pod-1": wiring.host_ns(lab.name, "node-2"),
             "client-1": ns_of(lab, "client-1"), "client-2": ns_of(lab, "client-2")}

    def answers(src: str, name: str) -> list[str]:
        ip = svc(lab, name).cluster_ip
        return [(r.body if (r := connect.tcp_request(hosts[src], ip, 80, timeout=1.5)).ok else "") for _ in range(3)]

    # to a pod endpoint (solo on node-1), from host-network pods
    assert answers("pause-pod-0", "svc-itp") == ["solo"] * 3
    assert answers("pause-pod-1", "svc-itp") == [""] * 3
    # to a host-network endpoint. Upstream expects the node's name (the pod shares the node's UTS
    # namespace); the lab's netexec answers with the pod's name (docs/e2e-coverage.md).
    for src in ("client-1", "pause-pod-0"):
        assert answers(src, "svc-itp-hn") == ["echo-hostname-hn"] * 3, src
    for src in ("client-2", "pause-pod-1"):
        assert answers(src, "svc-itp-hn") == [""] * 3, src


# ------------------------------------------------------------------ conntrack (conntrack.go)


UDP_WEB = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pod-server-1", "labels": {"app": "udp"}},
           "spec": {"nodeName": "node-2", "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "UDP"}]}]}}


def test_udp_traffic_preserved_when_the_server_pod_cycles_behind_a_nodeport(lab_factory, proxy_mode, tmp_path):
    """Conntrack: should be able to preserve UDP traffic when server pod cycles for a NodePort
    service (and for a ClusterIP one): a client on node-1 keeps one source port (12345) towards
    node-2's NodePort and the ClusterIP; the backend is replaced by a second pod; the stale
    conntrack entries are cleared so the same flow reaches the new pod."""
    udp_svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc-udp"},
               "spec": {"type": "NodePort", "selector": {"app": "udp"},
                        "ports": [{"name": "udp", "port": 80, "targetPort": 80, "protocol": "UDP"}]}}
    lab = lab_factory(objects=[LAB, client(1), UDP_WEB, udp_svc], mode=proxy_mode)
    info = svc(lab, "svc-udp")
    flows = {"NodePort": (node_ip(lab, "node-2"), info.node_ports[0], 12345), "ClusterIP": (info.cluster_ip, 80, 12346)}

    def hostnames() -> dict[str, str]:
        out = {}
        for kind, (host, port, sport) in flows.items():
            r = connect.udp_request(ns_of(lab, "client-1"), host, port, source_port=sport, timeout=1.0)
            out[kind] = r.body if r.ok else r.outcome
        return out

    assert hostnames() == {"NodePort": "pod-server-1", "ClusterIP": "pod-server-1"}
    second = {**UDP_WEB, "metadata": {"name": "pod-server-2", "labels": {"app": "udp"}}}
    apply(lab, tmp_path, second)
    lab.delete("pod", "pod-server-1", grace=0)
    assert hostnames() == {"NodePort": "pod-server-2", "ClusterIP": "pod-server-2"}


def test_udp_flow_started_while_the_only_endpoint_is_unready_reaches_it_once_ready(lab_factory, proxy_mode):
    """Conntrack: should be able to preserve UDP traffic when initial unready endpoints get ready
    (#105657): a client keeps one source port towards the ClusterIP while the only pod is still
    unready (readiness probe after 3 s); once it turns ready the same flow reaches it."""
    unready = {**UDP_WEB, "spec": {**UDP_WEB["spec"], "containers": [{
        "name": "c", "ports": [{"name": "udp", "containerPort": 80, "protocol": "UDP"},
                               {"name": "http", "containerPort": 8080}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 3, "periodSeconds": 1}}]}}
    udp_svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc-udp"},
               "spec": {"selector": {"app": "udp"}, "ports": [{"port": 80, "targetPort": 80, "protocol": "UDP"}]}}
    lab = lab_factory(objects=[LAB, client(1), unready, udp_svc], mode=proxy_mode)
    ip = svc(lab, "svc-udp").cluster_ip

    def poke():
        return connect.udp_request(ns_of(lab, "client-1"), ip, 80, source_port=12345, timeout=0.3)

    first = poke()
    assert not first.ok, ("answered before the pod was ready", first)
    r = wait_until(lambda: (x := poke()).ok and x, timeout=20, message="the UDP flow reaches the ready pod")
    assert r.body == "pod-server-1"
