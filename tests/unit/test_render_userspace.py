"""Golden tests for the userspace-mode renderer (testbed.render.userspace).

Rule text follows pkg/proxy/userspace/proxier.go (v1.2x): iptablesCommonPortalArgs writes
`-m comment --comment <svcPortName> -p <proto> -m <proto> --dport <port> [-d <ip>/32]`, container
portals REDIRECT to the proxy port, host portals DNAT to <nodeIP>:<proxyPort>, and the non-local
NodePort rule ACCEPTs the *proxy* port.
"""
import json

import pytest

from testbed.proxy import Endpoint, NodeView, ServicePort
from testbed.render import userspace as us
from testbed.userspace_proxy import read_table

N = "node-a"
NODE_IP = "192.168.0.10"


def V(*svcs):
    return NodeView(N, (NODE_IP,), services=svcs)


WEB = ServicePort("default", "web", "http", "TCP", 80, "10.96.0.20", endpoints=(
    Endpoint("10.244.1.2", 8080, node=N), Endpoint("10.244.2.7", 8080, node="node-b"),
    Endpoint("10.244.1.10", 8080, node=N), Endpoint("10.244.1.3", 8080, node=N, ready=False)))
NP = ServicePort("ns2", "np", "", "UDP", 53, "10.96.0.30", node_port=30053, session_affinity_timeout=600,
                 endpoints=(Endpoint("10.244.2.7", 5353, node="node-b"), Endpoint("10.244.1.2", 5353, node=N)))

PORTS = {"default/web:http/tcp": 36080, "ns2/np/udp": 36053}

GOLDEN = """\
*filter
:KUBE-NODEPORT-NON-LOCAL - [0:0]
-I INPUT 1 -m comment --comment "Ensure that non-local NodePort traffic can flow" -j KUBE-NODEPORT-NON-LOCAL
-A KUBE-NODEPORT-NON-LOCAL -m comment --comment ns2/np -p udp -m udp --dport 36053 -m state --state NEW -j ACCEPT
COMMIT
*nat
:KUBE-PORTALS-CONTAINER - [0:0]
:KUBE-PORTALS-HOST - [0:0]
:KUBE-NODEPORT-CONTAINER - [0:0]
:KUBE-NODEPORT-HOST - [0:0]
-I PREROUTING 1 -m comment --comment "handle ClusterIPs; NOTE: this must be before the NodePort rules" -j KUBE-PORTALS-CONTAINER
-I OUTPUT 1 -m comment --comment "handle ClusterIPs; NOTE: this must be before the NodePort rules" -j KUBE-PORTALS-HOST
-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "handle service NodePorts; NOTE: this must be the last rule in the chain" -j KUBE-NODEPORT-CONTAINER
-A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment "handle service NodePorts; NOTE: this must be the last rule in the chain" -j KUBE-NODEPORT-HOST
-A KUBE-PORTALS-CONTAINER -m comment --comment default/web:http -p tcp -m tcp --dport 80 -d 10.96.0.20/32 -j REDIRECT --to-ports 36080
-A KUBE-PORTALS-CONTAINER -m comment --comment ns2/np -p udp -m udp --dport 53 -d 10.96.0.30/32 -j REDIRECT --to-ports 36053
-A KUBE-PORTALS-HOST -m comment --comment default/web:http -p tcp -m tcp --dport 80 -d 10.96.0.20/32 -j DNAT --to-destination 192.168.0.10:36080
-A KUBE-PORTALS-HOST -m comment --comment ns2/np -p udp -m udp --dport 53 -d 10.96.0.30/32 -j DNAT --to-destination 192.168.0.10:36053
-A KUBE-NODEPORT-CONTAINER -m comment --comment ns2/np -p udp -m udp --dport 30053 -j REDIRECT --to-ports 36053
-A KUBE-NODEPORT-HOST -m comment --comment ns2/np -p udp -m udp --dport 30053 -j DNAT --to-destination 192.168.0.10:36053
COMMIT
"""


def test_golden_cluster_ip_and_node_port():
    p = us.plan(V(WEB, NP), PORTS)
    assert us.iptables_restore(p, NODE_IP) == GOLDEN


