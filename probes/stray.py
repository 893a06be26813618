"""A stray out-of-window segment on a live Service connection (kubernetes#74839's trigger, made
deterministic): conntrack marks it INVALID, so it is not un-DNATed; unless a rule drops it, the
client gets a segment from the pod's own IP, answers it with a RST, and that RST (in the server's
window) resets the server's side of the connection.

The client holds an HTTP/1.1 keep-alive connection to the Service; the backend's last segment is
read from a capture in its namespace; the stray is that segment's 4-tuple with its sequence number
moved 2^30 ahead (outside any window), sent from the backend's namespace with a raw socket. Then the
client asks again on the same connection.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from testbed.kernel import netns as _netns

from .capture import Capture
from .poll import poll
from .handshake import _send_raw

REQUEST = b"GET /hostname HTTP/1.1\r\nHost: stray\r\n\r\n"
OUT_OF_WINDOW = 1 << 30


@dataclass(frozen=True)
class Stray:
    first: str  # the first answer on the connection ("" if none)
    after: str  # "answered" | "reset" | "closed" | "timeout": the second request, after the stray
    unnatted_at_client: int  # segments the client received from the pod's own IP (not the Service's)
    client_resets: int  # RSTs the client sent to the pod's IP
    sent: bool  # a backend segment was found and the stray sent

    @property
    def reset(self) -> bool:
        return self.after in ("reset", "closed")


def _ask(sock: socket.socket, timeout: float) -> str:
    sock.settimeout(timeout)
    sock.sendall(REQUEST)
    data = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in data or not _complete(data):
        sock.settimeout(max(deadline - time.monotonic(), 1e-3))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionAbortedError("closed by the peer")
        data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode("utf-8", "replace").strip()


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return True


def _last_from(packets, ip: str, port: int, ending: bytes = b""):
    """The backend's last TCP segment of the connection (scapy), or None; with `ending`, only once
    a segment whose payload ends with it (the answer's last bytes) was captured."""
    from scapy.layers.inet import IP, TCP
    last, ended = None, not ending
    for c in list(packets):
        p = c.packet()
        if IP in p and TCP in p and p[IP].src == ip and p[TCP].sport == port:
            last = p
            ended = ended or bytes(p[TCP].payload).rstrip().endswith(ending)
    return last if ended else None


def stray_segment(client_ns: str, servers: dict[str, tuple[str, str]], server_port: int, service_ip: str,
                  service_port: int, timeout: float = 1.0) -> Stray:
    """`servers`: the Service's backends, {pod name: (namespace, ip)}; the one that answers (netexec's
    /hostname names it) sends the stray. Every backend is captured, so none is guessed."""
    from scapy.layers.inet import IP, TCP
    with _netns.entered(client_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    at_client = Capture(client_ns).start()
    at = {name: Capture(ns).start() for name, (ns, _) in servers.items()}
    try:
        sock.settimeout(timeout)
        sock.connect((service_ip, service_port))
        client_ip, client_port = sock.getsockname()
        first = _ask(sock, timeout)
        server_ns, server_ip = servers.get(first, (None, None))
        # The capture thread reads in its own time: wait (bounded) for the segment that ended the answer.
        tail = first.encode()
        last = poll(lambda: _last_from(at[first].packets, server_ip, server_port, ending=tail), 2.0) \
            if first in at else None
        sent = last is not None
        if sent:
            nxt = (last[TCP].seq + len(bytes(last[TCP].payload))) % (1 << 32)
            stray = IP(src=server_ip, dst=client_ip) / TCP(sport=server_port, dport=client_port, flags="PA",
                                                           seq=(nxt + OUT_OF_WINDOW) % (1 << 32), ack=last[TCP].ack,
                                                           window=last[TCP].window) / b"stray"
            _send_raw(server_ns, bytes(stray), client_ip)
            # Until the stray reached the client (from either address); a dropped one never does.
            poll(lambda: any(not c.outgoing and b"stray" in c.data for c in list(at_client.packets)) or None, 0.5)
        try:
            _ask(sock, timeout)
            after = "answered"
        except ConnectionResetError:
            after = "reset"
        except ConnectionAbortedError:
            after = "closed"
        except (TimeoutError, socket.timeout):
            after = "timeout"
    finally:
        sock.close()
        client_seen = at_client.stop()
        for c in at.values():
            c.stop()
    unnatted = resets = 0
    for c in client_seen:
        p = c.packet()
        if IP in p and TCP in p:
            if not c.outgoing and p[IP].src == server_ip:
                unnatted += 1
            if c.outgoing and p[IP].dst == server_ip and p[TCP].flags & 0x04:
                resets += 1
    return Stray(first, after, unnatted, resets, sent)
