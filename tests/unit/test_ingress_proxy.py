"""testbed.ingress_proxy as a real subprocess on 127.0.0.1 (no namespaces, no root).

Two netexec backends, a route table made by testbed.ingress.routes from parsed Ingresses (the "ClusterIP"
of every Service is 127.0.0.1, each Service's port is its backend's port), the proxy on a free port.
"""
from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from probes.poll import wait_until
from testbed import model
from testbed.control import ServiceInfo
from testbed.ingress import parse_ingress, routes

REPO = Path(__file__).resolve().parents[2]
LOCALHOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def spawn(module: str, args: list[str], stderr) -> tuple[subprocess.Popen, int]:
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-m", module, *args, "--ready-fd", str(w)], pass_fds=(w,), cwd=REPO,
                                env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return proc, r


def wait_ready(r: int, timeout: float = 10.0) -> bytes:
    try:
        ready, _, _ = select.select([r], [], [], timeout)
        if not ready:
            raise TimeoutError(f"not ready within {timeout}s")
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
    return proc.returncode


def service(name: str, port: int, port_name: str = "") -> ServiceInfo:
    svc = model.Service(name, "default", ports=(model.ServicePortSpec(port, name=port_name),))
    return ServiceInfo(service=svc, cluster_ip=LOCALHOST, node_ports=(None,), endpoints=((),))


def ingress(text: str):
    data = yaml.safe_load(textwrap.dedent(text))
    return parse_ingress(model._Doc("ing.yaml", f"Ingress {data['metadata']['name']}", data, []))


def backend(svc: str, port: int | str) -> str:
    ref = f"{{number: {port}}}" if isinstance(port, int) else f"{{name: {port}}}"
    return f"{{service: {{name: {svc}, port: {ref}}}}}"


def write_routes(path: Path, ports: dict[str, int], swap: bool = False) -> None:
    """b1.example.com → b1, b2.example.com → b2 (the other way round with swap), and the rest."""
    first, second = ("b2", "b1") if swap else ("b1", "b2")
    second_port = "http" if second == "b2" else ports[second]
    ing = ingress(f"""\
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {{name: lab}}
        spec:
          rules:
          - host: b1.example.com
            http: {{paths: [{{path: /, pathType: Prefix, backend: {backend(first, ports[first])}}}]}}
          - host: b2.example.com
            http: {{paths: [{{path: /, pathType: Prefix, backend: {backend(second, second_port)}}}]}}
          - host: "*.wild.example.com"
            http: {{paths: [{{path: /, pathType: Prefix, backend: {backend('b2', 'http')}}}]}}
          - host: paths.example.com
            http:
              paths:
              - {{path: /, pathType: Prefix, backend: {backend('b1', ports['b1'])}}}
              - {{path: /whoami, pathType: Prefix, backend: {backend('b2', 'http')}}}
              - {{path: /hostname, pathType: Exact, backend: {backend('b2', 'http')}}}
          - host: dead.example.com
            http: {{paths: [{{path: /, pathType: Prefix, backend: {backend('dead', ports['dead'])}}}]}}
          - host: silent.example.com
            http: {{paths: [{{path: /, pathType: Prefix, backend: {backend('silent', ports['silent'])}}}]}}
          - host: capture.example.com
            http: {{paths: [{{path: /, pathType: Prefix, backend: {backend('capture', ports['capture'])}}}]}}
          - host: missing.example.com
            http: {{paths: [{{path: /, pathType: Prefix, backend: {backend('nope', 80)}}}]}}
        """)
    services = [service("b1", ports["b1"]), service("b2", ports["b2"], "http"), service("dead", ports["dead"]),
                service("silent", ports["silent"]), service("capture", ports["capture"])]
    table = routes([ing], [], services)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table.to_json()))
    tmp.replace(path)  # atomic: a SIGHUP never sees half a file


