"""kube-proxy's service health server: one HTTP listener per (node, healthCheckNodePort).

For a LoadBalancer Service with externalTrafficPolicy: Local, kube-proxy on every node answers
`GET /` on the healthCheckNodePort with 200 when the node has local ready endpoints for the
Service and 503 otherwise, with a small JSON body, so the cloud load balancer only sends to nodes
that can serve locally. Beside them, kube-proxy's own endpoints (testbed.proxystatus): `:10256/healthz`
and `/livez`, `:10249/proxyMode` and `/metrics`. The agent runs these listeners inside the node
namespaces.
"""
from __future__ import annotations

import json
import selectors
import time
import socket
import threading

from . import proxystatus
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
    return http(200 if count > 0 else 503, "application/json", body)


REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}


def http(status: int, content_type: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {content_type}\r\n"
            f"X-Content-Type-Options: nosniff\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode() + body


class HealthServers:
    def __init__(self, lab: str):
        self.lab = lab
        self.sel = selectors.DefaultSelector()
        self.listeners: dict[tuple[str, int], socket.socket] = {}
        self.state: dict[tuple[str, int], tuple[str, int]] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._loop, name="health-servers", daemon=True).start()

    def update(self, cluster, saved: dict | None = None) -> None:
        """Listeners for every healthCheckNodePort and, given the lab state, kube-proxy's own ports."""
        want: dict = {k: ("service", *v) for k, v in local_endpoints(cluster).items()}
        if saved is not None:
            for n in cluster.nodes:
                status = proxystatus.node_status(saved, n.name)
                for port in (proxystatus.HEALTHZ_PORT, proxystatus.METRICS_PORT):
                    want.setdefault((n.name, port), ("proxy", status))
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
                    # kube-proxy's defaults: --metrics-bind-address 127.0.0.1:10249, --healthz-bind-address 0.0.0.0:10256
                    sock.bind(("127.0.0.1" if port == proxystatus.METRICS_PORT else "0.0.0.0", port))
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
                entry = self.state.get(key, ("service", "?/?", 0))
            if entry[0] == "service":
                conn.sendall(response(entry[1], entry[2]))
            else:
                line = data.split(b"\r\n", 1)[0].decode("latin-1").split()
                path = line[1].split("?", 1)[0] if len(line) > 1 else "/"
                conn.sendall(http(*proxystatus.answer(key[1], entry[1], time.time(), path)))
        except OSError:
            pass
        finally:
            conn.close()
