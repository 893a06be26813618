"""What the UDP reproductions share (probes on a running lab): a client that keeps one source port,
the backend that answered it replaced, and the same port measured again."""
from __future__ import annotations

from dataclasses import dataclass

from .catalogue import Variant, set_lab

# The bug's conditions and the fix of every stale-UDP reproduction: kube-proxy's clean-up off / on.
CLEANUP_OFF = Variant("spec.conntrackCleanup: false", set_lab(conntrackCleanup=False))
CLEANUP_ON = Variant("spec.conntrackCleanup: true", set_lab(conntrackCleanup=True))
# Why no stale-UDP reproduction runs in userspace mode.
NOT_IN_USERSPACE = {"userspace": "the userspace proxy relays UDP itself: no conntrack entry steers the client's "
                                 "datagrams"}


@dataclass(frozen=True)
class Replaced:
    old: object  # the deleted backend's PodInfo (its IP is what a stale entry names)
    lost: int  # requests from the kept port unanswered after the replacement served
    tries: int


def replace_answering_backend(ctx, ns: str, ip: str, port: int, i: int, source_port: int, tries: int) -> Replaced:
    """conformance.cycle_udp_backend on the target's port i: the backend that answered `source_port`
    deleted, then `tries` requests from that port counted."""
    from ..conformance import cycle_udp_backend
    try:
        old, answers, _ = cycle_udp_backend(ctx.lab, ns, ip, port, lambda: {n: p for n, (p, _) in ctx.backends(i).items()},
                                            source_port, tries, "a backend of the target")
    except LookupError as e:
        raise RuntimeError(f"{ip}:{port} before the change: {e}") from None
    return Replaced(old, sum(not a.ok for a in answers), tries)


def ipvs_forgets_removed_udp_servers(mode: str, kernel: str) -> str | None:
    """Why IPVS mode shows no stale UDP flow (measured in the guest: 0/5 lost with the clean-up off)."""
    if mode == "ipvs":
        return ("IPVS mode deletes a UDP real server at once and kube-proxy sets net.ipv4.vs.expire_nodest_conn=1: "
                "IPVS drops the flow's entry at its next packet and schedules it anew")
    return None
