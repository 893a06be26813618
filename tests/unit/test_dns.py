"""testbed.dns: the cluster DNS zone (Kubernetes DNS specification) as a pure function of the cluster state.

No root, no sockets: ClusterState from model.load_text + control.reconcile, then Zone.records / Zone.resolve.
"""
from __future__ import annotations

import ipaddress
import json
import textwrap

import pytest

from testbed import dns, model
from testbed.control import reconcile
from testbed.dns import NOERROR, NXDOMAIN, REFUSED, SERVFAIL, Record, Zone, records, resolv_conf

FILE = "x.yaml"
D = "cluster.local"


def load(*docs: str) -> model.Topology:
    return model.load_text("---\n".join(textwrap.dedent(d) for d in docs), file=FILE)


def zone_of(*docs: str, **kw) -> tuple[Zone, object]:
    cluster, _ = reconcile(load(LAB, *docs))
    return records(cluster, **kw), cluster


LAB = """\
apiVersion: testbed.dev/v1alpha1
kind: Lab
metadata: {name: l}
spec:
  nodes: [{name: n1}, {name: n2}]
  clusterDNS: {enabled: false}
"""


def deployment(name="web", replicas=3, app=None, ports="[{containerPort: 9376, name: http}]", probe="") -> str:
    app = app or name
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {app}}}}}
  template:
    metadata: {{labels: {{app: {app}}}}}
    spec: {{containers: [{{name: c, ports: {ports}{probe}}}]}}
"""


def service(name="web", selector="{app: web}", ports="[{name: http, port: 80, targetPort: http}]", extra="",
            namespace=None, labels=None) -> str:
    sel = f"  selector: {selector}\n" if selector else ""
    ns = f", namespace: {namespace}" if namespace else ""
    lb = f", labels: {labels}" if labels else ""
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}{ns}{lb}}}
spec:
{sel}  ports: {ports}
{extra}"""


