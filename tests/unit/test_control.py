"""testbed.control.reconcile: IPAM, the Deployment controller, the scheduler, EndpointSlices, node views.

Pure functions of (topology, previous allocations): no root, no kernel.
"""
from __future__ import annotations

import ipaddress
import json
import textwrap

import pytest

from testbed import model
from testbed.control import Allocations, reconcile

FILE = "x.yaml"


def load(*docs: str, base: model.Topology | None = None) -> model.Topology:
    return model.load_text("---\n".join(textwrap.dedent(d) for d in docs), file=FILE, base=base)


def lab(nodes: str = "[{name: n1}, {name: n2}]", extra: str = "", dns: str | None = "{enabled: false}") -> str:
    """A Lab document; `dns=None` keeps the kube-dns add-on (most tests count pods and Services)."""
    dns_line = f"  clusterDNS: {dns}\n" if dns is not None else ""
    return f"""\
apiVersion: testbed.dev/v1alpha1
kind: Lab
metadata: {{name: l}}
spec:
  nodes: {nodes}
{dns_line}{extra}"""


def deployment(name: str = "web", replicas: int = 4, app: str = "web", ports: str = "[{containerPort: 9376, name: http}]") -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {app}}}}}
  template:
    metadata: {{labels: {{app: {app}}}}}
    spec: {{containers: [{{name: c, ports: {ports}}}]}}
"""


def service(name: str = "web", selector: str | None = "{app: web}", ports: str = "[{port: 80, targetPort: http}]",
            extra: str = "") -> str:
    sel = f"  selector: {selector}\n" if selector else ""
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
{sel}  ports: {ports}
{extra}"""


def pod(name: str, labels: str = "{app: web}", ports: str = "[{containerPort: 9376, name: http}]",
        node: str | None = None) -> str:
    nn = f"  nodeName: {node}\n" if node else ""
    return f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {labels}}}
