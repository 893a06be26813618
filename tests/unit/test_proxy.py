"""testbed.proxy.categorize_endpoints: kube-proxy's CategorizeEndpoints (pkg/proxy/topology.go).

Ready endpoints first, else the serving-and-terminating ones, separately for the cluster and the
local set; what the renderers send to (all_reachable) and whether the Service has any endpoint.
"""
from __future__ import annotations

from testbed.proxy import Endpoint as E
from testbed.proxy import ServicePort as SP
from testbed.proxy import NodeView, ProxyConfig, categorize, categorize_endpoints, external_policy_local, sort_endpoints

N = "node-a"


def sp(*eps, **kw) -> SP:
    return SP("ns", "svc", "", "TCP", 80, "10.96.0.10", endpoints=tuple(eps), **kw)


READY_THERE = E("10.244.2.5", 80, node="node-b")
TERM_HERE = E("10.244.1.5", 80, node=N, ready=False, serving=True, terminating=True)
TERM_THERE = E("10.244.2.6", 80, node="node-b", ready=False, serving=True, terminating=True)
GONE_HERE = E("10.244.1.6", 80, node=N, ready=False, serving=False, terminating=True)
UNREADY_HERE = E("10.244.1.7", 80, node=N, ready=False, serving=False)


def addrs(eps) -> list[str]:
    return [e.address for e in eps]


def test_cluster_falls_back_to_serving_terminating_endpoints():
    c = categorize_endpoints(sp(TERM_HERE, GONE_HERE, UNREADY_HERE), N)
    assert addrs(c.cluster) == [TERM_HERE.address]
    assert addrs(c.all_reachable) == [TERM_HERE.address]
    assert c.local == () and c.has_any


def test_ready_endpoints_win_over_terminating_ones():
    c = categorize_endpoints(sp(READY_THERE, TERM_HERE), N)
    assert addrs(c.cluster) == [READY_THERE.address]


def test_only_unready_or_not_serving_endpoints_is_no_endpoint():
    c = categorize_endpoints(sp(GONE_HERE, UNREADY_HERE), N)
    assert (c.cluster, c.local, c.all_reachable, c.has_any) == ((), (), (), False)


def test_internal_local_falls_back_to_local_terminating_endpoints():
    # iTP Local with no local ready endpoint: the local serving-terminating ones, never another node's.
    c = categorize_endpoints(sp(READY_THERE, TERM_HERE, GONE_HERE, internal_policy_local=True), N)
    assert c.cluster == ()
    assert addrs(c.local) == [TERM_HERE.address]
    assert addrs(c.all_reachable) == [TERM_HERE.address]
    assert c.has_any


def test_internal_local_without_any_local_endpoint_has_none_here_but_the_service_has_some():
    c = categorize_endpoints(sp(READY_THERE, TERM_THERE, internal_policy_local=True), N)
    assert (c.local, c.all_reachable) == ((), ())
    assert c.has_any  # "has no local endpoints" (DROP), not "has no endpoints" (REJECT)


def test_internal_local_ready_local_endpoint_beats_a_terminating_one():
    ready_here = E("10.244.1.9", 80, node=N)
    c = categorize_endpoints(sp(ready_here, TERM_HERE, internal_policy_local=True), N)
    assert addrs(c.local) == [ready_here.address]


def test_external_local_falls_back_to_local_terminating_endpoints():
    # eTP Local: the cluster set stays (short-circuit for pods and the node), local falls back to
    # the local serving-terminating ones, and all_reachable is the union of both.
    c = categorize_endpoints(sp(READY_THERE, TERM_HERE, GONE_HERE, node_port=30080, external_policy_local=True), N)
    assert addrs(c.cluster) == [READY_THERE.address]
    assert addrs(c.local) == [TERM_HERE.address]
    assert addrs(c.all_reachable) == sorted([READY_THERE.address, TERM_HERE.address])
    assert c.has_any


def test_external_local_with_a_local_ready_endpoint_reaches_the_cluster_set():
    ready_here = E("10.244.1.9", 80, node=N)
    c = categorize_endpoints(sp(READY_THERE, ready_here, TERM_HERE, node_port=30080, external_policy_local=True), N)
    assert addrs(c.local) == [ready_here.address]
    assert addrs(c.all_reachable) == addrs(c.cluster) == sorted([READY_THERE.address, ready_here.address])


def test_external_local_counts_a_local_terminating_endpoint_as_an_endpoint():
    # Only a local serving-terminating endpoint: the cluster set falls back to it too.
    c = categorize_endpoints(sp(TERM_HERE, node_port=30080, external_policy_local=True), N)
    assert addrs(c.cluster) == addrs(c.local) == addrs(c.all_reachable) == [TERM_HERE.address]
    assert c.has_any


def test_external_local_only_for_externally_accessible_ports():
    assert not external_policy_local(sp(external_policy_local=True))
    assert external_policy_local(sp(external_policy_local=True, external_ips=("192.0.2.1",)))
    assert external_policy_local(sp(external_policy_local=True, load_balancer_ips=("172.18.0.200",)))
    # A ClusterIP-only port with eTP Local: no local set at all.
    c = categorize_endpoints(sp(READY_THERE, TERM_HERE, external_policy_local=True), N)
    assert c.local == () and addrs(c.all_reachable) == [READY_THERE.address]


def test_endpoints_sort_by_their_address_string():
    eps = [E("10.0.0.2", 80), E("10.0.0.10", 80), E("10.0.0.10", 8080), E("fd00::1", 80)]
    assert addrs(sort_endpoints(eps)) == ["10.0.0.10:80", "10.0.0.10:8080", "10.0.0.2:80", "[fd00::1]:80"]


def test_internal_local_with_only_unusable_endpoints_has_none():
    # Not serving, or serving but neither ready nor terminating: "has no endpoints" (REJECT).
    serving_unready = E("10.244.1.8", 80, node=N, ready=False, serving=True)
    for eps in ((GONE_HERE,), (UNREADY_HERE,), (serving_unready,)):
        c = categorize_endpoints(sp(*eps, internal_policy_local=True), N)
        assert (c.local, c.has_any) == ((), False), eps


def test_categorize_renders_the_nodes_own_release():
    # Zone hints and no topology-mode annotation: used since 1.31, ignored by a 1.30 node.
    a, b = E("10.244.1.5", 80, node=N, zone_hints=("z1",)), E("10.244.2.5", 80, node="node-b", zone_hints=("z2",))
    for version, want in (((1, 30), [a, b]), ((1, 31), [a])):
        v = NodeView(N, ("172.18.0.2",), ProxyConfig(kube_proxy_version=version), zone="z1")
        assert addrs(categorize(v, sp(a, b)).cluster) == addrs(want), version
