"""Client probes: one request from inside a lab namespace, or many of them as a distribution.

Sockets are created inside `testbed.kernel.netns.entered(netns)` and keep that namespace, so all
I/O happens after the thread has come back. `netns=None` means "the calling thread's namespace".
Nothing here prints; everything is returned.

Outcomes (`Result.outcome`):
    "answered"     a response came back (any HTTP status; see `Result.status`)
    "refused"      ECONNREFUSED: a TCP RST, or an ICMP port/admin-prohibited unreachable
    "timeout"      nothing (or not all of it) came back within `timeout` seconds
    "unreachable"  EHOSTUNREACH / ENETUNREACH (no route, ARP failure, ICMP host unreachable)
    "error"        anything else (reset mid-response, malformed response, ...); see `error`
"""
from __future__ import annotations

import errno
import socket
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from probes.stats import chi_square_p
from testbed.kernel import netns as _netns

OUTCOMES = ("answered", "refused", "timeout", "unreachable", "error")
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH}
_MAX_RESPONSE = 1 << 20
SCTP = getattr(socket, "IPPROTO_SCTP", 132)
PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class Result:
    """What one request saw. `body` is stripped; `local` is the client's own "ip:port"."""

    outcome: str
    body: str = ""
    elapsed: float = 0.0
    error: str | None = None
    local: str = ""
    status: int | None = None  # HTTP status for TCP requests that were answered

    @property
    def ok(self) -> bool:
        return self.outcome == "answered"


@dataclass(frozen=True)
class Distribution:
    """Where `total` requests landed.

    counts:   answered body (backend hostname) -> number of answers
    failures: outcome other than "answered" -> number
    p_value:  chi-square goodness of fit of `counts` against a uniform spread over `expected`
              (or over the observed backends when no expectation was given); 0.0 when a backend
              outside `expected` answered; None when nothing answered.
    errors:   up to five distinct error messages, for diagnosis
    """

    counts: dict[str, int]
    failures: dict[str, int]
    total: int
    p_value: float | None
    expected: tuple[str, ...] = ()
    errors: tuple[str, ...] = field(default=())

    @property
    def answered(self) -> int:
        return sum(self.counts.values())

    def fraction(self, backend: str) -> float:
        return self.counts.get(backend, 0) / self.total if self.total else 0.0


