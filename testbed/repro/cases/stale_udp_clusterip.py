"""Stale UDP conntrack after a ClusterIP's backend is replaced: the client's flow keeps being DNATed
to the deleted pod's IP and is black-holed until the entry expires, unless kube-proxy deletes the
entries of endpoints that went away (kubernetes#59368's ClusterIP form; the reconciler of #127318)."""
from __future__ import annotations

from .. import objects as o
from ..catalogue import Measurement, Repro, adopt_service, client_pod, mark_target, serves
from ..udp import CLEANUP_OFF, CLEANUP_ON, NOT_IN_USERSPACE, ipvs_forgets_removed_udp_servers, replace_answering_backend

PORT = 12345  # the client's fixed source port: a UDP app that keeps its socket
TRIES = 5


def documents() -> list[dict]:
    return [o.lab("stale-udp"), client_pod(),
            o.deployment("dns", replicas=2, ports=[{"name": "dns", "containerPort": 9376, "protocol": "UDP"}]),
            mark_target(o.service("dns", [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}]))]


def measure(ctx) -> Measurement:
    ns, _ = ctx.client()
    i, port = ctx.target_port("udp")
    r = replace_answering_backend(ctx, ns, ctx.target().cluster_ip, port, i, PORT, TRIES)
    old = r.old
    stale = ctx.flows_to(ctx.client_node(), old.ip, "udp")
    return Measurement(r.lost > 0, f"{r.lost}/{TRIES} requests from the client's port {PORT} lost after {old.name} "
                                   f"was deleted; {stale} conntrack entries still DNAT to its IP {old.ip}",
                       {"lost": r.lost, "tries": TRIES, "stale_entries": stale, "old_ip": old.ip, "old_node": old.node})


def adopt(docs: list[dict], source: str) -> list[dict]:
    return adopt_service(docs, documents(), serves("UDP"), "a UDP Service with a selector", source)


REPRO = Repro(
    name="stale-udp-clusterip",
    title="Stale UDP conntrack black-holes a client after its ClusterIP backend is deleted",
    upstream=("kubernetes/kubernetes#59368", "kubernetes/kubernetes#127318"),
    mechanism="the client's UDP flow keeps its conntrack entry, whose DNAT names the deleted pod's IP",
    modes=("iptables", "nftables", "ipvs"),
    not_in=NOT_IN_USERSPACE,
    needs=("conntrack",),
    triggered="a UDP client keeps one source port; the backend that answered it is deleted (its Deployment "
              "replaces it with a new IP)",
    measured=f"{TRIES} requests from the same source port once the Service answers again; the client's node's "
             "conntrack entries still replying from the old IP",
    fix="kube-proxy deletes the conntrack entries of UDP endpoints that went away after each sync "
        "(spec.conntrackCleanup: true, the default)",
    bug=CLEANUP_OFF,
    fixed=CLEANUP_ON,
    documents=documents,
    measure=measure,
    with_files="a UDP Service with a selector (the first one; the backend that answers the client is deleted)",
    adopt=adopt,
    absent=ipvs_forgets_removed_udp_servers,
)
