"""The userspace proxier's data path: one process per node that accepts Service traffic and relays it.

    python -m testbed.userspace_proxy --table FILE [--netns PATH] [--ready-fd FD] [--bind ADDR]

This is what kube-proxy's `--proxy-mode=userspace` did itself (pkg/proxy/userspace: proxysocket.go,
roundrobin.go, removed in Kubernetes 1.26). The rules from `testbed.render.userspace` send a
Service's traffic to its *proxy port* on this node (REDIRECT from pods, DNAT to <nodeIP>:<port>
from the node); the proxy port alone says which service it was (`table["services"][key]
["proxy_port"]`). The table is `UserspacePlan.to_json()`.

Behaviour, as upstream:
- TCP: accept, pick an endpoint (LoadBalancerRR.NextEndpoint), connect with the timeouts
  250ms, 500ms, 1s, 2s (EndpointDialTimeouts); a refused or timed-out connect tries the next
  endpoint with session affinity bypassed (TryConnectEndpoints' sessionAffinityReset), up to four tries;
  then the client connection is closed. A service without endpoints: the connection is accepted
  and closed. Connects for one service are made one at a time, as upstream's accept loop made them
  (a slow endpoint delays that service's other new connections). Bytes are copied both ways; when
  either side reaches EOF (or fails) both connections are closed, as upstream's copyBytes does
  (no half-close).
- Round robin over the endpoint list, shuffled whenever the set of endpoints changes (upstream's
  ShuffleStrings; table "shuffle": false keeps the table's order), the index reset to 0 then.
- ClientIP affinity: a client IP seen within `affinity_timeout` seconds (compared as whole
  seconds, refreshed on each use) gets the same endpoint; entries for removed endpoints are dropped.
- UDP: one connected socket to an endpoint per client address; replies are relayed back from the
  service socket; a session idle (no datagram either way) for `udp_idle_timeout` (250ms) ends.
  An ICMP refusal from the endpoint ends the session (the datagram is lost; the client's next one
  starts a new session, on the next endpoint). Datagrams are read into 4 KiB buffers, as upstream.
- Node ports are claimed: a socket of the service's protocol is held open on each node port.
- The backend always sees the proxy's address: the client's source IP is lost.
- Every failure a client can see is one line on stderr naming the client's ip:port (see
  LOG_FORMATS; `client_failures` reads them back): a dial refused or timed out, giving up after
  the last dial, and a relayed connection whose endpoint ended it before sending a byte (the
  endpoint died while the connection was on its way: upstream's copyBytes closes both sides too).

SIGHUP re-reads the table: endpoint and affinity changes apply to new connections, new service
ports start listening, removed ones stop (established TCP connections are left alone; UDP sessions
of a removed service end). Startup: `--netns` is entered first, then the table is read and every
socket bound; then b"R" is written to `--ready-fd`. A table that cannot be read at startup exits 2
(one line on stderr); a service port that cannot be bound is logged and skipped. SIGTERM/SIGINT
exit 0. Stdlib only, no testbed imports: it starts in tens of milliseconds.
"""
from __future__ import annotations

import errno
import heapq
import json
import os
import random
import re
import selectors
import signal
import socket
import sys
import time

from testbed.startup import ReadyFd, enter_netns

ENDPOINT_DIAL_TIMEOUTS = (0.25, 0.5, 1.0, 2.0)  # upstream EndpointDialTimeouts
DEFAULT_AFFINITY_SECONDS = 10800  # v1.DefaultClientIPServiceAffinitySeconds
UDP_BUFFER = 4096  # upstream's `var buffer [4096]byte`
TCP_CHUNK = 65536
# The failure lines (after "userspace-proxy: "); `client_failures` parses them back.
LOG_FORMATS = {
    "dial": "dial failed for {key} to {endpoint} (client {client}): {why}",
    "gave-up": "failed to connect to an endpoint for {key} (client {client})",
    "broken": "connection from {client} to {endpoint} for {key} ended before the endpoint answered: {why}",
}
USAGE = "usage: python -m testbed.userspace_proxy --table FILE [--netns PATH] [--ready-fd FD] [--bind ADDR]"

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def log(msg: str) -> None:
    try:
        sys.stderr.write(f"userspace-proxy: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> dict:
    opts: dict = {"table": None, "netns": None, "ready_fd": None, "bind": "0.0.0.0"}
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE + "\n")
            raise SystemExit(0)
        key, eq, value = arg.partition("=")
        if key not in ("--table", "--netns", "--ready-fd", "--bind"):
            raise UsageError(f"unknown argument {arg!r}")
        if not eq:
            value = next(it, None)
            if value is None:
                raise UsageError(f"{key} needs a value")
        name = key[2:].replace("-", "_")
        if name == "ready_fd":
            try:
                opts[name] = int(value)
            except ValueError:
                raise UsageError(f"--ready-fd: not an fd: {value!r}") from None
        else:
            opts[name] = value
    if not opts["table"]:
        raise UsageError("--table is required")
    return opts



