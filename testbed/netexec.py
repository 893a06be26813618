"""The pod workload: a tiny stdlib-only server shaped like Kubernetes' `agnhost netexec`.

    python -m testbed.netexec --hostname NAME [--netns PATH] [--tcp PORT]... [--udp PORT]...
                              [--sctp PORT]... [--ready-fd FD]

One process, one thread, one `selectors` loop; it starts in a few tens of milliseconds because it
imports nothing heavy (from the testbed package only the stdlib-only `testbed.startup`).

TCP ports speak a minimal HTTP/1.1 (keep-alive by default, `Connection: close` honoured; request
bodies announced by Content-Length are read and discarded):

    GET /              -> hostname
    GET /hostname      -> hostname
    GET /clientip      -> the peer as "ip:port" (what the server saw: shows SNAT/DNAT effects)
    GET /whoami        -> "hostname ip:port" (not in agnhost: both facts from one connection)
    GET /echo?msg=X    -> X, url-decoded ("+" is a space, as Go's FormValue does)
    GET /healthz       -> 200 "ok"
    GET /readyz        -> 200 "ok", or 503 "not ready" while readiness is toggled off
    anything else      -> 404 (a method other than GET/HEAD -> 405)

SCTP ports speak the same HTTP over a one-to-one SCTP socket (SOCK_STREAM, IPPROTO_SCTP), as
agnhost netexec's --sctp-port does. On a kernel without SCTP (no CONFIG_IP_SCTP: socket() fails
with EPROTONOSUPPORT) such a port is skipped with one line on stderr and the others still serve.

UDP ports answer the agnhost commands, one datagram each (surrounding whitespace ignored):

    "hostname"  -> hostname
    "clientip"  -> peer "ip:port"
    "whoami"    -> "hostname ip:port"
    "echo X"    -> X
    anything else is ignored (no reply), as agnhost does.

Failure staging: SIGUSR1 makes /readyz answer 503, SIGUSR2 makes it answer 200 again (explicit,
so repeating a command is harmless). Nothing else changes, so a
probe against /readyz fails while the pod keeps serving traffic, which is what a readiness
failure looks like to the kubelet.

Startup contract: `--netns PATH` is entered with setns(CLONE_NEWNET) before anything is bound.
When every socket is bound (and TCP ones listening), one byte b"R" is written to `--ready-fd`
(an inherited pipe) and that fd is closed, so the parent can wait without polling. If entering the
namespace or binding fails, one line goes to stderr and the exit status is 2 (the ready fd is
closed without writing, so the parent sees EOF). SIGTERM/SIGINT exit cleanly with status 0.
"""
from __future__ import annotations

import errno
import selectors
import signal
import socket
import sys

from testbed.startup import ReadyFd, enter_netns  # stdlib-only: start-up stays light

MAX_HEADER = 64 * 1024
SCTP = getattr(socket, "IPPROTO_SCTP", 132)
NO_SCTP = (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT)  # the kernel has no SCTP
RECV = 65536
USAGE = (
    "usage: python -m testbed.netexec --hostname NAME [--netns PATH] [--tcp PORT]... "
    "[--udp PORT]... [--sctp PORT]... [--ready-fd FD]"
)

_ready = True  # SIGUSR1 → False, SIGUSR2 → True


class _Stop(Exception):
    """Raised from the SIGTERM/SIGINT handler to leave the loop."""


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> dict:
    """Hand-rolled (argparse costs start-up time): repeated --tcp/--udp/--sctp, `--opt=value` accepted."""
    opts: dict = {"hostname": None, "netns": None, "tcp": [], "udp": [], "sctp": [], "ready_fd": None}
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE + "\n")
            raise SystemExit(0)
        key, eq, value = arg.partition("=")
        if key not in ("--hostname", "--netns", "--tcp", "--udp", "--sctp", "--ready-fd"):
            raise UsageError(f"unknown argument {arg!r}")
        if not eq:
            value = next(it, None)
            if value is None:
                raise UsageError(f"{key} needs a value")
        name = key[2:].replace("-", "_")
        if name in ("tcp", "udp", "sctp"):
            try:
                port = int(value)
            except ValueError:
                raise UsageError(f"{key}: not a port: {value!r}") from None
            if not 0 < port < 65536:
                raise UsageError(f"{key}: port out of range: {port}")
            opts[name].append(port)
        elif name == "ready_fd":
            try:
                opts[name] = int(value)
            except ValueError:
                raise UsageError(f"--ready-fd: not an fd: {value!r}") from None
        else:
            opts[name] = value
    if not opts["hostname"]:
        raise UsageError("--hostname is required")
    return opts