def test_without_jumps_only_the_chains_are_rewritten():
    text = us.iptables_restore(us.plan(V(WEB, NP), PORTS), NODE_IP, jumps=False)
    assert text == "\n".join(line for line in GOLDEN.splitlines() if not line.startswith("-I ")
                             and " PREROUTING " not in line and " OUTPUT " not in line) + "\n"


def test_issue_13270_rule_shape():
    """The rule from kube-proxy's error log in kubernetes/kubernetes#13270, reproduced exactly."""
    solr = ServicePort("default", "solr-service", "solr", "TCP", 8983, "10.0.72.20")
    text = us.iptables_restore(us.plan(V(solr), {"default/solr-service:solr/tcp": 42643}), NODE_IP)
    assert ("-A KUBE-PORTALS-CONTAINER -m comment --comment default/solr-service:solr -p tcp -m tcp --dport 8983 "
            "-d 10.0.72.20/32 -j REDIRECT --to-ports 42643") in text.splitlines()


def test_external_and_load_balancer_ips():
    lb = ServicePort("ns3", "lb", "p80", "TCP", 80, "10.96.0.40", external_ips=("192.168.99.22",),
                     load_balancer_ips=("203.0.113.10",), endpoints=(Endpoint("10.244.1.2", 8080, node=N),))
    text = us.iptables_restore(us.plan(V(lb), {"ns3/lb:p80/tcp": 36001}), NODE_IP, jumps=False)
    c = "-m comment --comment ns3/lb:p80 -p tcp -m tcp --dport 80"
    assert text == f"""\
*filter
:KUBE-NODEPORT-NON-LOCAL - [0:0]
COMMIT
*nat
:KUBE-PORTALS-CONTAINER - [0:0]
:KUBE-PORTALS-HOST - [0:0]
:KUBE-NODEPORT-CONTAINER - [0:0]
:KUBE-NODEPORT-HOST - [0:0]
-A KUBE-PORTALS-CONTAINER {c} -d 10.96.0.40/32 -j REDIRECT --to-ports 36001
-A KUBE-PORTALS-CONTAINER {c} -d 192.168.99.22/32 -m physdev ! --physdev-is-in -j REDIRECT --to-ports 36001
-A KUBE-PORTALS-CONTAINER {c} -d 192.168.99.22/32 -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 36001
-A KUBE-PORTALS-CONTAINER {c} -d 203.0.113.10/32 -j REDIRECT --to-ports 36001
-A KUBE-PORTALS-HOST {c} -d 10.96.0.40/32 -j DNAT --to-destination 192.168.0.10:36001
-A KUBE-PORTALS-HOST {c} -d 192.168.99.22/32 -m addrtype --dst-type LOCAL -j DNAT --to-destination 192.168.0.10:36001
-A KUBE-PORTALS-HOST {c} -d 203.0.113.10/32 -j DNAT --to-destination 192.168.0.10:36001
COMMIT
"""


def test_proxy_table():
    p = us.plan(V(WEB, NP), PORTS)
    web, np_ = p.service("default/web:http/tcp"), p.service("ns2/np/udp")
    # ready endpoints only, in kube-proxy's order (sorted by the "ip:port" string)
    assert web.endpoints == ("10.244.1.10:8080", "10.244.1.2:8080", "10.244.2.7:8080")
    assert (web.protocol, web.cluster_ip, web.port, web.node_port, web.affinity_timeout) == ("TCP", "10.96.0.20", 80, None, None)
    assert np_.endpoints == ("10.244.1.2:5353", "10.244.2.7:5353")
    assert (np_.name, np_.node_port, np_.affinity_timeout) == ("ns2/np", 30053, 600)
    assert p.udp_idle_timeout == 0.25 and p.shuffle is True


def test_endpoint_selection_edge_cases():
    # all unready -> serving+terminating fallback; traffic policies are not implemented by userspace
    term = ServicePort("d", "t", "", "TCP", 80, "10.96.0.50", internal_policy_local=True, endpoints=(
        Endpoint("10.244.2.9", 80, node="node-b", ready=False, serving=True, terminating=True),
        Endpoint("10.244.1.9", 80, node=N, ready=False, serving=False, terminating=True)))
    empty = ServicePort("d", "e", "", "TCP", 80, "10.96.0.51")
    p = us.plan(V(term, empty))
    assert p.service("d/t/tcp").endpoints == ("10.244.2.9:80",)
    assert p.service("d/e/tcp").endpoints == ()  # still proxied: connections are accepted and closed


