"""A neighbour on the node network knocks on a node's 127.0.0.1 (CVE-2020-8558): a TCP SYN with
destination 127.0.0.1, sent on the wire to the node's MAC. With route_localnet=1 (which kube-proxy's
iptables mode sets for localhost NodePorts) the node accepts it as local unless a rule drops it, and
a service bound to 127.0.0.1 answers. The answer (from 127.0.0.1) is read from a capture on the
neighbour's link: its own kernel drops it as a martian.
"""
from __future__ import annotations

import fcntl
import random
import socket
import struct
import time

from testbed.kernel import netns as _netns

from .capture import Capture

SIOCGIFHWADDR = 0x8927


def mac_of(ns: str, iface: str = "eth0") -> str:
    """The MAC address of `iface` inside namespace `ns`."""
    with _netns.entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        raw = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, struct.pack("256s", iface.encode()[:15]))
    finally:
        sock.close()
    return ":".join(f"{b:02x}" for b in raw[18:24])


def knock(client_ns: str, client_ip: str, node_mac: str, port: int, timeout: float = 1.0,
          iface: str = "eth0") -> str:
    """One SYN to 127.0.0.1:`port` through the node with `node_mac`: "syn-ack" (a listener answered),
    "rst" (reached, nothing listening) or "silence" (dropped)."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    sport = random.randint(20000, 60000)
    frame = Ether(src=mac_of(client_ns, iface), dst=node_mac) / IP(src=client_ip, dst="127.0.0.1") / \
        TCP(sport=sport, dport=port, flags="S", seq=random.getrandbits(32))
    with _netns.entered(client_ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    cap = Capture(client_ns, iface).start()
    try:
        sock.bind((iface, 0))
        sock.send(bytes(frame))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for c in list(cap.packets):
                if c.outgoing:
                    continue
                p = c.packet()
                if IP in p and TCP in p and p[IP].src == "127.0.0.1" and p[TCP].dport == sport:
                    return "syn-ack" if p[TCP].flags & 0x12 == 0x12 else "rst" if p[TCP].flags & 0x04 else "other"
            time.sleep(0.01)
        return "silence"
    finally:
        sock.close()
        cap.stop()
