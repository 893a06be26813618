"""Packet capture inside a lab namespace: an AF_PACKET socket opened in the namespace, read in a thread.

The socket is bound before `Capture.start()` returns, so every packet after that is seen: no
sleep is needed between starting a capture and sending. Packets are parsed with scapy. Checksums
of captured packets are not trusted: on veth, NATed packets are handed to AF_PACKET with
CHECKSUM_PARTIAL (the checksum field holds only the pseudo-header sum), so the probes compare
addresses and ports, never checksums.
"""
from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass

from testbed.kernel import netns as _netns

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


@dataclass(frozen=True)
class Captured:
    at: float  # time.monotonic()
    outgoing: bool
    data: bytes

    def packet(self):
        from scapy.layers.l2 import Ether
        return Ether(self.data)


class Capture:
    """Capture on one interface ("any" for all) of one namespace until stopped (or `limit` packets)."""

    def __init__(self, netns: str | None, iface: str = "eth0", limit: int = 10000):
        self.netns, self.iface, self.limit = netns, iface, limit
        self.packets: list[Captured] = []
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "Capture":
        ctx = _netns.entered(self.netns) if self.netns else _nullctx()
        with ctx:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        if self.iface != "any":  # unbound AF_PACKET sockets see every interface
            sock.bind((self.iface, 0))
        sock.setblocking(False)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.netns}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        sock = self._sock
        while not self._stop.is_set() and len(self.packets) < self.limit:
            ready, _, _ = select.select([sock], [], [], 0.02)
            if not ready:
                continue
            while True:
                try:
                    data, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                self.packets.append(Captured(time.monotonic(), addr[2] == PACKET_OUTGOING, data))

    def stop(self) -> list[Captured]:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        if self._sock:
            # Drain what arrived between the last poll and the stop.
            while True:
                try:
                    data, addr = self._sock.recvfrom(65535)
                except (BlockingIOError, OSError):
                    break
                self.packets.append(Captured(time.monotonic(), addr[2] == PACKET_OUTGOING, data))
            self._sock.close()
            self._sock = None
        return self.packets

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _nullctx:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None
