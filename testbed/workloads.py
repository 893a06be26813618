"""The workload controllers: what pods each Deployment, ReplicaSet, ReplicationController,
StatefulSet, DaemonSet and Job makes, as Kubernetes' controllers do. Pure: (topology, allocations)
→ desired pods.

- Deployment: `<name>-<pod-template-hash>-<5>` with the `pod-template-hash` label; a changed
  template rolls every pod (a new hash). When the file also holds the Deployment's ReplicaSets (a
  `kubectl get all` dump), those are its pods' makers instead.
- ReplicaSet, ReplicationController, Job: `<name>-<5>` (a Job's pods carry its job-name labels).
- StatefulSet: `<name>-<ordinal>`, hostname = the pod's name and subdomain = `serviceName` (its DNS
  name under the headless Service); OrderedReady makes ordinal N+1 only once 0..N are ready (Parallel
  makes them all at once); a deleted pod comes back with the same name once the old one is gone.
- DaemonSet: one pod per node whose labels match the template's nodeSelector and whose taints it
  tolerates (plus the tolerations the DaemonSet controller adds itself).
- Pods in the file are adopted by the workload that owns them (metadata.ownerReferences): a dump's
  pods count towards their workload's replicas, so nothing is made twice.

Suffixes are deterministic (a hash of the workload and a serial), drawn from Kubernetes' alphabet.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace

from .model import Pod, Taint, Toleration, Topology, Workload

_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' utilrand alphabet (no vowels)

# What the DaemonSet controller tolerates on every DaemonSet pod (pkg/controller/daemon/util).
DAEMONSET_TOLERATIONS = (
    Toleration("node.kubernetes.io/not-ready", "Exists", effect="NoExecute"),
    Toleration("node.kubernetes.io/unreachable", "Exists", effect="NoExecute"),
    Toleration("node.kubernetes.io/disk-pressure", "Exists", effect="NoSchedule"),
    Toleration("node.kubernetes.io/memory-pressure", "Exists", effect="NoSchedule"),
    Toleration("node.kubernetes.io/pid-pressure", "Exists", effect="NoSchedule"),
    Toleration("node.kubernetes.io/unschedulable", "Exists", effect="NoSchedule"),
)


def digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def suffix(seed: str, length: int) -> str:
    n = digest(seed)
    out = []
    for _ in range(length):
        n, r = divmod(n, len(_SUFFIX_ALPHABET))
        out.append(_SUFFIX_ALPHABET[r])
    return "".join(out)


def pod_template_hash(w: Workload) -> str:
    return suffix(repr(w.template), 10)


def schedulable(node, tolerations: tuple[Toleration, ...], node_selector: tuple[tuple[str, str], ...]) -> bool:
    """The scheduler's NodeSelector and TaintToleration filters (NoSchedule and NoExecute taints)."""
    labels = node.label_map
    if any(labels.get(k) != v for k, v in node_selector):
        return False
    return all(t.effect == "PreferNoSchedule" or any(tol.tolerates(t) for tol in tolerations) for t in node.taints)


def _adopted(topo: Topology) -> dict[str, list[Pod]]:
    """workload ref → the pods of the file it owns (by metadata.ownerReferences)."""
    refs = {w.ref for w in topo.deployments}
    by_rs_name = {(w.namespace, w.name): w for w in topo.deployments if w.kind == "ReplicaSet"}
    deployments = {(w.namespace, w.name): w for w in topo.deployments if w.kind == "Deployment"}
    out: dict[str, list[Pod]] = {}
    for p in topo.pods:
        if not p.owner_kind or not p.owner:
            continue
        ref = f"{p.owner_kind}/{p.owner}"
        if ref not in refs and p.owner_kind == "ReplicaSet":
            # The ReplicaSet is not in the file: its Deployment is, by name and pod-template-hash.
            rs = p.owner.split("/", 1)[1]
            h = p.label_map.get("pod-template-hash")
            dep = deployments.get((p.namespace, rs[: -len(h) - 1])) if h and rs.endswith(f"-{h}") else None
            ref = dep.ref if dep else None
        elif ref in refs and p.owner_kind == "ReplicaSet":
            rs = by_rs_name[(p.namespace, p.owner.split("/", 1)[1])]
            ref = rs.ref
        if ref in refs:
            out.setdefault(ref, []).append(p)
    return out