def _fmt_addr(addr) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def client_failures(text: str) -> dict[str, list[tuple[str, str, str]]]:
    """The proxy's failure lines per client "ip:port": [(kind, endpoint, why)], in log order.
    kind: "timeout" or "refused" (a dial; any other dial error counts as refused), "gave-up"
    (no dial left), "broken" (the endpoint ended a relayed connection before it answered)."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for line in text.splitlines():
        line = line.removeprefix("userspace-proxy: ")
        m = _DIAL.fullmatch(line)
        if m:
            kind = "timeout" if m["why"] == "i/o timeout" else "refused"
            out.setdefault(m["client"], []).append((kind, m["endpoint"], m["why"]))
        elif m := _GAVE_UP.fullmatch(line):
            out.setdefault(m["client"], []).append(("gave-up", "", ""))
        elif m := _BROKEN.fullmatch(line):
            out.setdefault(m["client"], []).append(("broken", m["endpoint"], m["why"]))
    return out


def _pattern(fmt: str):
    rx = re.escape(fmt)
    for name in ("key", "endpoint", "client", "why"):
        rx = rx.replace(re.escape("{" + name + "}"), f"(?P<{name}>.*?)" if name != "why" else f"(?P<{name}>.*)")
    return re.compile(rx)


_DIAL, _GAVE_UP, _BROKEN = (_pattern(LOG_FORMATS[k]) for k in ("dial", "gave-up", "broken"))


def split_endpoint(ep: str) -> tuple[str, int]:
    host, _, port = ep.rpartition(":")
    return host.strip("[]"), int(port)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# --- load balancing (roundrobin.go) ---------------------------------------------------------------

class RoundRobin:
    """LoadBalancerRR's state for one service port."""

    def __init__(self, shuffle: bool = True, clock=time.monotonic, rng: random.Random | None = None) -> None:
        self.endpoints: list[str] = []
        self.index = 0
        self.ttl: int | None = None  # None: no session affinity
        self.affinity: dict[str, list] = {}  # client IP -> [endpoint, last used]
        self.shuffle = shuffle
        self.clock = clock
        self.rng = rng or random.Random()

    def set_affinity(self, seconds: int | None) -> None:
        if seconds is None:
            self.ttl = None
            self.affinity.clear()
        else:
            self.ttl = int(seconds) or DEFAULT_AFFINITY_SECONDS

    def set_endpoints(self, endpoints) -> bool:
        """OnEndpointsUpdate: only a changed set replaces the list (shuffled, index reset to 0)."""
        endpoints = list(endpoints)
        if sorted(endpoints) == sorted(self.endpoints):
            return False
        keep = set(endpoints)
        for ip, (ep, _) in list(self.affinity.items()):  # removeStaleAffinity
            if ep not in keep:
                del self.affinity[ip]
        if self.shuffle:
            self.rng.shuffle(endpoints)
        self.endpoints = endpoints
        self.index = 0
        if not endpoints:
            self.affinity.clear()  # resetService
        return True

    def next(self, client_ip: str, affinity_reset: bool = False) -> str | None:
        """NextEndpoint; None when there are no endpoints (upstream's ErrMissingEndpoints)."""
        if not self.endpoints:
            return None
        now = self.clock()
        if self.ttl is not None and not affinity_reset:
            state = self.affinity.get(client_ip)
            if state is not None and int(now - state[1]) < self.ttl:
                state[1] = now
                return state[0]
        endpoint = self.endpoints[self.index]
        self.index = (self.index + 1) % len(self.endpoints)
        if self.ttl is not None:
            self.affinity[client_ip] = [endpoint, now]
        return endpoint

    def cleanup_stale(self) -> None:
        """CleanupStaleStickySessions."""
        if self.ttl is None:
            return
        now = self.clock()
        for ip, (_, used) in list(self.affinity.items()):
            if int(now - used) >= self.ttl:
                del self.affinity[ip]


