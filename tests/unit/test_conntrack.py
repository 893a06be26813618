"""testbed.kernel.conntrack's pure part: parsing `conntrack -L`, and which UDP entries kube-proxy's
stale-flow reconciler (pkg/proxy/conntrack/cleanup.go) deletes. No root, no conntrack binary."""
from __future__ import annotations

from testbed.kernel.conntrack import Flow, parse, stale_udp
from testbed.proxy import Endpoint as E
from testbed.proxy import NodeView, ProxyConfig
from testbed.proxy import ServicePort as SP

CLIENT = "10.244.1.9"
OLD, NEW = "10.244.2.5", "10.244.2.6"


def view(*services: SP, version=None) -> NodeView:
    config = ProxyConfig(kube_proxy_version=version) if version else ProxyConfig()
    return NodeView("node-a", ("172.18.0.2",), config=config, services=services)


NEW_EP = (E(NEW, 53),)


def udp(eps=NEW_EP, protocol="UDP", **kw) -> SP:
    return SP("ns", "dns", "", protocol, 53, "10.96.0.10", endpoints=tuple(eps), **kw)


def flow(dst: str, dport: int, reply_src: str, proto: str = "udp") -> Flow:
    return Flow(proto, None, CLIENT, dst, 40000, dport, reply_src, CLIENT, 53, 40000)


def test_a_flow_to_a_gone_endpoint_is_stale_one_to_a_serving_endpoint_is_not():
    stale, live = flow("10.96.0.10", 53, OLD), flow("10.96.0.10", 53, NEW)
    assert stale_udp(view(udp()), [stale, live]) == [stale]


def test_a_flow_that_was_never_dnated_is_stale_once_the_service_has_endpoints():
    # Sent while the Service had no endpoint: the reply would come from the ClusterIP itself.
    f = flow("10.96.0.10", 53, "10.96.0.10")
    assert stale_udp(view(udp()), [f]) == [f]


def test_external_ips_load_balancer_ips_and_node_ports_are_service_destinations():
    sp = udp(external_ips=("192.0.2.7",), load_balancer_ips=("172.18.0.200",), node_port=30053)
    flows = [flow("192.0.2.7", 53, OLD), flow("172.18.0.200", 53, OLD), flow("172.18.0.2", 30053, OLD)]
    assert stale_udp(view(sp), flows) == flows
    # The same addresses on another port are no Service's: left alone.
    assert stale_udp(view(sp), [flow("192.0.2.7", 54, OLD), flow("172.18.0.200", 30054, OLD)]) == []


def test_upstreams_gaps_are_kept():
    """1.32 to 1.35 (the reconciler of #127318): what #139628 and #141371 report."""
    f = flow("10.96.0.10", 53, OLD)
    assert stale_udp(view(udp(eps=())), [f]) == []  # no endpoints at all: skipped (#139628)
    unserving = E(NEW, 53, ready=False, serving=False, terminating=True)
    assert stale_udp(view(udp(eps=(unserving,))), [f]) == []  # none serving: skipped too
    assert stale_udp(view(), [f]) == []  # a deleted Service: skipped


def test_a_terminating_serving_endpoint_still_counts_as_serving():
    term = E(NEW, 53, ready=False, serving=True, terminating=True)
    assert stale_udp(view(udp(eps=(term,))), [flow("10.96.0.10", 53, NEW)]) == []


def test_only_udp_services_and_udp_flows():
    tcp_flow = flow("10.96.0.10", 53, OLD, proto="tcp")
    assert stale_udp(view(udp()), [tcp_flow]) == []
    assert stale_udp(view(udp(protocol="TCP")), [flow("10.96.0.10", 53, OLD)]) == []


def test_parse_reads_both_tuples_the_state_mark_and_timeout():
    text = ("udp      17 28 src=10.244.1.9 dst=10.96.0.10 sport=40000 dport=53 src=10.244.2.5 dst=10.244.1.9 "
            "sport=53 dport=40000 mark=16384 use=1\n"
            "tcp      6 431999 ESTABLISHED src=10.244.1.9 dst=10.96.0.1 sport=5000 dport=443 "
            "src=172.18.0.2 dst=10.244.1.9 sport=6443 dport=5000 [ASSURED] mark=0 use=1\n"
            "conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.\n")
    u, t = parse(text)
    assert u == Flow("udp", None, CLIENT, "10.96.0.10", 40000, 53, OLD, CLIENT, 53, 40000, 16384, 28)
    assert u.dnat and not u.snat
    assert (t.proto, t.state, t.timeout, t.reply_sport, t.mark) == ("tcp", "ESTABLISHED", 431999, 6443, 0)


def test_before_1_32_a_service_scaled_to_zero_loses_the_flows_of_its_gone_endpoints():
    # The event-based clean-up of 1.31 deleted the flows DNATed to a deleted endpoint even when
    # none was left; as the reconciler with an empty set (#139629's fix) that is every flow to it.
    to_old, never_dnated = flow("10.96.0.10", 53, OLD), flow("10.96.0.10", 53, "10.96.0.10")
    other_port = flow("10.96.0.10", 54, OLD)
    assert stale_udp(view(udp(eps=()), version=(1, 31)), [to_old, never_dnated, other_port]) == [to_old, never_dnated]
    assert stale_udp(view(udp(eps=()), version=(1, 32)), [to_old]) == []
    unserving = E(NEW, 53, ready=False, serving=False, terminating=True)
    assert stale_udp(view(udp(eps=(unserving,)), version=(1, 31)), [to_old]) == [to_old]


def test_a_node_port_of_a_service_without_endpoints_is_cleaned_before_1_32():
    sp = udp(eps=(), node_port=30053)
    f = flow("172.18.0.2", 30053, OLD)
    assert stale_udp(view(sp, version=(1, 31)), [f]) == [f]
    assert stale_udp(view(sp), [f]) == []
