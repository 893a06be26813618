"""Topology-aware routing and LoadBalancer ipMode (no root): kube-proxy's CategorizeEndpoints with
EndpointSlice hints (pkg/proxy/topology.go), the EndpointSlice controller's trafficDistribution
hints, and ingress IPs kube-proxy does not program (ipMode Proxy), per kube-proxy release."""
import textwrap

import pytest

from testbed import model
from testbed.control import reconcile
from testbed.proxy import Endpoint as E
from testbed.proxy import ProxyConfig, categorize_endpoints
from testbed.proxy import ServicePort as SP
from testbed.render import iptables as ipt
from testbed.render import ipvs
from testbed.render import nftables as nft


def cfg(version):
    return ProxyConfig(kube_proxy_version=version)


A1, A2 = E("10.0.1.1", 80, "a-1", zone_hints=("a",), node_hints=("a-1",)), E("10.0.1.2", 80, "a-2", zone_hints=("a",),
                                                                            node_hints=("a-2",))
B1 = E("10.0.2.1", 80, "b-1", zone_hints=("b",), node_hints=("b-1",))


def cluster_ips(eps, node="a-1", zone="a", version=(1, 35), **sp):
    cat = categorize_endpoints(SP("ns", "s", "", "TCP", 80, "10.96.0.9", endpoints=tuple(eps), **sp), node, zone,
                               cfg(version))
    return [e.ip for e in cat.cluster]


def test_zone_hints_keep_this_zones_endpoints():
    assert cluster_ips([A1, A2, B1], version=(1, 33)) == ["10.0.1.1", "10.0.1.2"]
    assert cluster_ips([A1, A2, B1], node="b-1", zone="b", version=(1, 33)) == ["10.0.2.1"]


@pytest.mark.parametrize("eps, node, zone, why", [
    ([A1, E("10.0.2.1", 80, "b-1")], "a-1", "a", "an endpoint without a hint"),
    ([B1], "a-1", "a", "no hint for this zone"),
    ([A1, B1], "a-1", None, "the node has no zone label"),
])
def test_missing_or_inconsistent_hints_fall_back_to_every_endpoint(eps, node, zone, why):
    assert len(cluster_ips(eps, node, zone, version=(1, 33))) == len(eps), why


def test_unready_endpoints_do_not_need_hints_and_terminating_ones_ignore_them():
    unready = E("10.0.2.9", 80, "b-1", ready=False, serving=False)
    assert cluster_ips([A1, B1, unready], version=(1, 33)) == ["10.0.1.1"]
    term = [E("10.0.1.1", 80, "a-1", ready=False, terminating=True, zone_hints=("a",)),
            E("10.0.2.1", 80, "b-1", ready=False, terminating=True, zone_hints=("b",))]
    assert cluster_ips(term, version=(1, 33)) == ["10.0.1.1", "10.0.2.1"]


def test_before_1_31_hints_need_the_topology_mode_annotation():
    assert len(cluster_ips([A1, B1], version=(1, 30))) == 2
    assert cluster_ips([A1, B1], version=(1, 30), hints_annotation=True) == ["10.0.1.1"]
    assert cluster_ips([A1, B1], version=(1, 31)) == ["10.0.1.1"]


def test_node_hints_since_1_34_over_zone_hints():
    assert cluster_ips([A1, A2, B1], version=(1, 33)) == ["10.0.1.1", "10.0.1.2"]
    assert cluster_ips([A1, A2, B1], version=(1, 34)) == ["10.0.1.1"]
    # No endpoint on this node: the zone hints decide.
    assert cluster_ips([A2, B1], version=(1, 34)) == ["10.0.1.2"]


def test_local_traffic_policy_is_not_filtered_by_hints():
    cat = categorize_endpoints(SP("ns", "s", "", "TCP", 80, "10.96.0.9", endpoints=(A1, B1), internal_policy_local=True),
                               "b-1", "a", cfg((1, 35)))
    assert [e.ip for e in cat.local] == ["10.0.2.1"]