def desired_pods(topo: Topology, alloc) -> list[tuple[Pod, str | None]]:
    """(pod, the ref of the workload that owns it) for the file's pods and every workload's replicas,
    keeping the replicas that exist (`alloc.pods`)."""
    adopted = _adopted(topo)
    by_ref = {w.ref: w for w in topo.deployments}
    owned_by_adopter = {p.key: ref for ref, ps in adopted.items() for p in ps}
    out: list[tuple[Pod, str | None]] = []
    for p in topo.pods:
        ref = owned_by_adopter.get(p.key)
        if ref:  # owned as the pods its workload makes are: a ReplicaSet's Deployment is the owner shown
            owner, kind = _owner_of(by_ref[ref])
            p = replace(p, owner=owner, owner_kind=kind)
        out.append((p, ref))
    existing: dict[str, list[tuple[int, str]]] = {}
    concrete = {p.key for p in topo.pods}
    for key, rec in alloc.pods.items():
        # Terminating pods are not replicas any more; the file's own pods are counted as adopted.
        if rec.get("owner") and not rec.get("terminating") and key not in concrete:
            existing.setdefault(rec["owner"], []).append((rec.get("serial", 0), key))
    realised = {w.owner for w in topo.deployments if w.kind == "ReplicaSet" and w.owner}
    for w in sorted(topo.deployments, key=lambda w: w.ref):
        if w.kind == "Deployment" and w.key in realised:
            continue  # its ReplicaSets in the file make its pods
        mine = adopted.get(w.ref, [])
        if w.kind == "StatefulSet":
            out += _stateful_pods(w, mine, alloc)
        elif w.kind == "DaemonSet":
            out += _daemon_pods(w, mine, topo)
        else:
            out += _replicas(w, mine, sorted(existing.get(w.ref, [])), alloc)
    return out


def _owner_of(w: Workload) -> tuple[str, str]:
    """The owner a workload's pods show: a Deployment's ReplicaSet stands for its Deployment."""
    return (w.owner, "Deployment") if w.kind == "ReplicaSet" and w.owner else (w.key, w.kind)


def _pod(w: Workload, name: str, labels: tuple, **kw) -> Pod:
    t = w.template
    owner, owner_kind = _owner_of(w)
    return Pod(name, w.namespace, labels, t.ports, kw.pop("node_name", t.node_name), owner=owner,
               owner_kind=owner_kind, probes=t.probes,
               grace_period=t.grace_period, workload=t.workload, node_selector=t.node_selector,
               tolerations=t.tolerations, hostname=kw.pop("hostname", t.hostname),
               subdomain=kw.pop("subdomain", t.subdomain), host_network=t.host_network)


def _replicas(w: Workload, adopted: list[Pod], mine: list[tuple[int, str]], alloc) -> list[tuple[Pod, str]]:
    """Deployment, ReplicaSet, ReplicationController, Job: `replicas` pods with generated names."""
    thash = pod_template_hash(w) if w.kind == "Deployment" else None
    if thash:  # a changed template rolls every pod (new hash in the name), as a Deployment rollout would
        mine = [(s, k) for s, k in mine if alloc.pods[k].get("hash") == thash]
    want = max(0, w.replicas - len(adopted))
    kept = mine[:want]
    serial = alloc.serials.get(w.ref, 0)
    names = [k.split("/", 1)[1] for _, k in kept]
    base = f"{w.name}-{thash}-" if thash else f"{w.name}-"
    while len(names) < want:
        # Like generateName: the base is cut so the pod name stays within 63 characters + suffix.
        names.append(base[:58] + suffix(f"{w.key}#{serial}" if w.kind == "Deployment" else f"{w.ref}#{serial}", 5))
        alloc.serials[w.ref] = serial = serial + 1
        alloc.pods.setdefault(f"{w.namespace}/{names[-1]}", {"serial": serial, "owner": w.ref, "hash": thash})
    labels = dict(w.template.labels)
    if thash:
        labels["pod-template-hash"] = thash
    labels = tuple(sorted(labels.items()))
    return [(_pod(w, n, labels), w.ref) for n in names]


def _stateful_pods(w: Workload, adopted: list[Pod], alloc) -> list[tuple[Pod, str]]:
    have = {p.name for p in adopted}
    out = []
    for i in range(w.start_ordinal, w.start_ordinal + w.replicas):
        name = f"{w.name}-{i}"
        if name in have:
            continue
        if w.ordered and out and not _ready(out[-1][0], alloc):
            break  # OrderedReady: the next ordinal waits for this one to be Running and Ready
        labels = dict(w.template.labels, **{"statefulset.kubernetes.io/pod-name": name,
                                            "apps.kubernetes.io/pod-index": str(i)})
        pod = _pod(w, name, tuple(sorted(labels.items())), hostname=name, subdomain=w.service_name)
        rec = alloc.pods.setdefault(pod.key, {"serial": i, "owner": w.ref})
        if rec.get("terminating"):
            break  # the old pod of that name must be gone before its replacement is made
        out.append((pod, w.ref))
    return out


def _ready(pod: Pod, alloc) -> bool:
    """Without a readiness probe a pod is ready once it runs, which in a lab is this very sync;
    with one, once the prober saw it pass."""
    if not any(p.kind == "readiness" for p in pod.probes):
        return True
    return alloc.pods.get(pod.key, {}).get("ready") is True


def _daemon_pods(w: Workload, adopted: list[Pod], topo: Topology) -> list[tuple[Pod, str]]:
    covered = {p.node_name for p in adopted}
    tolerations = w.template.tolerations + DAEMONSET_TOLERATIONS
    out = []
    for node in topo.lab.nodes:
        if node.name in covered or not schedulable(node, tolerations, w.template.node_selector):
            continue
        out.append((_pod(w, f"{w.name}-{suffix(f'{w.ref}@{node.name}', 5)}", w.template.labels, node_name=node.name), w.ref))
    return out


__all__ = ["desired_pods", "schedulable", "suffix", "pod_template_hash", "DAEMONSET_TOLERATIONS", "Taint"]
