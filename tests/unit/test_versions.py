"""kube-proxy versions (testbed.versions): each switch is rendered where it belongs, and whole dumps
of older releases match that release's own unit-test expectations.

nftables: upstream's TestOverallNFTablesRules at three trees — 1.30 (the v1.30 tree the issue's
v1.30.3 run matched, kubernetes@803d40a5), the 1.33 tree (aojea/kubernetes@492140ae: element
storage of #130119, before #131492) and 1.34/1.35 (kubernetes@81810de6, test_render_nftables.py).
"""
import dataclasses

import pytest

from testbed import versions
from testbed.errors import TopologyError
from testbed.proxy import Endpoint as E
from testbed.proxy import NodeView, ProxyConfig
from testbed.proxy import ServicePort as SP
from testbed.render import iptables as ipt
from testbed.render import ipvs
from testbed.render import nftables as nft
from tests.unit.test_render_nftables import UPSTREAM_BASE_LINES, UPSTREAM_SERVICE_LINES, UPSTREAM_VIEW


def at(view, version, **cfg):
    return dataclasses.replace(view, config=dataclasses.replace(view.config, kube_proxy_version=version, **cfg))


# --- the table itself ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("1.31", (1, 31)), ("v1.31.2", (1, 31)), ("v1.30.3-eks-a1b2c3", (1, 30)), (1.31, (1, 31)), ((1, 29), (1, 29)),
])
def test_parse(text, want):
    assert versions.parse(text) == want


@pytest.mark.parametrize("bad, says", [
    (1.3, "YAML reads 1.30 as the number 1.3"), ("one.two", "expected a version such as"), ("1", "expected"),
])
def test_parse_refuses_with_what_was_expected(bad, says):
    with pytest.raises(ValueError, match=says):
        versions.parse(bad)


def test_every_switch_flips_between_neighbouring_releases():
    """One documented change each: on in `since`, off in the release before (and after `until`)."""
    for s in versions.SWITCHES:
        assert versions.on(s.name, s.since)
        assert not versions.on(s.name, (s.since[0], s.since[1] - 1))
        if s.until:
            assert versions.on(s.name, (s.until[0], s.until[1] - 1)) and not versions.on(s.name, s.until)
        assert s.what and s.change and s.evidence


def test_versions_past_the_newest_behave_as_the_newest_and_say_so():
    assert versions.switches((1, 37)) == versions.switches(versions.NEWEST)
    assert "rendered as 1.35" in versions.notes((1, 36), "iptables")[0]
    assert "#135800" in versions.notes((1, 36), "nftables")[0]
    assert versions.notes((1, 30), "nftables") == []
    assert "not established" in versions.notes((1, 29), "nftables")[0]


def test_most_common_version_of_the_nodes():
    assert versions.most_common(["v1.30.3", "v1.31.1", "v1.30.4"]) == "1.30"
    assert versions.most_common(["v1.30.3", "v1.31.1"]) == "1.31"  # a tie: the newest
    assert versions.most_common(["junk"]) is None


# --- nftables ----------------------------------------------------------------------------------------

