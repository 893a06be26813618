"""What the UDP reproductions share (probes on a running lab): a client that keeps one source port,
the backend that answered it replaced, and the same port measured again."""
from __future__ import annotations

from dataclasses import dataclass

from probes import connect
from probes.poll import wait_until

from .catalogue import Variant, set_lab

# The bug's conditions and the fix of every stale-UDP reproduction: kube-proxy's clean-up off / on.
CLEANUP_OFF = Variant("spec.conntrackCleanup: false", set_lab(conntrackCleanup=False))
CLEANUP_ON = Variant("spec.conntrackCleanup: true", set_lab(conntrackCleanup=True))


@dataclass(frozen=True)
class Replaced:
    old: object  # the deleted backend's PodInfo (its IP is what a stale entry names)
    lost: int  # requests from the kept port unanswered after the replacement served
    tries: int


def replace_answering_backend(ctx, ns: str, ip: str, port: int, i: int, source_port: int, tries: int) -> Replaced:
    """A datagram from `source_port` to ip:port; the backend that answered it (service port i of the
    target) is deleted with grace 0 (its controller makes one with a new IP); once the address serves
    a fresh source port again, `tries` requests from `source_port` are counted."""
    first = connect.udp_request(ns, ip, port, source_port=source_port)
    if not first.ok:
        raise RuntimeError(f"{ip}:{port} did not answer before the change: {first.outcome}")
    old, _ = ctx.backends(i)[first.body]  # the backend this flow's conntrack entry names
    ctx.lab.delete("pod", old.name, namespace=old.namespace, grace=0)
    wait_until(lambda: old.name not in ctx.backends(i) and ctx.backends(i) or None, timeout=15,
               message=f"{old.name} gone and a ready endpoint left")
    serves_fresh(ns, ip, port)
    return Replaced(old, lost_from(ns, ip, port, source_port, tries), tries)


def serves_fresh(ns: str, ip: str, port: int) -> None:
    """Wait until ip:port answers a datagram from a fresh source port (the rules are in place)."""
    wait_until(lambda: connect.udp_request(ns, ip, port, timeout=0.5).ok, timeout=15,
               message=f"{ip}:{port} answering a fresh source port")


def lost_from(ns: str, ip: str, port: int, source_port: int, tries: int, timeout: float = 0.5) -> int:
    return sum(not connect.udp_request(ns, ip, port, source_port=source_port, timeout=timeout).ok
               for _ in range(tries))


def ipvs_forgets_removed_udp_servers(mode: str, kernel: str) -> str | None:
    """Why IPVS mode shows no stale UDP flow (measured in the guest: 0/5 lost with the clean-up off)."""
    if mode == "ipvs":
        return ("IPVS mode deletes a UDP real server at once and kube-proxy sets net.ipv4.vs.expire_nodest_conn=1: "
                "IPVS drops the flow's entry at its next packet and schedules it anew")
    return None
