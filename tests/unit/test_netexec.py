"""testbed.netexec as a real subprocess on 127.0.0.1 (no namespaces, no root)."""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from probes.connect import tcp_request, udp_request
from probes.poll import wait_until

REPO = Path(__file__).resolve().parents[2]
LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (the server binds the same number to both)."""
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


def spawn(*args: str) -> tuple[subprocess.Popen, int]:
    """Start netexec with a ready pipe; return the process and the pipe's read end."""
    r, w = os.pipe()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "testbed.netexec", *args, "--ready-fd", str(w)],
            pass_fds=(w,), cwd=REPO, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return proc, r


def wait_ready(r: int, timeout: float = 10.0) -> bytes:
    """One byte b"R" when serving; b"" (EOF) when the server died first."""
    try:
        ready, _, _ = select.select([r], [], [], timeout)
        if not ready:
            raise TimeoutError(f"netexec not ready within {timeout}s")
        return os.read(r, 1)
    finally:
        os.close(r)


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()
    return proc.returncode


@pytest.fixture
def server():
    port = free_port()
    proc, r = spawn("--hostname", "pod-a", "--tcp", str(port), "--udp", str(port))
    try:
        got = wait_ready(r)
        if got != b"R":
            proc.wait(5)
            pytest.fail(f"netexec did not start (exit {proc.returncode}): {proc.stderr.read().decode()!r}")
        yield proc, port
    finally:
        stop(proc)


def raw_http(port: int, data: bytes, timeout: float = 3.0) -> bytes:
    """Send raw bytes, read until the server closes."""
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_http_endpoints(server):
    _, port = server
    r = tcp_request(None, LOCALHOST, port, "/hostname")
    assert (r.outcome, r.status, r.body, r.error) == ("answered", 200, "pod-a", None)
    assert r.local.startswith("127.0.0.1:")
    assert tcp_request(None, LOCALHOST, port, "/").body == "pod-a"

    r = tcp_request(None, LOCALHOST, port, "/clientip")
    assert r.status == 200 and r.body == r.local  # the server sees exactly our socket

    r = tcp_request(None, LOCALHOST, port, "/echo?msg=hello%20x")
    assert (r.status, r.body) == (200, "hello x")
    assert tcp_request(None, LOCALHOST, port, "/echo?a=1&msg=a+b%21").body == "a b!"

    assert (tcp_request(None, LOCALHOST, port, "/healthz").status,) == (200,)
    r = tcp_request(None, LOCALHOST, port, "/readyz")
    assert (r.status, r.body) == (200, "ok")

    r = tcp_request(None, LOCALHOST, port, "/nope")
    assert r.outcome == "answered" and r.status == 404


def test_source_port(server):
    _, port = server
    src = free_port()
    r = tcp_request(None, LOCALHOST, port, "/clientip", source_port=src)
    assert r.body == f"127.0.0.1:{src}" == r.local
    u = udp_request(None, LOCALHOST, port, "clientip", source_port=src)
    assert u.body == f"127.0.0.1:{src}" == u.local


def test_sigusr1_unready_sigusr2_ready(server):
    proc, port = server
    proc.send_signal(signal.SIGUSR1)
    proc.send_signal(signal.SIGUSR1)  # explicit, not a toggle: repeating keeps it unready
    r = wait_until(lambda: (x := tcp_request(None, LOCALHOST, port, "/readyz")).status == 503 and x,
                   timeout=5, message="readyz to turn 503")
    assert r.outcome == "answered" and r.body == "not ready"
    # still serving traffic while not ready
    assert tcp_request(None, LOCALHOST, port, "/hostname").body == "pod-a"
    proc.send_signal(signal.SIGUSR2)
    wait_until(lambda: tcp_request(None, LOCALHOST, port, "/readyz").status == 200, timeout=5,
               message="readyz to turn 200 again")