# Upstream's expected dump for TestOverallNFTablesRules in the 1.30 tree (kubernetes@803d40a5,
# proxier_test.go), verbatim: the base rules, then "# svc1" .. "# svc6".
UPSTREAM_130_LINES = """\
add table ip kube-proxy { comment "rules for kube-proxy" ; }
add chain ip kube-proxy mark-for-masquerade
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
add chain ip kube-proxy masquerading
add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x4000
add rule ip kube-proxy masquerading masquerade fully-random
add chain ip kube-proxy services
add chain ip kube-proxy service-endpoints-check
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
add chain ip kube-proxy filter-prerouting { type filter hook prerouting priority -110 ; }
add rule ip kube-proxy filter-prerouting ct state new jump firewall-check
add chain ip kube-proxy filter-forward { type filter hook forward priority -110 ; }
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add chain ip kube-proxy filter-input { type filter hook input priority -110 ; }
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add chain ip kube-proxy filter-output { type filter hook output priority -110 ; }
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump firewall-check
add chain ip kube-proxy filter-output-post-dnat { type filter hook output priority -90 ; }
add rule ip kube-proxy filter-output-post-dnat ct state new jump cluster-ips-check
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add rule ip kube-proxy nat-output jump services
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add rule ip kube-proxy nat-postrouting jump masquerading
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add rule ip kube-proxy nat-prerouting jump services
add chain ip kube-proxy nodeport-endpoints-check
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add chain ip kube-proxy cluster-ips-check
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }
add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
add chain ip kube-proxy firewall-check
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add rule ip kube-proxy reject-chain reject
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add element ip kube-proxy nodeport-ips { 192.168.0.2 }
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }
add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 ip daddr 172.30.0.42 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 }
add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
add chain ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 ip saddr 10.180.0.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 meta l4proto tcp dnat to 10.180.0.2:80
add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }
add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 }
add chain ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80
add chain ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80
add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }
add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 ip daddr 172.30.0.44 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }
add chain ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 goto service-LAUZTJTB-ns4/svc4/tcp/p80
add chain ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 ip saddr 10.180.0.5 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 meta l4proto tcp dnat to 10.180.0.5:80
add chain ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 ip saddr 10.180.0.4 jump mark-for-masquerade
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 meta l4proto tcp dnat to 10.180.0.4:80
add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.33 . tcp . 80 : goto external-LAUZTJTB-ns4/svc4/tcp/p80 }
add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add chain ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip daddr 172.30.0.45 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 }
add chain ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 goto service-HVFWP5L3-ns5/svc5/tcp/p80
add chain ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80
add chain ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop
add element ip kube-proxy cluster-ips { 172.30.0.45 }
add element ip kube-proxy service-ips { 172.30.0.45 . tcp . 80 : goto service-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-ips { 5.6.7.8 . tcp . 80 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3002 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 comment "ns5/svc5:p80" : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy cluster-ips { 172.30.0.46 }
add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
"""
# The 1.33 tree's dump (aojea/kubernetes@492140ae) has the same lines, but for the firewall-ips
# element, which lost its comment.
_FW_130 = 'add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 comment "ns5/svc5:p80" : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }'
_FW_133 = "add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }"
UPSTREAM_133_LINES = UPSTREAM_130_LINES.replace(_FW_130, _FW_133)
# What our transaction has besides upstream's dump: flushes, deletes and the base chains' re-add.
_OURS_ONLY = {"add chain ip kube-proxy " + c for c in (
    "nat-prerouting", "nat-output", "nat-postrouting")}


def _per_chain(lines):
    out = {}
    for line in lines:
        if line.startswith("add rule "):
            out.setdefault(line.split()[4], []).append(line)
    return out


@pytest.mark.parametrize("version, upstream, filters", [
    ((1, 30), UPSTREAM_130_LINES, ("filter-prerouting", "filter-input", "filter-forward", "filter-output",
                                   "filter-output-post-dnat")),
    ((1, 33), UPSTREAM_133_LINES, ("filter-prerouting", "filter-input", "filter-forward", "filter-output",
                                   "filter-output-post-dnat")),
    ((1, 34), UPSTREAM_BASE_LINES + UPSTREAM_SERVICE_LINES,
     ("filter-prerouting-pre-dnat", "filter-output-pre-dnat", "filter-forward", "filter-input", "filter-output")),
], ids=["1.30", "1.33", "1.34"])
def test_nftables_overall_dump_of_each_release(version, upstream, filters):
    """Every line of that release's expected dump is in our transaction, in its per-chain order;
    what we add besides is only flush/delete operations and the base chains' first-sync re-add."""
    ours = [line.replace("0x00004000", "0x4000") for line in nft.render(at(UPSTREAM_VIEW, version)).splitlines()]
    theirs = upstream.splitlines()
    assert set(theirs) - set(ours) == set()
    extra = {line for line in set(ours) - set(theirs) if not line.startswith(("flush ", "delete "))}
    assert extra == _OURS_ONLY | {f"add chain ip kube-proxy {c}" for c in filters}
    mine = _per_chain(ours)
    for chain, rules in _per_chain(theirs).items():
        assert mine[chain] == rules, chain