def test_skipped_service_ports():
    headless = ServicePort("d", "h", "", "TCP", 80, None)
    sctp = ServicePort("d", "s", "", "SCTP", 80, "10.96.0.60")
    v6 = ServicePort("d", "v6", "", "TCP", 80, "fd00::10")
    assert us.plan(V(headless, sctp, v6)).services == ()


def test_affinity_zero_means_default():
    sp = ServicePort("d", "a", "", "TCP", 80, "10.96.0.70", session_affinity_timeout=0)
    assert us.plan(V(sp)).services[0].affinity_timeout == 10800


def test_proxy_ports_are_stable_and_deterministic():
    first = us.plan(V(WEB))
    lo, hi = us.PROXY_PORT_RANGE
    assert lo <= first.ports["default/web:http/tcp"] <= hi
    assert us.plan(V(WEB)).ports == first.ports  # deterministic without history
    second = us.plan(V(WEB, NP), first.ports)
    assert second.ports["default/web:http/tcp"] == first.ports["default/web:http/tcp"]
    assert second.ports["ns2/np/udp"] != second.ports["default/web:http/tcp"]
    # ports given are kept even if they are not the hashed choice; removed keys are released
    kept = us.plan(V(WEB, NP), {"default/web:http/tcp": 36500, "gone/svc/tcp": 36501})
    assert kept.ports["default/web:http/tcp"] == 36500 and "gone/svc/tcp" not in kept.ports
    third = us.plan(V(NP), second.ports)
    assert third.ports == {"ns2/np/udp": second.ports["ns2/np/udp"]}


def test_port_allocation_probes_and_exhausts():
    keys = [f"ns/s{i}/tcp" for i in range(3)]
    ports = us.allocate_ports(keys[:2], port_range=(36000, 36001))
    assert sorted(ports.values()) == [36000, 36001]
    assert us.allocate_ports(keys[:2], {keys[0]: 36001}, port_range=(36000, 36001)) == {keys[0]: 36001, keys[1]: 36000}
    with pytest.raises(RuntimeError, match="exhausted"):
        us.allocate_ports(keys, port_range=(36000, 36001))
    # a duplicated port in the history goes to the first key only
    dup = us.allocate_ports(keys[:2], {keys[0]: 36500, keys[1]: 36500})
    assert dup[keys[0]] == 36500 and dup[keys[1]] != 36500


def test_json_round_trip(tmp_path):
    lb = ServicePort("ns3", "lb", "p80", "TCP", 80, "10.96.0.40", external_ips=("192.168.99.22",),
                     load_balancer_ips=("203.0.113.10",), node_port=30080, session_affinity_timeout=30,
                     endpoints=(Endpoint("10.244.1.2", 8080, node=N),))
    p = us.plan(V(WEB, NP, lb), PORTS, shuffle=False, udp_idle_timeout=1.5)
    text = p.to_json()
    json.loads(text)
    assert us.UserspacePlan.from_json(text) == p
    assert us.UserspacePlan.from_json(text.encode()) == p
    assert us.UserspacePlan.from_json(json.loads(text)) == p
    assert us.iptables_restore(us.UserspacePlan.from_json(text), NODE_IP) == us.iptables_restore(p, NODE_IP)
    # the proxy process reads the same document
    f = tmp_path / "table.json"
    f.write_text(text)
    table = read_table(str(f))
    assert table["shuffle"] is False and table["udp_idle_timeout"] == 1.5
    assert table["services"]["ns3/lb:p80/tcp"]["proxy_port"] == p.ports["ns3/lb:p80/tcp"]
    assert list(table["services"]) == sorted(table["services"])


def test_jump_rules_and_cleanup_text():
    j = us.jump_rules()
    assert j["nat"][0] == ('-A PREROUTING -m comment --comment "handle ClusterIPs; NOTE: this must be before the '
                           'NodePort rules" -j KUBE-PORTALS-CONTAINER')
    clean = us.cleanup_restore()
    for chain in us.NAT_CHAINS + us.FILTER_CHAINS:
        assert f"-X {chain}" in clean.splitlines()
    assert sum(line.startswith("-D ") for line in clean.splitlines()) == 5
