"""testbed.ingress: Ingress/IngressClass parsing, class selection, and the matching order (pure; no root).

Ingress documents are parsed directly through model._Doc (the lead wires the kinds into the model);
Services come from a real topology through control.reconcile, with pinned ClusterIPs.
"""
from __future__ import annotations

import json
import textwrap

import pytest
import yaml

from testbed import model
from testbed.control import reconcile
from testbed.errors import TopologyError
from testbed.ingress import (
    Backend,
    Ingress,
    IngressBackend,
    IngressClass,
    IngressPath,
    IngressRule,
    RouteTable,
    match,
    normalize_host,
    parse_ingress,
    parse_ingress_class,
    path_matches,
    routes,
    serves,
)

FILE = "ing.yaml"
CONTROLLER = "testbed.dev/ingress-controller"


def doc(text: str, notes: model.Notes | None = None) -> model._Doc:
    data = yaml.safe_load(textwrap.dedent(text))
    name = (data.get("metadata") or {}).get("name", "?")
    return model._Doc(FILE, f"{data.get('kind')} {name} (document 1)", data, notes or model.Notes(), data.get("kind", ""))


def ingress_doc(spec: str, name: str = "web", meta: str = "") -> str:
    return (f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n"
            + textwrap.indent(textwrap.dedent(meta), "  ") + "spec:\n" + textwrap.indent(textwrap.dedent(spec), "  "))


def ing(spec: str, name: str = "web", meta: str = "") -> Ingress:
    return parse_ingress(doc(ingress_doc(spec, name, meta)))


def bad(spec: str, field: str, meta: str = "") -> TopologyError:
    with pytest.raises(TopologyError) as ei:
        ing(spec, meta=meta)
    e = ei.value
    assert e.file == FILE and e.obj and "Ingress web" in e.obj, str(e)
    assert e.field == field, str(e)
    assert field in str(e) and FILE in str(e)
    return e


ONE_PATH = """\
rules:
- host: foo.example.com
  http:
    paths:
    - {path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}
"""


# ----------------------------------------------------------------------------- parsing


def test_parse_full_ingress():
    notes = model.Notes()
    i = parse_ingress(doc(ingress_doc("""\
        ingressClassName: lab
        defaultBackend: {service: {name: fallback, port: {name: http}}}
        tls: [{hosts: [foo.example.com], secretName: cert}]
        rules:
        - host: foo.example.com
          http:
            paths:
            - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}
            - {path: /exact, pathType: Exact, backend: {service: {name: api, port: {name: web}}}}
        - host: "*.example.com"
          http:
            paths:
            - {pathType: ImplementationSpecific, backend: {service: {name: wild, port: {number: 80}}}}
        - http:
            paths:
            - {path: /, pathType: Prefix, backend: {service: {name: any, port: {number: 80}}}}
        """, meta="namespace: shop\n"), notes))
    assert i.key == "shop/web" and i.ingress_class_name == "lab"
    assert i.default_backend == IngressBackend("fallback", "http")
    assert i.tls_hosts == ("foo.example.com",)
    assert [r.host for r in i.rules] == ["foo.example.com", "*.example.com", None]
    assert i.rules[0].paths == (IngressPath("/api", "Prefix", IngressBackend("api", 8080)),
                                IngressPath("/exact", "Exact", IngressBackend("api", "web")))
    assert i.rules[1].paths[0] == IngressPath("", "ImplementationSpecific", IngressBackend("wild", 80))
    assert any("spec.tls" in w and "plain HTTP" in w for w in notes.effect_lines()), notes.effect_lines()


def test_unmodelled_fields_are_reported_once_as_ignored():
    notes = model.Notes()
    parse_ingress(doc(ingress_doc(ONE_PATH + "futureField: 1\n"), notes))
    assert notes.ignored_lines() == [f"{FILE}: Ingress web (document 1): spec.futureField"]


def test_rule_without_http_is_allowed_and_empty_host_is_unset():
    i = ing("""\
        rules:
        - host: only.example.com
        - host: ""
          http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}
        """)
    assert i.rules[0] == IngressRule("only.example.com", ())
    assert i.rules[1].host is None