def test_nftables_masquerade_all_keeps_the_port_match_before_1_34():
    sp = UPSTREAM_VIEW.services[0]
    view = NodeView("n", ("192.168.0.2",), ProxyConfig(masquerade_all=True), (sp,))
    old, new = nft.render(at(view, (1, 33))), nft.render(at(view, (1, 34)))
    assert "ip daddr 172.30.0.41 tcp dport 80 jump mark-for-masquerade" in old
    assert "ip daddr 172.30.0.41 jump mark-for-masquerade" in new


def test_nftables_needs_1_29():
    with pytest.raises(TopologyError, match="kube-proxy 1.28 has no nftables mode"):
        nft.render(at(UPSTREAM_VIEW, (1, 28)))


def test_a_version_change_is_a_full_sync():
    """The base chains differ: the next sync re-creates the table's base part."""
    text, state = nft.sync(None, at(UPSTREAM_VIEW, (1, 33)))
    text2, _ = nft.sync(state, at(UPSTREAM_VIEW, (1, 34)))
    assert text2.startswith('add table ip kube-proxy { comment "rules for kube-proxy" ; }')
    assert "add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }" in text2


# --- iptables ----------------------------------------------------------------------------------------

SVC = SP("ns1", "svc1", "p80", "TCP", 80, "172.30.0.41", node_port=3001, endpoints=(E("10.180.0.1", 80),))
VIEW = NodeView("n", ("192.168.0.2",), ProxyConfig(cluster_cidr="10.0.0.0/8"), (SVC,))


@pytest.mark.parametrize("version, invalid, localhost", [
    ((1, 29), False, False), ((1, 30), True, False), ((1, 31), True, True),
])
def test_iptables_nfacct_counters_by_release(version, invalid, localhost):
    text = ipt.render(at(VIEW, version), nfacct=True)
    assert ("-m nfacct --nfacct-name ct_state_invalid_dropped_pkts" in text) == invalid
    assert ("--nfacct-name localhost_nps_accepted_pkts" in text) == localhost


@pytest.mark.parametrize("version, dropped", [((1, 28), True), ((1, 29), False)])
def test_iptables_invalid_drop_under_tcp_be_liberal(version, dropped):
    text = ipt.render(at(VIEW, version, conntrack_tcp_be_liberal=True))
    assert ("--ctstate INVALID -j DROP" in text) == dropped


def test_iptables_default_release_is_unchanged():
    assert ipt.render(VIEW) == ipt.render(at(VIEW, versions.DEFAULT))


# --- IPVS --------------------------------------------------------------------------------------------

LB = SP("ns1", "lb", "p80", "TCP", 80, "172.30.0.42", node_port=3002, load_balancer_ips=("5.6.7.8",),
        load_balancer_source_ranges=("203.0.113.0/25",), endpoints=(E("10.180.0.1", 80),))


@pytest.mark.parametrize("version, present", [((1, 28), False), ((1, 29), True)])
def test_ipvs_out_filter_since_1_29(version, present):
    plan = ipvs.plan(at(NodeView("n", ("192.168.0.2",), ProxyConfig(), (LB,)), version))
    assert (":KUBE-IPVS-OUT-FILTER - [0:0]" in plan.iptables) == present
    assert ("-A KUBE-IPVS-OUT-FILTER -s 5.6.7.8 -m ipvs --vaddr 5.6.7.8" in plan.iptables) == present
    assert any(j[3] == "KUBE-IPVS-OUT-FILTER" for j in plan.jumps) == present