def external(name: str, target: str) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{type: ExternalName, externalName: {target}}}
"""


def svc(cluster, name, ns="default"):
    return next(s for s in cluster.services if s.service.name == name and s.service.namespace == ns)


def data(zone: Zone, name: str, rtype: str) -> list:
    return sorted(r.data for r in zone.get(name, rtype))


# ----------------------------------------------------------------------------- ClusterIP Services


def test_cluster_ip_service_has_an_a_record_and_a_ptr():
    zone, cluster = zone_of(deployment(), service())
    ip = svc(cluster, "web").cluster_ip
    assert data(zone, f"web.default.svc.{D}", "A") == [(ip,)]
    rev = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    assert data(zone, rev, "PTR") == [(f"web.default.svc.{D}",)]
    res = zone.resolve(f"web.default.svc.{D}.", "A")
    assert res.rcode == NOERROR and res.authoritative and [r.data for r in res.answer] == [(ip,)]
    assert zone.resolve(rev, "PTR").answer[0].data == (f"web.default.svc.{D}",)


def test_named_ports_get_srv_records_with_the_service_port_and_unnamed_ports_none():
    zone, _ = zone_of(deployment(), service(ports="[{name: http, port: 80, targetPort: http}, "
                                                  "{name: dns, port: 53, targetPort: 9376, protocol: UDP}]"),
                      service("single", ports="[{port: 8080, targetPort: 9376}]"))
    base = f"web.default.svc.{D}"
    assert data(zone, f"_http._tcp.{base}", "SRV") == [(0, 100, 80, base)]
    assert data(zone, f"_dns._udp.{base}", "SRV") == [(0, 100, 53, base)]
    assert zone.resolve(f"_http._udp.{base}", "SRV").rcode == NXDOMAIN  # wrong protocol
    assert not [n for n in zone.names() if n.endswith(f"single.default.svc.{D}") and n.startswith("_")]
    res = zone.resolve(f"_http._tcp.{base}", "SRV")
    assert [r.type for r in res.additional] == ["A"] and res.additional[0].name == base  # the target's A


def test_nodeport_services_and_services_kube_proxy_ignores_are_in_dns():
    zone, cluster = zone_of(
        deployment(),
        service("np", ports="[{port: 80, targetPort: 9376, nodePort: 30080}]", extra="  type: NodePort\n"),
        service("other-proxy", labels="{service.kubernetes.io/service-proxy-name: foo}"))
    assert not svc(cluster, "other-proxy").proxied
    for name in ("np", "other-proxy"):
        assert data(zone, f"{name}.default.svc.{D}", "A") == [(svc(cluster, name).cluster_ip,)]


def test_service_without_endpoints_still_resolves_to_its_cluster_ip():
    zone, cluster = zone_of(service("empty", selector="{app: nothing}", ports="[{port: 80}]"))
    assert data(zone, f"empty.default.svc.{D}", "A") == [(svc(cluster, "empty").cluster_ip,)]


def test_services_in_other_namespaces():
    zone, cluster = zone_of(service("api", namespace="team-a", selector=None, ports="[{port: 443}]"))
    assert data(zone, f"api.team-a.svc.{D}", "A") == [(svc(cluster, "api", "team-a").cluster_ip,)]
    assert zone.resolve(f"api.default.svc.{D}", "A").rcode == NXDOMAIN
    assert zone.resolve(f"team-a.svc.{D}", "A").rcode == NOERROR  # the namespace exists: NODATA


# ----------------------------------------------------------------------------- headless Services

READINESS = ", readinessProbe: {httpGet: {port: 9376, path: /readyz}}"


def test_headless_service_a_records_are_the_ready_endpoints():
    zone, cluster = zone_of(deployment(replicas=3), deployment("slow", replicas=2, app="web", probe=READINESS),
                            service("hl", extra="  clusterIP: None\n"))
    ready = sorted((p.ip for p in cluster.pods if p.ready), key=ipaddress.ip_address)
    not_ready = [p.ip for p in cluster.pods if not p.ready]
    assert len(ready) == 3 and len(not_ready) == 2
    base = f"hl.default.svc.{D}"
    assert data(zone, base, "A") == sorted((ip,) for ip in ready)
    for ip in ready:
        host = f"{ip.replace('.', '-')}.{base}"
        assert data(zone, host, "A") == [(ip,)]
        assert data(zone, ipaddress.ip_address(ip).reverse_pointer, "PTR") == [(host,)]
    for ip in not_ready:
        assert zone.resolve(f"{ip.replace('.', '-')}.{base}", "A").rcode == NXDOMAIN


def test_headless_srv_per_ready_endpoint_uses_the_endpoint_port_and_coredns_weights():
    zone, cluster = zone_of(deployment(replicas=4), service("hl", ports="[{name: http, port: 80, targetPort: http}]",
                                                            extra="  clusterIP: None\n"))
    base = f"hl.default.svc.{D}"
    srv = data(zone, f"_http._tcp.{base}", "SRV")
    ips = sorted(p.ip for p in cluster.pods)
    assert srv == sorted((0, 25, 9376, f"{ip.replace('.', '-')}.{base}") for ip in ips)
    res = zone.resolve(f"_http._tcp.{base}", "SRV")
    assert sorted(r.data[0] for r in res.additional) == ips  # each target's A record


def test_headless_publish_not_ready_addresses_includes_not_ready_endpoints():
    docs = (deployment(replicas=1), deployment("slow", replicas=2, app="web", probe=READINESS))
    zone, cluster = zone_of(*docs, service("hl", extra="  clusterIP: None\n  publishNotReadyAddresses: true\n"))
    assert data(zone, f"hl.default.svc.{D}", "A") == sorted((p.ip,) for p in cluster.pods)
    assert len(data(zone, f"_http._tcp.hl.default.svc.{D}", "SRV")) == 3


def test_headless_selectorless_service_follows_the_slice_conditions():
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
- addresses: [10.244.0.51]
  conditions: {ready: false}
"""
    zone, _ = zone_of(service("manual", selector=None, ports="[{name: http, port: 80}]", extra="  clusterIP: None\n"),
                      slice_)
    assert data(zone, f"manual.default.svc.{D}", "A") == [("10.244.0.50",)]
    assert data(zone, f"_http._tcp.manual.default.svc.{D}", "SRV") == [
        (0, 100, 8080, f"10-244-0-50.manual.default.svc.{D}")]


