"""Readiness decides who gets traffic; deleted pods terminate gracefully; liveness restarts; stale
UDP conntrack is cleaned up (and the bug comes back when the clean-up is turned off)."""
import copy

import pytest

from probes import connect, failover
from probes.poll import wait_until
from testbed.kernel import netns, wiring
from testbed.lab import Lab

pytestmark = pytest.mark.kernel

LAB = {"apiVersion": "testbed.dev/v1alpha1", "kind": "Lab", "metadata": {"name": "rd"},
       "spec": {"nodes": [{"name": "node-1"}, {"name": "node-2"}], "clients": []}}
CLIENT = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
          "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]}}


def deployment(replicas=3, readiness=None, liveness=None, grace=3, udp=False):
    container = {"name": "netexec", "ports": [{"name": "http", "containerPort": 9376}]}
    if udp:
        container["ports"].append({"name": "dns", "containerPort": 9376, "protocol": "UDP"})
    if readiness:
        container["readinessProbe"] = readiness
    if liveness:
        container["livenessProbe"] = liveness
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"terminationGracePeriodSeconds": grace, "containers": [container]}}}}


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
FAST_READINESS = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}


def web(cluster):
    return {p.name: p for p in cluster.pods if p.owner == "default/web"}


def svc(cluster, name="web"):
    return next(s for s in cluster.services if s.service.name == name)


def client_ns(lab):
    return wiring.pod_ns(lab.name, "default", "client")


def endpoint(cluster, pod):
    return next(e for eps in svc(cluster).endpoints for e in eps if e.ip == pod.ip)


def test_failing_readiness_removes_the_endpoint_and_passing_brings_it_back(lab_factory):
    lab = lab_factory(objects=[LAB, CLIENT, deployment(readiness=FAST_READINESS), SERVICE])
    wait_until(lambda: all(p.ready for p in web(Lab(lab.name).cluster()).values()), timeout=10, message="pods ready")
    victim = sorted(web(lab.cluster()).values(), key=lambda p: p.name)[0]
    lab.stage(victim.name, "unready")
    wait_until(lambda: not endpoint(Lab(lab.name).cluster(), victim).ready, timeout=10, message="endpoint unready")
    cluster = Lab(lab.name).cluster()
    e = endpoint(cluster, victim)
    assert (e.ready, e.serving, e.terminating) == (False, False, False)
    d = connect.distribution(client_ns(lab), svc(cluster).cluster_ip, 80, count=150)
    assert victim.name not in d.counts and not d.failures and len(d.counts) == 2
    # The server itself still answers: only the probe failed.
    assert connect.tcp_request(client_ns(lab), victim.ip, 9376).body == victim.name
    lab.stage(victim.name, "ready")
    wait_until(lambda: endpoint(Lab(lab.name).cluster(), victim).ready, timeout=10, message="endpoint ready again")
    d = connect.distribution(client_ns(lab), svc(cluster).cluster_ip, 80, count=150)
    assert victim.name in d.counts


def test_deleted_pod_terminates_for_its_grace_period_then_goes(lab_factory):
    lab = lab_factory(objects=[LAB, CLIENT, deployment(grace=3), SERVICE])
    victim = sorted(web(lab.cluster()).values(), key=lambda p: p.name)[0]
    report = lab.delete("pod", victim.name)
    assert len(report.added_pods) == 1 and report.removed_pods == []
    cluster = Lab(lab.name).cluster()
    e = endpoint(cluster, victim)
    assert (e.ready, e.serving, e.terminating) == (False, True, True)
    # Still serving when dialled directly, but no new connection through the Service reaches it.
    assert connect.tcp_request(client_ns(lab), victim.ip, 9376).body == victim.name
    d = connect.distribution(client_ns(lab), svc(cluster).cluster_ip, 80, count=150)
    assert victim.name not in d.counts and not d.failures
    wait_until(lambda: not netns.exists(wiring.pod_ns(lab.name, "default", victim.name)), timeout=10,
               message="terminated pod removed after its grace period")
    assert victim.name not in web(Lab(lab.name).cluster())


def test_only_terminating_endpoints_still_get_traffic(lab_factory):
    """kube-proxy falls back to serving-and-terminating endpoints when none is ready."""
    lab = lab_factory(objects=[LAB, CLIENT, deployment(replicas=1, grace=4), SERVICE])
    (victim,) = web(lab.cluster()).values()
    # Scale to zero: the only pod is terminating, and no replacement comes.
    scaled = copy.deepcopy(deployment(replicas=0, grace=4))
    lab.delete("pod", victim.name)
    lab_obj = Lab(lab.name)
    import tempfile

    import yaml
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(scaled, f)
    lab_obj.apply(f.name)
    cluster = Lab(lab.name).cluster()
    eps = [e for eps in svc(cluster).endpoints for e in eps]
    assert any(e.ip == victim.ip and e.terminating and e.serving and not e.ready for e in eps)
    r = connect.tcp_request(client_ns(lab), svc(cluster).cluster_ip, 80)
    assert r.ok and r.body == victim.name