# --- where a version comes from: the Lab document, the dump's nodes, the command line -----------

from pathlib import Path  # noqa: E402

from testbed import model  # noqa: E402
from testbed.control import reconcile  # noqa: E402

KIND = Path(__file__).resolve().parent.parent / "fixtures" / "replay" / "kind.yaml"
LAB = """\
apiVersion: testbed.dev/v1alpha1
kind: Lab
metadata: {name: v}
spec:
  kubeProxy: {version: %s}
  nodes: [{name: node-1}, {name: node-2, kubeProxyVersion: v1.33.2}]
"""


def test_the_lab_document_pins_the_version_and_a_node_may_run_its_own():
    topo = model.load_text(LAB % '"1.31"', file="lab.yaml")
    assert topo.lab.kube_proxy_version == "1.31"
    cluster, _ = reconcile(topo)
    assert cluster.node_view("node-1").config.kube_proxy_version == (1, 31)
    assert cluster.node_view("node-2").config.kube_proxy_version == (1, 33)
    # A running lab keeps both: the Lab document it writes reads back the same.
    again = model.parse_documents([model.lab_document(topo.lab)], "kept.yaml")
    assert again.lab.kube_proxy_version == "1.31"
    assert [n.kube_proxy_version for n in again.lab.nodes] == [None, "1.33"]


@pytest.mark.parametrize("value, says", [
    ("1.3", 'spec.kubeProxy.version: expected a kube-proxy version such as "1.30" (quoted'),
    ('"latest"', "spec.kubeProxy.version: expected a kube-proxy version such as \"1.31\""),
])
def test_a_bad_version_names_the_file_the_field_and_what_was_expected(value, says):
    with pytest.raises(TopologyError, match=r"lab\.yaml: Lab v \(document 1\): " + says.replace("(", r"\(")):
        model.load_text(LAB % value, file="lab.yaml")


def test_no_version_is_the_newest_testbed_knows():
    cluster, _ = reconcile(model.load_text(LAB.replace("  kubeProxy: {version: %s}\n", ""), file="lab.yaml"))
    assert cluster.node_view("node-1").config.kube_proxy_version == versions.DEFAULT


def test_a_dump_renders_as_its_nodes_kube_proxy_and_says_so():
    topo = model.load_file(KIND)  # three kind nodes, status.nodeInfo.kubeProxyVersion v1.30.3
    assert topo.lab.kube_proxy_version == "1.30"
    assert any(x.startswith("kubeProxy.version 1.30 (the Node objects'") for x in topo.lab.inferred)
    cluster, _ = reconcile(topo)
    view = cluster.node_view("kind-worker")
    assert view.config.kube_proxy_version == (1, 30)
    assert "filter-output-post-dnat" in nft.render(view)
    assert view.config.service_cidrs == ()  # 1.30 read no ServiceCIDR objects: no "unallocated" drop


def test_nodes_of_different_releases_each_render_their_own():
    text = KIND.read_text().replace("kubeProxyVersion: v1.30.3", "kubeProxyVersion: v1.34.1", 1)
    topo = model.load_text(text, file="kind.yaml")
    cluster, _ = reconcile(topo)
    got = {n.name: cluster.node_view(n.name).config.kube_proxy_version for n in cluster.nodes}
    assert sorted(got.values()) == [(1, 30), (1, 30), (1, 34)]
    assert topo.lab.kube_proxy_version == "1.30"
    assert any("render their own" in x for x in topo.lab.inferred)
    assert any("(nodes " in n for n in cluster.version_notes("nftables")) is False  # 1.30 and 1.34: both checked


def test_the_command_line_wins_over_the_lab_and_the_nodes():
    topo = model.with_kube_proxy_version(model.load_file(KIND), "v1.34.0")
    cluster, _ = reconcile(topo)
    assert {cluster.node_view(n.name).config.kube_proxy_version for n in cluster.nodes} == {(1, 34)}
    with pytest.raises(TopologyError, match="--kube-proxy-version: expected a kube-proxy version"):
        model.with_kube_proxy_version(topo, "soon")