def test_headless_service_without_ready_endpoints_is_nxdomain():
    zone, _ = zone_of(deployment(replicas=2, probe=READINESS), service("hl", extra="  clusterIP: None\n"))
    for q, t in ((f"hl.default.svc.{D}", "A"), (f"_http._tcp.hl.default.svc.{D}", "SRV")):
        res = zone.resolve(q, t)
        assert res.rcode == NXDOMAIN and [r.type for r in res.authority] == ["SOA"]


# ----------------------------------------------------------------------------- ExternalName


def test_external_name_is_a_cname_and_nothing_else():
    zone, _ = zone_of(external("ext", "www.Example.com."))
    assert [(r.type, r.data) for r in zone.get(f"ext.default.svc.{D}")] == [("CNAME", ("www.example.com",))]
    res = zone.resolve(f"ext.default.svc.{D}", "A")
    assert res.rcode == NOERROR and [r.type for r in res.answer] == ["CNAME"] and not res.authority
    assert zone.resolve(f"ext.default.svc.{D}", "CNAME").answer[0].data == ("www.example.com",)
    assert zone.resolve("www.example.com", "A").rcode == REFUSED  # nobody to chase it with


def test_external_name_inside_the_zone_is_followed():
    zone, cluster = zone_of(deployment(), service(), external("alias", f"web.default.svc.{D}"),
                            external("alias2", f"alias.default.svc.{D}"), external("dangling", f"gone.default.svc.{D}"))
    res = zone.resolve(f"alias2.default.svc.{D}", "A")
    assert res.rcode == NOERROR
    assert [(r.name, r.type) for r in res.answer] == [
        (f"alias2.default.svc.{D}", "CNAME"), (f"alias.default.svc.{D}", "CNAME"), (f"web.default.svc.{D}", "A")]
    assert res.answer[-1].data == (svc(cluster, "web").cluster_ip,)
    srv = zone.resolve(f"alias.default.svc.{D}", "AAAA")  # the target exists without AAAA: NODATA with the chain
    assert srv.rcode == NOERROR and [r.type for r in srv.answer] == ["CNAME"] and srv.authority[0].type == "SOA"
    bad = zone.resolve(f"dangling.default.svc.{D}", "A")
    assert bad.rcode == NXDOMAIN and [r.type for r in bad.answer] == ["CNAME"]  # RFC 6604: rcode of the end


def test_cname_loop_is_servfail():
    zone, _ = zone_of(external("a", f"b.default.svc.{D}"), external("b", f"a.default.svc.{D}"))
    assert zone.resolve(f"a.default.svc.{D}", "A").rcode == SERVFAIL
    assert zone.resolve(f"a.default.svc.{D}", "CNAME").rcode == NOERROR


# ----------------------------------------------------------------------------- the rest of the zone


@pytest.fixture(scope="module")
def default_zone():
    cluster, _ = reconcile(load(LAB, deployment(), service()))
    return records(cluster), cluster


@pytest.mark.parametrize("name", [
    f"nope.default.svc.{D}", f"web.nope.svc.{D}", f"web.default.svc.{D}.default.svc.{D}", f"_http._tcp.nope.default.svc.{D}",
    f"x.web.default.svc.{D}", f"web.default.pod.{D}", f"nope.{D}", f"1-2-3-4.nope.pod.{D}", f"999-1-1-1.default.pod.{D}",
    f"01-2-3-4.default.pod.{D}", f"1-2-3.default.pod.{D}"])
