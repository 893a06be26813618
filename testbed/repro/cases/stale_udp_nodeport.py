"""Stale UDP conntrack after a NodePort's backend is replaced: a client outside the cluster keeps
one source port towards <node IP>:<nodePort>; the node it dials keeps the conntrack entry that
DNATs the flow to the deleted pod's IP and black-holes it until the entry expires, unless
kube-proxy deletes the entries of endpoints that went away (kubernetes#59368, the NodePort form
fixed by #71573; today's reconciler of #127318 matches NodePort entries by original port)."""
from __future__ import annotations

from .. import objects as o
from ..catalogue import NODE_PORT_TYPES, Measurement, Repro, adopt_service, mark_target, serves
from ..udp import CLEANUP_OFF, CLEANUP_ON, ipvs_forgets_removed_udp_servers, replace_answering_backend

PORT = 12346  # the outside client's fixed source port
TRIES = 5
CLIENT = "client/outside"  # the Lab's default client on the node network (topologies/default.yaml)
NODE = "node-1"  # the node the client dials


def documents() -> list[dict]:
    return [o.lab("stale-udp-np"),
            o.deployment("dns", replicas=2, ports=[{"name": "dns", "containerPort": 9376, "protocol": "UDP"}]),
            mark_target(o.service("dns", [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns",
                                           "nodePort": 30053}], type="NodePort"))]


def measure(ctx) -> Measurement:
    ns, _ = ctx.source(CLIENT)
    _, node_ip = ctx.source(f"node/{NODE}")
    i, _ = ctx.target_port("udp")
    node_port = ctx.target().node_ports[i]
    r = replace_answering_backend(ctx, ns, node_ip, node_port, i, PORT, TRIES)
    old = r.old
    stale = ctx.flows_to(NODE, old.ip, "udp")
    return Measurement(r.lost > 0, f"{r.lost}/{TRIES} requests from {CLIENT}'s port {PORT} to {NODE}'s NodePort "
                                   f"{node_port} lost after {old.name} was deleted; {stale} conntrack entries on "
                                   f"{NODE} still DNAT to its IP {old.ip}",
                       {"lost": r.lost, "tries": TRIES, "stale_entries": stale, "old_ip": old.ip, "old_node": old.node,
                        "node": NODE, "node_port": node_port})


def adopt(docs: list[dict], source: str) -> list[dict]:
    return adopt_service(docs, documents(), serves("UDP", NODE_PORT_TYPES),
                         "a UDP Service of type NodePort or LoadBalancer with a selector", source)


REPRO = Repro(
    name="stale-udp-nodeport",
    title="Stale UDP conntrack black-holes an outside client's NodePort flow after its backend is deleted",
    upstream=("kubernetes/kubernetes#59368", "kubernetes/kubernetes#71573", "kubernetes/kubernetes#127318"),
    mechanism="the dialled node keeps the flow's conntrack entry, whose DNAT names the deleted pod's IP",
    modes=("iptables", "nftables", "ipvs"),
    not_in={"userspace": "the userspace proxy relays UDP itself (a REDIRECT to its own port, which stays): no "
                         "conntrack entry names an endpoint, and its sessions end after 250 ms idle"},
    needs=("conntrack",),
    triggered=f"{CLIENT} keeps source port {PORT} towards {NODE}'s NodePort; the backend that answered it is "
              "deleted (its Deployment replaces it with a new IP)",
    measured=f"{TRIES} requests from the same source port once the NodePort answers a fresh port again; the "
             f"conntrack entries on {NODE} still replying from the old IP",
    fix="kube-proxy deletes the conntrack entries whose original destination port is the NodePort and whose "
        "reply source is no longer an endpoint (spec.conntrackCleanup: true, the default)",
    bug=CLEANUP_OFF,
    fixed=CLEANUP_ON,
    documents=documents,
    measure=measure,
    with_files="a UDP Service of type NodePort or LoadBalancer with a selector (the first one; the backend that "
               "answers the outside client is deleted)",
    adopt=adopt,
    absent=ipvs_forgets_removed_udp_servers,
)
