"""kube-proxy's service health server: one HTTP listener per (node, healthCheckNodePort).

For a LoadBalancer Service with externalTrafficPolicy: Local, kube-proxy on every node answers
`GET /` on the healthCheckNodePort with 200 when the node has local ready endpoints for the
Service and 503 otherwise, with a small JSON body, so the cloud load balancer only sends to nodes
that can serve locally. The agent runs these listeners inside the node namespaces.
"""
from __future__ import annotations

import json
import selectors
import socket
import threading

from .kernel import netns, wiring


def local_endpoints(cluster) -> dict[tuple[str, int], tuple[str, int]]:
    """(node, healthCheckNodePort) → (service key, number of local ready endpoints)."""
    out = {}
    for info in cluster.services:
        port = info.health_check_node_port
        if not port:
            continue
        ips = {e.ip: e for eps in info.endpoints for e in eps if e.ready}
        for n in cluster.nodes:
            out[(n.name, port)] = (info.key, sum(1 for e in ips.values() if e.node == n.name))
    return out


def response(service_key: str, count: int) -> bytes:
    ns, name = service_key.split("/", 1)
    body = json.dumps({"service": {"namespace": ns, "name": name}, "localEndpoints": count,
                       "serviceProxyHealthy": True}).encode()
    status = "200 OK" if count > 0 else "503 Service Unavailable"
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class HealthServers:
    def __init__(self, lab: str):
        self.lab = lab
        self.sel = selectors.DefaultSelector()
        self.listeners: dict[tuple[str, int], socket.socket] = {}
        self.state: dict[tuple[str, int], tuple[str, int]] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._loop, name="health-servers", daemon=True).start()

    def update(self, cluster) -> None:
        want = local_endpoints(cluster)
        with self.lock:
            self.state = want
            for key in list(self.listeners):
                if key not in want:
                    sock = self.listeners.pop(key)
                    self.sel.unregister(sock)
                    sock.close()
            for node, port in want:
                if (node, port) in self.listeners:
                    continue
                with netns.entered(wiring.host_ns(self.lab, node)):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("0.0.0.0", port))
                except OSError:
                    sock.close()
                    continue
                sock.listen(64)
                sock.setblocking(False)
                self.listeners[(node, port)] = sock
                self.sel.register(sock, selectors.EVENT_READ, (node, port))

    def _loop(self) -> None:
        while True:
            for key, _ in self.sel.select(timeout=0.2) if self.listeners else []:
                try:
                    conn, _ = key.fileobj.accept()
                except OSError:
                    continue
                threading.Thread(target=self._answer, args=(conn, key.data), daemon=True).start()
            if not self.listeners:
                threading.Event().wait(0.2)

    def _answer(self, conn: socket.socket, key: tuple[str, int]) -> None:
        conn.settimeout(1.0)
        try:
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 8192:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            with self.lock:
                svc, count = self.state.get(key, ("?/?", 0))
            conn.sendall(response(svc, count))
        except OSError:
            pass
        finally:
            conn.close()