def test_a_lab_pin_wins_over_the_dumped_nodes():
    pin = "apiVersion: testbed.dev/v1alpha1\nkind: Lab\nmetadata: {name: kind}\nspec: {kubeProxy: {version: '1.34'}}\n---\n"
    topo = model.load_text(pin + KIND.read_text(), file="kind.yaml")
    cluster, _ = reconcile(topo)
    assert {cluster.node_view(n.name).config.kube_proxy_version for n in cluster.nodes} == {(1, 34)}


def test_deprecations_are_said_where_they_apply():
    topo = model.with_kube_proxy_version(model.load_file(model.builtin("service-types")), "1.36")
    notes = reconcile(topo)[0].version_notes("ipvs")
    assert any("IPVS mode is deprecated since 1.35" in n for n in notes)
    assert any("spec.externalIPs is deprecated since 1.36 (KEP-5707): default/ext" in n for n in notes)
    assert not any("deprecated" in n for n in reconcile(topo)[0].version_notes("iptables")
                   if "IPVS" in n)
    old = reconcile(model.with_kube_proxy_version(topo, "1.34"))[0].version_notes("ipvs")
    assert not any("deprecated" in n for n in old)


# --- rows and the matrix at several releases --------------------------------------------------------

from testbed import verify  # noqa: E402
from testbed.conformance import Cell, Row, by_mode  # noqa: E402


def test_a_rows_expectation_by_release():
    r = Row("x", "node/n", "tcp", "lb/l:80", expect={"nftables<1.34": "dropped", "<1.30": "refused", "*": "answered"})
    assert r.expected("nftables", (1, 33)) == "dropped"  # the mode's bound first
    assert r.expected("nftables", (1, 29)) == "dropped"
    assert r.expected("iptables", (1, 29)) == "refused"
    assert r.expected("nftables", (1, 34)) == r.expected("iptables", (1, 35)) == "answered"
    assert by_mode({"<1.31": "svc", "<1.35": "zone", "*": None}, "ipvs", (1, 30), None) == "svc"  # the lowest bound


def test_verify_runs_each_mode_once_per_release_side_by_side(monkeypatch):
    runs = []

    def fake_run_mode(path, mode, matrix, progress=None, name=None, options=None, version=None):
        runs.append((mode, version))
        matrix.put("row", verify.column(mode, version), Cell("pass", "ok"))

    monkeypatch.setattr(verify, "run_mode", fake_run_mode)
    m = verify.verify(None, ["iptables", "nftables"], kube_proxy_versions=["1.28", "1.35"])
    assert m.modes == ["iptables 1.28", "iptables 1.35", "nftables 1.28", "nftables 1.35"]
    assert sorted(runs) == [("iptables", "1.28"), ("iptables", "1.35"), ("nftables", "1.28"), ("nftables", "1.35")]
    assert verify.verify(None, ["iptables"]).modes == ["iptables"]


def test_a_release_without_the_mode_is_a_skipped_column():
    m = verify.Matrix(["nftables 1.28"])
    verify.run_mode(None, "nftables", m, version="1.28")
    assert m.rows[verify.BUILD_ROW]["nftables 1.28"].status == "skip"
    assert "no nftables mode" in m.rows[verify.BUILD_ROW]["nftables 1.28"].reason


def test_the_docs_table_names_every_switch():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "versions.md").read_text()
    for s in versions.SWITCHES:
        assert f"`{s.name}`" in doc, s.name


