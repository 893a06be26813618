"""Failover timeline: requests at a steady pace while something changes, and the time to recovery."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from .connect import tcp_request, udp_request
from .poll import wait_until


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the change was started
    outcome: str  # answered | refused | timeout | unreachable | error
    backend: str
    error: str = ""  # the client's error, for a failed request
    local: str = ""  # the client's own ip:port (a proxy's log names it)
    elapsed: float = 0.0  # seconds the request took


@dataclass(frozen=True)
class Timeline:
    samples: tuple[Sample, ...]
    change_took: float  # how long the change itself (the callable) ran
    settled_at: float | None = None  # when `settled` first held (s since the change); None: never, or not asked

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
             after: float = 2.0, interval: float = 0.02, proto: str = "tcp", timeout: float = 0.5,
             settled: Callable[[], object] | None = None, settle_timeout: float = 15.0) -> Timeline:
    """Probe every `interval` s for `before` s, run `change()`, keep probing for `after` s.

    With `settled` (e.g. "the rules no longer have the endpoint"), probing goes on until it holds
    (polled, at most `settle_timeout` s), then `after` s more: the window follows what the lab
    took, not a guess. Each request has `timeout` s."""
    # Send times are kept as clock readings and made relative to the change only at the end: the
    # change's start is known once the pre-change sleep returns, and on a busy machine that sleep
    # overshoots, so a request sent before the change must not be timed against a guessed start.
    sent_at: list[tuple[float, object]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            r = (tcp_request(netns, host, port, "/hostname", timeout) if proto == "tcp"
                 else udp_request(netns, host, port, "hostname", timeout))
            sent_at.append((sent, r))
            stop.wait(max(0.0, interval - (time.monotonic() - sent)))

    th = threading.Thread(target=loop, name="failover-probe", daemon=True)
    th.start()
    time.sleep(before)  # a fixed pre-change window is the point of the probe, not a wait for state
    t0 = time.monotonic()
    change()
    took = time.monotonic() - t0
    settled_at = None
    try:
        if settled is not None:
            try:
                wait_until(settled, timeout=settle_timeout, interval=0.05)
                settled_at = time.monotonic() - t0
            except TimeoutError:
                pass  # the timeline says so: settled_at stays None
        if settled is None or settled_at is not None:
            time.sleep(after)
    finally:
        stop.set()
        th.join(timeout=timeout + 1)
    samples = tuple(Sample(sent - t0, r.outcome, r.body if r.ok else "", r.error or "", r.local, r.elapsed)
                    for sent, r in sent_at)
    return Timeline(samples, took, settled_at)
