"""Crafted-packet probes (scapy): what the client and the backend each saw of one SYN or datagram.

`handshake()` sends one TCP SYN (or one UDP datagram) from a lab namespace to an address, while
capturing at the client and at every candidate backend at the same time, and reports:
  - which backend received it, with the destination it saw (DNAT: pod IP:targetPort) and the
    source it saw (SNAT: a node address, or the client's own address when preserved);
  - what came back to the client and from where (un-NAT: the reply's source is the dialled
    address), or that it was refused (TCP RST / ICMP unreachable, and which) or dropped.
`reject()` is the same probe read as refused / dropped / answered.
Packets are sent from a raw socket opened inside the client namespace; nothing leaves the lab.
"""
from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass
from typing import Mapping

from testbed.kernel import netns as _netns

from .capture import Capture

ICMP_UNREACH = {0: "net-unreachable", 1: "host-unreachable", 2: "protocol-unreachable", 3: "port-unreachable",
                9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited"}


@dataclass(frozen=True)
class Handshake:
    proto: str
    client: str  # ip:port the probe sent from
    dialled: str  # ip:port it was sent to
    outcome: str  # answered | refused | dropped
    reply: str | None = None  # syn-ack | rst | udp | icmp <kind>
    reply_from: str | None = None  # ip:port (or ip for ICMP) the client saw the reply come from
    backend: str | None = None  # name of the backend that received the packet
    backend_saw_src: str | None = None
    backend_saw_dst: str | None = None
    elapsed: float = 0.0

    @property
    def dnat(self) -> bool:
        """The backend saw a destination other than the one dialled."""
        return self.backend_saw_dst is not None and self.backend_saw_dst != self.dialled

    @property
    def snat(self) -> bool:
        """The backend saw a source address other than the client's."""
        return self.backend_saw_src is not None and self.backend_saw_src.rsplit(":", 1)[0] != self.client.rsplit(":", 1)[0]

    @property
    def unnat(self) -> bool:
        """The reply came back from exactly the address the client dialled."""
        return self.reply_from == self.dialled


def _send_raw(netns: str | None, packet: bytes, dst: str) -> None:
    if netns:
        with _netns.entered(netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        sock.sendto(packet, (dst, 0))
    finally:
        sock.close()


def _addr(ip, port) -> str:
    return f"{ip}:{port}"


def handshake(client_ns: str, client_ip: str, dst_ip: str, dst_port: int, proto: str = "tcp",
              backends: Mapping[str, str] | None = None, timeout: float = 2.0, sport: int | None = None,
              iface: str = "eth0") -> Handshake:
    """One probe packet; `backends` maps a backend name to its namespace (captured on its eth0).

    The client is captured on `iface`. When the client's own namespace does the NAT (a node
    dialling a Service), that capture sees replies before their un-NAT: `reply_from` is then the
    backend, and un-NAT must be judged from a socket instead (see testbed.conformance).
    """
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
    from scapy.packet import Raw

    proto = proto.lower()
    sport = sport or random.randint(40000, 60999)
    seq = random.randint(1, 2**31)
    nonce = f"probe-{seq:x}"
    if proto == "tcp":
        pkt = IP(src=client_ip, dst=dst_ip, id=seq & 0xFFFF) / TCP(sport=sport, dport=dst_port, flags="S", seq=seq, window=64240)
    elif proto == "udp":
        pkt = IP(src=client_ip, dst=dst_ip, id=seq & 0xFFFF) / UDP(sport=sport, dport=dst_port) / Raw(f"echo {nonce}".encode())
    else:
        raise ValueError(f"proto must be tcp or udp, not {proto!r}")
    caps = {name: Capture(ns).start() for name, ns in (backends or {}).items()}
    client_cap = Capture(client_ns, iface).start()
    start = time.monotonic()

    request = f"echo {nonce}".encode()

    def is_ours_l4(layer) -> bool:
        if proto == "tcp":
            return layer.haslayer(TCP) and layer[TCP].seq == seq and layer[TCP].flags.S and not layer[TCP].flags.A
        # The UDP payload as bytes, not scapy's Raw layer: scapy decodes ports 53/5353 as DNS.
        return layer.haslayer(UDP) and bytes(layer[UDP].payload) == request

    def client_reply():
        for c in list(client_cap.packets):
            if c.outgoing:
                continue
            p = c.packet()
            if not p.haslayer(IP):
                continue
            if p.haslayer(ICMP) and p.haslayer(IPerror) and p[IP].dst == client_ip:
                inner = p[IPerror]
                l4 = (inner[TCPerror] if proto == "tcp" and inner.haslayer(TCPerror)
                      else inner[UDPerror] if inner.haslayer(UDPerror) else None)
                if l4 is not None and l4.sport == sport and p[ICMP].type == 3:
                    return c, p, f"icmp {ICMP_UNREACH.get(p[ICMP].code, 'code ' + str(p[ICMP].code))}"
            # Matched by sequence number / nonce, not by port: where the NAT is on the client's own
            # host (a node dialling a Service) this capture sees the reply before its un-NAT.
            if proto == "tcp" and p.haslayer(TCP) and not p.haslayer(IPerror) and p[TCP].ack == seq + 1:
                flags = p[TCP].flags
                if flags.S and flags.A:
                    return c, p, "syn-ack"
                if flags.R:
                    return c, p, "rst"
            if proto == "udp" and p.haslayer(UDP) and not p.haslayer(IPerror) \
                    and bytes(p[UDP].payload).strip() == nonce.encode():
                return c, p, "udp"
        return None

    try:
        _send_raw(client_ns, bytes(pkt), dst_ip)
        found = None
        deadline = start + timeout
        while time.monotonic() < deadline:
            found = client_reply()
            if found:
                break
            time.sleep(0.002)
    finally:
        client_cap.stop()
        for c in caps.values():
            c.stop()
    elapsed = time.monotonic() - start
    backend = saw_src = saw_dst = None
    for name, cap in caps.items():
        for c in cap.packets:
            if c.outgoing:
                continue
            p = c.packet()
            if p.haslayer(IP) and not p.haslayer(IPerror) and is_ours_l4(p):
                l4 = p[TCP] if proto == "tcp" else p[UDP]
                backend, saw_src, saw_dst = name, _addr(p[IP].src, l4.sport), _addr(p[IP].dst, l4.dport)
                break
        if backend:
            break
    if found is None:
        return Handshake(proto, _addr(client_ip, sport), _addr(dst_ip, dst_port), "dropped", backend=backend,
                         backend_saw_src=saw_src, backend_saw_dst=saw_dst, elapsed=elapsed)
    _, p, kind = found
    if kind.startswith("icmp"):
        outcome, reply_from = "refused", p[IP].src
    else:
        l4 = p[TCP] if proto == "tcp" else p[UDP]
        reply_from = _addr(p[IP].src, l4.sport)
        outcome = "refused" if kind == "rst" else "answered"
    return Handshake(proto, _addr(client_ip, sport), _addr(dst_ip, dst_port), outcome, kind, reply_from, backend,
                     saw_src, saw_dst, elapsed)


@dataclass(frozen=True)
class Rejection:
    outcome: str  # refused | dropped | answered
    how: str | None  # tcp-rst | icmp port-unreachable | icmp admin-prohibited | ... | None
    elapsed: float


def reject(client_ns: str, client_ip: str, dst_ip: str, dst_port: int, proto: str = "tcp", timeout: float = 1.0) -> Rejection:
    """Refused (and how: TCP RST or which ICMP unreachable) vs dropped (nothing within `timeout`) vs answered."""
    h = handshake(client_ns, client_ip, dst_ip, dst_port, proto, timeout=timeout)
    how = {"rst": "tcp-rst"}.get(h.reply or "", h.reply) if h.outcome == "refused" else None
    return Rejection(h.outcome, how, h.elapsed)