# --- through the lab: node zone labels, the controller's hints, every renderer --------------------

LAB = textwrap.dedent("""\
    apiVersion: testbed.dev/v1alpha1
    kind: Lab
    metadata: {name: zones}
    spec:
      kubeProxy: {version: "%s"}
      nodes:
      - {name: node-1, labels: {topology.kubernetes.io/zone: zone-a}}
      - {name: node-2, labels: {topology.kubernetes.io/zone: zone-a}}
      - {name: node-3, labels: {topology.kubernetes.io/zone: zone-b}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: a1, labels: {app: web}}
    spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: b1, labels: {app: web}}
    spec: {nodeName: node-3, containers: [{name: c, ports: [{containerPort: 80}]}]}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec: {selector: {app: web}, trafficDistribution: %s, ports: [{port: 80}]}
    """)


def backends(version, distribution, node):
    cluster, _ = reconcile(model.load_text(LAB % (version, distribution), file="zones.yaml"))
    view = cluster.node_view(node)
    sp = next(s for s in view.services if s.name == "web")
    pods = {p.ip: p.name for p in cluster.pods}
    return sorted(pods[e.ip] for e in categorize_endpoints(sp, view.node_name, view.zone, view.config).cluster), view


@pytest.mark.parametrize("version, distribution, node, want", [
    ("1.35", "PreferClose", "node-2", ["a1"]),            # zone-a's endpoint only
    ("1.35", "PreferClose", "node-3", ["b1"]),
    ("1.30", "PreferClose", "node-2", ["a1", "b1"]),      # 1.30's controller sets no hints (alpha gate off)
    ("1.33", "PreferClose", "node-2", ["a1"]),            # PreferClose is GA before PreferSameNode exists
    ("1.35", "PreferSameNode", "node-3", ["b1"]),         # its own node's
    ("1.35", "PreferSameNode", "node-2", ["a1"]),         # none on node-2: the zone's
    ("1.33", "PreferSameNode", "node-2", ["a1", "b1"]),   # refused by the 1.33 API server: no hints
    ("1.35", "PreferSameZone", "node-1", ["a1"]),
])
def test_traffic_distribution_by_release(version, distribution, node, want):
    assert backends(version, distribution, node)[0] == want


def test_every_mode_renders_the_zones_endpoints_only():
    _, view = backends("1.35", "PreferClose", "node-2")
    cluster, _ = reconcile(model.load_text(LAB % ("1.35", "PreferClose"), file="zones.yaml"))
    a1, b1 = (next(p.ip for p in cluster.pods if p.name == n) for n in ("a1", "b1"))
    for text in (ipt.render(view), nft.render(view), ipvs.render_text(ipvs.plan(view))):
        assert a1 in text and b1 not in text


def test_a_dumps_hints_are_used_as_dumped():
    text = LAB % ("1.35", "PreferClose") + textwrap.dedent("""\
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: hand}
        spec: {ports: [{port: 80}]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: hand-1, labels: {kubernetes.io/service-name: hand}}
        addressType: IPv4
        ports: [{port: 80}]
        endpoints:
        - {addresses: [10.244.9.1], zone: zone-a, hints: {forZones: [{name: zone-a}]}}
        - {addresses: [10.244.9.2], zone: zone-b, hints: {forZones: [{name: zone-b}]}}
        """)
    cluster, _ = reconcile(model.load_text(text, file="zones.yaml"))
    view = cluster.node_view("node-3")
    sp = next(s for s in view.services if s.name == "hand")
    assert [e.ip for e in categorize_endpoints(sp, view.node_name, view.zone, view.config).cluster] == ["10.244.9.2"]


# --- LoadBalancer ipMode ---------------------------------------------------------------------------