spec:
{nn}  containers: [{{name: c, ports: {ports}}}]
"""


def roundtrip(alloc: Allocations) -> Allocations:
    """What the lab stores in state.json and reads back."""
    return Allocations.from_json(json.loads(json.dumps(alloc.to_json())))


def pods_of(cluster, owner: str = "default/web"):
    return {p.name: p for p in cluster.pods if p.owner == owner}


# ----------------------------------------------------------------------------- IPAM


def test_node_ips_and_pod_cidrs_allocated():
    cluster, _ = reconcile(load(lab()))
    net = ipaddress.ip_network("172.18.0.0/24")
    ips = [n.ip for n in cluster.nodes]
    cidrs = [ipaddress.ip_network(n.pod_cidr) for n in cluster.nodes]
    assert len(set(ips)) == 2 and all(ipaddress.ip_address(ip) in net for ip in ips)
    assert "172.18.0.1" not in ips  # the fabric's own address
    assert all(c.prefixlen == 24 and c.subnet_of(ipaddress.ip_network("10.244.0.0/16")) for c in cidrs)
    assert not cidrs[0].overlaps(cidrs[1])
    assert [n.gateway for n in cluster.nodes] == [str(c.network_address + 1) for c in cidrs]
    (client,) = cluster.clients
    assert client.name == "outside" and client.ip not in ips and ipaddress.ip_address(client.ip) in net


def test_pinned_node_ip_and_pod_cidr_honoured():
    topo = load(lab("[{name: a, ip: 172.18.0.50, podCIDR: 10.244.7.0/24}, {name: b}]"))
    cluster, _ = reconcile(topo)
    a, b = cluster.node("a"), cluster.node("b")
    assert (a.ip, a.pod_cidr) == ("172.18.0.50", "10.244.7.0/24")
    assert a.gateway == "10.244.7.1"
    assert b.ip != a.ip and not ipaddress.ip_network(b.pod_cidr).overlaps(ipaddress.ip_network(a.pod_cidr))


def test_single_pinned_node():
    cluster, _ = reconcile(load(lab("[{name: a, ip: 172.18.0.50, podCIDR: 10.244.7.0/24}]"), pod("p", node="a")))
    (a,) = cluster.nodes
    assert (a.ip, a.pod_cidr) == ("172.18.0.50", "10.244.7.0/24")
    (p,) = cluster.pods
    assert ipaddress.ip_address(p.ip) in ipaddress.ip_network("10.244.7.0/24")
    assert p.ip not in ("10.244.7.0", "10.244.7.1", "10.244.7.255")


def test_pinning_an_ip_another_node_had_moves_that_node():
    _, alloc = reconcile(load(lab()))
    had = alloc.nodes["n2"]["ip"]
    cluster, _ = reconcile(load(lab(f"[{{name: n1, ip: {had}}}, {{name: n2}}]")), roundtrip(alloc))
    assert cluster.node("n1").ip == had
    assert cluster.node("n2").ip != had


def test_pod_ips_inside_their_node_cidr_and_unique():
    cluster, _ = reconcile(load(lab(), deployment(replicas=6), pod("solo", labels="{app: solo}")))
    ips = [p.ip for p in cluster.pods]
    assert len(set(ips)) == len(ips) == 7
    for p in cluster.pods:
        node = cluster.node(p.node)
        assert ipaddress.ip_address(p.ip) in ipaddress.ip_network(node.pod_cidr)
        assert p.ip != node.gateway


def test_explicit_cluster_ip_and_node_port_honoured():
    topo = load(lab(), deployment(),
                service(extra="  clusterIP: 10.96.0.20\n"),
                service("np", ports="[{port: 80, targetPort: 9376, nodePort: 30080}]", extra="  type: NodePort\n"))
    cluster, _ = reconcile(topo)
    by = {s.key: s for s in cluster.services}
    assert by["default/web"].cluster_ip == "10.96.0.20"
    assert by["default/web"].node_ports == (None,)
    assert by["default/np"].node_ports == (30080,)
    assert by["default/np"].cluster_ip != "10.96.0.20"
    assert ipaddress.ip_address(by["default/np"].cluster_ip) in ipaddress.ip_network("10.96.0.0/12")


def test_allocated_node_port_in_range_and_kept():
    topo = load(lab(), deployment(), service("np", ports="[{port: 80, targetPort: 9376}]", extra="  type: NodePort\n"))
    cluster, alloc = reconcile(topo)
    (np_,) = cluster.services[0].node_ports
    assert 30000 <= np_ <= 32767
    topo2 = load(lab(), deployment(), service("np", ports="[{port: 80, targetPort: 9376}]", extra="  type: NodePort\n"),
                 service("np2", ports="[{port: 80, targetPort: 9376}]", extra="  type: NodePort\n"))
    cluster2, _ = reconcile(topo2, roundtrip(alloc))
    by = {s.key: s for s in cluster2.services}
    assert by["default/np"].node_ports == (np_,)
    assert by["default/np2"].node_ports[0] != np_


def test_allocations_stable_when_a_service_is_added():
    one = load(lab(), deployment(), service("a", ports="[{port: 80, targetPort: 9376}]"))
    c1, alloc = reconcile(one)
    ip_a = c1.services[0].cluster_ip
    pods_before = {p.name: (p.node, p.ip) for p in c1.pods}
    two = load(lab(), deployment(), service("a", ports="[{port: 80, targetPort: 9376}]"),
               service("b", ports="[{port: 80, targetPort: 9376}]"))
    c2, alloc2 = reconcile(two, roundtrip(alloc))
    by = {s.key: s.cluster_ip for s in c2.services}
    assert by["default/a"] == ip_a
    assert by["default/b"] and by["default/b"] != ip_a
    assert {p.name: (p.node, p.ip) for p in c2.pods} == pods_before
    assert [(n.ip, n.pod_cidr) for n in c2.nodes] == [(n.ip, n.pod_cidr) for n in c1.nodes]
    # And once more with nothing changed: identical.
    c3, _ = reconcile(two, roundtrip(alloc2))
    assert c3.pods == c2.pods and c3.services == c2.services and c3.nodes == c2.nodes


def test_reconcile_does_not_mutate_the_allocations_passed_in():
    topo = load(lab(), deployment())
    _, alloc = reconcile(topo)
    before = json.dumps(alloc.to_json(), sort_keys=True)
    victim = next(iter(alloc.pods))
    alloc.deleted.append(victim)
    snapshot = json.dumps(alloc.to_json(), sort_keys=True)
    reconcile(topo, alloc)
    assert json.dumps(alloc.to_json(), sort_keys=True) == snapshot != before


# ----------------------------------------------------------------------------- Deployment controller and scheduler


def test_replicas_spread_over_nodes():
    cluster, _ = reconcile(load(lab(), deployment(replicas=4)))
    per_node = {}
    for p in cluster.pods:
        per_node[p.node] = per_node.get(p.node, 0) + 1
    assert per_node == {"n1": 2, "n2": 2}
    names = [p.name for p in cluster.pods]
    assert len(set(names)) == 4
    assert all(n.startswith("web-") for n in names)
    assert all(p.owner == "default/web" for p in cluster.pods)
    assert all(dict(p.labels)["app"] == "web" and "pod-template-hash" in dict(p.labels) for p in cluster.pods)


def test_pod_name_shape():
    cluster, _ = reconcile(load(lab(), deployment(replicas=1)))
    (p,) = cluster.pods
    _, thash, suffix = p.name.split("-")
    assert dict(p.labels)["pod-template-hash"] == thash
    assert len(thash) == 10 and len(suffix) == 5


def test_node_name_honoured():
    cluster, _ = reconcile(load(lab(), pod("a", node="n2"), pod("b", labels="{app: b}", node="n2")))
    assert {p.node for p in cluster.pods} == {"n2"}


def test_deleted_pod_replaced_with_new_name_and_ip():
    topo = load(lab(), deployment(replicas=4))
    c1, alloc = reconcile(topo)
    before = pods_of(c1)
    victim = sorted(before.values(), key=lambda p: p.name)[1]
    alloc = roundtrip(alloc)
    alloc.deleted.append(victim.key)
    c2, alloc2 = reconcile(topo, alloc)
    after = pods_of(c2)
    assert len(after) == 4
    assert victim.name not in after
    (new,) = set(after) - set(before)
    assert after[new].ip != victim.ip
    assert after[new].ip not in {p.ip for p in before.values()}
    for name, p in before.items():
        if name != victim.name:
            assert (after[name].node, after[name].ip) == (p.node, p.ip), name
    assert alloc2.deleted == []
    # The replacement is remembered: reconciling again changes nothing.
    c3, _ = reconcile(topo, roundtrip(alloc2))
    assert c3.pods == c2.pods


def test_deleted_pod_ip_not_reused_by_the_next_replacement_either():
    topo = load(lab("[{name: n1}]"), deployment(replicas=2))
    c, alloc = reconcile(topo)
    seen = {p.ip for p in c.pods}
    for _ in range(5):
        victim = sorted(c.pods, key=lambda p: p.name)[0]
        alloc = roundtrip(alloc)
        alloc.deleted.append(victim.key)
        c, alloc = reconcile(topo, alloc)
        fresh = {p.ip for p in c.pods} - seen
        assert len(fresh) == 1, (fresh, seen)  # exactly the replacement's IP is new
        assert victim.ip not in {p.ip for p in c.pods}
        seen |= fresh


def test_scale_down_keeps_existing_pods():
    c4, alloc = reconcile(load(lab(), deployment(replicas=4)))
    before = {p.name: (p.node, p.ip) for p in c4.pods}
    c2, alloc2 = reconcile(load(lab(), deployment(replicas=2)), roundtrip(alloc))
    after = {p.name: (p.node, p.ip) for p in c2.pods}
    assert len(after) == 2
    assert all(before[n] == v for n, v in after.items())
    # Scaling back up keeps those two and adds two new names.
    c6, _ = reconcile(load(lab(), deployment(replicas=4)), roundtrip(alloc2))
    again = {p.name: (p.node, p.ip) for p in c6.pods}
    assert len(again) == 4
    assert all(again[n] == v for n, v in after.items())


def test_scale_up_keeps_existing_pods_and_adds_new_ones():
    c4, alloc = reconcile(load(lab(), deployment(replicas=4)))
    before = {p.name: (p.node, p.ip) for p in c4.pods}
    c6, _ = reconcile(load(lab(), deployment(replicas=6)), roundtrip(alloc))
    after = {p.name: (p.node, p.ip) for p in c6.pods}
    assert len(after) == 6
    assert all(after[n] == v for n, v in before.items())
    assert len(set(after) - set(before)) == 2
    assert len({ip for _, ip in after.values()}) == 6


def test_generated_pod_names_are_dns_labels():
    """Kubernetes truncates generated pod names to 63 characters (they are hostnames and appear in
    namespace names); a Deployment name that cannot give such names must be rejected up front."""
    long = "d" * 60
    try:
        topo = load(lab(), deployment(name=long, replicas=2))
    except model.TopologyError as e:  # rejecting the name is fine too
        assert e.field == "metadata.name"
        return
    cluster, _ = reconcile(topo)
    assert len(cluster.pods) == 2
    for p in cluster.pods:
        assert len(p.name) <= 63 and model.DNS_LABEL.match(p.name), p.name
    assert len({p.name for p in cluster.pods}) == 2


def test_zero_replicas():
    cluster, _ = reconcile(load(lab(), deployment(replicas=0), service()))
    assert cluster.pods == ()
    assert cluster.services[0].endpoints == ((),)


# ----------------------------------------------------------------------------- EndpointSlice controller


def test_endpoints_follow_the_selector():
    cluster, _ = reconcile(load(lab(), deployment(replicas=3), service(), pod("other", labels="{app: other}")))
    (svc,) = cluster.services
    (eps,) = svc.endpoints
    web = pods_of(cluster)
    assert sorted(e.ip for e in eps) == sorted(p.ip for p in web.values())
    assert all(e.port == 9376 for e in eps)
    assert {e.node for e in eps} == {p.node for p in web.values()}
    assert all(e.ready and e.serving and not e.terminating for e in eps)


def test_named_target_port_resolved_per_pod():
    topo = load(lab(),
                pod("a", ports="[{containerPort: 8080, name: http}]"),
                pod("b", ports="[{containerPort: 9090, name: http}]"),
                pod("c", ports="[{containerPort: 7070, name: other}]"),
                pod("d", ports="[{containerPort: 6060, name: http, protocol: UDP}]"),
                service())
    cluster, _ = reconcile(topo)
    ip = {p.name: p.ip for p in cluster.pods}
    (eps,) = cluster.services[0].endpoints
    # c has no port named http, d's is UDP: neither is an endpoint of this TCP port.
    assert sorted((e.ip, e.port) for e in eps) == sorted([(ip["a"], 8080), (ip["b"], 9090)])


def test_numeric_and_default_target_ports():
    topo = load(lab(), pod("a"), service(ports="[{name: x, port: 80, targetPort: 9376}, {name: y, port: 81}, "
                                              "{name: z, port: 82, targetPort: '8080'}]"))
    cluster, _ = reconcile(topo)
    ports = [[e.port for e in eps] for eps in cluster.services[0].endpoints]
    assert ports == [[9376], [81], [8080]]


def test_service_without_selector_takes_its_endpointslice():
    slice_ = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: manual-1
  labels: {kubernetes.io/service-name: manual}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.244.0.50]
  nodeName: n1
- addresses: [10.244.0.51]
  conditions: {ready: false}
- addresses: [10.244.0.52, 10.244.0.53]
  conditions: {ready: true, serving: false}
- addresses: [10.244.0.54]
  conditions: {ready: false, serving: true, terminating: true}
"""
    other = slice_.replace("manual-1", "other-1").replace("service-name: manual", "service-name: other")
    topo = load(lab(), service("manual", selector=None, ports="[{name: http, port: 80}]"), slice_, other)
    cluster, _ = reconcile(topo)
    (svc,) = cluster.services
    (eps,) = svc.endpoints
    got = {e.ip: (e.port, e.node, e.ready, e.serving, e.terminating) for e in eps}
    assert got == {
        "10.244.0.50": (8080, "n1", True, True, False),  # no conditions: ready and serving
        "10.244.0.51": (8080, None, False, True, False),  # a missing serving is serving, as kube-proxy reads it
        "10.244.0.52": (8080, None, True, False, False),  # only the first address is used
        "10.244.0.54": (8080, None, False, True, True),
    }


