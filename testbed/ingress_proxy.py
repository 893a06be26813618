"""The Ingress controller's data path: an HTTP/1.1 reverse proxy driven by a route table.

    python -m testbed.ingress_proxy --routes FILE [--netns PATH] [--port 80] [--bind ADDR] [--ready-fd FD]
                                    [--connect-timeout S] [--read-timeout S] [--idle-timeout S] [--access-log]

FILE is `testbed.ingress.RouteTable.to_json()`. For each request the backend is chosen by
`testbed.ingress.match(table, Host, path)` (see that module for the matching rules); the request is
sent to the backend's ClusterIP:port over a new TCP connection (kube-proxy's rules in the namespace
pick the endpoint), and the response is streamed back.

Per request:
- The Host header selects the host (its port is ignored); an absolute-form target
  (`GET http://host/path`) overrides it (RFC 9112 3.2.2). HTTP/1.1 without a Host header, or with two,
  is answered 400.
- To the backend: the method, target and headers as received, minus the hop-by-hop headers
  (Connection and the headers it lists, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade,
  Expect), plus `Host` (the client's; the backend's address when the client sent none),
  `X-Forwarded-For` / `X-Real-IP` (the client's address), `X-Forwarded-Host` (the client's Host),
  `X-Forwarded-Proto: http`, `X-Forwarded-Port` (the port the proxy listens on), and
  `Connection: close`. Client-supplied X-Forwarded-* headers are replaced, not extended: the proxy is
  the edge and does not trust them (ingress-nginx's default, `use-forwarded-headers: false`).
  Request bodies with Content-Length or chunked encoding are streamed through.
- Answers of the proxy itself: 404 "default backend - 404" when nothing matches (the text of
  ingress-nginx's default backend); 503 when the matched backend did not resolve (no such Service
  or port); 502 when the connection is refused or breaks before a response arrives; 504 when connecting
  takes longer than --connect-timeout (5 s) or the response head longer than --read-timeout (60 s),
  nginx's proxy_connect_timeout and proxy_read_timeout defaults.
- The response: status and headers as the backend sent them, minus hop-by-hop headers; the body
  streamed as it arrives (with its Content-Length when the backend gave one, re-chunked for an
  HTTP/1.1 client otherwise, or ended by closing the connection for an HTTP/1.0 client).
  Client connections are kept alive (HTTP/1.1) until --idle-timeout (60 s) of silence.

One thread per client connection (ThreadingHTTPServer). SIGHUP re-reads FILE (new requests use the
new table; a table that cannot be read is logged and the old one kept). Startup: `--netns` is entered
first (so every socket, including those to backends, lives in that namespace), then FILE is read and
the listening socket bound; then b"R" is written to `--ready-fd`, which is closed. A table that cannot
be read or a port that cannot be bound exits 2 (one line on stderr, the ready fd closed unwritten).
SIGTERM/SIGINT stop listening and exit 0.
"""
from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .ingress import RouteTable, match
from .startup import ReadyFd, enter_netns

CHUNK = 65536
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "expect"})
SET_BY_PROXY = frozenset({"host", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
                          "x-real-ip", "content-length"})
NOT_FOUND_BODY = "default backend - 404"


def log(msg: str) -> None:
    sys.stderr.write(f"ingress-proxy: {msg}\n")
    sys.stderr.flush()


def load_table(path: str) -> RouteTable:
    try:
        with open(path, encoding="utf-8") as f:
            return RouteTable.from_json(json.load(f))
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: malformed route table ({type(e).__name__}: {e})") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


class _BackendError(Exception):
    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


def _listed(connection_header: str | None) -> set[str]:
    """The header names a Connection header lists (hop-by-hop for this connection only)."""
    return {t.strip().lower() for t in (connection_header or "").split(",") if t.strip()}


class IngressServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], table: RouteTable, *, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, idle_timeout: float = 60.0, access_log: bool = False):
        self.table = table  # replaced whole on SIGHUP; each request reads it once
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.access_log = access_log
        super().__init__(address, Handler)

    def handle_error(self, request, client_address) -> None:  # an unexpected exception in a handler thread
        log(f"error serving {client_address[0]}:{client_address[1]}: {sys.exc_info()[1]!r}")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "testbed-ingress"
    sys_version = ""
    server: IngressServer

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout
        super().setup()

    def log_message(self, format: str, *args) -> None:
        if self.server.access_log:
            super().log_message(format, *args)

    # -- entry ------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        self._unread_body = False
        length, chunked = self._body_framing()
        if length is False:
            return
        self._unread_body = bool(chunked or length)
        target = self.path
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1:
            return self._reply(400, "more than one Host header")
        host = hosts[0] if hosts else None
        if target.lower().startswith(("http://", "https://")):  # absolute-form: its authority is the host
            authority, _, rest = target.split("://", 1)[1].partition("/")
            host, target = authority.rpartition("@")[2], "/" + rest
        elif not target.startswith("/"):
            return self._reply(400, f"unsupported request target {target!r}")
        if host is None and self.request_version != "HTTP/1.0":
            return self._reply(400, "missing Host header")
        backend = match(self.server.table, host, target)
        if backend is None:
            return self._reply(404, NOT_FOUND_BODY)
        if backend.address is None or backend.target is None:
            return self._reply(503, f"503 Service Unavailable: {backend.problem or 'no backend address'}")
        try:
            self._forward(backend.address, backend.target, host, target, length, chunked)
        except _BackendError as e:
            log(f"{self.command} {host or '-'}{target} -> {backend.namespace}/{backend.service} "
                f"({backend.address}:{backend.target}): {e}")
            self._reply(e.status, f"{e.status} {self.responses[e.status][0]}")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def _body_framing(self) -> tuple[int | None | bool, bool]:
        """(Content-Length or None, chunked); (False, _) after answering 400 for a malformed framing."""
        te = self.headers.get("Transfer-Encoding")
        if te is not None:
            codings = [c.strip().lower() for c in te.split(",")]
            if codings[-1] != "chunked":
                self.close_connection = True
                self._reply(400, "unsupported Transfer-Encoding")
                return False, False
            return None, True  # Transfer-Encoding overrides Content-Length (RFC 9112 6.3)
        cl = self.headers.get_all("Content-Length") or []
        if not cl:
            return None, False
        values = {v.strip() for v in cl}
        if len(values) != 1 or not next(iter(values)).isdigit():
            self.close_connection = True
            self._reply(400, "bad Content-Length")
            return False, False
        return int(values.pop()), False

    # -- the proxy's own answers -------------------------------------------------------------
    def _reply(self, status: int, text: str) -> None:
        body = (text + "\n").encode("utf-8")
        if self._unread_body:  # do not try to find the next request after a body nobody read
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- forwarding --------------------------------------------------------------------------
    def _forward(self, address: str, port: int, host: str | None, target: str, length: int | None, chunked: bool) -> None:
        srv = self.server
        conn = http.client.HTTPConnection(address, port, timeout=srv.connect_timeout)
        try:
            try:
                conn.connect()
            except TimeoutError:
                raise _BackendError(504, f"connect timed out after {srv.connect_timeout:g}s") from None
            except OSError as e:
                raise _BackendError(502, f"connect failed: {e.strerror or e}") from None
            conn.sock.settimeout(srv.read_timeout)
            try:
                self._send_request(conn, host or f"{address}:{port}", target, length, chunked)
                resp = conn.getresponse()
            except TimeoutError:
                raise _BackendError(504, f"no response within {srv.read_timeout:g}s") from None
            except (OSError, http.client.HTTPException) as e:
                raise _BackendError(502, f"no valid response: {e!r}") from None
            self._relay(resp)
        finally:
            conn.close()

    def _send_request(self, conn: http.client.HTTPConnection, host: str, target: str, length: int | None,
                      chunked: bool) -> None:
        client_ip = self.client_address[0]
        listed = _listed(self.headers.get("Connection"))
        conn.putrequest(self.command, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in self.headers.items():
            low = name.lower()
            if low in HOP_BY_HOP or low in SET_BY_PROXY or low in listed:
                continue
            conn.putheader(name, value)
        conn.putheader("X-Forwarded-For", client_ip)
        conn.putheader("X-Real-IP", client_ip)
        conn.putheader("X-Forwarded-Host", self.headers.get("Host") or host)
        conn.putheader("X-Forwarded-Proto", "http")
        conn.putheader("X-Forwarded-Port", str(self.server.server_address[1]))
        conn.putheader("Connection", "close")
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        elif length is not None:
            conn.putheader("Content-Length", str(length))
        conn.endheaders()
        if chunked:
            self._copy_chunked_body(conn)
        elif length:
            left = length
            while left:
                data = self.rfile.read(min(CHUNK, left))
                if not data:
                    self.close_connection = True
                    raise ConnectionResetError("the client closed before sending its whole body")
                left -= len(data)
                conn.send(data)
        self._unread_body = False

    def _copy_chunked_body(self, conn: http.client.HTTPConnection) -> None:
        while True:
            line = self.rfile.readline(CHUNK)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise ConnectionResetError("malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline(CHUNK) not in (b"\r\n", b"\n", b""):  # trailers: dropped
                    pass
                conn.send(b"0\r\n\r\n")
                return
            left = size
            conn.send(f"{size:x}\r\n".encode("ascii"))
            while left:
                data = self.rfile.read(min(CHUNK, left))
                if not data:
                    self.close_connection = True
                    raise ConnectionResetError("the client closed inside a chunk")
                left -= len(data)
                conn.send(data)
            self.rfile.readline(CHUNK)  # the CRLF after the chunk
            conn.send(b"\r\n")

    def _relay(self, resp: http.client.HTTPResponse) -> None:
        status = resp.status
        no_body = self.command == "HEAD" or 100 <= status < 200 or status in (204, 304)
        listed = _listed(resp.getheader("Connection"))
        self.send_response_only(status, resp.reason)
        for name, value in resp.getheaders():
            low = name.lower()
            if low in HOP_BY_HOP or low in listed:
                continue
            self.send_header(name, value)
        chunk_out = False
        if not no_body and (resp.chunked or resp.length is None):
            if self.request_version == "HTTP/1.1":
                chunk_out = True
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.close_connection = True  # the body ends when the connection does
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.log_request(status)
        if no_body:
            return
        try:
            while True:
                data = resp.read1(CHUNK)
                if not data:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunk_out else data)
        except (OSError, http.client.HTTPException) as e:  # too late for an error status: cut the connection
            log(f"{self.command} {self.path}: response body from the backend broke off: {e!r}")
            self.close_connection = True
            return
        if chunk_out:
            self.wfile.write(b"0\r\n\r\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m testbed.ingress_proxy", description="testbed's Ingress reverse proxy")
    p.add_argument("--routes", required=True, help="the route table (RouteTable.to_json())")
    p.add_argument("--netns", help="a network namespace to enter first (a path such as /run/netns/NAME)")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--bind", default="0.0.0.0", help="listening address (default 0.0.0.0)")
    p.add_argument("--ready-fd", type=int, help="write b'R' here once listening, then close it")
    p.add_argument("--connect-timeout", type=float, default=5.0)
    p.add_argument("--read-timeout", type=float, default=60.0)
    p.add_argument("--idle-timeout", type=float, default=60.0)
    p.add_argument("--access-log", action="store_true", help="one line per request on stderr")
    opts = p.parse_args(argv)
    if not 0 < opts.port < 65536:
        p.error(f"--port: out of range: {opts.port}")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    ready = ReadyFd(opts.ready_fd)
    stop_signals = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    # Every thread started from here inherits the mask, so only sigwait() below sees these signals.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server = None
    serving = False
    try:
        try:
            enter_netns(opts.netns)
            table = load_table(opts.routes)
            server = IngressServer((opts.bind, opts.port), table, connect_timeout=opts.connect_timeout,
                                   read_timeout=opts.read_timeout, idle_timeout=opts.idle_timeout,
                                   access_log=opts.access_log)
        except (OSError, ValueError) as e:
            log(f"cannot start: {e}")
            return 2
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="accept", daemon=True).start()
        serving = True
        ready.signal()
        while True:
            sig = signal.sigwait(stop_signals)
            if sig != signal.SIGHUP:
                break
            try:
                server.table = load_table(opts.routes)
            except (OSError, ValueError) as e:
                log(f"SIGHUP: keeping the old routes: {e}")
                continue
            log(f"SIGHUP: routes re-read ({len(server.table.hosts)} host groups)")
        return 0
    finally:
        ready.close()
        if server is not None:
            if serving:
                server.shutdown()  # waits for serve_forever (it would wait forever had that not started)
            server.server_close()


if __name__ == "__main__":
    sys.exit(main())
