"""A backend's server dies while its pod stays: without a readiness probe nothing removes the
endpoint, so kube-proxy keeps sending it its share of new connections (refused) until the pod is
deleted; with a readiness probe the kubelet marks it unready and every node drops it."""
from __future__ import annotations

from probes import connect
from probes.failover import failover
from probes.poll import wait_until

from .. import objects as o
from ..catalogue import (WITH_POD_TEMPLATE, Measurement, Repro, Variant, adopt_service, behind, client_pod, mark_target,
                         serves, target_services)

WINDOW = 1.0  # seconds of new connections measured once the lab has done what it will do


def documents() -> list[dict]:
    return [o.lab("dead-backend"), client_pod(), o.deployment("web", replicas=2),
            mark_target(o.service("web", [{"name": "http", "port": 80, "targetPort": "http"}]))]


def _with_probe(docs: list[dict]) -> list[dict]:
    """The target's pods (templates and bare Pods) get kube's usual HTTP readiness probe (1 s
    period, one failure)."""
    workloads, pods = behind(docs, target_services(docs)[0]["spec"].get("selector") or {}, WITH_POD_TEMPLATE)
    specs = [((d.get("spec") or {}).get("template") or {}).get("spec") or {} for d in workloads]
    for spec in specs + [d.get("spec") or {} for d in pods]:
        for c in spec.get("containers") or []:
            port = next((p.get("name") or p.get("containerPort") for p in c.get("ports") or []
                         if str(p.get("protocol", "TCP")).upper() == "TCP"), 9376)
            c["readinessProbe"] = {**o.FAST_READINESS, "httpGet": {"path": "/readyz", "port": port}}
    return docs


def _without_probe(docs: list[dict]) -> list[dict]:
    for d in docs:
        for c in (((d.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []:
            c.pop("readinessProbe", None)
    return docs


def measure(ctx) -> Measurement:
    ns, _ = ctx.client()
    i, port = ctx.target_port("tcp")
    ip = ctx.target().cluster_ip
    backends = ctx.backends(i)
    if len(backends) < 2:
        raise RuntimeError(f"the target needs two ready endpoints, it has {len(backends)}")
    victim, ep = backends[sorted(backends)[-1]]
    probed = bool(victim.probes)

    def removed():
        return victim.name not in ctx.backends(i)

    try:
        t = failover(ns, ip, port, lambda: ctx.lab.stage(victim.name, "stop"), before=0.3,
                     after=WINDOW if probed else 1.0 + WINDOW, interval=0.02, timeout=1.0,
                     settled=removed if probed else None)
    finally:
        ctx.lab.stage(victim.name, "start")
        wait_until(lambda: connect.tcp_request(ns, victim.ip, ep.port).ok, timeout=15, message="server back")
    # The last WINDOW seconds: after the probe removed the endpoint, or 1 s after the death.
    start = (t.settled_at if probed and t.settled_at is not None else 1.0)
    late = [s for s in t.samples if s.at >= start]
    failed = [s for s in late if s.outcome != "answered"]
    how = (f"its endpoint left the rules {t.settled_at * 1000:.0f} ms after" if probed and t.settled_at is not None
           else "the endpoint never left the rules" if probed else "nothing removes the endpoint")
    return Measurement(bool(failed) or (probed and t.settled_at is None),
                       f"{len(failed)}/{len(late)} new connections failed from {start:.1f} s after {victim.name}'s "
                       f"server died ({how})",
                       {"failed": len(failed), "tried": len(late), "from_s": round(start, 3),
                        "removed_ms": None if t.settled_at is None else round(t.settled_at * 1000)})


def adopt(docs: list[dict], source: str) -> list[dict]:
    return adopt_service(docs, documents(), serves("TCP"), "a TCP Service with a selector and two replicas", source)


REPRO = Repro(
    name="dead-backend-no-probe",
    title="A dead backend without a readiness probe keeps failing its share of new connections",
    upstream=("kubernetes.io/docs: readiness probes",),
    mechanism="the endpoint stays ready (nothing probes it), so the rules keep choosing it and its node refuses",
    modes=("iptables", "nftables", "ipvs", "userspace"),
    needs=(),
    triggered="one of two backends' server process is killed; its pod and IP stay",
    measured=f"new connections every 20 ms; the failures among those made {WINDOW:.0f} s after the probe removed the "
             "endpoint (with the fix) or from 1 s after the death (without)",
    fix="a readinessProbe on the pods: the kubelet marks the pod unready, the EndpointSlice says ready=false, kube-proxy "
        "drops the endpoint",
    documents=documents,
    bug=Variant("no readinessProbe", _without_probe),
    fixed=Variant("readinessProbe httpGet /readyz, periodSeconds 1, failureThreshold 1", _with_probe),
    measure=measure,
    with_files="a TCP Service with a selector over a Deployment (or StatefulSet, DaemonSet) of at least two pods",
    adopt=adopt,
    absent=lambda mode, kernel: ("kube-proxy's userspace proxy retries another endpoint when a dial is refused: "
                                 "the client never sees the dead one") if mode == "userspace" else None,
)