def test_endpointslice_port_name_must_match():
    slice_ = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: m-1
  labels: {kubernetes.io/service-name: m}
addressType: IPv4
ports: [{name: other, port: 8080}]
endpoints: [{addresses: [10.244.0.50]}]
"""
    cluster, _ = reconcile(load(lab(), service("m", selector=None, ports="[{name: http, port: 80}]"), slice_))
    assert cluster.services[0].endpoints == ((),)


def test_selector_matching_nothing_has_no_endpoints():
    cluster, _ = reconcile(load(lab(), deployment(), service("empty", selector="{app: nothing}")))
    (svc,) = cluster.services
    assert svc.cluster_ip and svc.endpoints == ((),)


# ----------------------------------------------------------------------------- kube-proxy's view


def test_node_view_has_service_ports_with_endpoints_and_node_port():
    topo = load(lab(), deployment(replicas=4),
                service(ports="[{name: http, port: 80, targetPort: http}, "
                              "{name: udp, port: 53, targetPort: 9376, protocol: UDP}]"),
                service("np", ports="[{port: 80, targetPort: 9376, nodePort: 30080}]", extra="  type: NodePort\n"),
                service("headless", ports="[{port: 80}]", extra="  clusterIP: None\n"))
    cluster, _ = reconcile(topo)
    web_ips = sorted(p.ip for p in cluster.pods)
    for node in ("n1", "n2"):
        view = cluster.node_view(node)
        assert view.node_name == node
        assert view.node_ips == (cluster.node(node).ip,)
        assert view.config.cluster_cidr == "10.244.0.0/16"
        by = {(sp.name, sp.port_name, sp.protocol): sp for sp in view.services}
        assert set(by) == {("web", "http", "TCP"), ("web", "udp", "UDP"), ("np", "", "TCP")}  # headless skipped
        http = by[("web", "http", "TCP")]
        assert http.port == 80 and http.node_port is None
        assert http.cluster_ip == next(s.cluster_ip for s in cluster.services if s.service.name == "web")
        assert sorted(e.ip for e in http.endpoints) == web_ips
        assert {e.port for e in http.endpoints} == {9376}
        assert {e.node for e in http.endpoints} == {"n1", "n2"}
        assert sorted(e.ip for e in by[("web", "udp", "UDP")].endpoints) == web_ips
        np_ = by[("np", "", "TCP")]
        assert np_.node_port == 30080 and np_.has_external
        assert sorted(e.ip for e in np_.endpoints) == web_ips


def test_node_view_unknown_node():
    cluster, _ = reconcile(load(lab()))
    with pytest.raises(KeyError):
        cluster.node_view("nope")


def test_services_labelled_for_another_proxy_are_not_in_the_view():
    topo = load(lab(), deployment(),
                service("other", extra="  type: ClusterIP\n").replace(
                    "metadata: {name: other}", "metadata: {name: other, labels: {service.kubernetes.io/service-proxy-name: x}}"))
    cluster, _ = reconcile(topo)
    assert cluster.node_view("n1").services == ()


# ----------------------------------------------------------------------------- shipped topologies


@pytest.mark.parametrize("name", ["default", "single-node", "seed-a-service"])
def test_shipped_topology_reconciles(name):
    path = model.TOPOLOGY_DIR / f"{name}.yaml"
    if not path.exists():
        pytest.skip(f"{path} is not there yet")
    cluster, alloc = reconcile(model.load_file(path))
    for n in cluster.nodes:
        cluster.node_view(n.name)
    c2, _ = reconcile(model.load_file(path), roundtrip(alloc))
    assert c2.pods == cluster.pods and c2.services == cluster.services


def test_default_topology_shape():
    cluster, _ = reconcile(model.load_file(model.builtin("default")))
    web = pods_of(cluster)
    assert len(web) == 4 and {p.node for p in web.values()} == {"node-1", "node-2"}
    by = {s.service.name: s for s in cluster.services}
    assert by["web-nodeport"].node_ports == (30080,)
    assert by["empty"].endpoints == ((),)
    client = next(p for p in cluster.pods if p.name == "client")
    assert client.ip not in {e.ip for s in cluster.services for eps in s.endpoints for e in eps}


def test_single_node_manual_slice_matches_its_comment():
    path = model.TOPOLOGY_DIR / "single-node.yaml"
    if not path.exists():
        pytest.skip(f"{path} is not there yet")
    cluster, _ = reconcile(model.load_file(path))
    echo_ips = sorted((p.ip for p in cluster.pods if p.owner == "default/echo"), key=ipaddress.ip_address)
    manual = next(s for s in cluster.services if s.service.name == "manual")
    ready = [e.ip for e in manual.endpoints[0] if e.ready]
    # The hand-written slice names "the first two echo pods' addresses"; the ready one must be a real pod.
    assert set(ready) <= set(echo_ips), (ready, echo_ips)


def test_cluster_dns_addon_by_default():
    cluster, _ = reconcile(model.load_text(lab("[{name: n1}]", dns=None)))
    dns = next(s for s in cluster.services if s.key == "kube-system/kube-dns")
    assert dns.cluster_ip == "10.96.0.10"
    assert [(p.name, p.protocol, p.port) for p in dns.service.ports] == [("dns", "UDP", 53), ("dns-tcp", "TCP", 53)]
    (pod,) = [p for p in cluster.pods if p.namespace == "kube-system"]
    assert pod.workload == "dns" and pod.name.startswith("coredns-")
    assert [e.ip for e in dns.endpoints[0]] == [pod.ip]


def test_cluster_dns_addon_can_be_turned_off_or_moved():
    off = model.load_text(lab(extra=""))
    assert not [s for s in reconcile(off)[0].services if s.key == "kube-system/kube-dns"]
    moved = model.load_text(lab("[{name: n1}]", dns="{ip: 10.96.0.53}"))
    assert next(s for s in reconcile(moved)[0].services if s.key == "kube-system/kube-dns").cluster_ip == "10.96.0.53"


def test_ready_backends_and_pods_backing_nothing():
    cluster, _ = reconcile(load(lab(), deployment(replicas=3), service(), pod("client", labels="{app: client}")))
    (web,) = [s for s in cluster.services if s.service.name == "web"]
    backends = cluster.ready_backends(web, 0)
    assert sorted(p.owner for p in backends) == ["default/web"] * 3
    assert [p.name for p in cluster.pods_backing_nothing()] == ["client"]


def test_a_selector_of_two_labels_needs_both():
    # Every shipped selector has one label: a selector that read only its first would pass them all.
    topo = load(lab(), pod("both", labels="{app: web, tier: front}"), pod("app-only", labels="{app: web}"),
                pod("tier-only", labels="{tier: front}"), pod("other-tier", labels="{app: web, tier: back}"),
                service(selector="{app: web, tier: front}"))
    cluster, _ = reconcile(topo)
    ip = {p.name: p.ip for p in cluster.pods}
    (eps,) = cluster.services[0].endpoints
    assert [e.ip for e in eps] == [ip["both"]]
    # The same pair in the other order selects the same pod.
    topo = load(lab(), pod("both", labels="{app: web, tier: front}"), pod("tier-only", labels="{tier: front}"),
                service(selector="{tier: front, app: web}"))
    cluster, _ = reconcile(topo)
    assert [e.ip for e in cluster.services[0].endpoints[0]] == [cluster.pods[0].ip]


def test_selectors_see_their_own_namespace_only():
    other = pod("elsewhere").replace("metadata: {name: elsewhere,", "metadata: {name: elsewhere, namespace: other,")
    cluster, _ = reconcile(load(lab(), pod("here"), other, service()))
    here = next(p for p in cluster.pods if p.name == "here")
    assert [e.ip for e in cluster.services[0].endpoints[0]] == [here.ip]


def terminate(topo, names, **svc):
    """Reconcile, then delete the pods `names` as `Lab.delete` does (their grace period running)."""
    from testbed.lab import Lab

    cluster, alloc = reconcile(topo)
    Lab._terminate(alloc, [p for p in cluster.pods if p.name in names], None)
    return reconcile(topo, alloc)


def test_a_terminating_pod_is_serving_not_ready():
    # upstream podToEndpoint: serving = the pod's readiness, ready = serving and not terminating.
    topo = load(lab(), pod("a"), pod("b"), service())
    cluster, _ = terminate(topo, {"a"})
    by_name = {p.name: p for p in cluster.pods}
    assert by_name["a"].terminating and not by_name["a"].ready and by_name["a"].serving
    got = {e.ip: (e.ready, e.serving, e.terminating) for e in cluster.services[0].endpoints[0]}
    assert got == {by_name["a"].ip: (False, True, True), by_name["b"].ip: (True, True, False)}


def test_a_terminating_pod_that_was_unready_is_not_serving():
    probed = pod("a").replace("ports: [{containerPort: 9376, name: http}]",
                              "ports: [{containerPort: 9376, name: http}], readinessProbe: {tcpSocket: {port: 9376}}")
    cluster, _ = terminate(load(lab(), probed, service()), {"a"})
    ((e,),) = cluster.services[0].endpoints
    assert (e.ready, e.serving, e.terminating) == (False, False, True)


def test_publish_not_ready_addresses_keeps_a_terminating_pod_ready():
    # upstream: ready = publishNotReadyAddresses || (serving && !terminating).
    cluster, _ = terminate(load(lab(), pod("a"), service(extra="  publishNotReadyAddresses: true\n")), {"a"})
    ((e,),) = cluster.services[0].endpoints
    assert (e.ready, e.serving, e.terminating) == (True, True, True)


def test_a_terminating_pod_keeps_its_owner_labels_and_ports():
    before, _ = reconcile(load(lab(), deployment(replicas=1), service()))
    (old,) = before.pods
    cluster, _ = terminate(load(lab(), deployment(replicas=1), service()), {old.name})
    gone = next(p for p in cluster.pods if p.terminating)
    assert (gone.owner, gone.owner_kind, gone.labels, gone.ports) == (old.owner, old.owner_kind, old.labels, old.ports)


def test_allocations_from_json_never_alias_the_saved_state():
    _, alloc = reconcile(load(lab(), pod("a"), service()))
    saved = alloc.to_json()
    again = Allocations.from_json(saved)
    next(iter(again.pods.values()))["ip"] = "10.0.0.1"
    again.nodes["n1"]["ip"] = "10.0.0.2"
    assert saved == alloc.to_json()


def test_host_network_pods_on_one_node_are_told_apart_by_their_ports():
    def host_pod(name, port):
        return pod(name, ports=f"[{{containerPort: {port}, name: http}}]", node="n1").replace(
            "  containers:", "  hostNetwork: true\n  containers:")
    topo = load(lab(), host_pod("a", 8081), host_pod("b", 8082), pod("c", labels="{app: client}"),
                host_pod("d", 8083).replace("labels: {app: web}", "labels: {app: tool}"),
                service(selector="{app: web}", ports="[{port: 80, targetPort: http}]"))
    cluster, _ = reconcile(topo)
    (info,) = cluster.services
    a, b = (next(p for p in cluster.pods if p.name == n) for n in "ab")
    assert a.ip == b.ip == cluster.node("n1").ip
    assert sorted(p.name for p in cluster.ready_backends(info, 0)) == ["a", "b"]
    assert [p.name for p in cluster.pods_backing_nothing()] == ["c", "d"]


def test_version_notes_name_the_nodes_only_when_their_releases_differ():
    from testbed.control import version_notes

    nodes = '[{name: n1, kubeProxyVersion: "1.28"}, {name: n2, kubeProxyVersion: "1.28"}, {name: n3, kubeProxyVersion: "1.36"}]'
    mixed = version_notes(load(lab(nodes=nodes)), "ipvs")
    assert mixed and all(n.endswith(" (nodes n1, n2)") or n.endswith(" (nodes n3)") for n in mixed)
    assert any("1.28" in n and n.endswith("(nodes n1, n2)") for n in mixed)
    assert any("1.36" in n and n.endswith("(nodes n3)") for n in mixed)
    same = version_notes(load(lab(extra='  kubeProxy: {version: "1.36"}\n')), "ipvs")
    assert same and not any("(nodes" in n for n in same)


@pytest.mark.parametrize("size, band", [(256, 16), (1024, 64), (4080, 255), (1 << 20, 256)])
def test_the_static_band_is_a_sixteenth_between_16_and_256(size, band):
    from testbed.control import _static_band

    assert _static_band(size) == band


def annotated(name: str, annotations: str, extra: str = "") -> str:
    return service(name, extra=extra).replace(f"metadata: {{name: {name}}}",
                                               f"metadata: {{name: {name}, annotations: {annotations}}}")


def test_node_view_carries_the_labs_flags_and_each_services_options():
    topo = load(lab(extra="  masqueradeAll: true\n  ipvsScheduler: lc\n"), pod("a", node="n1"),
                annotated("sched", "{testbed.dev/ipvs-scheduler: sh}", extra="  internalTrafficPolicy: Local\n"),
                annotated("auto", "{service.kubernetes.io/topology-mode: Auto}"),
                *(annotated(f"off{i}", f"{{service.kubernetes.io/topology-mode: {v}}}")
                  for i, v in enumerate(("''", "disabled", "Disabled"))),
                service("ranges", extra="  type: NodePort\n  loadBalancerSourceRanges: [192.0.2.0/24]\n"))
    cluster, _ = reconcile(topo)
    view = cluster.node_view("n1")
    assert (view.config.masquerade_all, view.config.ipvs_scheduler) == (True, "lc")
    ports = {p.name: p for p in view.services}
    assert (ports["sched"].scheduler, ports["sched"].internal_policy_local) == ("sh", True)
    assert (ports["auto"].scheduler, ports["auto"].internal_policy_local) == (None, False)
    assert ports["auto"].hints_annotation
    assert not any(ports[f"off{i}"].hints_annotation for i in range(3))
    assert ports["ranges"].load_balancer_source_ranges == ()  # only a LoadBalancer's are kube-proxy's


def test_a_backend_is_the_pod_at_the_endpoints_address_whatever_port_it_declares():
    # targetPort 8080 is not a declared container port: the endpoint is still that pod's.
    cluster, _ = reconcile(load(lab(), pod("a"), service(ports="[{port: 80, targetPort: 8080}]")))
    (info,) = cluster.services
    assert [p.name for p in cluster.ready_backends(info, 0)] == ["a"]
    assert cluster.pods_backing_nothing() == []


def test_the_labs_own_release_when_no_node_is_named():
    cluster, _ = reconcile(load(lab(nodes='[{name: n1, kubeProxyVersion: "1.30"}, {name: n2}]',
                                    extra='  kubeProxy: {version: "1.33"}\n')))
    assert cluster.kube_proxy_version() == cluster.proxy_config().kube_proxy_version == (1, 33)
    assert cluster.kube_proxy_version("n1") == (1, 30)
    assert cluster.kube_proxy_version("n2") == (1, 33)


def test_version_notes_of_one_release_are_its_notes_as_they_are():
    from testbed import versions
    from testbed.control import version_notes

    got = version_notes(load(lab(extra='  kubeProxy: {version: "1.36"}\n')), "ipvs")
    assert got == versions.notes((1, 36), "ipvs") + versions.deprecations((1, 36), "ipvs")


def test_pod_cidrs_stay_apart_when_a_node_goes_and_another_comes():
    _, alloc = reconcile(load(lab()))
    first = {n: alloc.nodes[n]["pod_cidr"] for n in ("n1", "n2")}
    cluster, _ = reconcile(load(lab(nodes="[{name: n3}, {name: n1}]")), roundtrip(alloc))
    cidrs = {n.name: n.pod_cidr for n in cluster.nodes}
    assert cidrs["n1"] == first["n1"]  # kept
    assert len(set(cidrs.values())) == 2  # n3 did not take n1's


def test_a_pinned_pod_cidr_moves_the_node_that_had_it():
    _, alloc = reconcile(load(lab()))
    taken = alloc.nodes["n2"]["pod_cidr"]
    cluster, _ = reconcile(load(lab(nodes=f"[{{name: n1, podCIDR: {taken}}}, {{name: n2}}]")), roundtrip(alloc))
    cidrs = {n.name: n.pod_cidr for n in cluster.nodes}
    assert cidrs["n1"] == taken and cidrs["n2"] != taken
    assert not ipaddress.ip_network(cidrs["n2"]).overlaps(ipaddress.ip_network(taken))


def test_no_address_left_on_the_node_network_names_the_lab():
    from testbed.errors import TopologyError

    nodes = "[" + ", ".join(f"{{name: n{i}}}" for i in range(14)) + "]"
    with pytest.raises(TopologyError) as ei:
        reconcile(load(lab(nodes=nodes, extra="  nodeNetwork: 172.18.0.0/28\n")))
    e = ei.value
    assert (e.file, e.field) == (FILE, "spec.nodeNetwork") and "Lab l" in e.obj and "172.18.0.0/28" in e.problem


def test_no_pod_cidr_left_names_the_lab():
    from testbed.errors import TopologyError

    nodes = "[{name: n1}, {name: n2}, {name: n3}]"
    with pytest.raises(TopologyError) as ei:
        reconcile(load(lab(nodes=nodes, extra="  clusterCIDR: 10.244.0.0/23\n  nodeCIDRMaskSize: 24\n")))
    e = ei.value
    assert (e.file, e.field) == (FILE, "spec.clusterCIDR") and "Lab l" in e.obj and "n3" in e.problem


def full(topo_text_docs, field: str, obj: str):
    """reconcile refuses: a TopologyError naming the file, the object and the field."""
    from testbed.errors import TopologyError

    with pytest.raises(TopologyError) as ei:
        reconcile(load(*topo_text_docs))
    e = ei.value
    assert (e.file, e.field) == (FILE, field) and obj in e.obj, str(e)
    return e


def test_a_full_service_cidr_names_the_service():
    svcs = [service(f"s{i}", selector=None, ports="[{port: 80}]") for i in range(20)]
    e = full([lab(extra="  serviceCIDR: 10.96.0.0/28\n"), *svcs], "spec.clusterIP", "Service default/s")
    assert "10.96.0.0/28" in e.problem


def test_a_full_node_port_range_names_the_service():
    svcs = [service(f"s{i}", selector=None, ports="[{port: 80}]", extra="  type: NodePort\n") for i in range(3)]
    e = full([lab(extra="  serviceNodePortRange: 30000-30001\n"), *svcs], "spec.ports", "Service default/s")
    assert "30000-30001" in e.problem


def test_a_full_pod_cidr_names_the_pod():
    pods = [pod(f"p{i}", node="n1") for i in range(14)]
    e = full([lab(extra="  nodeCIDRMaskSize: 28\n"), *pods], "spec.nodeName", "Pod default/p")
    assert "n1" in e.problem


def test_external_name_and_headless_services_get_no_cluster_ip():
    cluster, _ = reconcile(load(lab(), service("ext", selector=None, ports="[{port: 80}]",
                                                extra="  type: ExternalName\n  externalName: example.org\n"),
                                service("hl", extra="  clusterIP: None\n"), service("web")))
    ips = {s.service.name: s.cluster_ip for s in cluster.services}
    assert ips["ext"] is None and ips["hl"] is None and ips["web"]


LOCAL_LB = "  type: LoadBalancer\n  externalTrafficPolicy: Local\n"


def test_health_check_node_ports_are_in_the_range_and_free():
    svcs = [service(f"lb{i}", extra=LOCAL_LB) for i in range(6)]
    cluster, _ = reconcile(load(lab(), *svcs))
    health = [s.health_check_node_port for s in cluster.services]
    node_ports = {p for s in cluster.services for p in s.node_ports}
    assert all(30000 <= p <= 32767 for p in health) and len(set(health)) == 6
    assert not set(health) & node_ports


def test_load_balancer_addresses_come_from_the_pool_until_it_is_empty():
    from testbed.control import lb_address

    topo = load(lab(extra="  loadBalancer: {pool: 172.18.0.10-172.18.0.11}\n"),
                *(service(f"lb{i}", extra="  type: LoadBalancer\n") for i in range(3)))
    cluster, _ = reconcile(topo)
    assert [s.load_balancer_ips for s in cluster.services] == [("172.18.0.10",), ("172.18.0.11",), ()]
    assert lb_address(topo.lab) == "172.18.0.254"
    assert lb_address(topo.lab) not in {n.ip for n in cluster.nodes} | {c.ip for c in cluster.clients}


def test_the_ingress_controller_add_on():
    ingress = ("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\n"
               "spec: {defaultBackend: {service: {name: web, port: {number: 80}}}}\n")
    cluster, _ = reconcile(load(lab(), deployment(), service(), ingress))
    ctl = next(s for s in cluster.services if s.key == "ingress-system/ingress-controller")
    assert dict(ctl.service.labels) == {"app.kubernetes.io/name": "ingress-controller"}
    ((e,),) = ctl.endpoints
    assert e.port == 80  # targetPort "http": the controller pod's port named http
