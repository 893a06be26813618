"""networking.k8s.io/v1 Ingress and IngressClass: parsing, and the routing decisions an Ingress controller makes.

Three layers, each usable on its own:

- `parse_ingress(doc)` / `parse_ingress_class(doc)` turn one YAML document (a `testbed.model._Doc`) into
  frozen objects, refusing what the API server's validation refuses (pkg/apis/networking/validation:
  validateIngressBackend, validateHTTPIngressPath, validateIngressRules, validateIngressClassSpec), with
  errors naming the file, the object and the field.
- `routes(ingresses, classes, services)` is the controller's sync, a pure function: which Ingresses this
  controller serves, each backend resolved to its Service's ClusterIP and port, merged into one
  `RouteTable` (JSON-serialisable: `to_json()` / `RouteTable.from_json()`).
- `match(table, host, path)` is the per-request decision the proxy (`testbed.ingress_proxy`) makes.

Matching, in order (https://kubernetes.io/docs/concepts/services-networking/ingress/ "Path types",
"Examples", "Multiple matches", "Hostname wildcards"; the IngressRule.host API reference):

1. Host. The Host header (lower-cased, port and a trailing dot removed) selects one group of rules: the
   rules whose host equals it; else the wildcard rules `*.<rest>` where `<rest>` is the header without
   its first label (a wildcard covers exactly one DNS label: `*.foo.com` matches `bar.foo.com`, not
   `foo.com` nor `baz.bar.foo.com`); else the rules without a host. Rules for the same host from all
   served Ingresses are merged. Once a group is selected, a path miss does not fall through to a less
   specific group: like ingress-nginx, where each host is an nginx `server` chosen by server_name
   (exact name, then wildcard, then the default server holding the host-less rules).
2. Path, within the group. `Exact`: the request path equals the path, case-sensitively (`/foo` does not
   match `/foo/`). `Prefix`: element-wise on `/`; a trailing slash on either side is ignored (`/foo`
   matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`; `/` matches everything).
   `ImplementationSpecific`: treated as `Prefix` (what ingress-nginx does without its regex annotation);
   an empty path is `/`. Among the matching paths the longest wins ("precedence will be given first to
   the longest matching path"); on equal length `Exact` beats `Prefix` (which beats
   `ImplementationSpecific`). Lengths are compared without the trailing slash, so a matching `Exact`
   path is never shorter than a matching prefix: "Exact beats Prefix" and "longest wins" agree.
   Still equal (the same path from two Ingresses): the Ingress listed first wins, with a warning.
3. Nothing matched: the default backend (the first served Ingress with `spec.defaultBackend`, by input
   order; others are reported as conflicts); else None, which the proxy answers with 404.

The request path is matched as it arrives (query string removed), without percent-decoding or
dot-segment removal (nginx normalises the URI first).

Class selection (the docs' "Ingress class" and "Default IngressClass" sections; kube-apiserver's
DefaultIngressClass admission plugin, which fills in `ingressClassName` at creation time):
`spec.ingressClassName`, else the deprecated `kubernetes.io/ingress.class` annotation (API validation
requires the two to agree when both are set; the admission plugin leaves an annotated Ingress alone),
else the default IngressClass (annotation `ingressclass.kubernetes.io/is-default-class: "true"`; when
several are marked the plugin picks the newest and breaks ties by name; objects here have no creation
time, so the first by name; older API servers refused the Ingress instead), else the Ingress has no
class. An Ingress is served when its class exists and names this controller, or when it has no class at
all and `watch_without_class` (default True: there is no IngressClass to assign, the case ingress-nginx
covers with `--watch-ingress-without-class`).

Backends: a Service in the Ingress's namespace; a port number names the Service's TCP port with that
`port`, a port name the Service port with that `name` (backend.service.port.name refers to the Service
port's name, not to a targetPort). Traffic goes to ClusterIP:port, so kube-proxy's rules choose the
endpoint (ingress-nginx talks to the endpoints directly; its `service-upstream` annotation does what
is done here). A backend that cannot be resolved (no such Service or port, headless, ExternalName,
a Service kube-proxy does not proxy) stays in the table with `address` None and a `problem`; the proxy
answers 503 for it, as ingress-nginx does for a Service without endpoints.

TLS is not terminated: `spec.tls` hosts are kept on the Ingress, reported as ignored, and served over
plain HTTP. IngressClass `spec.parameters` is reported as ignored.

This module imports only the standard library at import time (`testbed.model`, which needs PyYAML, is
imported by the parsers when they run), so the proxy process can use `RouteTable` and `match` cheaply.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import show

if TYPE_CHECKING:  # pragma: no cover
    from .control import ServiceInfo
    from .model import _Doc

API_VERSION = "networking.k8s.io/v1"
DEFAULT_CONTROLLER = "testbed.dev/ingress-controller"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"  # deprecated, still honoured by controllers
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
_PATH_RANK = {t: i for i, t in enumerate(PATH_TYPES)}  # tie-break at equal length: Exact first

# Shapes from k8s.io/apimachinery/pkg/util/validation and pkg/apis/networking/validation.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?\Z")  # ValidateServiceName
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")  # IsValidPortName, plus the rules below
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9/\-._~%!$&'()*+,;=:]+\Z")  # IsDomainPrefixedPath, path part
_INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_PATH_SUFFIXES = ("/..", "/.")
MAX_CONTROLLER_LEN = 250


# ----------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class IngressBackend:
    """A Service backend as written: the Service's name and its port's number or name."""

    service: str
    port: int | str


@dataclass(frozen=True)
class IngressPath:
    path: str  # as written ("" only for ImplementationSpecific, meaning "/")
    path_type: str  # Exact | Prefix | ImplementationSpecific
    backend: IngressBackend


@dataclass(frozen=True)
class IngressRule:
    host: str | None  # None: every host; "*.example.com": one label under example.com
    paths: tuple[IngressPath, ...] = ()


@dataclass(frozen=True)
class Ingress:
    name: str
    namespace: str
    ingress_class_name: str | None = None  # spec.ingressClassName
    default_backend: IngressBackend | None = None
    rules: tuple[IngressRule, ...] = ()
    tls_hosts: tuple[str, ...] = ()  # not terminated: reported, served over plain HTTP
    class_annotation: str | None = None  # metadata.annotations["kubernetes.io/ingress.class"]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class IngressClass:
    name: str
    controller: str
    is_default: bool = False


# ----------------------------------------------------------------------------- parsing


def _annotations(doc: _Doc) -> dict:
    ann = doc.mapping("metadata.annotations")
    for k, v in ann.items():
        if not isinstance(v, str):
            doc.fail(f"metadata.annotations.{k}", f"expected a string (annotation values are strings: quote it), got {show(v)}")
    return ann


def _host(doc: _Doc, path: str, value) -> str:
    host = doc.string(path, value, required=True)
    if not host:
        doc.fail(path, "expected a host name, got an empty string")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        doc.fail(path, f"must be a DNS name, not an IP address, got {show(host)}")
    name = host.removeprefix("*.")
    if len(host) > 253 or "*" in name or not _DNS_SUBDOMAIN.match(name):
        doc.fail(path, f"expected a lower-case DNS name such as foo.example.com, or a wildcard such as *.example.com "
                       f"('*' alone as the first label; no port), got {show(host)}")
    return host


def _backend(doc: _Doc, path: str, raw) -> IngressBackend:
    b = doc.mapping(path, raw)
    doc.check_keys(path, b, {"service", "resource"})
    if b.get("resource") is not None:
        if b.get("service") is not None:
            doc.fail(path, "cannot set both resource and service backends")
        doc.fail(f"{path}.resource", "resource backends are not modelled; use a service backend (service.name, service.port)")
    if b.get("service") is None:
        doc.fail(f"{path}.service", "is required (a backend is a Service: service.name and service.port)")
    svc = doc.mapping(f"{path}.service", b["service"])
    doc.check_keys(f"{path}.service", svc, {"name", "port"})
    name = doc.string(f"{path}.service.name", svc.get("name"), required=True)
    if not name:
        doc.fail(f"{path}.service.name", "is required")
    if len(name) > 63 or not _DNS1035_LABEL.match(name):
        doc.fail(f"{path}.service.name", f"expected a Service name (a DNS-1035 label: lower-case letters, digits, '-', "
                                         f"starting with a letter, at most 63 characters), got {show(name)}")
    port = doc.mapping(f"{path}.service.port", svc.get("port"))
    doc.check_keys(f"{path}.service.port", port, {"name", "number"})
    pname, number = port.get("name") or None, port.get("number")
    if pname is not None and number is not None:
        doc.fail(f"{path}.service.port", "cannot set both port name and port number")
    if number is not None:
        return IngressBackend(name, doc.integer(f"{path}.service.port.number", number, 1, 65535))
    if pname is not None:
        pname = doc.string(f"{path}.service.port.name", pname)
        if len(pname) > 15 or not _IANA_SVC_NAME.match(pname) or "--" in pname or not re.search("[a-z]", pname):
            doc.fail(f"{path}.service.port.name", "expected a Service port name (an IANA service name: at most 15 lower-case "
                                                  f"letters, digits and '-', at least one letter), got {show(pname)}")
        return IngressBackend(name, pname)
    doc.fail(f"{path}.service.port", "port name or number is required")
    raise AssertionError  # unreachable: fail raises


def _path(doc: _Doc, path: str, raw) -> IngressPath:
    p = doc.mapping(path, raw)
    doc.check_keys(path, p, {"path", "pathType", "backend"})
    ptype = doc.string(f"{path}.pathType", p.get("pathType"))
    if ptype is None:
        doc.fail(f"{path}.pathType", f"is required ({', '.join(PATH_TYPES)})")
    if ptype not in PATH_TYPES:
        doc.fail(f"{path}.pathType", f"expected one of {', '.join(PATH_TYPES)}, got {show(ptype)}")
    value = doc.string(f"{path}.path", p.get("path"), default="")
    if (ptype in ("Exact", "Prefix") or value) and not value.startswith("/"):  # ImplementationSpecific may be empty
        doc.fail(f"{path}.path", f"must be an absolute path (starting with '/'), got {show(value)}")
    if ptype in ("Exact", "Prefix"):
        for seq in _INVALID_PATH_SEQUENCES:
            if seq in value:
                doc.fail(f"{path}.path", f"must not contain {seq!r}, got {show(value)}")
        for suffix in _INVALID_PATH_SUFFIXES:
            if value.endswith(suffix):
                doc.fail(f"{path}.path", f"cannot end with {suffix!r}, got {show(value)}")
    if p.get("backend") is None:
        doc.fail(f"{path}.backend", "is required")
    return IngressPath(value, ptype, _backend(doc, f"{path}.backend", p["backend"]))


def parse_ingress(doc: _Doc) -> Ingress:
    """One networking.k8s.io/v1 Ingress document → Ingress (TopologyError naming the field when invalid)."""
    from .model import _metadata  # PyYAML-backed; imported here to keep this module light for the proxy

    name, ns = _metadata(doc, "Ingress")
    ann = _annotations(doc)
    spec = doc.mapping("spec")
    doc.check_keys("spec", spec, {"ingressClassName", "defaultBackend", "rules", "tls"})
    cls = doc.string("spec.ingressClassName")
    if cls is not None:
        doc.name("spec.ingressClassName", cls, pattern=_DNS_SUBDOMAIN, max_len=253,
                 what="an IngressClass name (a DNS-1123 subdomain)")
    annotated = ann.get(CLASS_ANNOTATION)
    if annotated is not None and cls is not None and annotated != cls:
        doc.fail(f"metadata.annotations.{CLASS_ANNOTATION}", f"must match spec.ingressClassName when both are specified "
                                                             f"({show(annotated)} vs {show(cls)})")
    default = _backend(doc, "spec.defaultBackend", spec["defaultBackend"]) if spec.get("defaultBackend") is not None else None
    rules = []
    for i, r in enumerate(doc.seq("spec.rules")):
        rp = f"spec.rules[{i}]"
        r = doc.mapping(rp, r)
        doc.check_keys(rp, r, {"host", "http"})
        host = _host(doc, f"{rp}.host", r["host"]) if r.get("host") not in (None, "") else None  # "" is unset in the API
        paths: list[IngressPath] = []
        if r.get("http") is not None:
            http = doc.mapping(f"{rp}.http", r["http"])
            doc.check_keys(f"{rp}.http", http, {"paths"})
            raw_paths = doc.seq(f"{rp}.http.paths", http.get("paths"))
            if not raw_paths:
                doc.fail(f"{rp}.http.paths", "expected at least one path")
            paths = [_path(doc, f"{rp}.http.paths[{j}]", p) for j, p in enumerate(raw_paths)]
        rules.append(IngressRule(host, tuple(paths)))
    if not rules and default is None:
        doc.fail("spec", "expected spec.rules or spec.defaultBackend (an Ingress needs at least one)")
    tls_hosts: list[str] = []
    raw_tls = doc.seq("spec.tls")
    for i, t in enumerate(raw_tls):
        tp = f"spec.tls[{i}]"
        t = doc.mapping(tp, t)
        doc.check_keys(tp, t, {"hosts", "secretName"})
        doc.string(f"{tp}.secretName", t.get("secretName"))
        tls_hosts.extend(_host(doc, f"{tp}.hosts[{j}]", h) for j, h in enumerate(doc.seq(f"{tp}.hosts", t.get("hosts"))))
    if raw_tls:  # TLS is not terminated: report it the way every unmodelled field is reported
        doc.notes.effect(doc.file, doc.obj, "spec.tls", f"not terminated: {', '.join(tls_hosts) or 'no hosts'} "
                         "served over plain HTTP")
    return Ingress(name, ns, cls, default, tuple(rules), tuple(dict.fromkeys(tls_hosts)), annotated)


def parse_ingress_class(doc: _Doc) -> IngressClass:
    """One networking.k8s.io/v1 IngressClass document → IngressClass."""
    from .model import _metadata

    name, _ns = _metadata(doc, "IngressClass")  # cluster-scoped: a namespace is ignored, as the API server does
    ann = _annotations(doc)
    spec = doc.mapping("spec")
    doc.check_keys("spec", spec, {"controller"})  # spec.parameters is not modelled: reported as ignored
    controller = doc.string("spec.controller", spec.get("controller"), required=True)
    if len(controller) > MAX_CONTROLLER_LEN:
        doc.fail("spec.controller", f"expected at most {MAX_CONTROLLER_LEN} characters, got {len(controller)}")
    domain, slash, rest = controller.partition("/")
    if not slash or not rest or not _DNS_SUBDOMAIN.match(domain) or len(domain) > 253 or not _PATH_SEGMENT.match(rest):
        doc.fail("spec.controller",
                 f"expected a domain-prefixed path such as example.com/ingress-controller, got {show(controller)}")
    return IngressClass(name, controller, ann.get(DEFAULT_CLASS_ANNOTATION) == "true")


# ----------------------------------------------------------------------------- the route table


@dataclass(frozen=True)
class Backend:
    """Where a request goes: the Service as the Ingress named it, and the address it resolved to."""

    namespace: str
    service: str
    port: int | str  # as written in the Ingress: the Service port's number or name
    address: str | None  # the Service's ClusterIP; None when unresolved (the proxy answers 503)
    target: int | None  # the Service port number to connect to
    ingress: str  # "namespace/name" of the Ingress that contributed it
    problem: str | None = None  # why it is unresolved

    def to_json(self) -> dict:
        return {"namespace": self.namespace, "service": self.service, "port": self.port, "address": self.address,
                "target": self.target, "ingress": self.ingress, "problem": self.problem}

    @classmethod
    def from_json(cls, d: dict) -> Backend:
        return cls(d["namespace"], d["service"], d["port"], d.get("address"), d.get("target"), d.get("ingress", ""),
                   d.get("problem"))


@dataclass(frozen=True)
class Route:
    path: str  # normalised: "/" for an empty ImplementationSpecific path
    path_type: str
    backend: Backend


@dataclass(frozen=True)
class HostRoutes:
    host: str | None  # exact, "*.suffix", or None for the rules without a host
    routes: tuple[Route, ...]  # in precedence order: the first that matches wins


@dataclass(frozen=True)
class RouteTable:
    controller: str = DEFAULT_CONTROLLER
    hosts: tuple[HostRoutes, ...] = ()  # exact hosts (sorted), then wildcards (sorted), then None
    default_backend: Backend | None = None
    served: tuple[str, ...] = ()  # Ingress keys this controller serves, in input order
    skipped: tuple[tuple[str, str], ...] = ()  # (Ingress key, why it is not served)
    warnings: tuple[str, ...] = ()  # conflicts, unresolved backends, TLS not terminated
    _index: dict = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {h.host: h for h in self.hosts})

    def to_json(self) -> dict:
        return {
            "apiVersion": "testbed.dev/v1alpha1", "kind": "IngressRoutes", "controller": self.controller,
            "hosts": [{"host": h.host, "paths": [{"path": r.path, "pathType": r.path_type, "backend": r.backend.to_json()}
                                                 for r in h.routes]} for h in self.hosts],
            "defaultBackend": self.default_backend.to_json() if self.default_backend else None,
            "served": list(self.served), "skipped": [list(s) for s in self.skipped], "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, d: dict) -> RouteTable:
        if not isinstance(d, dict) or d.get("kind") != "IngressRoutes":
            raise ValueError("not an IngressRoutes table (expected kind: IngressRoutes)")
        hosts = []
        for h in d.get("hosts") or []:
            routes = []
            for r in h.get("paths") or []:
                if r.get("pathType") not in PATH_TYPES:
                    raise ValueError(f"unknown pathType {r.get('pathType')!r}")
                routes.append(Route(r["path"], r["pathType"], Backend.from_json(r["backend"])))
            hosts.append(HostRoutes(h.get("host"), tuple(routes)))
        db = d.get("defaultBackend")
        return cls(d.get("controller", DEFAULT_CONTROLLER), tuple(hosts), Backend.from_json(db) if db else None,
                   tuple(d.get("served") or ()), tuple(tuple(s) for s in d.get("skipped") or ()),
                   tuple(d.get("warnings") or ()))


def default_class(classes: Iterable[IngressClass]) -> IngressClass | None:
    """The class the DefaultIngressClass admission plugin assigns: marked default; several → first by name."""
    marked = sorted((c for c in classes if c.is_default), key=lambda c: c.name)
    return marked[0] if marked else None


def ingress_class_of(ing: Ingress, classes: Iterable[IngressClass]) -> tuple[str | None, str]:
    """The class name an Ingress ends up with, and how it got it (field, annotation, default, none)."""
    if ing.ingress_class_name is not None:
        return ing.ingress_class_name, "spec.ingressClassName"
    if ing.class_annotation is not None:
        return ing.class_annotation, f"annotation {CLASS_ANNOTATION}"
    d = default_class(classes)
    if d is not None:
        return d.name, "the default IngressClass"
    return None, "no class"


def serves(ing: Ingress, classes: Iterable[IngressClass], controller: str = DEFAULT_CONTROLLER,
           watch_without_class: bool = True) -> tuple[bool, str]:
    """Whether `controller` serves this Ingress, and why (or why not)."""
    classes = list(classes)
    name, how = ingress_class_of(ing, classes)
    if name is None:
        if watch_without_class:
            return True, "no IngressClass applies (no class set, no default class)"
        return False, "it has no class and no IngressClass is marked default"
    cls = next((c for c in classes if c.name == name), None)
    if cls is None:
        return False, f"its IngressClass {name!r} ({how}) does not exist"
    if cls.controller != controller:
        return False, f"its IngressClass {name!r} ({how}) belongs to controller {cls.controller}"
    return True, f"IngressClass {name!r} ({how})"


def _resolve(ing: Ingress, b: IngressBackend, by_key: dict) -> Backend:
    key = f"{ing.namespace}/{b.service}"
    info = by_key.get(key)

    def unresolved(problem: str) -> Backend:
        return Backend(ing.namespace, b.service, b.port, None, None, ing.key, problem)

    if info is None:
        return unresolved(f"Service {key} does not exist")
    svc = info.service
    if svc.type == "ExternalName":
        return unresolved(f"Service {key} is of type ExternalName (not modelled as an Ingress backend)")
    if not info.cluster_ip:
        return unresolved(f"Service {key} has no ClusterIP (headless)")
    if not getattr(info, "proxied", True):
        return unresolved(f"Service {key} is not proxied by kube-proxy (it carries a service-proxy-name or headless label)")
    if isinstance(b.port, int):
        sp = next((p for p in svc.ports if p.port == b.port and p.protocol == "TCP"), None)
        if sp is None:
            return unresolved(f"Service {key} has no TCP port {b.port}")
    else:
        sp = next((p for p in svc.ports if p.name == b.port), None)
        if sp is None:
            return unresolved(f"Service {key} has no port named {b.port!r}")
        if sp.protocol != "TCP":
            return unresolved(f"Service {key} port {b.port!r} is {sp.protocol}, not TCP")
    return Backend(ing.namespace, b.service, b.port, info.cluster_ip, sp.port, ing.key)


def _length(path: str, path_type: str) -> int:
    return len(path) if path_type == "Exact" else len(path.rstrip("/"))


def routes(ingresses: Iterable[Ingress], classes: Iterable[IngressClass], services: Iterable[ServiceInfo],
           controller: str = DEFAULT_CONTROLLER, watch_without_class: bool = True) -> RouteTable:
    """The controller's sync: the served Ingresses merged into one table, backends resolved. Pure.

    Input order stands in for creation order (oldest first) where Kubernetes controllers use it to
    settle conflicts: the first Ingress's path or default backend wins, later ones become warnings.
    """
    classes = list(classes)
    by_key = {s.service.key: s for s in services}
    served: list[str] = []
    skipped: list[tuple[str, str]] = []
    warnings: list[str] = []
    groups: dict[str | None, list[Route]] = {}
    seen: dict[tuple[str | None, str, str], str] = {}
    default: Backend | None = None
    if sum(c.is_default for c in classes) > 1:
        marked = ", ".join(sorted(c.name for c in classes if c.is_default))
        warnings.append(f"several IngressClasses are marked default ({marked}); "
                        f"Ingresses without a class get {default_class(classes).name!r}")

    def note(b: Backend, where: str) -> Backend:
        if b.problem:
            warnings.append(f"Ingress {b.ingress}: {where}: {b.problem} (answered with 503)")
        return b

    for ing in ingresses:
        ok, why = serves(ing, classes, controller, watch_without_class)
        if not ok:
            skipped.append((ing.key, why))
            continue
        served.append(ing.key)
        if ing.tls_hosts:
            warnings.append(f"Ingress {ing.key}: spec.tls is not terminated; {', '.join(ing.tls_hosts)} served over plain HTTP")
        if ing.default_backend is not None:
            b = note(_resolve(ing, ing.default_backend, by_key), "spec.defaultBackend")
            if default is None:
                default = b
            else:
                warnings.append(f"Ingress {ing.key}: spec.defaultBackend ignored: Ingress {default.ingress} already sets one")
        for i, rule in enumerate(ing.rules):
            group = groups.setdefault(rule.host, [])
            for j, p in enumerate(rule.paths):
                path = p.path or "/"
                where = f"spec.rules[{i}].http.paths[{j}]"
                k = (rule.host, path, p.path_type)
                if k in seen:
                    warnings.append(f"Ingress {ing.key}: {where}: {p.path_type} {path} on {rule.host or 'every host'} "
                                    f"is already routed by Ingress {seen[k]}; ignored")
                    continue
                seen[k] = ing.key
                group.append(Route(path, p.path_type, note(_resolve(ing, p.backend, by_key), f"{where}.backend")))
    hosts = []
    for h in sorted(groups, key=lambda h: (h is None, h is not None and h.startswith("*."), h or "")):
        ordered = sorted(groups[h], key=lambda r: (-_length(r.path, r.path_type), _PATH_RANK[r.path_type]))  # stable
        hosts.append(HostRoutes(h, tuple(ordered)))
    return RouteTable(controller, tuple(hosts), default, tuple(served), tuple(skipped), tuple(dict.fromkeys(warnings)))


# ----------------------------------------------------------------------------- per request


def normalize_host(host: str | None) -> str | None:
    """A Host header as matched: lower-cased, without the port or a trailing dot; None when absent."""
    if not host:
        return None
    h = host.strip().lower()
    if h.startswith("["):  # an IPv6 literal, maybe with a port
        end = h.find("]")
        h = h[1:end] if end > 0 else h[1:]
    elif ":" in h:
        h = h.rsplit(":", 1)[0]
    h = h.rstrip(".")
    return h or None


def path_matches(path: str, path_type: str, request_path: str) -> bool:
    """Whether an Ingress path of this type matches the request path (without its query string)."""
    if path_type == "Exact":
        return request_path == path
    p = path.rstrip("/")  # Prefix and ImplementationSpecific: element-wise, trailing slash ignored
    return not p or request_path == p or request_path.startswith(p + "/")


def match(table: RouteTable, host: str | None, path: str) -> Backend | None:
    """The backend for a request with this Host header and path; None means 404. Pure."""
    path = path.split("?", 1)[0].split("#", 1)[0] or "/"
    h = normalize_host(host)
    index = table._index
    group = None
    if h is not None and not h.startswith("*"):
        group = index.get(h)
        if group is None and "." in h:
            group = index.get("*." + h.split(".", 1)[1])
    if group is None:
        group = index.get(None)
    if group is not None:
        for r in group.routes:
            if path_matches(r.path, r.path_type, path):
                return r.backend
    return table.default_backend
