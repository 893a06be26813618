"""A UDP Service scaled to zero endpoints keeps black-holing its clients: kube-proxy's conntrack
reconciler (1.32 on) skips Services without serving endpoints, so a client that keeps its source
port stays DNATed to the deleted pod's IP, and the Service's no-endpoints REJECT, which matches the
ClusterIP, never sees its packets (kubernetes#139628, a regression of #127318; fixed by #139629).
Before 1.32 the event-based clean-up deleted those flows."""
from __future__ import annotations

import copy

from probes import connect
from probes.poll import wait_until

from .. import objects as o
from ..catalogue import Measurement, Repro, Variant, adopt_service, behind, client_pod, kube_proxy_version, mark_target, \
    serves
from ..udp import NOT_IN_USERSPACE, ipvs_forgets_removed_udp_servers

PORT = 12347  # the client's fixed source port: a statsd-style sender that keeps its socket
TRIES = 5


def documents() -> list[dict]:
    return [o.lab("udp-to-zero"), client_pod(),
            o.deployment("statsd", replicas=1, ports=[{"name": "statsd", "containerPort": 9376, "protocol": "UDP"}]),
            mark_target(o.service("statsd", [{"name": "statsd", "port": 8125, "protocol": "UDP",
                                              "targetPort": "statsd"}]))]


def scaled_to_zero(manifests: list[dict], selector: dict) -> tuple[list[dict], list[dict]]:
    """(copies of the workloads behind `selector` with replicas 0, the bare Pods it selects) of a
    lab's stored manifests (pure)."""
    workloads, pods = behind(manifests, selector)
    scaled = [copy.deepcopy(d) for d in workloads]
    for d in scaled:
        d["spec"]["replicas"] = 0
    return scaled, pods


def _scale_to_zero(ctx) -> None:
    selector = dict(ctx.target().service.selector or {})
    scaled, pods = scaled_to_zero(ctx.lab.saved["manifests"], selector)
    if scaled:
        ctx.apply(scaled)
    for p in pods:
        meta = p.get("metadata") or {}
        ctx.lab.delete("pod", meta.get("name"), meta.get("namespace") or "default", grace=0)


def measure(ctx) -> Measurement:
    ns, _ = ctx.client()
    i, port = ctx.target_port("udp")
    ip = ctx.target().cluster_ip
    first = connect.udp_request(ns, ip, port, source_port=PORT)
    backends = {p.name: p for p, _ in ctx.backends(i).values()}
    old = backends.get(first.body) if first.ok else None
    if old is None:
        raise RuntimeError(f"port {PORT} was not answered by a backend of the target: {first.outcome} {first.body!r}")
    _scale_to_zero(ctx)
    wait_until(lambda: not ctx.backends(i) and not [e for e in ctx.target().endpoints[i] if e.serving] or None,
               timeout=15, message="the target without serving endpoints")
    # The Service answers a fresh source port with its REJECT (ICMP port unreachable) once its
    # rules say it has no endpoints: the lab has done what it will do.
    wait_until(lambda: connect.udp_request(ns, ip, port, timeout=0.5).outcome == "refused" or None, timeout=15,
               message=f"{ip}:{port} refusing a fresh source port")
    outcomes = [connect.udp_request(ns, ip, port, source_port=PORT, timeout=0.5).outcome for _ in range(TRIES)]
    stale = ctx.flows_to(ctx.client_node(), old.ip, "udp")
    lost = sum(o != "refused" for o in outcomes)
    seen = ", ".join(f"{outcomes.count(x)} {x}" for x in sorted(set(outcomes)))
    return Measurement(lost > 0, f"{lost}/{TRIES} datagrams from the client's port {PORT} not refused after "
                                 f"{old.name}'s workload was scaled to 0 ({seen}); {stale} conntrack entries still "
                                 f"DNAT to its IP {old.ip}",
                       {"lost": lost, "tries": TRIES, "outcomes": outcomes, "stale_entries": stale, "old_ip": old.ip})


def adopt(docs: list[dict], source: str) -> list[dict]:
    return adopt_service(docs, documents(), serves("UDP"), "a UDP Service with a selector", source)


REPRO = Repro(
    name="udp-scaled-to-zero",
    title="A UDP Service scaled to zero keeps its clients DNATed to the deleted pod",
    upstream=("kubernetes/kubernetes#139628", "kubernetes/kubernetes#139629"),
    mechanism="the 1.32 reconciler skips Services without endpoints: the kept flow's DNAT outlives the pod",
    modes=("iptables", "nftables", "ipvs"),
    not_in=NOT_IN_USERSPACE,
    needs=("conntrack",),
    triggered="a UDP client keeps one source port (answered by the only backend); the backend's Deployment is "
              "scaled to 0 replicas",
    measured=f"{TRIES} datagrams from the same source port once a fresh port is refused (the Service's no-endpoints "
             "REJECT); refused ones are the fix's result, the others were sent to the deleted pod's IP",
    fix="kube-proxy deletes the flows of a UDP Service without endpoints: the event-based clean-up before 1.32, "
        "#139629 after (testbed shows 1.31's; it renders no release with #139629)",
    bug=Variant('spec.kubeProxy.version: "1.35" (1.32 on)', kube_proxy_version("1.35")),
    fixed=Variant('spec.kubeProxy.version: "1.31"', kube_proxy_version("1.31")),
    documents=documents,
    measure=measure,
    with_files="a UDP Service with a selector over a Deployment, StatefulSet, ReplicaSet or bare Pods (it is scaled to "
               "0 or its pods deleted)",
    adopt=adopt,
    absent=ipvs_forgets_removed_udp_servers,
)