@pytest.mark.parametrize("path_type, path, problem", [
    ("Regex", "/", "expected one of Exact, Prefix, ImplementationSpecific"),
    ("Prefix", "foo", "must be an absolute path"),
    ("Exact", "", "must be an absolute path"),
    ("ImplementationSpecific", "foo", "must be an absolute path"),
    ("Prefix", "/a//b", "must not contain '//'"),
    ("Exact", "/a/../b", "must not contain '/../'"),
    ("Prefix", "/a%2Fb", "must not contain '%2F'"),
    ("Prefix", "/a/..", "cannot end with '/..'"),
])
def test_bad_paths_name_the_field(path_type, path, problem):
    e = bad(f"""\
        rules:
        - http:
            paths:
            - {{path: "{path}", pathType: {path_type}, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}
        """, "spec.rules[0].http.paths[0].pathType" if path_type == "Regex" else "spec.rules[0].http.paths[0].path")
    assert problem in e.problem


def test_path_type_is_required():
    e = bad("rules: [{http: {paths: [{path: /, backend: {service: {name: a, port: {number: 80}}}}]}}]\n",
            "spec.rules[0].http.paths[0].pathType")
    assert "is required" in e.problem


@pytest.mark.parametrize("backend, field, problem", [
    ("{service: {port: {number: 80}}}", "spec.defaultBackend.service.name", "is required"),
    ("{service: {name: '', port: {number: 80}}}", "spec.defaultBackend.service.name", "is required"),
    ("{service: {name: 1web, port: {number: 80}}}", "spec.defaultBackend.service.name", "DNS-1035"),
    ("{service: {name: a}}", "spec.defaultBackend.service.port", "port name or number is required"),
    ("{service: {name: a, port: {number: 0}}}", "spec.defaultBackend.service.port.number", "1-65535"),
    ("{service: {name: a, port: {number: 65536}}}", "spec.defaultBackend.service.port.number", "1-65535"),
    ("{service: {name: a, port: {number: '80'}}}", "spec.defaultBackend.service.port.number", "expected an integer"),
    ("{service: {name: a, port: {name: http, number: 80}}}", "spec.defaultBackend.service.port", "cannot set both"),
    ("{service: {name: a, port: {name: Http}}}", "spec.defaultBackend.service.port.name", "IANA service name"),
    ("{service: {name: a, port: {name: '8080'}}}", "spec.defaultBackend.service.port.name", "at least one letter"),
    ("{service: {name: a, port: {name: a-very-long-port-name}}}", "spec.defaultBackend.service.port.name", "at most 15"),
    ("{resource: {kind: Bucket, name: b}}", "spec.defaultBackend.resource", "not modelled"),
    ("{}", "spec.defaultBackend.service", "is required"),
])
def test_bad_backends_name_the_field(backend, field, problem):
    e = bad(f"defaultBackend: {backend}\n", field)
    assert problem in e.problem


@pytest.mark.parametrize("host, problem", [
    ("10.0.0.1", "not an IP address"),
    ("Foo.example.com", "lower-case DNS name"),
    ("foo.example.com:80", "no port"),
    ("*", "wildcard"),
    ("foo.*.com", "wildcard"),
    ("**.example.com", "wildcard"),
])
def test_bad_hosts_name_the_field(host, problem):
    e = bad(f"""\
        rules:
        - host: "{host}"
          http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}]}}
        """, "spec.rules[0].host")
    assert problem in e.problem


def test_other_ingress_errors():
    assert "spec.rules or spec.defaultBackend" in bad("ingressClassName: lab\n", "spec").problem
    assert "at least one path" in bad("rules: [{host: a.example.com, http: {paths: []}}]\n", "spec.rules[0].http.paths").problem
    bad("tls: [{hosts: [Bad_Host]}]\n" + ONE_PATH, "spec.tls[0].hosts[0]")
    bad("ingressClassName: Lab\n" + ONE_PATH, "spec.ingressClassName")
    e = bad("ingressClassName: lab\n" + ONE_PATH, "metadata.annotations.kubernetes.io/ingress.class",
            meta="annotations: {kubernetes.io/ingress.class: other}\n")
    assert "must match spec.ingressClassName" in e.problem
    bad(ONE_PATH, "metadata.annotations.kubernetes.io/ingress.class", meta="annotations: {kubernetes.io/ingress.class: 1}\n")
    with pytest.raises(TopologyError) as ei:
        ing(ONE_PATH, name="Web")
    assert ei.value.field == "metadata.name"