def test_render_says_what_the_release_means(capsys):
    from testbed import cli
    assert cli.main(["render", str(model.builtin("default")), "--mode", "ipvs", "--node", "node-1",
                     "--kube-proxy-version", "v1.36.1"]) == 0
    out, err = capsys.readouterr()
    assert "-A KUBE-SERVICES" in out
    assert "kube-proxy versions:" in err and "rendered as 1.35" in err and "IPVS mode is deprecated" in err
    assert cli.main(["render", "--mode", "nftables", "--kube-proxy-version", "1.28"]) == 2
    assert "kube-proxy 1.28 has no nftables mode" in capsys.readouterr().err


def test_diff_against_a_node_of_another_release():
    """The fixture node ran the 1.34 tree's rules: against 1.33 its base chains and masquerade rules
    differ, and the report says which release was expected."""
    from testbed import diff
    fix = Path(__file__).resolve().parents[1] / "fixtures" / "rules"
    now = str(fix / "now.yaml")
    assert diff.run(now, "node-1", [str(fix / "nft-ruleset.txt")]).exit_code == 0
    report = diff.run(now, "node-1", [str(fix / "nft-ruleset.txt")], kube_proxy_version="1.33")
    assert report.exit_code == 1
    assert any(g.status != "same" for g in report.groups)
    assert report.notes[0].startswith("expected: kube-proxy 1.33's rules")


def test_an_unfixed_invalid_drop_leaves_only_that_rule_out():
    fixed = ipt.render(VIEW)
    unfixed = ipt.render(at(VIEW, versions.DEFAULT, unfixed=frozenset({versions.INVALID_DROP})))
    assert "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP" in fixed
    assert [line for line in fixed.splitlines() if "--ctstate INVALID -j DROP" not in line] == unfixed.splitlines()


def test_the_lab_takes_unfixed_and_tcp_be_liberal_into_every_nodes_config():
    from testbed import model
    from testbed.control import reconcile
    text = ("apiVersion: testbed.dev/v1alpha1\nkind: Lab\nmetadata: {name: f}\n"
            "spec: {kubeProxy: {unfixed: [invalid-drop, invalid-drop], conntrack: {tcpBeLiberal: true}}}\n")
    topo = model.load_text(text, file="f.yaml")
    assert topo.lab.name == "f"  # the Lab's own name, whatever the list holds
    assert topo.lab.unfixed == ("invalid-drop",) and topo.lab.conntrack_tcp_be_liberal
    assert "kubeProxy" not in topo.lab.pinned  # no version: a replayed dump's nodes still say which release
    cluster, _ = reconcile(topo)
    cfg = cluster.node_view("node-1").config
    assert cfg.unfixed == {"invalid-drop"} and cfg.conntrack_tcp_be_liberal and not cfg.fixed("invalid-drop")
    kept = model.lab_document(topo.lab)["spec"]["kubeProxy"]
    assert kept == {"conntrack": {"tcpBeLiberal": True}, "unfixed": ["invalid-drop"]}
    with pytest.raises(TopologyError, match=r"spec\.kubeProxy\.unfixed\[0\].*expected one of invalid-drop"):
        model.load_text(text.replace("[invalid-drop, invalid-drop]", "[no-such-fix]"), file="f.yaml")
    with pytest.raises(TopologyError, match=r"spec\.kubeProxy\.conntrack\.tcpBeLiberal.*expected true or false"):
        model.load_text(text.replace("tcpBeLiberal: true", "tcpBeLiberal: 3"), file="f.yaml")


def test_the_docs_name_every_fix_that_can_be_taken_out():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "versions.md").read_text()
    for f in versions.FIXES:
        assert f"`{f.name}`" in doc and f.change.split()[0] in doc, f.name


def test_an_unfixed_localnet_drop_leaves_only_that_rule_and_its_chain_out():
    fixed = ipt.render(VIEW)
    unfixed = ipt.render(at(VIEW, versions.DEFAULT, unfixed=frozenset({versions.LOCALNET_DROP})))
    rule = '"block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8'
    assert rule in fixed and rule not in unfixed
    assert "--ctstate INVALID -j DROP" in unfixed  # the other fix stays