def _inside(netns: str | None):
    return _netns.entered(netns) if netns else nullcontext()


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _fmt(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _classify(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return "unreachable"
    return "error"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _open(netns: str | None, host: str, kind: int, source_port: int | None, proto: int = 0) -> socket.socket:
    with _inside(netns):
        sock = socket.socket(_family(host), kind, proto)
    try:
        if source_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::" if _family(host) == socket.AF_INET6 else "0.0.0.0", source_port))
    except BaseException:
        sock.close()
        raise
    return sock


class _BadResponse(Exception):
    pass


def _read_http(sock: socket.socket, deadline: float) -> tuple[int, bytes]:
    """Read one HTTP/1.x response: up to Content-Length if given, else until EOF."""
    buf = b""
    header_end = -1
    length: int | None = None
    status = 0
    while True:
        if header_end >= 0 and length is not None and len(buf) - header_end >= length:
            return status, buf[header_end:header_end + length]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out reading the response")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            if header_end < 0:
                raise _BadResponse(f"connection closed after {len(buf)} bytes, before a full header")
            if length is not None:
                raise _BadResponse(f"connection closed with {len(buf) - header_end}/{length} body bytes")
            return status, buf[header_end:]
        buf += chunk
        if len(buf) > _MAX_RESPONSE:
            raise _BadResponse("response larger than 1 MiB")
        if header_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                continue
            header_end = end + 4
            lines = buf[:end].decode("latin-1").split("\r\n")
            parts = lines[0].split(None, 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise _BadResponse(f"not an HTTP response: {lines[0][:80]!r}")
            status = int(parts[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    try:
                        length = int(value.strip())
                    except ValueError:
                        raise _BadResponse(f"bad Content-Length {value.strip()!r}") from None


def _get(host: str, port: int, path: str, close: bool = True) -> bytes:
    """An HTTP/1.1 GET for path; `close` asks the server to end the connection after answering."""
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (f"GET {path} HTTP/1.1\r\nHost: {hostport}\r\nUser-Agent: testbed-probe\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode("latin-1")


def tcp_request(netns: str | None, host: str, port: int, path: str = "/hostname",
                timeout: float = 2.0, source_port: int | None = None) -> Result:
    """One HTTP GET over a fresh TCP connection from inside `netns`; `timeout` bounds it all."""
    return _http_request(netns, host, port, path, timeout, source_port, socket.IPPROTO_TCP)


def sctp_request(netns: str | None, host: str, port: int, path: str = "/hostname",
                 timeout: float = 2.0, source_port: int | None = None) -> Result:
    """tcp_request over a fresh one-to-one SCTP association (SOCK_STREAM, IPPROTO_SCTP), as
    netexec's --sctp ports serve. An SCTP ABORT in answer to the INIT reads as "refused"; a kernel
    without SCTP as "error" (EPROTONOSUPPORT, see `error`)."""
    return _http_request(netns, host, port, path, timeout, source_port, SCTP)


def _http_request(netns: str | None, host: str, port: int, path: str, timeout: float,
                  source_port: int | None, proto: int) -> Result:
    start = time.monotonic()
    deadline = start + timeout
    local = ""
    try:
        sock = _open(netns, host, socket.SOCK_STREAM, source_port, proto)
    except OSError as e:
        return Result("error", elapsed=time.monotonic() - start, error=_describe(e))
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        local = _fmt(sock.getsockname())
        sock.settimeout(max(deadline - time.monotonic(), 1e-3))
        sock.sendall(_get(host, port, path))
        status, body = _read_http(sock, deadline)
    except _BadResponse as e:
        return Result("error", elapsed=time.monotonic() - start, error=str(e), local=local)
    except OSError as e:
        return Result(_classify(e), elapsed=time.monotonic() - start, error=_describe(e), local=local)
    finally:
        sock.close()
    return Result("answered", body.decode("utf-8", "replace").strip(), time.monotonic() - start,
                  None, local, status)


@contextmanager
def held_open(netns: str | None, host: str, port: int, path: str = "/hostname", timeout: float = 5.0):
    """A keep-alive HTTP connection from inside `netns`, open for the `with` block: yields the
    first answer's body (netexec's /hostname: the pod that holds the connection). The server
    keeps it established, so IPVS counts it as an active connection until the block ends."""
    sock = _open(netns, host, socket.SOCK_STREAM, None)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(_get(host, port, path, close=False))
        _, body = _read_http(sock, time.monotonic() + timeout)
        yield body.decode("utf-8", "replace").strip()
    finally:
        sock.close()


def request(netns: str | None, host: str, port: int, proto: str = "tcp", timeout: float = 2.0,
            path: str = "/hostname", payload: str = "hostname") -> Result:
    """One request over `proto` ("tcp" | "udp" | "sctp"): `path` for HTTP, `payload` for UDP."""
    if proto == "udp":
        return udp_request(netns, host, port, payload=payload, timeout=timeout)
    if proto == "sctp":
        return sctp_request(netns, host, port, path=path, timeout=timeout)
    if proto == "tcp":
        return tcp_request(netns, host, port, path=path, timeout=timeout)
    raise ValueError(f"proto must be one of {', '.join(PROTOCOLS)}, not {proto!r}")


def udp_request(netns: str | None, host: str, port: int, payload: str = "hostname",
                timeout: float = 2.0, source_port: int | None = None) -> Result:
    """One datagram and its answer over a connected UDP socket from inside `netns`.

    The socket is connected, so an ICMP port unreachable comes back as ECONNREFUSED ("refused").
    A server that stays silent (agnhost ignores unknown commands) reads as "timeout".
    """
    start = time.monotonic()
    local = ""
    try:
        sock = _open(netns, host, socket.SOCK_DGRAM, source_port)
    except OSError as e:
        return Result("error", elapsed=time.monotonic() - start, error=_describe(e))
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        local = _fmt(sock.getsockname())
        sock.send(payload.encode("utf-8"))
        sock.settimeout(max(start + timeout - time.monotonic(), 1e-3))
        data = sock.recv(65536)
    except OSError as e:
        return Result(_classify(e), elapsed=time.monotonic() - start, error=_describe(e), local=local)
    finally:
        sock.close()
    return Result("answered", data.decode("utf-8", "replace").strip(), time.monotonic() - start,
                  None, local)


def distribution(netns: str | None, host: str, port: int, count: int = 300, proto: str = "tcp",
                 path: str = "/hostname", concurrency: int = 8,
                 expected: list[str] | tuple[str, ...] | set[str] | None = None,
                 timeout: float = 2.0, payload: str = "hostname") -> Distribution:
    """Send `count` independent requests (a new connection / new source port each) and tally them.

    Each answered body counts as one backend. Up to `concurrency` threads each enter `netns`
    themselves (setns is per thread) and share the work. For UDP, `payload` is the datagram.
    """
    if proto not in PROTOCOLS:
        raise ValueError(f"proto must be one of {', '.join(PROTOCOLS)}, not {proto!r}")
    if count < 0:
        raise ValueError("count must be >= 0")

    def one() -> Result:
        return request(None, host, port, proto, timeout=timeout, path=path, payload=payload)

    workers = max(1, min(concurrency, count))
    shares = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    collected: list[list[Result]] = [[] for _ in range(workers)]
    crashes: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with _inside(netns):  # sockets are created in this thread, so enter here
                out = collected[i]
                for _ in range(shares[i]):
                    out.append(one())
        except BaseException as e:  # surfaced below, in the caller's thread
            crashes.append(e)

    if workers == 1:
        work(0)
    else:
        threads = [threading.Thread(target=work, args=(i,), name=f"probe-{i}", daemon=True)
                   for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if crashes:
        raise crashes[0]

    counts: dict[str, int] = {}
    failures: dict[str, int] = {}
    errors: list[str] = []
    for results in collected:
        for r in results:
            if r.outcome == "answered":
                counts[r.body] = counts.get(r.body, 0) + 1
            else:
                failures[r.outcome] = failures.get(r.outcome, 0) + 1
                if r.error and r.error not in errors and len(errors) < 5:
                    errors.append(r.error)

    want = tuple(sorted(set(expected))) if expected else ()
    p_value: float | None
    if not counts:
        p_value = None
    elif want and any(b not in want for b in counts):
        p_value = 0.0
    else:
        categories = want or tuple(sorted(counts))
        p_value = chi_square_p([counts.get(b, 0) for b in categories], [1.0] * len(categories))
    return Distribution(dict(sorted(counts.items())), dict(sorted(failures.items())), count,
                        p_value, want, tuple(errors))
