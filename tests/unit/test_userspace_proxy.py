"""testbed.userspace_proxy as a real subprocess on 127.0.0.1 (no namespaces, no root).

Two netexec backends listen on 127.0.0.1; the proxy is bound to 127.0.0.1 (`--bind`) and reads a
table written from `testbed.render.userspace` dataclasses. Clients talk to the proxy port directly,
as REDIRECTed pod traffic would arrive there.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from probes.connect import tcp_request, udp_request
from probes.poll import wait_until
from testbed.render.userspace import ProxyService, UserspacePlan
from testbed.userspace_proxy import RoundRobin, client_failures, split_endpoint

REPO = Path(__file__).resolve().parents[2]
LOCALHOST = "127.0.0.1"


# --- helpers ----------------------------------------------------------------------------------------

def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind((LOCALHOST, 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((LOCALHOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                PYTHONDONTWRITEBYTECODE="1")


def _spawn(argv: list[str], stderr) -> subprocess.Popen:
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-m", *argv, "--ready-fd", str(w)], pass_fds=(w,), cwd=REPO,
                                env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 10)
        got = os.read(r, 1) if ready else b""
    finally:
        os.close(r)
    if got != b"R":
        _stop(proc)
        raise RuntimeError(f"{argv[0]} did not become ready (exit {proc.returncode})")
    return proc


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class Backend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.proc = _spawn(["testbed.netexec", "--hostname", name, "--tcp", str(self.port), "--udp", str(self.port)],
                           subprocess.DEVNULL)

    @property
    def ep(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def stop(self) -> None:
        _stop(self.proc)


class Proxy:
    """The proxy under test, with its table file and its stderr log."""

    def __init__(self, tmp: Path, services: list[ProxyService], **plan) -> None:
        self.table = tmp / "table.json"
        self.log = tmp / "proxy.log"
        self.write(services, **plan)
        with open(self.log, "ab") as log:
            self.proc = _spawn(["testbed.userspace_proxy", "--table", str(self.table), "--bind", LOCALHOST], log)

    def write(self, services: list[ProxyService], **plan) -> None:
        text = UserspacePlan(tuple(sorted(services, key=lambda s: s.key)), **plan).to_json()
        tmp = self.table.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.table)

    def reload(self, services: list[ProxyService], **plan) -> None:
        self.write(services, **plan)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        return _stop(self.proc)

    def logged(self) -> str:
        return self.log.read_text()


def svc(name: str, endpoints, proto: str = "TCP", affinity: int | None = None, node_port: int | None = None,
        port: int | None = None) -> ProxyService:
    return ProxyService(key=f"default/{name}/{proto.lower()}", name=f"default/{name}", protocol=proto,
                        proxy_port=port or free_port(), cluster_ip="10.96.0.10", port=80, node_port=node_port,
                        affinity_timeout=affinity, endpoints=tuple(endpoints))


def get(port: int, path: str = "/hostname") -> str:
    r = tcp_request(None, LOCALHOST, port, path, timeout=5)
    assert r.ok, f"request to :{port}{path} failed: {r.outcome} {r.error}"
    return r.body


def http_keepalive(sock: socket.socket, path: str = "/hostname") -> str:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        body += chunk
    return body.decode()


@pytest.fixture(scope="module")
def backends():
    started = []
    try:
        for name in ("b1", "b2"):
            started.append(Backend(name))
        yield started
    finally:
        for b in started:
            b.stop()


@pytest.fixture
def proxies(tmp_path):
    """Start proxies with proxies(services, **plan); each is stopped (and must exit 0) afterwards."""
    started: list[Proxy] = []

    def start(services, **plan) -> Proxy:
        p = Proxy(tmp_path / str(len(started)) if started else tmp_path, services, **plan)
        started.append(p)
        return p

    for i in range(1, 4):
        (tmp_path / str(i)).mkdir()
    try:
        yield start
    finally:
        codes = [p.stop() for p in started]
    assert codes == [0] * len(codes), [p.logged() for p in started]


# --- the load balancer in-process -----------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_round_robin_state_machine():
    clock = Clock()
    lb = RoundRobin(shuffle=False, clock=clock)
    assert lb.next("10.0.0.1") is None  # no endpoints
    lb.set_endpoints(["a:1", "b:1", "c:1"])
    assert [lb.next("10.0.0.1") for _ in range(4)] == ["a:1", "b:1", "c:1", "a:1"]
    assert lb.set_endpoints(["c:1", "a:1", "b:1"]) is False  # same set: index kept
    assert lb.next("10.0.0.1") == "b:1"
    assert lb.set_endpoints(["a:1", "b:1"]) is True  # changed: index reset
    assert lb.next("10.0.0.1") == "a:1"


def test_round_robin_affinity_whole_seconds_sliding_and_reset():
    clock = Clock()
    lb = RoundRobin(shuffle=False, clock=clock)
    lb.set_endpoints(["a:1", "b:1"])
    lb.set_affinity(2)
    assert lb.next("10.0.0.1") == "a:1"
    assert lb.next("10.0.0.2") == "b:1"
    clock.now += 1.9  # int(1.9) = 1 < 2: still fresh, and refreshed
    assert lb.next("10.0.0.1") == "a:1"
    clock.now += 1.9
    assert lb.next("10.0.0.1") == "a:1"
    assert lb.next("10.0.0.1", affinity_reset=True) == "a:1"  # round robin index was at a:1
    assert lb.next("10.0.0.1") == "a:1"  # ...and the reset re-pinned the client there
    clock.now += 2.0  # expired: next in round robin
    assert lb.next("10.0.0.1") == "b:1"
    lb.set_endpoints(["a:1", "c:1"])  # b removed: its affinity entries go
    assert "10.0.0.1" not in lb.affinity
    lb.cleanup_stale()
    clock.now += 5
    lb.next("10.0.0.9")
    clock.now += 5
    lb.cleanup_stale()
    assert lb.affinity == {}
    lb.set_affinity(0)
    assert lb.ttl == 10800


def test_round_robin_shuffles_new_lists():
    import random

    lb = RoundRobin(shuffle=True, rng=random.Random(7))
    eps = [f"10.0.0.{i}:80" for i in range(20)]
    lb.set_endpoints(eps)
    assert sorted(lb.endpoints) == sorted(eps) and lb.endpoints != eps
    assert split_endpoint("[fd00::1]:80") == ("fd00::1", 80)


# --- the process ------------------------------------------------------------------------------------

def test_round_robin_alternates(backends, proxies):
    b1, b2 = backends
    s = svc("web", [b1.ep, b2.ep])
    proxies([s], shuffle=False)
    assert [get(s.proxy_port) for _ in range(6)] == ["b1", "b2"] * 3


def test_round_robin_alternates_when_shuffled(backends, proxies):
    b1, b2 = backends
    s = svc("web", [b1.ep, b2.ep])
    proxies([s])
    seen = [get(s.proxy_port) for _ in range(6)]
    assert {seen[0], seen[1]} == {"b1", "b2"} and seen == seen[:2] * 3


def test_source_ip_is_the_proxy(backends, proxies):
    b1, _ = backends
    s = svc("web", [b1.ep])
    proxies([s])
    with socket.create_connection((LOCALHOST, s.proxy_port), timeout=5) as c:
        seen = http_keepalive(c, "/clientip")
        assert seen != f"{LOCALHOST}:{c.getsockname()[1]}"  # a new connection from the proxy
        assert seen.startswith(f"{LOCALHOST}:")


def test_client_ip_affinity_sticks(backends, proxies):
    b1, b2 = backends
    s = svc("web", [b1.ep, b2.ep], affinity=10)
    proxies([s])
    seen = [get(s.proxy_port) for _ in range(8)]
    assert len(set(seen)) == 1, seen


def test_affinity_expires(backends, proxies):
    b1, b2 = backends
    s = svc("web", [b1.ep, b2.ep], affinity=1)
    proxies([s], shuffle=False)
    assert [get(s.proxy_port) for _ in range(3)] == ["b1"] * 3
    time.sleep(1.1)
    assert get(s.proxy_port) == "b2"


def test_down_endpoint_is_retried_invisibly(backends, proxies):
    b1, b2 = backends
    closed = f"{LOCALHOST}:{free_port()}"
    s = svc("web", [closed, b1.ep, b2.ep])
    p = proxies([s], shuffle=False)
    results = [tcp_request(None, LOCALHOST, s.proxy_port, timeout=5) for _ in range(9)]
    assert all(r.ok for r in results), [(r.outcome, r.error) for r in results]
    # [closed, b1, b2]: closed is refused and the same connection goes on to b1, then b2 is next:
    # the dead endpoint's turn falls to its successor
    assert [r.body for r in results] == ["b1", "b2"] * 4 + ["b1"]
    assert "dial failed" in p.logged() and closed in p.logged()
    # Each refused dial names the client it was for: every other connection, the ones that then reached b1.
    failed = client_failures(p.logged())
    assert set(failed) == {r.local for r in results[0::2]}, failed
    assert all(events == [("refused", closed, "Connection refused")] for events in failed.values()), failed


def test_endpoint_that_hangs_up_before_answering_is_logged_per_client(proxies):
    """An endpoint that accepts and closes (as one does that dies while the connection is on its
    way): the client's connection is closed unanswered, and the log says so, naming the client."""
    server = socket.socket()
    server.bind((LOCALHOST, 0))
    server.listen(8)
    ep = f"{LOCALHOST}:{server.getsockname()[1]}"
    s = svc("hangup", [ep])
    p = proxies([s])

    def hang_up():
        conn, _ = server.accept()
        conn.close()

    import threading
    t = threading.Thread(target=hang_up, daemon=True)
    t.start()
    try:
        r = tcp_request(None, LOCALHOST, s.proxy_port, timeout=5)
    finally:
        t.join(5)
        server.close()
    assert r.outcome == "error", r
    events = wait_until(lambda: client_failures(p.logged()).get(r.local), timeout=5, message="the proxy's log line")
    assert [(kind, where) for kind, where, _ in events] == [("broken", ep)], events