class CaptureBackend:
    """A one-thread HTTP server on 127.0.0.1 that records each request and answers with a chunked body."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests: list[tuple[bytes, bytes]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append((head, body))
                conn.sendall(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Backend: capture\r\n"
                             b"Keep-Alive: timeout=5\r\nConnection: close\r\n\r\n"
                             b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")

    def headers(self, i: int = -1) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for line in self.requests[i][0].decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            out.setdefault(name.strip().lower(), []).append(value.strip())
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ingress")
    procs = []
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # accepts (backlog) but never answers: 504
    silent.bind((LOCALHOST, 0))
    silent.listen(16)
    capture = CaptureBackend()
    try:
        ports = {"b1": free_port(), "b2": free_port(), "dead": free_port(), "silent": silent.getsockname()[1],
                 "capture": capture.port}
        for name in ("b1", "b2"):
            proc, r = spawn("testbed.netexec", ["--hostname", name, "--tcp", str(ports[name])], subprocess.DEVNULL)
            procs.append(proc)
            assert wait_ready(r) == b"R", f"netexec {name} did not start"
        routes_file = tmp / "routes.json"
        write_routes(routes_file, ports)
        proxy_port = free_port()
        log = tmp / "proxy.log"
        with open(log, "wb") as err:
            proxy, r = spawn("testbed.ingress_proxy", ["--routes", str(routes_file), "--bind", LOCALHOST,
                                                       "--port", str(proxy_port), "--read-timeout", "1",
                                                       "--connect-timeout", "2"], err)
        procs.append(proxy)
        assert wait_ready(r) == b"R", log.read_text()
        yield {"proxy": proxy, "port": proxy_port, "ports": ports, "routes": routes_file, "log": log, "capture": capture}
    finally:
        for p in procs:
            stop(p)
        silent.close()
        capture.close()


def request(port: int, host: str | None, path: str, method: str = "GET", body: bytes | None = None,
            headers: dict | None = None, timeout: float = 5.0) -> tuple[int, str, dict]:
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if host is not None:
            hdrs["Host"] = host
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in hdrs.items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace").strip(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def test_routes_by_host(lab):
    port = lab["port"]
    assert request(port, "b1.example.com", "/hostname")[:2] == (200, "b1")
    assert request(port, "b2.example.com", "/hostname")[:2] == (200, "b2")  # via the Service port's name
    assert request(port, "B2.Example.com:8080", "/hostname")[:2] == (200, "b2")  # case and port ignored
    assert request(port, "x.wild.example.com", "/hostname")[:2] == (200, "b2")
    assert request(port, "y.x.wild.example.com", "/hostname")[0] == 404  # one label only


def test_routes_by_path(lab):
    port = lab["port"]
    assert request(port, "paths.example.com", "/")[:2] == (200, "b1")
    assert request(port, "paths.example.com", "/hostname")[:2] == (200, "b2")  # Exact beats Prefix /
    assert request(port, "paths.example.com", "/whoami")[1].startswith("b2 ")  # longest prefix
    assert request(port, "paths.example.com", "/echo?msg=hi+there")[:2] == (200, "hi there")  # query passed on
    # Exact /hostname does not match /hostname/, so "/" (b1) gets it, and netexec's own 404 comes back
    status, body, _ = request(port, "paths.example.com", "/hostname/")
    assert (status, body) == (404, "404 page not found")


def test_nothing_matches_is_the_default_backends_404(lab):
    status, body, headers = request(lab["port"], "unknown.example.com", "/hostname")
    assert (status, body) == (404, "default backend - 404")
    assert headers["content-type"].startswith("text/plain")


def test_missing_host_header_is_400(lab):
    with socket.create_connection((LOCALHOST, lab["port"]), timeout=5) as s:
        s.sendall(b"GET /hostname HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 400")


def test_absolute_form_target_names_the_host(lab):
    with socket.create_connection((LOCALHOST, lab["port"]), timeout=5) as s:
        s.sendall(b"GET http://b2.example.com/hostname HTTP/1.1\r\nHost: b1.example.com\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nb2")


def test_dead_backend_is_502_and_unresolved_is_503(lab):
    status, body, _ = request(lab["port"], "dead.example.com", "/hostname")
    assert status == 502 and "Bad Gateway" in body
    status, body, _ = request(lab["port"], "missing.example.com", "/hostname")
    assert status == 503 and "default/nope does not exist" in body
    assert "connect failed" in lab["log"].read_text()


def test_silent_backend_is_504_and_others_are_served_meanwhile(lab):
    result = {}

    def slow():
        start = time.monotonic()
        result["status"] = request(lab["port"], "silent.example.com", "/hostname")[0]
        result["elapsed"] = time.monotonic() - start

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.1)
    start = time.monotonic()
    assert request(lab["port"], "b1.example.com", "/hostname")[:2] == (200, "b1")
    assert time.monotonic() - start < 0.9  # not queued behind the silent backend
    t.join(10)
    assert result["status"] == 504 and 0.9 <= result["elapsed"] < 5


def test_forwarded_request_and_streamed_response(lab):
    capture = lab["capture"]
    status, body, headers = request(lab["port"], "capture.example.com:8000", "/upload?x=1", method="POST",
                                    body=b"payload", headers={"X-Forwarded-For": "6.6.6.6", "Connection": "X-Secret",
                                                              "X-Secret": "hop", "X-Custom": "end-to-end"})
    assert (status, body) == (201, "hello world")  # the chunked body, re-chunked to the client
    assert headers["x-backend"] == "capture" and "keep-alive" not in headers
    head, sent = capture.requests[-1]
    assert head.split(b"\r\n")[0] == b"POST /upload?x=1 HTTP/1.1" and sent == b"payload"
    h = capture.headers()
    assert h["host"] == ["capture.example.com:8000"]
    assert h["x-forwarded-for"] == ["127.0.0.1"]  # replaced, not trusted from the client
    assert h["x-real-ip"] == ["127.0.0.1"]
    assert h["x-forwarded-host"] == ["capture.example.com:8000"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-port"] == [str(lab["port"])]
    assert h["connection"] == ["close"]
    assert h["x-custom"] == ["end-to-end"] and "x-secret" not in h
    assert h["content-length"] == ["7"]


def test_client_connection_is_kept_alive(lab):
    conn = http.client.HTTPConnection(LOCALHOST, lab["port"], timeout=5)
    try:
        answers = []
        for host in ("b1.example.com", "b2.example.com", "capture.example.com", "nowhere.example.com", "b1.example.com"):
            conn.request("GET", "/hostname", headers={"Host": host})
            resp = conn.getresponse()
            answers.append((resp.status, resp.read().decode().strip()))
            assert not resp.will_close
        local = conn.sock.getsockname()
        conn.request("GET", "/clientip", headers={"Host": "b1.example.com"})
        conn.getresponse().read()
        assert conn.sock.getsockname() == local  # the same client connection throughout
    finally:
        conn.close()
    assert answers == [(200, "b1"), (200, "b2"), (201, "hello world"), (404, "default backend - 404"), (200, "b1")]


def test_sighup_rereads_the_routes(lab):
    port, proxy = lab["port"], lab["proxy"]
    assert request(port, "b1.example.com", "/hostname")[1] == "b1"
    try:
        write_routes(lab["routes"], lab["ports"], swap=True)
        proxy.send_signal(signal.SIGHUP)
        wait_until(lambda: request(port, "b1.example.com", "/hostname")[1] == "b2", timeout=5)
        assert request(port, "b2.example.com", "/hostname")[1] == "b1"
        # an unreadable table is logged and the old one kept
        lab["routes"].write_text("{not json")
        proxy.send_signal(signal.SIGHUP)
        wait_until(lambda: "keeping the old routes" in lab["log"].read_text(), timeout=5)
        assert request(port, "b1.example.com", "/hostname")[1] == "b2"
        assert proxy.poll() is None
    finally:
        write_routes(lab["routes"], lab["ports"])
        proxy.send_signal(signal.SIGHUP)
        wait_until(lambda: request(port, "b1.example.com", "/hostname")[1] == "b1", timeout=5)


def test_bad_routes_file_exits_2_without_ready(tmp_path):
    (tmp_path / "r.json").write_text('{"kind": "Other"}')
    for routes_file in (tmp_path / "missing.json", tmp_path / "r.json"):
        with open(tmp_path / "err", "wb") as err:
            proc, r = spawn("testbed.ingress_proxy", ["--routes", str(routes_file), "--bind", LOCALHOST,
                                                      "--port", str(free_port())], err)
        assert wait_ready(r) == b""
        assert proc.wait(10) == 2
        assert "cannot start" in (tmp_path / "err").read_text()


def test_sigterm_exits_0_and_stops_listening(tmp_path):
    routes_file = tmp_path / "routes.json"
    routes_file.write_text(json.dumps(routes([], [], []).to_json()))
    port = free_port()
    proc, r = spawn("testbed.ingress_proxy", ["--routes", str(routes_file), "--bind", LOCALHOST, "--port", str(port)],
                    subprocess.DEVNULL)
    try:
        assert wait_ready(r) == b"R"
        assert request(port, "any.example.com", "/")[:2] == (404, "default backend - 404")
        idle = socket.create_connection((LOCALHOST, port), timeout=5)  # an idle keep-alive client must not block exit
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        idle.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((LOCALHOST, port), timeout=2).close()
    finally:
        stop(proc)
