"""kube-proxy's nftables mode has no INVALID drop (#122663 removed it before beta): the reset of
kubernetes#74839 happens unless conntrack is liberal, which kube-proxy sets with
--conntrack-tcp-be-liberal (conntrack.tcpBeLiberal, 1.29 on: #120412 made the iptables drop depend on it)."""
from __future__ import annotations

from ..catalogue import Repro, Variant, set_lab
from .invalid_conntrack_reset import MEASURED, TRIGGER, documents, measure


def _iptables_drops(mode: str, kernel: str) -> str | None:
    if mode == "iptables":
        return "iptables mode drops INVALID packets in KUBE-FORWARD (#74840): the stray never reaches the client"
    if mode == "ipvs":
        return ("IPVS translates the replies of its own connections (its connection table, not conntrack's NAT), so "
                "conntrack's INVALID verdict does not leave the stray un-NATed: the client got none from the pod's IP")
    return None


REPRO = Repro(
    name="invalid-conntrack-reset-nft",
    title="nftables mode: an out-of-window segment resets a Service connection unless conntrack is liberal",
    upstream=("kubernetes/kubernetes#122663", "kubernetes/kubernetes#120412", "kubernetes/kubernetes#74839"),
    mechanism="no INVALID drop: the un-NATed segment reaches the client, whose RST resets the server's side",
    modes=("iptables", "nftables", "ipvs"),
    not_in={"userspace": "the userspace proxy terminates the client's connection itself: no NAT to miss"},
    needs=("conntrack",),
    triggered=TRIGGER,
    measured=MEASURED,
    fix="conntrack.tcpBeLiberal: true (--conntrack-tcp-be-liberal): kube-proxy sets nf_conntrack_tcp_be_liberal=1 on "
        "the node (here: in the node's namespace), conntrack no longer marks out-of-window segments INVALID and un-NATs "
        "them; the client's TCP ignores the segment",
    documents=documents,
    bug=Variant("conntrack.tcpBeLiberal: false (the default)", set_lab()),
    fixed=Variant("spec.kubeProxy.conntrack.tcpBeLiberal: true", set_lab(kubeProxy={"conntrack": {"tcpBeLiberal": True}})),
    measure=measure,
    absent=_iptables_drops,
)
