"""UDP sent to a Service's address before its rules exist leaves a conntrack entry without DNAT; a
client that keeps its source port is black-holed by that entry after the Service and its backend
appear, until kube-proxy deletes the entries of a Service that got endpoints
(kubernetes#31983, #48370; the reconciler of #127318 deletes every flow whose reply is not from a
serving endpoint)."""
from __future__ import annotations

from probes import connect
from probes.poll import wait_until

from .. import objects as o
from ..catalogue import Measurement, Repro, Variant, client_pod, mark_target, target_services
from ..udp import CLEANUP_OFF, CLEANUP_ON, NOT_IN_USERSPACE

PORT = 12348  # the client's fixed source port
TRIES = 5
CLUSTER_IP = "10.96.0.53"  # pinned, so the client can send to it before the Service exists


def documents() -> list[dict]:
    """The lab as it ends: `up` builds it without the Service, which the trigger applies."""
    return [o.lab("udp-before-svc"), client_pod(),
            o.deployment("dns", replicas=1, ports=[{"name": "dns", "containerPort": 9376, "protocol": "UDP"}]),
            mark_target(o.service("dns", [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}],
                                  clusterIP=CLUSTER_IP))]


def _held_back(variant: Variant) -> Variant:
    """`variant` without the target Service: the lab starts before it exists."""
    def change(docs: list[dict]) -> list[dict]:
        held = {id(s) for s in target_services(docs)}
        return [d for d in variant.change(docs) if id(d) not in held]
    return Variant(variant.label, change)


def measure(ctx) -> Measurement:
    ns, _ = ctx.client()
    (svc,) = target_services(documents())
    port = svc["spec"]["ports"][0]["port"]
    early = [connect.udp_request(ns, CLUSTER_IP, port, source_port=PORT, timeout=0.3).outcome for _ in range(2)]
    before = ctx.flows_to(ctx.client_node(), CLUSTER_IP, "udp")
    ctx.apply([svc])
    wait_until(lambda: connect.udp_request(ns, CLUSTER_IP, port, timeout=0.5).ok or None, timeout=15,
               message=f"{CLUSTER_IP}:{port} answering a fresh source port")
    answers = [connect.udp_request(ns, CLUSTER_IP, port, source_port=PORT, timeout=0.5) for _ in range(TRIES)]
    lost = sum(not a.ok for a in answers)
    stale = ctx.flows_to(ctx.client_node(), CLUSTER_IP, "udp")
    return Measurement(lost > 0, f"{lost}/{TRIES} requests from the client's port {PORT} lost once the Service "
                                 f"answered; {stale} conntrack entries without DNAT (before the Service: "
                                 f"{before}, the early datagrams {', '.join(early)})",
                       {"lost": lost, "tries": TRIES, "entries_without_dnat": stale, "before": before,
                        "early": early})


def _nftables_drops_unallocated(mode: str, kernel: str) -> str | None:
    if mode == "nftables":
        return ("nftables mode drops traffic to a ClusterIP no Service holds (cluster-ips-check, kube-proxy 1.33 on): "
                "the early datagrams leave no entry")
    return None


REPRO = Repro(
    name="udp-before-the-service",
    title="UDP sent before a Service existed is black-holed after it appears",
    upstream=("kubernetes/kubernetes#31983", "kubernetes/kubernetes#48370"),
    mechanism="the early datagrams' conntrack entry has no DNAT, and a kept source port keeps using it",
    modes=("iptables", "nftables", "ipvs"),
    not_in=NOT_IN_USERSPACE,
    needs=("conntrack",),
    triggered=f"a UDP client keeps one source port and sends to {CLUSTER_IP} before any Service has it; the Service "
              "(the last document shown, pinned to that ClusterIP) is then applied over a ready backend",
    measured=f"{TRIES} requests from the same source port once the Service answers a fresh port; the client node's "
             "conntrack entries to the ClusterIP that have no DNAT",
    fix="kube-proxy deletes the UDP flows of a Service whose replies do not come from a serving endpoint after each "
        "sync (spec.conntrackCleanup: true, the default; before 1.32, the clean-up of a Service that got endpoints)",
    bug=_held_back(CLEANUP_OFF),
    fixed=_held_back(CLEANUP_ON),
    documents=documents,
    measure=measure,
    absent=_nftables_drops_unallocated,
)
