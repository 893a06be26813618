"""A pod cannot reach itself through its own Service when its bridge port has no hairpin flag. With
bridge-nf-call-iptables the DNAT happens while the frame is still bridged ("bridged DNAT"): the new
destination is the sender itself, behind the port the frame came in on, and a bridge never sends a
frame back out of its ingress port unless that port is in hairpin mode (kubernetes#13375, #20475:
kubelet's --hairpin-mode hairpin-veth sets it on every pod's veth)."""
from __future__ import annotations

from probes import connect

from .. import objects as o
from ..catalogue import Measurement, Repro, Variant, adopt_service, behind, mark_target, serves, set_lab, target_services

TRIES = 5


def documents() -> list[dict]:
    return [o.lab("hairpin"), o.deployment("web", replicas=1),
            mark_target(o.service("web", [{"name": "http", "port": 80, "targetPort": "http"}]))]


def measure(ctx) -> Measurement:
    i, port = ctx.target_port("tcp")
    backends = ctx.backends(i)
    if len(backends) != 1:
        raise RuntimeError(f"the target needs exactly one ready endpoint (so the DNAT picks the sender), "
                           f"it has {len(backends)}")
    (pod, _), = backends.values()
    ns, _ = ctx.source(f"pod/{pod.name}")
    ip = ctx.target().cluster_ip
    results = [connect.tcp_request(ns, ip, port, path="/whoami", timeout=1.0) for _ in range(TRIES)]
    failed = [r for r in results if not r.ok]
    seen = sorted({r.body.split()[-1].rsplit(":", 1)[0] for r in results if r.ok and r.body})
    kinds = sorted({r.outcome for r in failed})
    return Measurement(bool(failed), f"{len(failed)}/{TRIES} connections from {pod.name} to its own Service {ip}:{port} "
                                     "failed" + (f" ({', '.join(kinds)})" if kinds else "")
                                     + (f"; the pod saw itself from {', '.join(seen)}" if seen else ""),
                       {"failed": len(failed), "tries": TRIES, "seen": seen, "pod": pod.name})


def adopt(docs: list[dict], source: str) -> list[dict]:
    """The user's first TCP Service, its workload cut to one replica (so the DNAT picks the sender)."""
    out = adopt_service(docs, documents(), serves("TCP"), "a TCP Service with a selector", source)
    (target,) = target_services(out)
    workloads, pods = behind(out, (target.get("spec") or {}).get("selector") or {})
    if workloads:
        workloads[0].setdefault("spec", {})["replicas"] = 1
    # One pod behind the Service: the first workload's, else the first bare Pod; the others are left out.
    drop = {id(d) for d in workloads[1:] + (pods if workloads else pods[1:])}
    return [d for d in out if id(d) not in drop]


def _proxied(mode: str, kernel: str) -> str | None:
    if mode == "userspace":
        return ("the userspace proxy dials the pod from the node: those packets enter the bridge from the node, not "
                "from the pod's own port")
    return None


REPRO = Repro(
    name="hairpin-mode-none",
    title="A pod cannot reach itself through its Service without hairpin mode",
    upstream=("kubernetes/kubernetes#13375", "kubernetes/kubernetes#20475"),
    mechanism="bridged DNAT sends the frame back to the port it came in on; without hairpin the bridge drops it",
    modes=("iptables", "nftables", "ipvs", "userspace"),
    needs=(),
    triggered="the only backend of a Service connects to that Service's ClusterIP (the DNAT picks itself)",
    measured=f"{TRIES} connections from the pod to its own Service, and the source address it saw",
    fix="kubelet's --hairpin-mode hairpin-veth (spec.kubelet.hairpinMode, the default): hairpin on each pod's "
        "bridge port; the node masquerades the hairpin connection, so the pod sees its bridge's address",
    documents=documents,
    bug=Variant("spec.kubelet.hairpinMode: none", set_lab(kubelet={"hairpinMode": "none"})),
    fixed=Variant("spec.kubelet.hairpinMode: hairpin-veth", set_lab(kubelet={"hairpinMode": "hairpin-veth"})),
    measure=measure,
    with_files="a TCP Service with a selector (its first workload cut to one replica, the others left out)",
    adopt=adopt,
    absent=_proxied,
)
