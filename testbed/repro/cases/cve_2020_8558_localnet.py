"""CVE-2020-8558: kube-proxy's iptables mode sets net.ipv4.conf.all.route_localnet=1 (for NodePorts
on 127.0.0.1), which lets a host on the node's network reach services bound to the node's
127.0.0.1 — kube-proxy's own metrics on 127.0.0.1:10249, for one. The fix drops packets to
127.0.0.0/8 from other sources unless conntrack DNATed them (#91569, kubernetes#92315)."""
from __future__ import annotations

from probes.connect import tcp_request
from probes.localnet import knock, mac_of
from probes.poll import wait_until

from ...proxystatus import HEALTHZ_PORT, METRICS_PORT
from .. import objects as o
from ..catalogue import Measurement, Repro, Variant, set_lab

TRIES = 3
CLIENT = "outside"  # the neighbour: the Lab's client on the node network


def documents() -> list[dict]:
    return [o.lab("localnet", clients=[{"name": CLIENT}])]


def measure(ctx) -> Measurement:
    node_ns = ctx.node_ns("node-1")
    wait_until(lambda: tcp_request(node_ns, "127.0.0.1", METRICS_PORT, path="/proxyMode", timeout=0.5).ok or None,
               timeout=15, message=f"kube-proxy's metrics on node-1's 127.0.0.1:{METRICS_PORT}")
    client_ns, client_ip = ctx.source(f"client/{CLIENT}")
    # A neighbour that has talked to the node (here: its healthz) is in the node's ARP table; the answer
    # from 127.0.0.1 can reach it (an ARP request sent from 127.0.0.1 would not be answered).
    node_ip = ctx.cluster().node("node-1").ip
    wait_until(lambda: tcp_request(client_ns, node_ip, HEALTHZ_PORT, path="/healthz", timeout=0.5).ok or None,
               timeout=15, message=f"node-1's healthz from {CLIENT}")
    mac = mac_of(node_ns)
    answers = [knock(client_ns, client_ip, mac, METRICS_PORT) for _ in range(TRIES)]
    reached = [a for a in answers if a != "silence"]
    return Measurement(bool(reached), f"{len(reached)}/{TRIES} SYNs from {CLIENT} ({client_ip}) to node-1's "
                                      f"127.0.0.1:{METRICS_PORT} (kube-proxy's metrics) answered "
                                      f"({', '.join(answers)})",
                       {"reached": len(reached), "tries": TRIES, "answers": answers})


def _route_localnet_off(mode: str, kernel: str) -> str | None:
    if mode in ("nftables", "ipvs"):
        return (f"kube-proxy's {mode} mode does not set route_localnet ({'#92938' if mode == 'ipvs' else 'it never had '}"
                f"{'' if mode == 'ipvs' else 'localhost NodePorts'}): the node drops a packet to 127.0.0.1 from the "
                "wire as a martian")
    if mode == "userspace":
        return ("testbed's userspace nodes leave route_localnet off (their 127.0.0.1 NodePorts are REDIRECTed "
                "locally): the node drops the packet as a martian")
    return None


REPRO = Repro(
    name="cve-2020-8558-localnet",
    title="CVE-2020-8558: a neighbour reaches services bound to a node's 127.0.0.1",
    upstream=("CVE-2020-8558", "kubernetes/kubernetes#92315", "kubernetes/kubernetes#91569"),
    mechanism="route_localnet=1 accepts a packet to 127.0.0.1 from the wire; nothing but the fix's rule drops it",
    modes=("iptables", "nftables", "ipvs", "userspace"),
    needs=("conntrack",),
    triggered=f"the Lab's client {CLIENT} (a host on the node network that has talked to node-1: its healthz) sends "
              f"TCP SYNs to 127.0.0.1:{METRICS_PORT}, addressed on the wire to node-1's MAC",
    measured=f"{TRIES} SYNs and what comes back, captured on the client's link: a SYN-ACK (kube-proxy's metrics "
             "answered), a RST, or silence",
    fix="kube-proxy and kubelet 1.18.4 (1.17.7, 1.16.11): -A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack "
        "! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
    documents=documents,
    bug=Variant("spec.kubeProxy.unfixed: [localnet-drop]", set_lab(kubeProxy={"unfixed": ["localnet-drop"]})),
    fixed=Variant("the localnet drop in KUBE-FIREWALL (the default)", set_lab()),
    measure=measure,
    absent=_route_localnet_off,
)