def test_class_annotation_is_kept():
    i = ing(ONE_PATH, meta="annotations: {kubernetes.io/ingress.class: lab}\n")
    assert i.ingress_class_name is None and i.class_annotation == "lab"


def ingress_class_doc(name: str, controller: str = CONTROLLER, annotations: str = "{}", extra: str = "") -> model._Doc:
    return doc(f"""\
        apiVersion: networking.k8s.io/v1
        kind: IngressClass
        metadata: {{name: {name}, annotations: {annotations}}}
        spec: {{controller: {controller}{extra}}}
        """)


def test_parse_ingress_class():
    assert parse_ingress_class(ingress_class_doc("lab")) == IngressClass("lab", CONTROLLER, False)
    c = parse_ingress_class(ingress_class_doc("lab", annotations='{ingressclass.kubernetes.io/is-default-class: "true"}'))
    assert c.is_default
    c = parse_ingress_class(ingress_class_doc("lab", annotations='{ingressclass.kubernetes.io/is-default-class: "false"}'))
    assert not c.is_default
    d = ingress_class_doc("lab", extra=", parameters: {kind: X, name: y}")
    parse_ingress_class(d)
    assert d.notes.ignored_lines() == [f"{FILE}: IngressClass lab (document 1): spec.parameters"]


@pytest.mark.parametrize("controller, problem", [
    ("nginx", "domain-prefixed path"),
    ("Example.com/x", "domain-prefixed path"),
    ("example.com/", "domain-prefixed path"),
    ("example.com/" + "x" * 250, "at most 250"),
])
def test_bad_ingress_class_controller(controller, problem):
    with pytest.raises(TopologyError) as ei:
        parse_ingress_class(ingress_class_doc("lab", controller=controller))
    assert ei.value.field == "spec.controller" and problem in ei.value.problem
    assert "IngressClass lab" in str(ei.value)


def test_ingress_class_controller_required_and_default_annotation_is_a_string():
    with pytest.raises(TopologyError) as ei:
        parse_ingress_class(doc("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: lab}\nspec: {}\n"))
    assert ei.value.field == "spec.controller" and "is required" in ei.value.problem
    with pytest.raises(TopologyError) as ei:
        parse_ingress_class(ingress_class_doc("lab", annotations="{ingressclass.kubernetes.io/is-default-class: true}"))
    assert ei.value.field == "metadata.annotations.ingressclass.kubernetes.io/is-default-class"


