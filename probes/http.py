"""One HTTP request with a chosen Host header (for Ingress routing), from inside a lab namespace."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from testbed.kernel import netns as _netns


@dataclass(frozen=True)
class HttpResult:
    outcome: str  # answered | refused | timeout | unreachable | error
    status: int | None = None
    headers: dict = field(default_factory=dict)  # lower-case names
    body: str = ""
    error: str | None = None

    @property
    def pod(self) -> str | None:
        """Who answered: testbed's netexec names itself in X-Pod-Name."""
        return self.headers.get("x-pod-name")


def get(netns: str | None, ip: str, port: int, host: str, path: str = "/", timeout: float = 2.0) -> HttpResult:
    try:
        if netns:
            with _netns.entered(netns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as e:
        return HttpResult("error", error=str(e))
    deadline = time.monotonic() + timeout
    try:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: testbed-probe\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionRefusedError as e:
        return HttpResult("refused", error=str(e))
    except (socket.timeout, TimeoutError) as e:
        return HttpResult("timeout", error=str(e))
    except OSError as e:
        return HttpResult("unreachable" if e.errno in (113, 101) else "error", error=str(e))
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return HttpResult("error", error=f"not an HTTP response: {lines[0][:80]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return HttpResult("answered", status, headers, body.decode("utf-8", "replace").strip())