def test_names_that_do_not_exist_are_nxdomain_with_the_soa(default_zone, name):
    res = default_zone[0].resolve(name, "A")
    assert res.rcode == NXDOMAIN and res.authoritative and not res.answer
    assert [r.type for r in res.authority] == ["SOA"] and res.authority[0].name == D


@pytest.mark.parametrize("name", ["svc." + D, "default.svc." + D, "pod." + D, "default.pod." + D, "_tcp.web.default.svc." + D])
def test_empty_non_terminals_are_nodata_not_nxdomain(default_zone, name):
    res = default_zone[0].resolve(name, "A")
    assert res.rcode == NOERROR and not res.answer and [r.type for r in res.authority] == ["SOA"]


@pytest.mark.parametrize("qtype", ["AAAA", "TXT", "MX", "TYPE65"])
def test_other_types_of_existing_names_are_nodata(default_zone, qtype):
    res = default_zone[0].resolve(f"web.default.svc.{D}", qtype)
    assert res.rcode == NOERROR and not res.answer and [r.type for r in res.authority] == ["SOA"]


@pytest.mark.parametrize("name", ["example.com", "local", "cluster.local.example.com", "xcluster.local", ".",
                                  "1.2.3.4.in-addr.arpa", "kubernetes.default.svc.cluster.local.example"])
def test_names_outside_the_zone_are_refused(default_zone, name):
    res = default_zone[0].resolve(name, "A")
    assert res.rcode == REFUSED and not res.authoritative and not res.answer and not res.authority


def test_lookups_are_case_insensitive(default_zone):
    zone, cluster = default_zone
    res = zone.resolve("WEB.Default.SVC.Cluster.Local.", "a")
    assert res.rcode == NOERROR and res.answer[0].data == (svc(cluster, "web").cluster_ip,)


def test_pod_records_for_every_pod_and_insecure_synthesis(default_zone):
    zone, cluster = default_zone
    for p in cluster.pods:
        assert data(zone, f"{p.ip.replace('.', '-')}.default.pod.{D}", "A") == [(p.ip,)]
    assert zone.resolve(f"1-2-3-4.default.pod.{D}", "A").answer[0].data == ("1.2.3.4",)  # pods insecure
    assert zone.resolve(f"1-2-3-4.kube-system.pod.{D}", "A").rcode == NOERROR


def test_pods_verified_answers_only_existing_pods():
    cluster, _ = reconcile(load(LAB, deployment(replicas=1)))
    zone = records(cluster, pods="verified")
    (p,) = cluster.pods
    assert zone.resolve(f"{p.ip.replace('.', '-')}.default.pod.{D}", "A").answer[0].data == (p.ip,)
    assert zone.resolve(f"1-2-3-4.default.pod.{D}", "A").rcode == NXDOMAIN
    assert not records(cluster, pods="disabled").get(f"{p.ip.replace('.', '-')}.default.pod.{D}")


def test_apex_soa_ns_and_schema_version(default_zone):
    zone, _ = default_zone
    soa = zone.resolve(D, "SOA")
    assert soa.rcode == NOERROR and soa.answer[0].data[:2] == (f"ns.dns.{D}", f"hostmaster.{D}")
    assert soa.answer[0].data[3:] == (7200, 1800, 86400, 5)
    assert zone.resolve(D, "NS").answer[0].data == (f"ns.dns.{D}",)
    assert zone.resolve(f"dns-version.{D}", "TXT").answer[0].data == ("1.1.0",)
    assert {r.type for r in zone.resolve(D, "ANY").answer} == {"SOA", "NS"}