# ----------------------------------------------------------------------------- services and tables

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.96.0.30, ports: [{port: 80, targetPort: 9376}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {clusterIP: 10.96.0.11, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: c}
spec: {clusterIP: 10.96.0.12, ports: [{name: web, port: 8080}, {name: dns, port: 53, protocol: UDP}]}
---
apiVersion: v1
kind: Service
metadata: {name: fallback}
spec: {clusterIP: 10.96.0.13, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: headless}
spec: {clusterIP: None, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: other}
spec: {clusterIP: 10.96.0.20, ports: [{port: 80}]}
"""


@pytest.fixture(scope="module")
def services():
    cluster, _ = reconcile(model.load_text(SERVICES, file="svc.yaml"))
    return cluster.services


def table_for(services, *specs: str, classes=(), **kw) -> RouteTable:
    ingresses = [ing(s, name=f"i{n}") for n, s in enumerate(specs)]
    return routes(ingresses, list(classes), services, **kw)


def rule(host: str | None, *paths: tuple[str, str, str]) -> str:
    lines = [f"- host: \"{host}\"" if host else "-"]
    lines.append("  http:")
    lines.append("    paths:")
    for path, ptype, svc in paths:
        name, _, port = svc.partition(":")
        port_ref = f"{{number: {port}}}" if port.isdigit() else f"{{name: {port}}}"
        lines.append(f"    - {{path: \"{path}\", pathType: {ptype}, backend: {{service: {{name: {name}, port: {port_ref}}}}}}}")
    return "rules:\n" + "\n".join(lines) + "\n"


def svc_of(table: RouteTable, host: str | None, path: str) -> str | None:
    b = match(table, host, path)
    return None if b is None else b.service


def test_backend_resolves_to_cluster_ip_and_service_port(services):
    t = table_for(services, rule("foo.example.com", ("/", "Prefix", "a:80"), ("/c", "Prefix", "c:web")))
    b = match(t, "foo.example.com", "/x")
    assert (b.address, b.target, b.service, b.namespace, b.port, b.ingress, b.problem) == \
        ("10.96.0.30", 80, "a", "default", 80, "default/i0", None)
    b = match(t, "foo.example.com", "/c/d")
    assert (b.address, b.target, b.port) == ("10.96.0.12", 8080, "web")  # a named port is the Service port's name


def test_unresolvable_backends_stay_with_a_problem(services):
    t = table_for(services, rule(None, ("/nosvc", "Prefix", "nope:80"), ("/noport", "Prefix", "a:81"),
                                 ("/noname", "Prefix", "c:http"), ("/udp", "Prefix", "c:dns"),
                                 ("/headless", "Prefix", "headless:80"), ("/targetport", "Prefix", "a:9376")))
    problems = {p: match(t, None, p).problem for p in ("/nosvc", "/noport", "/noname", "/udp", "/headless", "/targetport")}
    assert "does not exist" in problems["/nosvc"]
    assert "no TCP port 81" in problems["/noport"]
    assert "no port named 'http'" in problems["/noname"]
    assert "UDP" in problems["/udp"]
    assert "headless" in problems["/headless"]
    assert "no TCP port 9376" in problems["/targetport"]  # the Service port, not the targetPort
    assert all(match(t, None, p).address is None for p in problems)
    assert sum("answered with 503" in w for w in t.warnings) == 6


def test_backends_resolve_in_the_ingress_namespace(services):
    other = parse_ingress(doc(ingress_doc(rule(None, ("/", "Prefix", "a:80")), meta="namespace: other\n")))
    t = routes([other], [], services)
    assert match(t, "x", "/").address == "10.96.0.20"


# ----------------------------------------------------------------------------- matching order


def test_exact_beats_prefix_for_the_same_path(services):
    t = table_for(services, rule(None, ("/foo", "Prefix", "a:80"), ("/foo", "Exact", "b:80")))
    assert svc_of(t, "h", "/foo") == "b"
    assert svc_of(t, "h", "/foo/") == "a"  # Exact /foo does not match /foo/
    assert svc_of(t, "h", "/foo/bar") == "a"


def test_longest_prefix_wins_whatever_the_order(services):
    t = table_for(services, rule(None, ("/", "Prefix", "a:80"), ("/aaa/bbb", "Prefix", "c:web"), ("/aaa", "Prefix", "b:80")))
    assert svc_of(t, "h", "/aaa/bbb") == "c"
    assert svc_of(t, "h", "/aaa/bbb/ccc") == "c"
    assert svc_of(t, "h", "/aaa/ccc") == "b"
    assert svc_of(t, "h", "/ccc") == "a"


def test_longest_match_also_across_exact_and_prefix(services):
    # "precedence will be given first to the longest matching path": a longer Prefix beats a shorter Exact
    t = table_for(services, rule(None, ("/a", "Exact", "a:80"), ("/a/b", "Prefix", "b:80")))
    assert svc_of(t, "h", "/a") == "a"
    assert svc_of(t, "h", "/a/b/c") == "b"


@pytest.mark.parametrize("prefix, request_path, matches", [
    # the table in the Kubernetes docs' "Examples" section
    ("/", "/anything", True),
    ("/foo", "/foo", True),
    ("/foo", "/foo/", True),
    ("/foo/", "/foo", True),
    ("/foo/", "/foo/", True),
    ("/aaa/bb", "/aaa/bbb", False),
    ("/aaa/bbb", "/aaa/bbb", True),
    ("/aaa/bbb/", "/aaa/bbb", True),
    ("/aaa/bbb", "/aaa/bbb/", True),
    ("/aaa/bbb", "/aaa/bbb/ccc", True),
    ("/aaa/bbb", "/aaa/bbbxyz", False),
    ("/foo", "/foobar", False),
    ("/foo", "/Foo", False),  # case-sensitive
])
def test_prefix_matches_by_path_element(prefix, request_path, matches):
    assert path_matches(prefix, "Prefix", request_path) is matches
    assert path_matches(prefix, "ImplementationSpecific", request_path) is matches


@pytest.mark.parametrize("exact, request_path, matches", [
    ("/foo", "/foo", True), ("/foo", "/bar", False), ("/foo", "/foo/", False), ("/foo/", "/foo", False),
    ("/foo", "/FOO", False),
])
def test_exact_matches(exact, request_path, matches):
    assert path_matches(exact, "Exact", request_path) is matches


def test_query_string_is_not_part_of_the_path(services):
    t = table_for(services, rule(None, ("/echo", "Exact", "a:80")))
    assert svc_of(t, "h", "/echo?msg=hi") == "a"
    assert svc_of(t, "h", "/echo/?msg=hi") is None


def test_hosts_exact_beats_wildcard_beats_no_host(services):
    t = table_for(services,
                  rule(None, ("/", "Prefix", "c:web")),
                  rule("*.example.com", ("/", "Prefix", "b:80")),
                  rule("foo.example.com", ("/", "Prefix", "a:80")))
    assert svc_of(t, "foo.example.com", "/") == "a"
    assert svc_of(t, "bar.example.com", "/") == "b"
    assert svc_of(t, "baz.bar.example.com", "/") == "c"  # a wildcard covers exactly one label
    assert svc_of(t, "example.com", "/") == "c"
    assert svc_of(t, "10.0.0.1", "/") == "c"
    assert svc_of(t, None, "/") == "c"
    assert [h.host for h in t.hosts] == ["foo.example.com", "*.example.com", None]


def test_host_header_normalisation(services):
    t = table_for(services, rule("foo.example.com", ("/", "Prefix", "a:80")))
    for host in ("foo.example.com:8080", "FOO.Example.COM", "foo.example.com.", " foo.example.com "):
        assert svc_of(t, host, "/") == "a", host
    assert normalize_host("[::1]:80") == "::1" and normalize_host("") is None and normalize_host(None) is None


def test_selected_host_does_not_fall_through_to_less_specific_rules(services):
    t = table_for(services,
                  rule(None, ("/other", "Prefix", "c:web")),
                  rule("foo.example.com", ("/app", "Prefix", "a:80")),
                  "defaultBackend: {service: {name: fallback, port: {number: 80}}}\n")
    assert svc_of(t, "foo.example.com", "/app/x") == "a"
    assert svc_of(t, "foo.example.com", "/other") == "fallback"  # the host's group has no /other
    assert svc_of(t, "bar.example.com", "/other") == "c"


def test_default_backend_then_404(services):
    t = table_for(services, rule("foo.example.com", ("/app", "Prefix", "a:80")))
    assert match(t, "foo.example.com", "/nope") is None
    assert match(t, "bar.example.com", "/app") is None
    t = table_for(services, rule("foo.example.com", ("/app", "Prefix", "a:80")),
                  "defaultBackend: {service: {name: fallback, port: {number: 80}}}\n")
    assert svc_of(t, "foo.example.com", "/nope") == "fallback"
    assert svc_of(t, None, "/") == "fallback"
    assert match(t, None, "/").address == "10.96.0.13"


def test_rules_for_one_host_merge_across_ingresses_and_the_first_wins_conflicts(services):
    t = table_for(services,
                  rule("foo.example.com", ("/a", "Prefix", "a:80"), ("/same", "Exact", "a:80")),
                  rule("foo.example.com", ("/b", "Prefix", "b:80"), ("/same", "Exact", "b:80")),
                  "defaultBackend: {service: {name: a, port: {number: 80}}}\n",
                  "defaultBackend: {service: {name: fallback, port: {number: 80}}}\n")
    assert svc_of(t, "foo.example.com", "/a") == "a"
    assert svc_of(t, "foo.example.com", "/b") == "b"
    assert svc_of(t, "foo.example.com", "/same") == "a"
    assert svc_of(t, "x", "/") == "a"
    assert any("default/i0" in w and "already routed" in w for w in t.warnings), t.warnings
    assert any("spec.defaultBackend ignored" in w for w in t.warnings), t.warnings


def test_implementation_specific_is_a_prefix_and_empty_means_root(services):
    t = table_for(services, rule(None, ("", "ImplementationSpecific", "a:80"), ("/x", "ImplementationSpecific", "b:80")))
    assert svc_of(t, "h", "/anything") == "a"
    assert svc_of(t, "h", "/x/y") == "b"
    assert svc_of(t, "h", "/xy") == "a"


# ----------------------------------------------------------------------------- class selection


def classes(*specs: tuple[str, str, bool]) -> list[IngressClass]:
    return [IngressClass(n, c, d) for n, c, d in specs]


OURS, THEIRS = CONTROLLER, "k8s.io/ingress-nginx"


def test_class_selection(services):
    spec = rule(None, ("/", "Prefix", "a:80"))
    plain = ing(spec, name="plain")
    named_ours = ing("ingressClassName: lab\n" + spec, name="ours")
    named_theirs = ing("ingressClassName: nginx\n" + spec, name="theirs")
    named_missing = ing("ingressClassName: gone\n" + spec, name="missing")
    annotated = ing(spec, name="annotated", meta="annotations: {kubernetes.io/ingress.class: lab}\n")
    every = [plain, named_ours, named_theirs, named_missing, annotated]

    # the default class is ours: unclassed Ingresses are ours too
    cs = classes(("lab", OURS, True), ("nginx", THEIRS, False))
    t = routes(every, cs, services)
    assert t.served == ("default/plain", "default/ours", "default/annotated")
    skipped = dict(t.skipped)
    assert "belongs to controller k8s.io/ingress-nginx" in skipped["default/theirs"]
    assert "does not exist" in skipped["default/missing"]

    # the default class is theirs: unclassed Ingresses are theirs
    cs = classes(("lab", OURS, False), ("nginx", THEIRS, True))
    t = routes(every, cs, services)
    assert t.served == ("default/ours", "default/annotated")
    assert "the default IngressClass" in dict(t.skipped)["default/plain"]

    # no IngressClass at all: only what has no class is served (a named class that does not exist is not)
    t = routes(every, [], services)
    assert t.served == ("default/plain",)
    assert routes([plain], [], services, watch_without_class=False).served == ()

    # classes exist but none is default: an unclassed Ingress has no class and is served
    t = routes([plain, named_theirs], classes(("nginx", THEIRS, False)), services)
    assert t.served == ("default/plain",)


def test_a_controller_serves_only_its_own_classes(services):
    spec = rule(None, ("/", "Prefix", "a:80"))
    t = routes([ing("ingressClassName: nginx\n" + spec)], classes(("nginx", THEIRS, True)), services, controller=THEIRS)
    assert t.served == ("default/web",) and t.controller == THEIRS
    assert match(routes([ing("ingressClassName: nginx\n" + spec)], classes(("nginx", THEIRS, True)), services), "h", "/") is None


def test_several_default_classes_the_first_by_name_wins(services):
    cs = classes(("zeta", THEIRS, True), ("alpha", OURS, True))
    ok, why = serves(ing(rule(None, ("/", "Prefix", "a:80"))), cs)
    assert ok and "'alpha'" in why
    t = routes([], cs, services)
    assert any("several IngressClasses are marked default" in w for w in t.warnings)


# ----------------------------------------------------------------------------- JSON


def test_table_round_trips_through_json(services):
    t = table_for(services,
                  rule("foo.example.com", ("/a", "Prefix", "a:80"), ("/a", "Exact", "c:web")),
                  rule("*.example.com", ("/", "Prefix", "b:80")),
                  rule(None, ("/nosvc", "Prefix", "nope:80")),
                  "defaultBackend: {service: {name: fallback, port: {number: 80}}}\n",
                  "ingressClassName: gone\n" + rule(None, ("/", "Prefix", "a:80")))
    text = json.dumps(t.to_json())
    back = RouteTable.from_json(json.loads(text))
    assert back == t
    for host, path in [("foo.example.com", "/a"), ("foo.example.com", "/a/b"), ("x.example.com", "/"), ("h", "/nosvc"),
                       ("h", "/zzz")]:
        assert match(back, host, path) == match(t, host, path)
    assert isinstance(match(back, "h", "/zzz"), Backend)


def test_from_json_refuses_other_documents():
    with pytest.raises(ValueError):
        RouteTable.from_json({"kind": "Something"})
    with pytest.raises(ValueError):
        RouteTable.from_json({"kind": "IngressRoutes", "hosts": [{"host": None, "paths": [
            {"path": "/", "pathType": "Regex", "backend": {}}]}]})
