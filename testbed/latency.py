"""Network programming latency of a running lab: change → rules applied, and change → traffic.

kube-proxy's metric, network_programming_duration_seconds, runs from the change (the
EndpointSlice's trigger time) to the end of the proxier's sync; the lab logs the same for every
sync (`Lab._sync`: change → rules on every node). This module also measures what a client sees:
it makes one change at a time on a running lab while `probes.programming` opens a connection to
the Service every 2 ms from a pod, and takes the time until the traffic shows the change.

Changes:
    pod-unready     a backend's readiness turns false (as the kubelet reports a failing probe)
    pod-ready       ... and true again
    pod-deleted     a Deployment's backend pod is deleted (terminating, its server still answers)
    service-edited  the Service gets a new port; traffic to it is answered

Pods with a readiness probe are not used for pod-unready/pod-ready (the lab's prober would set
them back); the probing pod backs nothing.
"""
from __future__ import annotations

import copy
import functools
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass

import yaml

from .control import ClusterState, PodInfo, ServiceInfo
from .errors import TestbedError
from .kernel import wiring

CHANGES = ("pod-unready", "pod-ready", "pod-deleted", "service-edited")


@dataclass(frozen=True)
class Measurement:
    change: str
    mode: str
    service: str
    rules_ms: float  # change → rules on every node (the lab's sync)
    observed_ms: float | None  # change → the first connection showing it; None: not within the limit
    resolution_ms: float  # how finely traffic can show it: the probe's interval (× backends for "gone")
    connections: int
    detail: str
    at: float

    def to_json(self) -> dict:
        return asdict(self)


def pick_service(cluster: ClusterState, name: str | None = None) -> tuple[ServiceInfo, int]:
    """The Service (and TCP port index) to measure: `name` (NS/NAME or NAME), else a proxied
    ClusterIP Service with a TCP port and at least two ready endpoints, preferring one whose pods
    have no readiness probe (the prober would undo pod-unready)."""
    found = []
    for info in cluster.services:
        if name and name not in (info.key, info.service.name):
            continue
        for i, sp in enumerate(info.service.ports):
            if info.proxied and sp.protocol == "TCP" and sum(e.ready for e in info.endpoints[i]) >= 2:
                probed = any(p.has_readiness_probe for p in _backends(cluster, info, i))
                found.append((probed, len(found), info, i))
                break
        else:
            if name:
                raise TestbedError(f"Service {info.key} has no TCP port with two ready endpoints to measure")
    if not found:
        raise TestbedError(f"no Service {name!r} in the lab" if name else
                           "no proxied Service with a TCP port and two ready endpoints to measure")
    _, _, info, i = min(found, key=lambda f: f[:2])
    return info, i


def _backends(cluster: ClusterState, info: ServiceInfo, i: int) -> list[PodInfo]:
    return sorted((p for p in cluster.ready_backends(info, i) if p.workload == "netexec"), key=lambda p: p.key)


def _record(into: list, change, *args, **kwargs) -> None:
    """Run `change(*args, **kwargs)` and keep its report in `into`. Given to `observe` as a
    functools.partial, so the change's arguments are bound when it is made, not when it runs."""
    into.append(change(*args, **kwargs))


def _prober(cluster: ClusterState) -> PodInfo:
    free = [p for p in cluster.pods_backing_nothing() if not p.terminating]
    if not free:
        raise TestbedError("no pod that backs nothing to send from: add one (like the default lab's `client`)")
    return free[0]