def test_liveness_failure_restarts_the_server(lab_factory):
    liveness = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}
    lab = lab_factory(objects=[LAB, CLIENT, deployment(replicas=1, liveness=liveness), SERVICE])
    (pod,) = web(lab.cluster()).values()
    lab.stage(pod.name, "stop")
    wait_until(lambda: Lab(lab.name).saved["pods"][pod.key].get("restarts", 0) >= 1, timeout=10, message="restart")
    r = wait_until(lambda: (x := connect.tcp_request(client_ns(lab), pod.ip, 9376)).ok and x, timeout=5)
    assert r.body == pod.name


@pytest.mark.parametrize("with_probe", [False, True], ids=["no-readiness-probe", "readiness-probe"])
def test_failover_when_a_backend_dies(lab_factory, proxy_mode, with_probe):
    """The seed's claim: without a readiness probe the dead backend keeps its share of new connections
    (refused) in iptables/nftables/IPVS mode, while the userspace proxy retries another backend and the
    client sees no failure; with a probe, it is removed after the failure threshold in every mode.

    No deadline is guessed: with a probe, the timeline runs until the endpoint has left every node's
    rules (as the lab publishes it), then 1 s more, and the connections made after that must all be
    answered by the others. In userspace mode a connection the proxy had already relayed to the
    backend when it was killed breaks, as it did upstream: the proxy's log tells it apart."""
    from testbed.conformance import ProxyLogs, probe_timeout

    readiness = {"tcpSocket": {"port": "http"}, "periodSeconds": 1, "failureThreshold": 1} if with_probe else None
    lab = lab_factory(objects=[LAB, CLIENT, deployment(readiness=readiness), SERVICE], mode=proxy_mode)
    if with_probe:
        wait_until(lambda: all(p.ready for p in web(Lab(lab.name).cluster()).values()), timeout=10, message="ready")
    cluster = lab.cluster()
    victim = sorted(web(cluster).values(), key=lambda p: p.name)[0]
    logs = ProxyLogs(lab.name) if proxy_mode == "userspace" else None
    timeline = failover.failover(
        client_ns(lab), svc(cluster).cluster_ip, 80, lambda: lab.stage(victim.name, "stop"), before=0.3,
        after=1.0 if with_probe else 2.0, interval=0.02, timeout=probe_timeout(proxy_mode),
        settled=(lambda: not endpoint(Lab(lab.name).cluster(), victim).ready) if with_probe else None)
    # Sent once the kill was done (and, with a probe, once no node's rules had the endpoint).
    settled = timeline.settled_at if with_probe else timeline.change_took
    assert settled is not None, "the readiness probe did not remove the endpoint within 15 s"
    late = [s for s in timeline.samples if s.at > settled]
    assert late, "the probe kept sending"
    if with_probe or proxy_mode == "userspace":
        assert all(s.outcome == "answered" and s.backend != victim.name for s in late), \
            [s for s in late if s.outcome != "answered" or s.backend == victim.name][:3]
        assert timeline.recovery is not None
    else:
        refused = sum(s.outcome == "refused" for s in late)
        assert refused > 0, "a dead backend without a readiness probe must keep getting (refused) connections"
        assert all(s.outcome in ("answered", "refused") for s in late)
    if logs is not None:
        # userspace: the proxy retries the next endpoint, so the client never sees the dead one,
        # except a connection it had relayed there before the kill (upstream's copyBytes closes it).
        ep = f"{victim.ip}:{endpoint(cluster, victim).port}"
        failed = [s for s in timeline.samples if s.at >= 0 and s.outcome != "answered"]
        why = logs.explain(failed, ep, timeline.change_took)
        assert all(ok for ok, _ in why), why


UDP_SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"},
               "spec": {"selector": {"app": "web"},
                        "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}]}}


@pytest.mark.parametrize("cleanup", [True, False], ids=["conntrack-cleanup", "cleanup-off-reproduces-the-bug"])
def test_stale_udp_conntrack_after_the_backend_is_replaced(lab_factory, cleanup):
    lab_doc = copy.deepcopy(LAB)
    lab_doc["spec"]["conntrackCleanup"] = cleanup
    lab = lab_factory(objects=[lab_doc, CLIENT, deployment(replicas=1, grace=0, udp=True), UDP_SERVICE], mode="iptables")
    cluster = lab.cluster()
    (old,) = web(cluster).values()
    ip = svc(cluster, "dns").cluster_ip
    r = connect.udp_request(client_ns(lab), ip, 53, source_port=12345)
    assert r.ok and r.body == old.name
    lab.delete("pod", old.name)  # grace 0: gone at once, replaced by a pod with a new IP
    (new,) = web(Lab(lab.name).cluster()).values()
    assert new.ip != old.ip
    answers = [connect.udp_request(client_ns(lab), ip, 53, source_port=12345, timeout=0.5) for _ in range(4)]
    if cleanup:
        assert all(a.ok and a.body == new.name for a in answers), answers
    else:
        # The old conntrack entry still DNATs this source port to the dead pod: black-holed.
        assert all(a.outcome == "timeout" for a in answers), answers
        other = connect.udp_request(client_ns(lab), ip, 53, source_port=23456)
        assert other.ok and other.body == new.name  # a new source port is fine