def test_ns_address_is_the_kube_dns_cluster_ip():
    kube_dns = service("kube-dns", namespace="kube-system", selector="{k8s-app: kube-dns}",
                       ports="[{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}]",
                       extra="  clusterIP: 10.96.0.10\n")
    zone, _ = zone_of(kube_dns)
    res = zone.resolve(D, "NS")
    assert [(r.name, r.data) for r in res.additional] == [(f"ns.dns.{D}", ("10.96.0.10",))]
    assert data(zone, f"kube-dns.kube-system.svc.{D}", "A") == [("10.96.0.10",)]
    assert data(zone, f"_dns._udp.kube-dns.kube-system.svc.{D}", "SRV") == [(0, 100, 53, f"kube-dns.kube-system.svc.{D}")]
    assert data(zone_of(kube_dns, nameserver="10.96.0.99")[0], f"ns.dns.{D}", "A") == [("10.96.0.99",)]


def test_another_cluster_domain():
    zone, cluster = zone_of(deployment(), service(), domain="Example.Test.")
    assert zone.domain == "example.test"
    assert data(zone, "web.default.svc.example.test", "A") == [(svc(cluster, "web").cluster_ip,)]
    assert zone.resolve(f"web.default.svc.{D}", "A").rcode == REFUSED


def test_serial_is_stable_and_follows_the_records():
    a, _ = zone_of(deployment(), service())
    b, _ = zone_of(deployment(), service())
    c, _ = zone_of(deployment(), service(), service("more", ports="[{port: 81}]"))
    assert a == b and a.soa.data[2] == b.soa.data[2]
    assert c.soa.data[2] != a.soa.data[2]


# ----------------------------------------------------------------------------- serialisation


def test_zone_round_trips_through_json_and_a_file(default_zone, tmp_path):
    zone, _ = default_zone
    again = Zone.from_json(json.loads(json.dumps(zone.to_json())))
    assert again == zone and again.resolve(f"web.default.svc.{D}", "A") == zone.resolve(f"web.default.svc.{D}", "A")
    path = tmp_path / "zone.json"
    zone.write(str(path))
    assert Zone.read(str(path)) == zone
    assert [p.name for p in tmp_path.iterdir()] == ["zone.json"]  # no temporary file left behind


def test_zone_text_is_master_file_format(default_zone):
    text = default_zone[0].to_text()
    assert text.splitlines()[0].startswith(f"{D}.\t5\tIN\tSOA\tns.dns.{D}. hostmaster.{D}. ")
    assert f"dns-version.{D}.\t5\tIN\tTXT\t\"1.1.0\"" in text
    assert f"_http._tcp.web.default.svc.{D}.\t5\tIN\tSRV\t0 100 80 web.default.svc.{D}." in text


@pytest.mark.parametrize("doc", [None, [], {"format": 99}, {"format": 1, "domain": D, "records": []},
                                 {"format": 1, "domain": D, "records": [[D, "MX", 5, [10, "x"]]]}])
def test_bad_zone_documents_are_refused(doc):
    with pytest.raises((ValueError, KeyError, TypeError)):
        Zone.from_json(doc)


def test_hand_built_zone():
    soa = Record(D, "SOA", (f"ns.dns.{D}", f"hostmaster.{D}", 1, 7200, 1800, 86400, 5))
    zone = Zone(D, (soa, Record(f"a.b.{D}", "A", ("10.0.0.1",))), pods="disabled")
    assert zone.resolve(f"b.{D}", "A").rcode == NOERROR
    assert zone.resolve(f"1-2-3-4.default.pod.{D}", "A").rcode == NXDOMAIN
    with pytest.raises(ValueError):
        Zone(D, (soa,), pods="maybe")


# ----------------------------------------------------------------------------- resolv.conf


def test_resolv_conf_is_what_the_kubelet_writes():
    assert resolv_conf("team-a", "10.96.0.10") == (
        "search team-a.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n")
    assert resolv_conf("default", "10.0.0.10", domain="example.test.").splitlines()[0] == \
        "search default.svc.example.test svc.example.test example.test"


def test_module_docstring_says_nothing_leaves_the_lab():
    assert "REFUSED" in dns.__doc__ and "no upstream" in dns.__doc__