# --- the proxy ------------------------------------------------------------------------------------

class Service:
    def __init__(self, key: str, conf: dict, shuffle: bool) -> None:
        self.key = key
        self.protocol = conf["protocol"].upper()
        self.proxy_port = int(conf["proxy_port"])
        self.lb = RoundRobin(shuffle)
        self.listener: socket.socket | None = None
        self.paused = False  # a TCP connect is in progress: accept the next one after it
        self.sessions: dict[tuple, UdpSession] = {}
        self.dead = False


class Proxy:
    def __init__(self, bind: str = "0.0.0.0") -> None:
        self.bind = bind
        self.sel = selectors.DefaultSelector()
        self.services: dict[str, Service] = {}
        self.claims: dict[tuple[str, int], tuple[str, socket.socket]] = {}  # (proto, node port) -> (key, socket)
        self.udp_timeout = 0.25
        self.shuffle = True
        self.timers: list = []
        self._seq = 0
        self.relays: set[Relay] = set()

    # -- timers -------------------------------------------------------------------------------------
    def call_at(self, when: float, fn) -> None:
        self._seq += 1
        heapq.heappush(self.timers, (when, self._seq, fn))

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, fn = heapq.heappop(self.timers)
            fn()

    def _timeout(self) -> float | None:
        if not self.timers:
            return None
        return max(0.0, self.timers[0][0] - time.monotonic())

    # -- table --------------------------------------------------------------------------------------
    def apply(self, table: dict) -> None:
        self.udp_timeout = float(table.get("udp_idle_timeout", 0.25))
        self.shuffle = bool(table.get("shuffle", True))
        wanted: dict[str, dict] = table.get("services", {})
        for key in list(self.services):
            if key not in wanted:
                log(f"stopping service {key}")
                self._stop(self.services.pop(key))
        for key, conf in wanted.items():
            svc = self.services.get(key)
            if svc is None:
                svc = self.services[key] = Service(key, conf, self.shuffle)
            elif svc.protocol != conf["protocol"].upper() or svc.proxy_port != int(conf["proxy_port"]):
                self._close_listener(svc)
                svc.protocol, svc.proxy_port = conf["protocol"].upper(), int(conf["proxy_port"])
            svc.lb.shuffle = self.shuffle
            svc.lb.set_affinity(conf.get("affinity_timeout"))
            if svc.lb.set_endpoints(conf.get("endpoints", ())):
                log(f"endpoints for {key}: {', '.join(conf.get('endpoints', ())) or 'none'}")
            svc.lb.cleanup_stale()
            if svc.listener is None:
                self._listen(svc)
        self._claim_node_ports(wanted)

    def _listen(self, svc: Service) -> None:
        tcp = svc.protocol == "TCP"
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        try:
            if tcp:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.bind, svc.proxy_port))
            if tcp:
                sock.listen(4096)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            log(f"failed to start proxy for {svc.key} on {svc.protocol} port {svc.proxy_port}: {e}")
            return
        svc.listener = sock
        svc.paused = False
        self.sel.register(sock, READ, (lambda s, m, svc=svc: self._on_accept(svc)) if tcp
                          else (lambda s, m, svc=svc: self._on_datagram(svc)))
        log(f"proxying for {svc.key} on {svc.protocol} port {svc.proxy_port}")

    def _close_listener(self, svc: Service) -> None:
        if svc.listener is not None:
            if not svc.paused:
                self.sel.unregister(svc.listener)
            svc.listener.close()
            svc.listener = None
        for sess in list(svc.sessions.values()):  # upstream closes the UDP socket: sessions break
            sess.close()

    def _stop(self, svc: Service) -> None:
        svc.dead = True
        self._close_listener(svc)

    def _claim_node_ports(self, wanted: dict[str, dict]) -> None:
        """claimNodePort: hold each node port open so nothing else takes it."""
        want = {}
        for key, conf in wanted.items():
            if conf.get("node_port"):
                want[(conf["protocol"].upper(), int(conf["node_port"]))] = key
        for k in list(self.claims):
            if want.get(k) != self.claims[k][0]:
                self.claims.pop(k)[1].close()
        for (proto, port), key in want.items():
            if (proto, port) in self.claims:
                continue
            family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM if proto == "TCP" else socket.SOCK_DGRAM)
            try:
                if proto == "TCP":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.bind, port))
                if proto == "TCP":
                    sock.listen(16)
            except OSError as e:
                sock.close()
                log(f"can't open node port for {port}/{proto} ({key}): {e}")
                continue
            self.claims[(proto, port)] = (key, sock)

    # -- TCP ----------------------------------------------------------------------------------------
    def _on_accept(self, svc: Service) -> None:
        if svc.listener is None or svc.paused:
            return
        try:
            client, addr = svc.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                log(f"accept failed: {e}")
            return
        client.setblocking(False)
        pending = _Connect(self, svc, client, addr)
        if pending.start():  # still connecting: accept the next connection once it is done
            svc.paused = True
            self.sel.unregister(svc.listener)

    def _resume(self, svc: Service) -> None:
        if svc.paused and svc.listener is not None:
            svc.paused = False
            self.sel.register(svc.listener, READ, lambda s, m, svc=svc: self._on_accept(svc))

    # -- UDP ----------------------------------------------------------------------------------------
    def _on_datagram(self, svc: Service) -> None:
        lsock = svc.listener
        for _ in range(64):
            if lsock is None or svc.listener is not lsock:
                return
            try:
                data, addr = lsock.recvfrom(UDP_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            sess = svc.sessions.get(addr)
            if sess is None:
                sess = self._udp_session(svc, lsock, addr)
                if sess is None:
                    continue
            try:
                sess.sock.send(data)
            except OSError as e:
                log(f"write failed for {svc.key}: {e}")
                continue
            sess.touch()

    def _udp_session(self, svc: Service, lsock: socket.socket, addr) -> UdpSession | None:
        """TryConnectEndpoints for "udp": a connected socket per client address (a UDP dial rarely fails)."""
        reset = False
        for _ in ENDPOINT_DIAL_TIMEOUTS:
            ep = svc.lb.next(addr[0], reset)
            if ep is None:
                log(f"couldn't find an endpoint for {svc.key}: missing endpoints")
                return None
            host, port = split_endpoint(ep)
            sock = socket.socket(_family(host), socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.connect((host, port))
            except OSError as e:
                sock.close()
                log(LOG_FORMATS["dial"].format(key=svc.key, endpoint=ep, client=_fmt_addr(addr), why=e.strerror or e))
                reset = True
                continue
            sess = UdpSession(self, svc, lsock, addr, sock)
            svc.sessions[addr] = sess
            return sess
        log(LOG_FORMATS["gave-up"].format(key=svc.key, client=_fmt_addr(addr)))
        return None

    # -- loop ---------------------------------------------------------------------------------------
    def close(self) -> None:
        for relay in list(self.relays):
            relay.close()
        for svc in self.services.values():
            self._stop(svc)
        for _, sock in self.claims.values():
            sock.close()
        self.claims.clear()
        self.sel.close()


class _Connect:
    """One accepted TCP connection while TryConnectEndpoints works through the endpoints."""

    def __init__(self, proxy: Proxy, svc: Service, client: socket.socket, addr) -> None:
        self.proxy, self.svc, self.client = proxy, svc, client
        self.client_ip, self.client_addr = addr[0], _fmt_addr(addr)
        self.attempt = 0
        self.reset = False
        self.sock: socket.socket | None = None
        self.endpoint = ""

    def start(self) -> bool:
        """Try endpoints until a connect is under way (True) or this connection is done (False)."""
        while self.attempt < len(ENDPOINT_DIAL_TIMEOUTS):
            ep = None if self.svc.dead else self.svc.lb.next(self.client_ip, self.reset)
            if ep is None:
                log(f"couldn't find an endpoint for {self.svc.key}: missing endpoints")
                self.client.close()
                return False
            timeout = ENDPOINT_DIAL_TIMEOUTS[self.attempt]
            self.attempt += 1
            self.endpoint = ep
            host, port = split_endpoint(ep)
            sock = socket.socket(_family(host), socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex((host, port))
            if err == 0:
                self._connected(sock)
                return False
            if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                self.sock = sock
                self.proxy.sel.register(sock, WRITE, self._on_writable)
                attempt = self.attempt
                self.proxy.call_at(time.monotonic() + timeout, lambda a=attempt: self._on_timeout(a))
                return True
            sock.close()
            self._dial_failed(ep, os.strerror(err))
        log(LOG_FORMATS["gave-up"].format(key=self.svc.key, client=self.client_addr))
        self.client.close()
        return False

    def _dial_failed(self, endpoint: str, why: str) -> None:
        log(LOG_FORMATS["dial"].format(key=self.svc.key, endpoint=endpoint, client=self.client_addr, why=why))
        self.reset = True

    def _continue(self) -> None:
        if not self.start():
            self.proxy._resume(self.svc)

    def _drop_sock(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            self.proxy.sel.unregister(sock)
            sock.close()

    def _on_writable(self, sock: socket.socket, _mask: int) -> None:
        if sock is not self.sock:
            return
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._dial_failed(self.endpoint, os.strerror(err))
            self._drop_sock()
            self._continue()
            return
        self.proxy.sel.unregister(sock)
        self.sock = None
        self._connected(sock)
        self.proxy._resume(self.svc)

    def _on_timeout(self, attempt: int) -> None:
        if self.sock is None or attempt != self.attempt:
            return
        self._dial_failed(self.endpoint, "i/o timeout")
        self._drop_sock()
        self._continue()

    def _connected(self, sock: socket.socket) -> None:
        self.proxy.relays.add(Relay(self.proxy, self.client, sock, self.svc.key, self.client_addr, self.endpoint))


class Relay:
    """proxyTCP: bytes both ways; EOF or an error on either side closes both (copyBytes).
    `a` is the client's connection, `b` the endpoint's."""

    __slots__ = ("a", "answered", "b", "client", "closed", "endpoint", "eof", "events", "key", "out", "peer",
                 "proxy")

    def __init__(self, proxy: Proxy, a: socket.socket, b: socket.socket, key: str = "", client: str = "",
                 endpoint: str = "") -> None:
        self.proxy = proxy
        self.a, self.b = a, b
        self.key, self.client, self.endpoint = key, client, endpoint
        self.answered = False  # a byte came from the endpoint
        self.out = {a: bytearray(), b: bytearray()}  # bytes still to write to that socket
        self.peer = {a: b, b: a}
        self.events = {a: 0, b: 0}
        self.eof: socket.socket | None = None  # flush what is queued for this socket, then close
        self.closed = False
        self._update()

    def _on_event(self, sock: socket.socket, mask: int) -> None:
        if self.closed:
            return
        if mask & WRITE:
            self._flush(sock)
        if mask & READ and not self.closed and self.eof is None:
            self._read(sock)
        if not self.closed:
            self._update()

    def _read(self, sock: socket.socket) -> None:
        peer = self.peer[sock]
        try:
            data = sock.recv(TCP_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._broken(sock, e.strerror or str(e))
            self.close()
            return
        if not data:
            self._broken(sock, "closed by the endpoint")
            if self.out[peer]:
                self.eof = peer
            else:
                self.close()
            return
        if sock is self.b:
            self.answered = True
        try:
            n = peer.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            self._broken(peer, e.strerror or str(e))
            self.close()
            return
        if n < len(data):
            self.out[peer] += data[n:]

    def _flush(self, sock: socket.socket) -> None:
        buf = self.out[sock]
        if buf:
            try:
                n = sock.send(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._broken(sock, e.strerror or str(e))
                self.close()
                return
            del buf[:n]
        if not buf and self.eof is sock:
            self.close()

    def _broken(self, sock: socket.socket, why: str) -> None:
        """The endpoint's side ended before it sent a byte: the client gets no answer."""
        if sock is self.b and not self.answered and not self.closed:
            self.answered = True  # logged once
            log(LOG_FORMATS["broken"].format(client=self.client, endpoint=self.endpoint, key=self.key, why=why))

    def _update(self) -> None:
        sel = self.proxy.sel
        for sock in (self.a, self.b):
            want = 0
            if self.eof is None and not self.out[self.peer[sock]]:
                want |= READ
            if self.out[sock]:
                want |= WRITE
            have = self.events[sock]
            if want == have:
                continue
            if not have:
                sel.register(sock, want, self._on_event)
            elif not want:
                sel.unregister(sock)
            else:
                sel.modify(sock, want, self._on_event)
            self.events[sock] = want

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.a, self.b):
            if self.events[sock]:
                try:
                    self.proxy.sel.unregister(sock)
                except (KeyError, ValueError):
                    pass
            sock.close()
        self.proxy.relays.discard(self)


class UdpSession:
    """One client address's connected socket to its endpoint (getBackendConn/proxyClient)."""

    def __init__(self, proxy: Proxy, svc: Service, lsock: socket.socket, addr, sock: socket.socket) -> None:
        self.proxy, self.svc, self.lsock, self.addr, self.sock = proxy, svc, lsock, addr, sock
        self.closed = False
        self.deadline = time.monotonic() + proxy.udp_timeout
        proxy.sel.register(sock, READ, self._on_reply)
        proxy.call_at(self.deadline, self._check)

    def touch(self) -> None:
        self.deadline = time.monotonic() + self.proxy.udp_timeout

    def _check(self) -> None:
        if self.closed:
            return
        if time.monotonic() < self.deadline:
            self.proxy.call_at(self.deadline, self._check)
        else:
            self.close()

    def _on_reply(self, sock: socket.socket, _mask: int) -> None:
        for _ in range(64):
            if self.closed:
                return
            try:
                data = sock.recv(UDP_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. ECONNREFUSED: the endpoint's port is closed
                log(f"read failed for {self.svc.key}: {e}")
                self.close()
                return
            self.touch()
            try:
                self.lsock.sendto(data, self.addr)
            except OSError as e:
                log(f"write to client failed for {self.svc.key}: {e}")
                self.close()
                return

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.svc.sessions.get(self.addr) is self:
            del self.svc.sessions[self.addr]
        try:
            self.proxy.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()


def read_table(path: str) -> dict:
    with open(path, "rb") as f:
        table = json.loads(f.read())
    if not isinstance(table, dict) or not isinstance(table.get("services", {}), dict):
        raise TypeError("not a userspace proxy table (want {\"services\": {key: {...}}})")
    for key, conf in table.get("services", {}).items():
        if conf.get("protocol", "").upper() not in ("TCP", "UDP") or not isinstance(conf.get("proxy_port"), int):
            raise ValueError(f"service {key}: needs protocol TCP|UDP and an integer proxy_port")
    return table


def main(argv: list[str] | None = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        sys.stderr.write(f"userspace-proxy: {e}\n{USAGE}\n")
        return 2
    ready = ReadyFd(opts["ready_fd"])
    flags: set[str] = set()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, lambda *_: flags.add("term"))
    signal.signal(signal.SIGINT, lambda *_: flags.add("term"))
    signal.signal(signal.SIGHUP, lambda *_: flags.add("hup"))
    proxy = Proxy(opts["bind"])
    try:
        try:
            enter_netns(opts["netns"])
            table = read_table(opts["table"])
        except (OSError, ValueError, TypeError) as e:
            sys.stderr.write(f"userspace-proxy: cannot start: {e}\n")
            return 2
        proxy.apply(table)

        def drain(sock, _mask):
            try:
                while sock.recv(512):
                    pass
            except OSError:
                pass

        proxy.sel.register(wake_r, READ, drain)
        ready.signal()
        while "term" not in flags:
            for key, mask in proxy.sel.select(proxy._timeout()):
                key.data(key.fileobj, mask)
            proxy._run_timers()
            if "hup" in flags and "term" not in flags:
                flags.discard("hup")
                try:
                    table = read_table(opts["table"])
                except (OSError, ValueError, TypeError) as e:
                    log(f"SIGHUP: keeping the old table: {e}")
                    continue
                log("SIGHUP: table re-read")
                proxy.apply(table)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        signal.set_wakeup_fd(-1)
        ready.close()
        proxy.close()
        wake_r.close()
        wake_w.close()


if __name__ == "__main__":
    sys.exit(main())
