"""Session affinity: the backend sequence seen by M requests from one client."""
from __future__ import annotations

from dataclasses import dataclass

from .connect import tcp_request, udp_request


@dataclass(frozen=True)
class Affinity:
    sequence: tuple[str, ...]  # backend name per request ("" for a request that failed)
    failures: int

    @property
    def sticky(self) -> bool:
        """Every request reached the same backend."""
        return bool(self.sequence) and self.failures == 0 and len(set(self.sequence)) == 1

    @property
    def switches(self) -> int:
        return sum(1 for a, b in zip(self.sequence, self.sequence[1:], strict=False) if a != b)


def affinity(netns: str, host: str, port: int, requests: int = 15, proto: str = "tcp", timeout: float = 2.0) -> Affinity:
    """M requests in a row from one client namespace (new connection, new source port each)."""
    seq, failures = [], 0
    for _ in range(requests):
        r = (tcp_request(netns, host, port, "/hostname", timeout) if proto == "tcp"
             else udp_request(netns, host, port, "hostname", timeout))
        seq.append(r.body if r.ok else "")
        failures += not r.ok
    return Affinity(tuple(seq), failures)
