"""Network programming latency seen by traffic: how long after a change new connections behave as
the change says (a backend no longer reached, a backend or port reached).

kube-proxy's own metric (network_programming_duration_seconds) ends when its rules are written;
this probe ends when packets show it, so it also covers what happens after the rules: the
userspace proxy's reload, IPVS, conntrack. It opens a new TCP connection every `cadence` seconds
(non-blocking, many in flight, one thread), asks each `GET /hostname` and notes when it was
started and which backend answered. Each connection has a short `deadline` (below TCP's 1 s SYN
retransmission), so a SYN dropped before the rules existed counts as a failure, not as an answer
that arrived a second later. Sockets close with RST, so no TIME_WAIT piles up.

An observation's `latency` is the start time (after the change began) of the first connection
from which on the traffic shows the change; `resolution` is the mean gap between connection starts.
"""
from __future__ import annotations

import errno
import selectors
import socket
import struct
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

from testbed.kernel import netns as _netns

_REQUEST = b"GET /hostname HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
_LINGER_RST = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class Sample:
    at: float  # connection start, seconds after the change began (negative: before)
    outcome: str  # answered | refused | timeout | error
    backend: str = ""  # the hostname that answered


@dataclass(frozen=True)
class Observation:
    latency: float | None  # seconds from the change to traffic showing it; None: never within the limit
    resolution: float  # mean gap between connection starts
    change_took: float  # how long the change call itself ran (e.g. until rules were applied)
    samples: tuple[Sample, ...]

    def count(self, outcome: str) -> int:
        return sum(s.outcome == outcome for s in self.samples)


# ------------------------------------------------------------------ when did the traffic show it?


def gone(backend: str, quiet: float = 0.3, min_answers: int = 20) -> Callable[[list[Sample]], float | None]:
    """`backend` stopped answering: the start of the first connection after its last answer, once
    `quiet` seconds of connections, at least `min_answers` of them answered by others, followed."""

    def decide(samples: list[Sample]) -> float | None:
        after = [s for s in samples if s.at >= 0]
        last = max((s.at for s in after if s.backend == backend), default=-1.0)
        later = [s for s in after if s.at > last]
        if not later or later[-1].at - later[0].at < quiet or sum(s.outcome == "answered" for s in later) < min_answers:
            return None
        return later[0].at

    return decide


def reached(backend: str | None = None) -> Callable[[list[Sample]], float | None]:
    """The first connection started after the change that was answered (by `backend`, if given)."""

    def decide(samples: list[Sample]) -> float | None:
        for s in samples:
            if s.at >= 0 and s.outcome == "answered" and (backend is None or s.backend == backend):
                return s.at
        return None

    return decide


# ------------------------------------------------------------------ the prober


class _Conn:
    __slots__ = ("sock", "at", "deadline", "buf", "sent")

    def __init__(self, sock: socket.socket, at: float, deadline: float):
        self.sock, self.at, self.deadline, self.buf, self.sent = sock, at, deadline, b"", False


def _failed(err: int) -> str:
    return "refused" if err == errno.ECONNREFUSED else "error"


def _body(raw: bytes) -> str:
    head, _, body = raw.partition(b"\r\n\r\n")
    return body.decode(errors="replace").strip() if head.startswith(b"HTTP/1.") else ""


def observe(netns: str | None, host: str, port: int, change: Callable[[], object],
            decide: Callable[[list[Sample]], float | None], *, before: float = 0.1, cadence: float = 0.002,
            deadline: float = 0.25, limit: float = 10.0, max_in_flight: int = 256) -> Observation:
    """Probe `host:port` from `netns` every `cadence` s; run `change()` (in another thread, so the
    probe keeps its pace) `before` s in; stop when `decide(samples)` gives a time and every
    connection started up to then has finished, or `limit` s after the change."""
    sel = selectors.DefaultSelector()
    samples: list[Sample] = []
    live: dict[int, _Conn] = {}
    t0 = time.monotonic() + before
    started = threading.Event()
    took: list[float] = []
    failed: list[BaseException] = []

    def run_change() -> None:
        started.set()
        c0 = time.monotonic()
        try:
            change()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            failed.append(e)
        took.append(time.monotonic() - c0)

    def finish(c: _Conn, outcome: str, backend: str = "") -> None:
        live.pop(id(c), None)
        sel.unregister(c.sock)
        try:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass
        c.sock.close()
        samples.append(Sample(c.at - t0, outcome, backend))

    changer = threading.Thread(target=run_change, name="programming-change", daemon=True)
    next_start = time.monotonic()
    next_decide = 0.0
    answer_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if not started.is_set() and now >= t0:
                t0 = now
                changer.start()
                started.wait()
            if started.is_set() and answer_at is None and now >= next_decide:  # every 20 ms is enough
                next_decide = now + 0.02
                answer_at = decide(sorted(samples, key=lambda s: s.at))
            done = started.is_set() and (answer_at is not None or now - t0 > limit)
            if done and (answer_at is None or all(c.at - t0 > answer_at for c in live.values())):
                break
            if not done and now >= next_start and len(live) < max_in_flight:
                next_start = max(next_start + cadence, now - cadence)
                with _netns.entered(netns) if netns else nullcontext():
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                err = sock.connect_ex((host, port))
                c = _Conn(sock, now, now + deadline)
                if err not in (0, errno.EINPROGRESS):
                    sock.close()
                    samples.append(Sample(now - t0, _failed(err)))
                else:
                    live[id(c)] = c
                    sel.register(sock, selectors.EVENT_WRITE, c)
            timeout = max(0.0, min(next_start - time.monotonic(), 0.01))
            for key, _ in sel.select(timeout):
                c: _Conn = key.data
                if not c.sent:
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        finish(c, _failed(err))
                        continue
                    try:
                        c.sock.send(_REQUEST)
                    except OSError:
                        finish(c, "error")
                        continue
                    c.sent = True
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                try:
                    chunk = c.sock.recv(4096)
                except OSError:
                    chunk = None
                if chunk:
                    c.buf += chunk
                    continue
                body = _body(c.buf)
                finish(c, "answered" if body else "error", body)
            now = time.monotonic()
            for c in [c for c in live.values() if now > c.deadline]:
                finish(c, "timeout")
    finally:
        for c in list(live.values()):
            finish(c, "timeout")
        sel.close()
        if changer.is_alive():
            changer.join()
    if failed:
        raise failed[0]
    ordered = sorted(samples, key=lambda s: s.at)
    latency = decide(ordered)
    starts = [s.at for s in ordered]
    resolution = (starts[-1] - starts[0]) / (len(starts) - 1) if len(starts) > 1 else cadence
    return Observation(latency, resolution, took[0] if took else 0.0, tuple(ordered))