def measure(lab, service: str | None = None, changes=CHANGES, repeat: int = 1, progress=lambda msg: None,
            limit: float = 10.0) -> list[Measurement]:
    """Each change `repeat` times on the running `lab`; the results are also kept in the lab state."""
    from probes.programming import gone, observe, reached

    unknown = [c for c in changes if c not in CHANGES]
    if unknown:
        raise TestbedError(f"unknown change {unknown[0]!r}: expected one of {', '.join(CHANGES)}")
    mode = lab.saved["mode"]
    out: list[Measurement] = []
    service = service or pick_service(lab.cluster())[0].key  # one Service for every change
    for _ in range(repeat):
        for change in changes:
            cluster = lab.cluster()
            info, i = pick_service(cluster, service)
            src = _prober(cluster)
            ns = wiring.netns_of(lab.name, src)
            port = info.service.ports[i].port
            reports: list = []
            backends = _backends(cluster, info, i)
            if change in ("pod-unready", "pod-ready"):
                plain = [p for p in backends if not p.has_readiness_probe]
                if len(plain) < 2:
                    progress(f"{change}: skipped, {info.key} needs two ready backends without a readiness probe")
                    continue
                victim = plain[-1]
                if change == "pod-ready":  # make it unready first (not measured)
                    lab.set_pod_state(ready={victim.key: False})
                    obs = observe(ns, info.cluster_ip, port,
                                  functools.partial(_record, reports, lab.set_pod_state, ready={victim.key: True}),
                                  reached(victim.name), limit=limit)
                    detail = f"{victim.name} ready again: first answered by it"
                else:
                    try:
                        obs = observe(ns, info.cluster_ip, port,
                                      functools.partial(_record, reports, lab.set_pod_state, ready={victim.key: False}),
                                      gone(victim.name), limit=limit)
                    finally:
                        lab.set_pod_state(ready={victim.key: True})
                    detail = f"{victim.name} unready: no longer answering"
            elif change == "pod-deleted":
                owned = [p for p in backends if p.owner]
                if not owned:
                    progress(f"pod-deleted: skipped, {info.key} has no Deployment pod")
                    continue
                victim = owned[-1]
                obs = observe(ns, info.cluster_ip, port,
                              functools.partial(_record, reports, lab.delete, "pod", victim.name, victim.namespace),
                              gone(victim.name), limit=limit)
                detail = f"{victim.name} deleted (terminating, still serving): no longer answering"
            else:
                new_port, original = _free_port(info), _manifest(lab, info)
                edited = copy.deepcopy(original)
                target = (edited["spec"]["ports"][i]).get("targetPort", port)
                for sp in edited["spec"]["ports"]:  # a second port makes names required, as in Kubernetes
                    sp.setdefault("name", f"p{sp.get('port')}")
                edited["spec"]["ports"].append({"name": "latency-probe", "protocol": "TCP", "port": new_port,
                                                "targetPort": target})
                try:
                    obs = observe(ns, info.cluster_ip, new_port, functools.partial(_record, reports, _apply, lab, edited),
                                  reached(), limit=limit, deadline=0.2)
                finally:
                    _apply(lab, original)
                detail = f"port {new_port} added: first answered"
            rules = reports[0].seconds_to_rules * 1000 if reports and reports[0] is not None else float("nan")
            # "no longer answering" can only be seen as the gap between the victim's answers: with
            # n backends sharing the connections, that is about n probe intervals.
            share = len(backends) if change in ("pod-unready", "pod-deleted") else 1
            failed = len(obs.samples) - obs.count("answered")
            if failed:
                detail += f"; {failed} of {len(obs.samples)} connections not answered"
            m = Measurement(change, mode, info.key, round(rules, 2),
                            round(obs.latency * 1000, 2) if obs.latency is not None else None,
                            round(obs.resolution * share * 1000, 2), len(obs.samples), detail, time.time())
            progress(f"{change}: rules {m.rules_ms:.0f} ms, traffic "
                     + (f"{m.observed_ms:.0f} ms" if m.observed_ms is not None else f"not within {limit:.0f} s"))
            out.append(m)
            _settle(lab)
    lab.record_latency([m.to_json() for m in out])
    return out


def _settle(lab) -> None:
    """Let a deleted pod's grace period end before the next change picks its victim afresh."""
    cluster = lab.cluster()
    if any(p.terminating for p in cluster.pods):
        lab.expire_terminating(now=time.time() + 3600)


def _free_port(info: ServiceInfo) -> int:
    used = {p.port for p in info.service.ports}
    return next(p for p in range(18080, 19080) if p not in used)


def _manifest(lab, info: ServiceInfo) -> dict:
    for d in lab.saved["manifests"]:
        meta = d.get("metadata") or {}
        if d.get("kind") == "Service" and meta.get("name") == info.service.name and \
                meta.get("namespace", "default") == info.service.namespace:
            return d
    raise TestbedError(f"Service {info.key} is not one of the lab's manifests (an add-on?): pick another with --service")


def _apply(lab, doc: dict):
    fd, path = tempfile.mkstemp(prefix="testbed-latency-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(doc, f)
        return lab.apply(path)
    finally:
        os.unlink(path)


def summary(entries: list[dict]) -> list[dict]:
    """Per (mode, change): how many, median and max of observed and rules-applied times (ms)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in entries:
        groups.setdefault((e["mode"], e["change"]), []).append(e)
    rows = []
    for (mode, change), es in sorted(groups.items()):
        seen = [e["observed_ms"] for e in es if e["observed_ms"] is not None]
        rules = [e["rules_ms"] for e in es if e["rules_ms"] == e["rules_ms"]]
        rows.append({"mode": mode, "change": change, "n": len(es), "missed": len(es) - len(seen),
                     "observed_p50_ms": statistics.median(seen) if seen else None,
                     "observed_max_ms": max(seen) if seen else None,
                     "rules_p50_ms": statistics.median(rules) if rules else None,
                     "resolution_ms": statistics.median(e["resolution_ms"] for e in es)})
    return rows


def sync_summary(syncs: list[dict]) -> list[dict]:
    """kube-proxy's metric from the lab's sync log: per (mode, kind of change), median and max ms."""
    groups: dict[tuple[str, str], list[float]] = {}
    for s in syncs:
        groups.setdefault((s.get("mode", "?"), s.get("change") or "other"), []).append(s["to_rules_ms"])
    return [{"mode": m, "trigger": k, "n": len(v), "p50_ms": statistics.median(v), "max_ms": max(v)}
            for (m, k), v in sorted(groups.items())]
