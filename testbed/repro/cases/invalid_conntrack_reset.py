"""An out-of-window segment resets a long-lived Service connection (kubernetes#74839): conntrack
marks it INVALID, so it is not un-DNATed; the client gets a segment from the pod's own IP, answers
with a RST, and the RST resets the server's side. kube-proxy 1.15 drops INVALID packets in
KUBE-FORWARD (#74840); the reproduction takes that fix back out (spec.kubeProxy.unfixed)."""
from __future__ import annotations

from probes.stray import stray_segment

from .. import objects as o
from ..catalogue import Measurement, Repro, Variant, client_pod, mark_target, set_lab


def documents() -> list[dict]:
    """Client and backend on one node: the stray crosses one conntrack table."""
    return [o.lab("invalid-ct"), client_pod(),
            o.pod("web-backend", node="node-1", labels={"app": "web"}, ports=[{"name": "http", "containerPort": 9376}]),
            mark_target(o.service("web", [{"name": "http", "port": 80, "targetPort": "http"}]))]


def measure(ctx) -> Measurement:
    i, port = ctx.target_port("tcp")
    backends = ctx.backends(i)
    if len(backends) != 1:
        raise RuntimeError(f"the target needs exactly one ready endpoint, it has {len(backends)}")
    (pod, ep), = backends.values()
    client_ns, _ = ctx.client()
    server_ns, _ = ctx.source(f"pod/{pod.name}")
    s = stray_segment(client_ns, {pod.name: (server_ns, pod.ip)}, ep.port, ctx.target().cluster_ip, port)
    if not s.sent or not s.first:
        raise RuntimeError(f"the connection to the Service was not set up (first answer {s.first!r}, "
                           f"backend segment {'seen' if s.sent else 'not seen'})")
    return Measurement(s.reset, f"the next request on the connection: {s.after}; the client got {s.unnatted_at_client} "
                                f"segment(s) from the pod's own IP {pod.ip} and sent it {s.client_resets} RST(s)",
                       {"after": s.after, "unnatted_at_client": s.unnatted_at_client, "client_resets": s.client_resets})


TRIGGER = ("a client holds a keep-alive HTTP connection to the Service; the backend's namespace sends one segment of "
           "that connection 2^30 beyond its sequence window (what a late retransmission under load looks like to "
           "conntrack); the client then asks again on the connection")
MEASURED = ("whether the second request is answered or the connection reset; segments the client got from the pod's "
            "IP, and RSTs it sent (captured in the client's namespace)")

REPRO = Repro(
    name="invalid-conntrack-reset",
    title="An out-of-window segment resets a Service connection (conntrack INVALID)",
    upstream=("kubernetes/kubernetes#74839", "kubernetes/kubernetes#74840"),
    mechanism="INVALID packets are not un-DNATed: the client RSTs the pod's IP, and the RST lands in the server's window",
    modes=("iptables",),
    not_in={"nftables": "nftables mode never had the INVALID drop (#122663): invalid-conntrack-reset-nft shows it",
            "ipvs": "IPVS mode's rules have no INVALID drop to take out: invalid-conntrack-reset-nft runs it",
            "userspace": "the userspace proxy terminates the client's connection itself: no NAT to miss"},
    needs=("conntrack",),
    triggered=TRIGGER,
    measured=MEASURED,
    fix="kube-proxy 1.15 on: -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP (#74840)",
    documents=documents,
    bug=Variant("spec.kubeProxy.unfixed: [invalid-drop]", set_lab(kubeProxy={"unfixed": ["invalid-drop"]})),
    fixed=Variant("the INVALID drop in KUBE-FORWARD (the default)", set_lab()),
    measure=measure,
)