def test_client_failures_parses_every_kind():
    text = "\n".join([
        "userspace-proxy: proxying for default/web/tcp on TCP port 1234",
        "userspace-proxy: dial failed for default/web/tcp to 10.0.0.1:80 (client 10.1.0.2:5000): i/o timeout",
        "userspace-proxy: dial failed for default/web/tcp to 10.0.0.2:80 (client 10.1.0.2:5000): Connection refused",
        "userspace-proxy: failed to connect to an endpoint for default/web/tcp (client 10.1.0.2:5000)",
        "userspace-proxy: connection from 10.1.0.2:5001 to 10.0.0.2:80 for default/web/tcp ended before the "
        "endpoint answered: Connection reset by peer",
    ])
    assert client_failures(text) == {
        "10.1.0.2:5000": [("timeout", "10.0.0.1:80", "i/o timeout"),
                          ("refused", "10.0.0.2:80", "Connection refused"), ("gave-up", "", "")],
        "10.1.0.2:5001": [("broken", "10.0.0.2:80", "Connection reset by peer")],
    }


def test_pinned_endpoint_dies_affinity_moves(tmp_path, proxies):
    b3, b4 = Backend("b3"), Backend("b4")
    try:
        s = svc("web", [b3.ep, b4.ep], affinity=600)
        proxies([s])
        pinned = get(s.proxy_port)
        (b3 if pinned == "b3" else b4).stop()
        other = "b4" if pinned == "b3" else "b3"
        assert [get(s.proxy_port) for _ in range(4)] == [other] * 4
    finally:
        b3.stop()
        b4.stop()


