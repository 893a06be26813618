"""Failover timeline: requests at a steady pace while something changes, and the time to recovery."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from .connect import tcp_request, udp_request


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the change was started
    outcome: str  # answered | refused | timeout | unreachable | error
    backend: str


@dataclass(frozen=True)
class Timeline:
    samples: tuple[Sample, ...]
    change_took: float  # how long the change itself (the callable) ran

    def count(self, outcome: str) -> int:
        return sum(s.outcome == outcome for s in self.samples)

    @property
    def failures_after_change(self) -> tuple[Sample, ...]:
        return tuple(s for s in self.samples if s.at >= 0 and s.outcome != "answered")

    @property
    def recovery(self) -> float | None:
        """Seconds from the change to the first success after the last failure (0 if none failed,
        None if it never recovered)."""
        fails = self.failures_after_change
        if not fails:
            return 0.0
        last = fails[-1].at
        after = [s.at for s in self.samples if s.at > last and s.outcome == "answered"]
        return after[0] if after else None

    def backends_after(self, t: float) -> set[str]:
        return {s.backend for s in self.samples if s.at >= t and s.outcome == "answered"}


def failover(netns: str, host: str, port: int, change: Callable[[], object], before: float = 0.3,
             after: float = 2.0, interval: float = 0.02, proto: str = "tcp", timeout: float = 0.5) -> Timeline:
    """Probe every `interval` s for `before` s, run `change()`, keep probing for `after` s."""
    samples: list[Sample] = []
    stop = threading.Event()
    t0 = [time.monotonic() + before]

    def loop() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            r = tcp_request(netns, host, port, "/hostname", timeout) if proto == "tcp" else udp_request(netns, host, port, "hostname", timeout)
            samples.append(Sample(sent - t0[0], r.outcome, r.body if r.ok else ""))
            stop.wait(max(0.0, interval - (time.monotonic() - sent)))

    th = threading.Thread(target=loop, name="failover-probe", daemon=True)
    th.start()
    time.sleep(before)  # a fixed pre-change window is the point of the probe, not a wait for state
    t0[0] = time.monotonic()
    change()
    took = time.monotonic() - t0[0]
    time.sleep(after)
    stop.set()
    th.join(timeout=timeout + 1)
    return Timeline(tuple(samples), took)
