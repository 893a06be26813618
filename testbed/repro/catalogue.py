"""What a reproduction is (pure): the bug's conditions and its fix as two variants of one lab, what
is triggered, what is measured, and the verdict the two measurements make.

A reproduction never writes rules by hand: each variant is a change to the lab's documents (a Lab
field such as `conntrackCleanup`, a kube-proxy release in `spec.kubeProxy.version`, a kernel
setting the lab applies inside its own namespaces, or the manifests themselves — a readiness probe,
a traffic policy), and testbed's renderers and controllers do the rest.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Mapping

BUG, FIX = "bug", "fix"
VARIANTS = (BUG, FIX)

# Verdicts of one mode.
REPRODUCED = "reproduced"  # the symptom in the bug run, not in the fixed one
NOT_REPRODUCED = "not reproduced"  # no symptom with the bug's conditions (the cell says why, when known)
FIX_FAILS = "fix fails"  # the symptom in both runs
SKIPPED = "skipped"  # the mode or kernel cannot run it (the cell says why)
ERROR = "error"  # the run itself failed (the cell says how)


@dataclass(frozen=True)
class Measurement:
    """What one run measured: whether the symptom was seen, a line saying it with its numbers
    ("3/4 UDP requests from port 12345 timed out"), and the numbers themselves for JSON."""
    symptom: bool
    summary: str
    figures: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    label: str  # what differs, as a user would write it: "spec.conntrackCleanup: false"
    change: Callable[[list[dict]], list[dict]]  # the reproduction's documents → this variant's


@dataclass(frozen=True)
class Repro:
    """One reproduction. `documents()` is the built-in topology: a Lab document and plain
    manifests. `measure(ctx)` triggers the bug on a running lab and measures (ctx: runner.Context).
    `adopt(user_docs)` (when the bug allows a user's own files) returns the documents to use
    instead of the built-in ones, or raises TopologyError saying what the file lacks."""
    name: str
    title: str
    upstream: tuple[str, ...]  # "kubernetes/kubernetes#59368", "CVE-2020-8558"
    mechanism: str  # one line
    modes: tuple[str, ...]  # modes where the bug exists
    needs: tuple[str, ...]  # kernel features: conntrack, ipvs, sctp, ...
    triggered: str
    measured: str
    fix: str
    documents: Callable[[], list[dict]]
    bug: Variant
    fixed: Variant
    measure: Callable
    with_files: str = ""  # what a user's file must hold to stand in for the built-in manifests ("" : it cannot)
    adopt: Callable[[list[dict], str], list[dict]] | None = None  # (user's documents, file name)
    not_in: Mapping[str, str] = field(default_factory=dict)  # mode → why the bug does not exist there
    # (mode, kernel release) → why the symptom is not expected here although the mode runs the
    # bug's conditions (a kernel that already fixed it; a proxy that retries), or None: expected.
    absent: Callable[[str, str], str | None] | None = None

    def variant(self, name: str) -> Variant:
        return {BUG: self.bug, FIX: self.fixed}[name]

    def variant_documents(self, name: str, base: list[dict] | None = None) -> list[dict]:
        return self.variant(name).change(copy.deepcopy(base if base is not None else self.documents()))

    def absent_reason(self, mode: str, kernel: str) -> str:
        return (self.absent(mode, kernel) if self.absent else None) or ""

    def expected(self, mode: str, kernel: str) -> str:
        """The verdict this reproduction should reach in `mode` on `kernel`."""
        if self.applies(mode):
            return SKIPPED
        return NOT_REPRODUCED if self.absent_reason(mode, kernel) else REPRODUCED

    def applies(self, mode: str) -> str | None:
        """Why this reproduction does not run in `mode`, or None."""
        if mode in self.not_in:
            return self.not_in[mode]
        if mode not in self.modes:
            return f"{self.name} is not a bug of {mode} mode"
        return None


def verdict(bug: Measurement | None, fix: Measurement | None) -> str:
    if bug is None or fix is None:
        return ERROR
    if not bug.symptom:
        return NOT_REPRODUCED
    return FIX_FAILS if fix.symptom else REPRODUCED


# ----------------------------------------------------------------------------- document helpers


def lab_doc(docs: list[dict]) -> dict:
    """The Lab document of `docs` (one is added in front when there is none)."""
    for d in docs:
        if d.get("kind") == "Lab" and str(d.get("apiVersion", "")).startswith("testbed.dev/"):
            return d
    d = {"apiVersion": "testbed.dev/v1alpha1", "kind": "Lab", "metadata": {"name": "repro"}, "spec": {}}
    docs.insert(0, d)
    return d


def set_lab(**fields) -> Callable[[list[dict]], list[dict]]:
    """A variant that sets Lab spec fields: set_lab(conntrackCleanup=False)."""
    def change(docs: list[dict]) -> list[dict]:
        spec = lab_doc(docs).setdefault("spec", {})
        for k, v in fields.items():
            if isinstance(v, dict):
                spec.setdefault(k, {}).update(v)
            else:
                spec[k] = v
        return docs
    return change


def kube_proxy_version(version: str) -> Callable[[list[dict]], list[dict]]:
    """A variant rendered as kube-proxy `version` renders (docs/versions.md)."""
    return set_lab(kubeProxy={"version": version})


# ----------------------------------------------------------------------------- roles and a user's files

TARGET = "testbed.dev/repro"  # label value "target": the Service a reproduction acts on
CLIENT = "repro-client"  # the pod the traffic comes from


def mark_target(service: dict) -> dict:
    service.setdefault("metadata", {}).setdefault("labels", {})[TARGET] = "target"
    return service


def client_pod(node: str = "node-1") -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": CLIENT},
            "spec": {"nodeName": node, "containers": [{"name": "netexec"}]}}


def _services(docs: list[dict]):
    for d in docs:
        if d.get("kind") == "Service" and str(d.get("apiVersion", "")) == "v1":
            yield d
        if d.get("kind") == "List" or str(d.get("kind", "")).endswith("List"):
            yield from _services([i for i in d.get("items") or [] if isinstance(i, dict)])


def adopt_service(user: list[dict], builtin: list[dict], wants: Callable[[dict], bool], what: str,
                  source: str = "the file") -> list[dict]:
    """A user's documents in place of the built-in manifests: their first Service that `wants`
    becomes the target; the built-in Lab document is used unless they bring one; a client pod is
    added on the first node. Raises TopologyError naming what the file lacks."""
    from ..errors import TopologyError
    docs = [d for d in user if not (d.get("kind") == "Pod" and (d.get("metadata") or {}).get("name") == CLIENT)]
    target = next((s for s in _services(docs) if wants(s)), None)
    if target is None:
        raise TopologyError(source, None, "Service", f"expected {what} for this reproduction; the file has none")
    mark_target(target)
    lab = next((d for d in docs if d.get("kind") == "Lab"), None)
    if lab is None:
        lab = copy.deepcopy(lab_doc(builtin))
        docs.insert(0, lab)
    nodes = (lab.get("spec") or {}).get("nodes") or [{"name": "node-1"}]
    first = nodes[0].get("name", "node-1") if isinstance(nodes[0], dict) else "node-1"
    docs.append(client_pod(first))
    return docs


def target_services(docs: list[dict]) -> list[dict]:
    """The Services of `docs` marked as the reproduction's target (mark_target), Lists included."""
    return [s for s in _services(docs) if ((s.get("metadata") or {}).get("labels") or {}).get(TARGET) == "target"]


def set_target_spec(**fields) -> Callable[[list[dict]], list[dict]]:
    """A variant that sets fields of the target Service's spec: set_target_spec(externalTrafficPolicy="Local")."""
    def change(docs: list[dict]) -> list[dict]:
        for s in target_services(docs):
            s.setdefault("spec", {}).update(fields)
        return docs
    return change


def has_selector(s: dict) -> bool:
    return bool((s.get("spec") or {}).get("selector"))


def serves(proto: str, types: tuple[str, ...] | None = None) -> Callable[[dict], bool]:
    """A Service with a selector and a port of `proto` (TCP when a port names none), and of one of
    `types` when given (("NodePort", "LoadBalancer"): a Service with node ports)."""
    def wants(s: dict) -> bool:
        spec = s.get("spec") or {}
        kind = spec.get("type", "ClusterIP")
        ports = spec.get("ports") or []
        return has_selector(s) and kind != "ExternalName" and (types is None or kind in types) and \
            any(isinstance(p, dict) and str(p.get("protocol", "TCP")).upper() == proto.upper() for p in ports)
    return wants


NODE_PORT_TYPES = ("NodePort", "LoadBalancer")


SCALABLE = ("Deployment", "StatefulSet", "ReplicaSet", "ReplicationController")
WITH_POD_TEMPLATE = (*SCALABLE, "DaemonSet")


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def behind(docs: list[dict], selector: dict, kinds: tuple[str, ...] = SCALABLE) -> tuple[list[dict], list[dict]]:
    """(the workloads of `kinds` whose pod template `selector` selects, the bare Pods it selects) of
    `docs`, the documents themselves (pure)."""
    workloads, pods = [], []
    for d in docs:
        kind, spec = d.get("kind"), d.get("spec") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if kind in kinds and _selects(selector, labels):
            workloads.append(d)
        elif kind == "Pod" and _selects(selector, (d.get("metadata") or {}).get("labels") or {}):
            pods.append(d)
    return workloads, pods