LB = textwrap.dedent("""\
    apiVersion: testbed.dev/v1alpha1
    kind: Lab
    metadata: {name: ipmode}
    spec: {kubeProxy: {version: "%s"}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: w, labels: {app: web}}
    spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec: {type: LoadBalancer, selector: {app: web}, ports: [{port: 80}]}
    status: {loadBalancer: {ingress: [{ip: 172.18.0.210, ipMode: %s}]}}
    """)


@pytest.mark.parametrize("version, ip_mode, programmed", [
    ("1.35", "Proxy", False), ("1.30", "Proxy", False), ("1.29", "Proxy", True), ("1.35", "VIP", True),
])
def test_an_ip_mode_proxy_ingress_gets_no_rules_since_1_30(version, ip_mode, programmed):
    cluster, _ = reconcile(model.load_text(LB % (version, ip_mode), file="lb.yaml"))
    view = cluster.node_view("node-1")
    assert ("-d 172.18.0.210" in ipt.render(view)) == programmed
    assert ("172.18.0.210" in ipvs.plan(view).addresses) == programmed
    if version != "1.29":  # 1.29's nftables rules are not established (rendered as 1.30's)
        assert ("172.18.0.210 . tcp . 80" in nft.render(view)) == programmed
    assert cluster.node_view("node-1").services[0].node_port  # the NodePort stays: the LB sends there


def test_a_bad_ip_mode_is_refused_with_the_field():
    with pytest.raises(model.TopologyError, match=r"status.loadBalancer.ingress\[0\].ipMode: expected VIP or Proxy"):
        model.load_text(LB % ("1.35", "Passthrough"), file="lb.yaml")


# --- several Service CIDRs (ServiceCIDR objects) ------------------------------------------------------

CIDRS = textwrap.dedent("""\
    apiVersion: testbed.dev/v1alpha1
    kind: Lab
    metadata: {name: cidrs}
    spec: {serviceCIDR: 10.96.0.0/27, clusterDNS: {enabled: false}}
    ---
    apiVersion: networking.k8s.io/v1
    kind: ServiceCIDR
    metadata: {name: extra}
    spec: {cidrs: [10.100.0.0/24]}
    """)


def services(n, first=0):
    return "".join(f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{ports: [{{port: 80}}]}}\n"
                   for i in range(first, first + n))


def test_a_second_service_cidr_takes_clusterips_once_the_first_is_full():
    topo = model.load_text(CIDRS + services(20), file="cidrs.yaml")
    assert topo.lab.service_cidrs == ("10.96.0.0/27", "10.100.0.0/24")
    assert any("additionalServiceCIDRs 10.100.0.0/24" in x for x in topo.lab.inferred)
    cluster, _ = reconcile(topo)
    ips = [s.cluster_ip for s in cluster.services]
    first = [ip for ip in ips if ip.startswith("10.96.0.")]
    assert len(first) == 15 and all(16 <= int(ip.rsplit(".", 1)[1]) <= 30 for ip in first)  # above the static band
    assert len([ip for ip in ips if ip.startswith("10.100.0.")]) == 5
    # kube-proxy (nftables, 1.33+) drops traffic to unallocated addresses of every range.
    assert "ip daddr { 10.96.0.0/27,10.100.0.0/24 } drop" in nft.render(cluster.node_view("node-1"))


def test_an_explicit_clusterip_may_be_in_any_service_cidr():
    text = CIDRS + "---\napiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterIP: 10.100.0.7, ports: [{port: 80}]}\n"
    cluster, _ = reconcile(model.load_text(text, file="cidrs.yaml"))
    assert cluster.services[0].cluster_ip == "10.100.0.7"
    bad = text.replace("10.100.0.7", "10.200.0.7")
    with pytest.raises(model.TopologyError, match="expected an address inside the Service CIDR 10.96.0.0/27, "
                                                  "10.100.0.0/24, got 10.200.0.7"):
        model.load_text(bad, file="cidrs.yaml")