_HEX = frozenset(b"0123456789abcdefABCDEF")


def _unquote(s: str) -> str:
    """Percent-decoding (form style, '+' is a space) without importing urllib."""
    s = s.replace("+", " ")
    if "%" not in s:
        return s
    raw = s.encode("utf-8")
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25 and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:  # "%XX"
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
            continue
        out.append(c)
        i += 1
    return out.decode("utf-8", "replace")


def _query_param(query: str, name: str) -> str:
    for part in query.split("&"):
        k, _, v = part.partition("=")
        if _unquote(k) == name:
            return _unquote(v)
    return ""


def _peer(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, _Conn] = {}

    # -- binding --------------------------------------------------------------------------
    def bind_tcp(self, port: int, proto: int = socket.IPPROTO_TCP) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            s.listen(4096)
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        self.sel.register(s, selectors.EVENT_READ, self._accept)

    def bind_sctp(self, port: int) -> None:
        """A one-to-one SCTP socket: accept() and the connections behave like TCP's, so the same
        HTTP handler serves it. EPROTONOSUPPORT when the kernel has no SCTP."""
        self.bind_tcp(port, SCTP)

    def bind_udp(self, port: int) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, self._datagram)

    # -- loop -----------------------------------------------------------------------------
    def serve(self) -> None:
        select = self.sel.select
        while True:
            for key, events in select():
                key.data(key.fileobj, events)

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            try:
                key.fileobj.close()
            except OSError:
                pass
        self.sel.close()

    # -- UDP ------------------------------------------------------------------------------
    def _datagram(self, sock: socket.socket, _events: int) -> None:
        for _ in range(64):  # drain a burst, but stay fair to TCP
            try:
                data, addr = sock.recvfrom(RECV)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ECONNREFUSED queued from an earlier ICMP error
                continue
            reply = self.udp_reply(data, addr)
            if reply is not None:
                try:
                    sock.sendto(reply.encode("utf-8"), addr)
                except OSError:
                    pass

    def udp_reply(self, data: bytes, addr) -> str | None:
        text = data.decode("utf-8", "replace").strip()
        cmd, _, rest = text.partition(" ")
        if cmd == "hostname" and not rest:
            return self.hostname
        if cmd == "clientip" and not rest:
            return _peer(addr)
        if cmd == "whoami" and not rest:
            return f"{self.hostname} {_peer(addr)}"
        if cmd == "echo":
            return rest
        return None

    # -- TCP ------------------------------------------------------------------------------
    def _accept(self, lsock: socket.socket, _events: int) -> None:
        for _ in range(256):
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return
                continue  # ECONNABORTED and friends
            sock.setblocking(False)
            conn = _Conn(self, sock, addr)
            self.conns[sock.fileno()] = conn
            self.sel.register(sock, selectors.EVENT_READ, conn.on_event)

    def http_reply(self, method: str, target: str, addr) -> tuple[int, str]:
        path, _, query = target.partition("?")
        if method not in ("GET", "HEAD"):
            return 405, "method not allowed"
        if path in ("/", "/hostname"):
            return 200, self.hostname
        if path == "/clientip":
            return 200, _peer(addr)
        if path == "/whoami":  # testbed's own: who answered and whom it saw, in one request
            return 200, f"{self.hostname} {_peer(addr)}"
        if path == "/echo":
            return 200, _query_param(query, "msg")
        if path == "/healthz":
            return 200, "ok"
        if path == "/readyz":
            return (200, "ok") if _ready else (503, "not ready")
        return 404, "404 page not found"


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class _Conn:
    __slots__ = ("server", "sock", "addr", "inbuf", "outbuf", "closing", "skip", "writing")

    def __init__(self, server: Server, sock: socket.socket, addr) -> None:
        self.server = server
        self.sock = sock
        self.addr = addr
        self.inbuf = b""
        self.outbuf = bytearray()
        self.closing = False  # close once outbuf is flushed
        self.skip = 0  # request-body bytes still to discard
        self.writing = False

    def on_event(self, _sock, events: int) -> None:
        try:
            if events & selectors.EVENT_READ and not self.closing:
                self._read()
            if self.outbuf:
                self._flush()
            if self.closing and not self.outbuf:
                self.close()
                return
            want = selectors.EVENT_WRITE if self.outbuf else selectors.EVENT_READ
            if (want == selectors.EVENT_WRITE) != self.writing:
                self.writing = want == selectors.EVENT_WRITE
                self.server.sel.modify(self.sock, want, self.on_event)
        except OSError:
            self.close()

    def _read(self) -> None:
        try:
            data = self.sock.recv(RECV)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self.closing = True
            return
        if self.skip:
            n = min(self.skip, len(data))
            self.skip -= n
            data = data[n:]
        self.inbuf += data
        while not self.closing and not self.skip:
            end = self.inbuf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.inbuf) > MAX_HEADER:
                    self._respond(431, "headers too large", "HTTP/1.1", close=True, head=False)
                return
            head, self.inbuf = self.inbuf[:end], self.inbuf[end + 4:]
            self._handle(head)

    def _handle(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._respond(400, "bad request", "HTTP/1.1", close=True, head=False)
            return
        method, target, version = parts
        connection = ""
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "connection":
                connection = value.strip().lower()
            elif name == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    self._respond(400, "bad content-length", version, close=True, head=False)
                    return
            elif name == "transfer-encoding":
                # Chunked request bodies are out of scope: answer, then hang up.
                connection = "close"
        if version == "HTTP/1.0":
            close = "keep-alive" not in connection
        else:
            close = "close" in connection
        if length:
            n = min(length, len(self.inbuf))
            self.inbuf = self.inbuf[n:]
            self.skip = length - n
        status, body = self.server.http_reply(method, target, self.addr)
        self._respond(status, body, version, close=close, head=method == "HEAD")

    def _respond(self, status: int, body: str, version: str, *, close: bool, head: bool) -> None:
        payload = body.encode("utf-8")
        hdr = (
            f"{'HTTP/1.0' if version == 'HTTP/1.0' else 'HTTP/1.1'} {status} {_REASONS.get(status, '')}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"X-Pod-Name: {self.server.hostname}\r\n"  # who answered, even a 404 (not in agnhost)
            f"Content-Length: {len(payload)}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        ).encode("latin-1")
        self.outbuf += hdr
        if not head:
            self.outbuf += payload
        if close:
            self.closing = True

    def _flush(self) -> None:
        try:
            n = self.sock.send(self.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        del self.outbuf[:n]

    def close(self) -> None:
        fd = self.sock.fileno()
        self.server.conns.pop(fd, None)
        try:
            self.server.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()


def _on_stop(_signum, _frame) -> None:
    raise _Stop()


def _on_readiness(signum, _frame) -> None:
    global _ready
    _ready = signum == signal.SIGUSR2


def main(argv: list[str] | None = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        sys.stderr.write(f"netexec: {e}\n{USAGE}\n")
        return 2
    signal.signal(signal.SIGTERM, _on_stop)
    signal.signal(signal.SIGINT, _on_stop)
    signal.signal(signal.SIGUSR1, _on_readiness)
    signal.signal(signal.SIGUSR2, _on_readiness)
    server = Server(opts["hostname"])
    try:
        with ReadyFd(opts["ready_fd"]) as ready:
            try:
                enter_netns(opts["netns"])
                for port in opts["tcp"]:
                    server.bind_tcp(port)
                for port in opts["udp"]:
                    server.bind_udp(port)
                for port in opts["sctp"]:
                    try:
                        server.bind_sctp(port)
                    except OSError as e:
                        if e.errno not in NO_SCTP:
                            raise
                        sys.stderr.write(f"netexec: {opts['hostname']}: SCTP port {port} skipped: this kernel has "
                                         f"no SCTP ({e.strerror})\n")
            except OSError as e:
                sys.stderr.write(f"netexec: {opts['hostname']}: cannot start: {e}\n")
                return 2
            ready.signal()
        server.serve()
    except (_Stop, KeyboardInterrupt):
        return 0
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