def test_no_endpoints_accepts_then_closes(proxies):
    s = svc("empty", [])
    proxies([s])
    r = tcp_request(None, LOCALHOST, s.proxy_port, timeout=5)
    # accepted, then closed (EOF, or a reset when the request was already queued): not "refused"
    assert r.outcome == "error", r


def test_large_response_is_relayed(backends, proxies):
    b1, _ = backends
    s = svc("web", [b1.ep])
    proxies([s])
    msg = "x" * 50000
    assert get(s.proxy_port, f"/echo?msg={msg}") == msg


def test_many_concurrent_connections(backends, proxies):
    from probes.connect import distribution

    b1, b2 = backends
    s = svc("web", [b1.ep, b2.ep])
    proxies([s])
    d = distribution(None, LOCALHOST, s.proxy_port, count=200, concurrency=8, expected=["b1", "b2"], timeout=5)
    assert d.failures == {} and d.counts == {"b1": 100, "b2": 100}, d


def test_udp_sessions(backends, proxies):
    b1, b2 = backends
    s = svc("dns", [b1.ep, b2.ep], proto="UDP")
    proxies([s], shuffle=False)
    # a new client address each time: round robin
    assert [udp_request(None, LOCALHOST, s.proxy_port, timeout=2).body for _ in range(4)] == ["b1", "b2", "b1", "b2"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(2)
        c.connect((LOCALHOST, s.proxy_port))

        def ask(what: str = "hostname") -> str:
            c.send(what.encode())
            return c.recv(4096).decode()

        first = ask()
        assert [ask() for _ in range(3)] == [first] * 3  # one session while it is not idle
        seen = ask("clientip")
        assert seen != f"{LOCALHOST}:{c.getsockname()[1]}"  # the backend sees the proxy's session socket
        time.sleep(0.4)  # idle > 250ms: the session is gone, the next datagram opens a new one
        assert ask() != first


def test_udp_refused_endpoint_ends_the_session(backends, proxies):
    b1, _ = backends
    closed = f"{LOCALHOST}:{free_port()}"
    s = svc("dns", [closed, b1.ep], proto="UDP")
    p = proxies([s], shuffle=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(0.5)
        c.connect((LOCALHOST, s.proxy_port))
        c.send(b"hostname")
        with pytest.raises(TimeoutError):
            c.recv(4096)  # lost: the session went to the closed port (upstream behaves the same)
        wait_until(lambda: "read failed" in p.logged(), 2)
        c.send(b"hostname")
        assert c.recv(4096) == b"b1"  # a new session, on the next endpoint


def test_sighup_applies_a_changed_table(backends, proxies):
    b1, b2 = backends
    keep = svc("keep", [b1.ep, b2.ep])
    gone = svc("gone", [b1.ep])
    new = svc("new", [b2.ep])
    p = proxies([keep, gone], shuffle=False)
    established = socket.create_connection((LOCALHOST, gone.proxy_port), timeout=5)
    try:
        assert http_keepalive(established) == "b1"
        assert tcp_request(None, LOCALHOST, new.proxy_port, timeout=2).outcome == "refused"
        p.reload([replace(keep, endpoints=(b2.ep,)), new], shuffle=False)
        wait_until(lambda: tcp_request(None, LOCALHOST, new.proxy_port, timeout=2).ok, 5, message="new service port")
        assert [get(keep.proxy_port) for _ in range(4)] == ["b2"] * 4  # endpoints changed
        assert get(new.proxy_port) == "b2"
        assert tcp_request(None, LOCALHOST, gone.proxy_port, timeout=2).outcome == "refused"  # listener closed
        assert http_keepalive(established) == "b1"  # ...but the established connection lives on
    finally:
        established.close()
    # a table that cannot be read is ignored: the old one stays
    p.table.write_text("{not json")
    p.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "keeping the old table" in p.logged(), 5)
    assert get(new.proxy_port) == "b2"


def test_sighup_moves_a_service_to_a_new_proxy_port(backends, proxies):
    b1, _ = backends
    s = svc("web", [b1.ep])
    p = proxies([s])
    moved = replace(s, proxy_port=free_port())
    p.reload([moved])
    wait_until(lambda: tcp_request(None, LOCALHOST, moved.proxy_port, timeout=2).ok, 5)
    assert tcp_request(None, LOCALHOST, s.proxy_port, timeout=2).outcome == "refused"


def test_node_port_is_claimed(backends, proxies):
    b1, _ = backends
    node_port = free_port()
    s = svc("np", [b1.ep], node_port=node_port)
    proxies([s])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe, pytest.raises(OSError):
        probe.bind((LOCALHOST, node_port))


def test_sigterm_exits_zero_with_open_connections(backends, tmp_path):
    b1, _ = backends
    s = svc("web", [b1.ep])
    p = Proxy(tmp_path, [s])
    try:
        c = socket.create_connection((LOCALHOST, s.proxy_port), timeout=5)
        assert http_keepalive(c) == "b1"
        start = time.monotonic()
        assert p.stop() == 0
        assert time.monotonic() - start < 2
        c.close()
    finally:
        p.stop()


def test_bad_table_exits_2(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text('{"services": {"x": {"protocol": "SCTP", "proxy_port": 1}}}')
    r = subprocess.run([sys.executable, "-m", "testbed.userspace_proxy", "--table", str(bad)], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=10, check=False)
    assert r.returncode == 2 and "cannot start" in r.stderr
    r = subprocess.run([sys.executable, "-m", "testbed.userspace_proxy"], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=10, check=False)
    assert r.returncode == 2 and "--table is required" in r.stderr