def test_a_running_lab_keeps_the_service_cidrs():
    topo = model.load_text(CIDRS, file="cidrs.yaml")
    again = model.parse_documents([model.lab_document(topo.lab)], "kept.yaml")
    assert again.lab.service_cidrs == ("10.96.0.0/27", "10.100.0.0/24")


def test_the_kubernetes_servicecidr_is_the_default_one():
    dump = textwrap.dedent("""\
        apiVersion: networking.k8s.io/v1
        kind: ServiceCIDR
        metadata: {name: more}
        spec: {cidrs: [10.100.0.0/24]}
        ---
        apiVersion: networking.k8s.io/v1
        kind: ServiceCIDR
        metadata: {name: kubernetes}
        spec: {cidrs: [10.96.0.0/16]}
        """)
    topo = model.load_text(dump, file="dump.yaml")
    assert topo.lab.service_cidrs == ("10.96.0.0/16", "10.100.0.0/24")


def endpoint_hints(annotation: str = "", node_labels: str = "{topology.kubernetes.io/zone: zone-a}"):
    meta = f"{{name: web, annotations: {{service.kubernetes.io/topology-mode: {annotation}}}}}" if annotation \
        else "{name: web}"
    text = LAB.replace("metadata: {name: web}", f"metadata: {meta}") \
        .replace("{name: node-1, labels: {topology.kubernetes.io/zone: zone-a}}", f"{{name: node-1, labels: {node_labels}}}")
    cluster, _ = reconcile(model.load_text(text % ("1.35", "PreferClose"), file="zones.yaml"))
    pods = {p.ip: p.name for p in cluster.pods}
    (eps,) = next(s for s in cluster.services if s.key == "default/web").endpoints
    return {pods[e.ip]: e.zone_hints for e in eps}


@pytest.mark.parametrize("annotation", ["disabled", "Disabled"])
def test_a_disabled_topology_mode_annotation_leaves_traffic_distribution_its_hints(annotation):
    assert endpoint_hints(annotation) == {"a1": ("zone-a",), "b1": ("zone-b",)}


def test_the_topology_mode_annotation_takes_precedence_over_traffic_distribution():
    assert endpoint_hints("Auto") == {"a1": (), "b1": ()}


def test_an_endpoint_whose_node_has_no_zone_gets_no_hint():
    assert endpoint_hints(node_labels="{}") == {"a1": (), "b1": ("zone-b",)}


def test_kubelet_hairpin_mode_is_read_kept_and_checked():
    lab = "apiVersion: testbed.dev/v1alpha1\nkind: Lab\nmetadata: {name: hp}\nspec: {kubelet: {hairpinMode: %s}}\n"
    assert model.load_text(lab % "none", file="hp.yaml").lab.hairpin_mode == "none"
    topo = model.load_text("apiVersion: testbed.dev/v1alpha1\nkind: Lab\nmetadata: {name: hp}\n", file="hp.yaml")
    assert topo.lab.hairpin_mode == "hairpin-veth"  # kubelet's default
    assert "kubelet" not in model.lab_document(topo.lab)["spec"]
    kept = model.lab_document(model.load_text(lab % "none", file="hp.yaml").lab)
    assert kept["spec"]["kubelet"] == {"hairpinMode": "none"}
    assert model.parse_documents([kept], "kept.yaml").lab.hairpin_mode == "none"
    with pytest.raises(model.TopologyError, match=r"spec\.kubelet\.hairpinMode.*expected one of hairpin-veth, none, "
                                                  r"got 'promiscuous-bridge' \(promiscuous-bridge is not modelled\)"):
        model.load_text(lab % "promiscuous-bridge", file="hp.yaml")
    with pytest.raises(model.TopologyError, match=r"spec\.kubelet\.podCIDR"):
        model.load_text("apiVersion: testbed.dev/v1alpha1\nkind: Lab\nmetadata: {name: hp}\n"
                        "spec: {kubelet: {podCIDR: 10.0.0.0/8}}\n", file="hp.yaml")
