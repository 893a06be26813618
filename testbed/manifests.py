"""What a user has → a flat list of documents, each with where it came from.

Takes what `kubectl apply -f` takes: multi-document YAML, JSON (one object, a stream of objects or
an array), `kind: List` and the typed `*List` kinds (`ConfigMapList`, `RoleList`, … whose items may
leave out their own kind and apiVersion), the output of `helm template` and `kubectl kustomize`, a
`kubectl get … -o yaml` dump; a file path or `-` for standard input. Documents keep a position
("document 3", "document 3, items[5]") that every later error names.

The catalogue of kinds says what becomes of each: modelled (parsed by testbed.model), known to
Kubernetes but not modelled (accepted and summarised once; some of them change traffic and say
how), custom resources (any kind of an API group outside Kubernetes' own), or unknown (a built-in
API group with a kind it does not have — a typo kubectl would refuse too).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import TopologyError, show

_STR, _TIMESTAMP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp"
_MAP, _SEQ, _MERGE = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"


class _Resolver(yaml.resolver.Resolver):
    """PyYAML's resolver, without the per-node path-resolver calls (no path resolvers are defined) and
    with plain scalars whose first character starts no implicit type taken as strings at once."""

    _FIRST = frozenset(k for k in yaml.resolver.Resolver.yaml_implicit_resolvers if k)

    def descend_resolver(self, current_node, current_index):
        pass

    def ascend_resolver(self):
        pass

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode and implicit[0] and value and value[0] not in self._FIRST:
            return _STR
        return super().resolve(kind, value, implicit)


class _Constructor(yaml.constructor.SafeConstructor):
    """SafeConstructor's values, built in one pass instead of its generator machinery, and with
    timestamps kept as the strings they are in Kubernetes (its YAML goes through JSON: a bare
    `creationTimestamp: 2026-11-20T09:14:03Z` is a string there, and must stay JSON-serialisable)."""

    def construct_document(self, node):
        memo: dict[int, object] = {}
        scalar = self.yaml_constructors

        def build(n):
            if n.__class__ is yaml.ScalarNode:
                tag = n.tag
                if tag == _STR or tag == _TIMESTAMP:
                    return n.value
                if tag not in scalar:
                    return self.construct_undefined(n)
                try:
                    return scalar[tag](self, n)
                except yaml.constructor.ConstructorError:
                    raise
                except (ValueError, IndexError, KeyError, AttributeError, TypeError):
                    raise yaml.constructor.ConstructorError(
                        None, None, f"expected a {tag.replace('tag:yaml.org,2002:', '!!')} value, got {show(n.value)}",
                        n.start_mark) from None
            seen = memo.get(id(n))
            if seen is not None:
                return seen  # an alias: the same object, as PyYAML makes it
            if n.__class__ is yaml.SequenceNode:
                out: list = []
                memo[id(n)] = out
                out.extend(build(c) for c in n.value)
                return out
            if n.tag != _MAP or any(k.tag == _MERGE for k, _ in n.value):
                return super(_Constructor, self).construct_document(n)  # merge keys, tags: PyYAML's own way
            d: dict = {}
            memo[id(n)] = d
            for k, v in n.value:
                key = build(k)
                try:
                    d[key] = build(v)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", n.start_mark, "found an unhashable key", k.start_mark) from None
            return d

        return build(node)


_Constructor.add_constructor(_TIMESTAMP, yaml.constructor.SafeConstructor.construct_scalar)


try:  # libyaml's C parser, with the constructor above: several times faster than pure-Python PyYAML
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser as _Parser


class _Loader(_Parser, _Constructor, _Resolver):
    def __init__(self, stream):
        _Parser.__init__(self, stream)
        _Constructor.__init__(self)
        _Resolver.__init__(self)


_YAML_LOADER = _Loader

MAX_DEPTH = 100  # Kubernetes objects nest ~30 levels at most (CRD schemas); deeper is not a manifest
# Values that YAML aliases repeat in one document: a dump of any size repeats none, an alias bomb
# (nine aliases of nine aliases …) billions; kubectl refuses such "excessive aliasing" too.
MAX_REPEATED = 1_000_000


class SafeLoader(_YAML_LOADER):
    """The safe loader, with a scalar its constructors cannot read (`!!int` of nothing, `!!bool maybe`,
    `!!timestamp 2001-13-45`, an integer of more than sys.get_int_max_str_digits() digits) refused at
    its line instead of raising a bare Python error."""

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            if not node.value.lstrip("+-").isdigit():
                raise
            raise yaml.constructor.ConstructorError(
                None, None, f"expected an integer of at most {sys.get_int_max_str_digits()} digits, got one "
                f"of {len(node.value)} characters", node.start_mark) from None

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, IndexError, KeyError, AttributeError, TypeError):
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise yaml.constructor.ConstructorError(None, None, f"expected a {tag} value, got {show(node.value)}",
                                                    node.start_mark) from None


SafeLoader.add_constructor("tag:yaml.org,2002:int", SafeLoader.construct_yaml_int)


@dataclass(frozen=True)
class Document:
    data: dict
    where: str  # "document 3" or "document 3, items[5]"


# ----------------------------------------------------------------------------- reading


def read_source(path: str | Path) -> tuple[str, str]:
    """(text, the name errors use) of a file, or of standard input for `-`."""
    name = str(path)
    try:
        raw = sys.stdin.buffer.read() if name == "-" else Path(path).read_bytes()
    except OSError as e:
        raise TopologyError(name, None, None, f"cannot read the file: {e.strerror}") from None
    return decode(raw, "<stdin>" if name == "-" else name), "<stdin>" if name == "-" else name


def decode(raw: bytes, file: str) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark, as Windows editors write it
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TopologyError(file, None, None, f"expected a YAML or JSON text file (UTF-8), got binary data "
                                              f"(byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def parse_stream(text: str, file: str) -> list[Document]:
    """Every object of the text, Lists flattened, in file order (empty documents skipped)."""
    raw_docs = _parse_json(text, file) if text.lstrip()[:1] in ("{", "[") else None
    if raw_docs is None:
        raw_docs = _parse_yaml(text, file)
    out: list[Document] = []
    for i, raw in enumerate(raw_docs):
        if raw is None:
            continue
        where = f"document {i + 1}"
        _check_depth(raw, file, where)
        flatten(raw, where, file, out)
    return out


def _parse_yaml(text: str, file: str) -> list:
    try:
        return list(yaml.load_all(text, Loader=SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(e, "problem", None) or str(e)
        if len(problem) > 200:  # it quotes the input (a tag, a scalar): not all of it
            problem = f"{problem[:200]}… ({len(problem)} characters)"
        raise TopologyError(file, where, None, f"expected valid YAML: {problem}") from None
    except RecursionError:
        raise TopologyError(file, None, None, f"expected a Kubernetes manifest, got YAML nested more than "
                                              f"{MAX_DEPTH} levels deep") from None


def _parse_json(text: str, file: str) -> list | None:
    """A JSON object, a stream of them, or an array; None if the text is not JSON (then it is YAML)."""
    dec = json.JSONDecoder()
    out, pos, n = [], 0, len(text)
    try:
        while True:
            while pos < n and text[pos].isspace():
                pos += 1
            if pos >= n:
                break
            obj, pos = dec.raw_decode(text, pos)
            out.extend(obj if isinstance(obj, list) else [obj])
    except ValueError:  # JSONDecodeError, or an integer too long for Python (YAML then names its line)
        return None  # YAML flow style ({a: b}) starts like JSON too: let the YAML parser decide
    except RecursionError:
        raise TopologyError(file, None, None, f"expected a Kubernetes manifest, got JSON nested more than "
                                              f"{MAX_DEPTH} levels deep") from None
    return out


def _check_depth(raw, file: str, where: str) -> None:
    """Refuse pathological nesting and aliasing here, so nothing later (validation, the lab's JSON
    state) recurses on it or walks a billion values."""
    stack = [(raw, 1)]
    seen: set[int] = set()
    repeated = 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise TopologyError(file, where, None, f"expected a Kubernetes manifest, got data nested more than "
                                                   f"{MAX_DEPTH} levels deep")
        if id(node) in seen:  # reached again: an alias
            repeated += len(node)
            if repeated > MAX_REPEATED:
                raise TopologyError(file, where, None, f"expected a Kubernetes manifest, got YAML aliases that repeat "
                                                       f"more than {MAX_REPEATED:,} values (an alias bomb)")
        seen.add(id(node))
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))


def is_list(raw) -> bool:
    kind = raw.get("kind") if isinstance(raw, dict) else None
    return isinstance(kind, str) and kind.endswith("List") and "items" in raw and not raw.get("spec")


def flatten(raw, where: str, file: str, out: list[Document]) -> None:
    if not is_list(raw):
        out.append(Document(raw, where))
        return
    items = raw.get("items")
    if items is None:
        return
    if not isinstance(items, list):
        raise TopologyError(file, f"{raw['kind']} ({where})", "items", f"expected a list, got {type(items).__name__}")
    # A typed list (ConfigMapList) may leave out each item's kind and apiVersion, as the API does.
    item_kind = raw["kind"][: -len("List")] if raw["kind"] != "List" else None
    for j, item in enumerate(items):
        if isinstance(item, dict) and item_kind:
            if "kind" not in item or "apiVersion" not in item:
                item = {"kind": item_kind, "apiVersion": raw.get("apiVersion"), **item}
        flatten(item, f"{where}, items[{j}]", file, out)


def load_documents(path: str | Path) -> tuple[list[Document], str]:
    text, name = read_source(path)
    return parse_stream(text, name), name


# ----------------------------------------------------------------------------- the catalogue of kinds

# Kubernetes' own API groups (a kind outside these groups with a dotted group is a custom resource).
BUILTIN_GROUPS = {
    "", "apps", "batch", "autoscaling", "policy", "rbac.authorization.k8s.io", "networking.k8s.io",
    "discovery.k8s.io", "storage.k8s.io", "admissionregistration.k8s.io", "apiextensions.k8s.io",
    "apiregistration.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "node.k8s.io",
    "certificates.k8s.io", "events.k8s.io", "flowcontrol.apiserver.k8s.io", "resource.k8s.io",
    "internal.apiserver.k8s.io", "storagemigration.k8s.io", "authentication.k8s.io", "authorization.k8s.io",
}

# Kinds Kubernetes has that testbed accepts without modelling; the value says how they would change
# traffic in a real cluster ("" when they do not touch Service networking).
NOT_MODELLED = {
    "Namespace": "",  # modelled as a name only (see model.KINDS)
    "ServiceAccount": "", "ConfigMap": "", "Secret": "", "PersistentVolume": "", "PersistentVolumeClaim": "",
    "LimitRange": "", "ResourceQuota": "", "Event": "", "PodTemplate": "", "ComponentStatus": "", "Binding": "",
    "ControllerRevision": "", "PodDisruptionBudget": "", "Role": "", "ClusterRole": "", "RoleBinding": "",
    "ClusterRoleBinding": "", "StorageClass": "", "CSIDriver": "", "CSINode": "", "CSIStorageCapacity": "",
    "VolumeAttachment": "", "VolumeAttributesClass": "", "ValidatingWebhookConfiguration": "",
    "MutatingWebhookConfiguration": "", "ValidatingAdmissionPolicy": "", "ValidatingAdmissionPolicyBinding": "",
    "MutatingAdmissionPolicy": "", "MutatingAdmissionPolicyBinding": "", "CustomResourceDefinition": "",
    "APIService": "", "PriorityClass": "", "Lease": "", "RuntimeClass": "", "CertificateSigningRequest": "",
    "ClusterTrustBundle": "", "FlowSchema": "", "PriorityLevelConfiguration": "", "StorageVersion": "",
    "StorageVersionMigration": "", "DeviceClass": "", "ResourceClaim": "", "ResourceClaimTemplate": "",
    "ResourceSlice": "", "LeaseCandidate": "", "TokenReview": "", "SubjectAccessReview": "",
    "SelfSubjectAccessReview": "", "SelfSubjectReview": "", "LocalSubjectAccessReview": "",
    "SelfSubjectRulesReview": "",
    "NetworkPolicy": "traffic between pods is not filtered here",
    "HorizontalPodAutoscaler": "replica counts stay as the workloads declare them",
    "CronJob": "no Jobs are started on its schedule",
    "ServiceCIDR": "its CIDRs become the Lab's serviceCIDR (the one named kubernetes) and additionalServiceCIDRs; "
                   "its status and deletion protection are not modelled",
    "IPAddress": "ClusterIPs are allocated by testbed, not from these objects",
}

# Kinds of the custom-resource world that route or filter traffic in a real cluster.
TRAFFIC_GROUPS = {
    "gateway.networking.k8s.io": "Gateway API routes are not served",
    "networking.istio.io": "the service mesh's routing is not modelled",
    "security.istio.io": "the service mesh's policies are not modelled",
    "cilium.io": "Cilium's policies and load balancing are not modelled",
    "crd.projectcalico.org": "Calico's policies are not modelled",
    "projectcalico.org": "Calico's policies are not modelled",
    "metallb.io": "the simulated cloud's pool assigns LoadBalancer addresses instead",
    "traefik.io": "Traefik's routes are not served",
    "traefik.containo.us": "Traefik's routes are not served",
    "linkerd.io": "the service mesh's routing is not modelled",
    "policy.linkerd.io": "the service mesh's policies are not modelled",
}

# apiVersions Kubernetes removed for kinds testbed models: kubectl apply on a current cluster refuses them.
REMOVED_VERSIONS = {
    ("extensions/v1beta1", "Deployment"): ("apps/v1", "1.16"),
    ("apps/v1beta1", "Deployment"): ("apps/v1", "1.16"),
    ("apps/v1beta2", "Deployment"): ("apps/v1", "1.16"),
    ("extensions/v1beta1", "ReplicaSet"): ("apps/v1", "1.16"),
    ("apps/v1beta2", "ReplicaSet"): ("apps/v1", "1.16"),
    ("extensions/v1beta1", "DaemonSet"): ("apps/v1", "1.16"),
    ("apps/v1beta2", "DaemonSet"): ("apps/v1", "1.16"),
    ("apps/v1beta1", "StatefulSet"): ("apps/v1", "1.16"),
    ("apps/v1beta2", "StatefulSet"): ("apps/v1", "1.16"),
    ("extensions/v1beta1", "Ingress"): ("networking.k8s.io/v1", "1.22"),
    ("networking.k8s.io/v1beta1", "Ingress"): ("networking.k8s.io/v1", "1.22"),
    ("networking.k8s.io/v1beta1", "IngressClass"): ("networking.k8s.io/v1", "1.22"),
    ("discovery.k8s.io/v1beta1", "EndpointSlice"): ("discovery.k8s.io/v1", "1.25"),
    ("batch/v1beta1", "Job"): ("batch/v1", "1.21"),
}


def group_of(api_version: str) -> str:
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def classify(api_version: str, kind: str, modelled: set[tuple[str, str]]) -> str:
    """modelled | removed | wrong-version | typo | not-modelled | custom.

    A built-in group's kind testbed does not know is accepted (a newer Kubernetes may have it),
    unless its name is one letter or two from a kind testbed models: that is a typo, which kubectl
    refuses too ("no matches for kind")."""
    if (api_version, kind) in modelled:
        return "modelled"
    if (api_version, kind) in REMOVED_VERSIONS:
        return "removed"
    group = group_of(api_version)
    if group in BUILTIN_GROUPS or not group:
        names = {k for _, k in modelled}
        if kind in names:
            return "wrong-version"
        if kind in NOT_MODELLED:
            return "not-modelled"
        return "typo" if close_kind(kind, names) else "not-modelled"
    return "custom"


def close_kind(kind: str, names) -> str | None:
    import difflib

    hits = difflib.get_close_matches(kind, sorted(names), n=1, cutoff=0.8)
    return hits[0] if hits else None