def test_udp_commands(server):
    _, port = server
    r = udp_request(None, LOCALHOST, port, "hostname")
    assert (r.outcome, r.body, r.status) == ("answered", "pod-a", None)
    r = udp_request(None, LOCALHOST, port, "clientip")
    assert r.body == r.local and r.body.startswith("127.0.0.1:")
    assert udp_request(None, LOCALHOST, port, "echo hello x").body == "hello x"
    assert udp_request(None, LOCALHOST, port, "hostname\n").body == "pod-a"
    # unknown commands get no answer, like agnhost
    r = udp_request(None, LOCALHOST, port, "shutdown", timeout=0.2)
    assert r.outcome == "timeout"


def test_keepalive_and_pipelining(server):
    _, port = server
    with socket.create_connection((LOCALHOST, port), timeout=3) as s:
        s.sendall(b"GET /hostname HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /echo?msg=two HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while buf.count(b"HTTP/1.1 200") < 2 or not buf.endswith(b"two"):
            chunk = s.recv(65536)
            assert chunk, buf
            buf += chunk
        assert buf.count(b"Connection: keep-alive") == 2
        first, second = buf.split(b"HTTP/1.1 200 OK")[1:]
        assert first.endswith(b"\r\n\r\npod-a") and second.endswith(b"\r\n\r\ntwo")
        # the connection is still usable; then ask to close
        s.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
        assert rest.startswith(b"HTTP/1.1 200 OK") and rest.endswith(b"pod-a")
        assert b"Connection: close" in rest


def test_http_edge_cases(server):
    _, port = server
    out = raw_http(port, b"GET /hostname HTTP/1.0\r\n\r\n")  # 1.0 closes by default
    assert out.startswith(b"HTTP/1.0 200 OK") and out.endswith(b"\r\n\r\npod-a")
    out = raw_http(port, b"HEAD /hostname HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"\r\n\r\n") and b"Content-Length: 5" in out
    out = raw_http(port, b"POST /hostname HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                         b"GET /echo?msg=after HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 405") and out.endswith(b"after")
    out = raw_http(port, b"garbage\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")


def test_many_concurrent_connections(server):
    _, port = server
    socks = []
    try:
        for _ in range(200):
            socks.append(socket.create_connection((LOCALHOST, port), timeout=5))
        for s in socks:
            s.sendall(b"GET /hostname HTTP/1.1\r\nConnection: close\r\n\r\n")
        for s in socks:
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            assert out.endswith(b"pod-a")
    finally:
        for s in socks:
            s.close()


def test_sigterm_exits_zero(server):
    proc, port = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    assert proc.stdout.read() == b"" and proc.stderr.read() == b""
    assert tcp_request(None, LOCALHOST, port, timeout=1).outcome == "refused"


def test_sigint_exits_zero(server):
    proc, _ = server
    proc.send_signal(signal.SIGINT)
    assert proc.wait(5) == 0


def test_bind_failure_exits_2():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc, r = spawn("--hostname", "pod-x", "--tcp", str(port))
        try:
            assert wait_ready(r) == b""  # EOF: never became ready
            assert proc.wait(5) == 2
            assert b"cannot start" in proc.stderr.read()
        finally:
            stop(proc)


def test_bad_netns_and_usage_exit_2(tmp_path):
    proc, r = spawn("--hostname", "pod-x", "--netns", str(tmp_path / "missing"), "--tcp", str(free_port()))
    try:
        assert wait_ready(r) == b""
        assert proc.wait(5) == 2
        assert b"missing" in proc.stderr.read()
    finally:
        stop(proc)
    proc, r = spawn("--tcp", "80")  # no --hostname
    try:
        assert wait_ready(r) == b""
        assert proc.wait(5) == 2
    finally:
        stop(proc)


def test_ready_without_ports():
    proc, r = spawn("--hostname", "idle")
    try:
        assert wait_ready(r) == b"R"
    finally:
        assert stop(proc) == 0
