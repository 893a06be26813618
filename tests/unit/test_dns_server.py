"""testbed.dns_server as a real subprocess on 127.0.0.1 (no namespaces, no root), queried with hand-built packets.

The responses are decoded by a small parser written here (not the server's), and cross-checked with scapy's.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from testbed import dns_server, model
from testbed.control import reconcile
from testbed.dns import Zone, records

REPO = Path(__file__).resolve().parents[2]
LOCALHOST = "127.0.0.1"
D = "cluster.local"
TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33, "OPT": 41, "AXFR": 252,
         "ANY": 255}
NAMES = {v: k for k, v in TYPES.items()}
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5

LAB = """\
apiVersion: testbed.dev/v1alpha1
kind: Lab
metadata: {name: l}
spec:
  nodes: [{name: n1}, {name: n2}]
"""


def deployment(name: str, replicas: int) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: c, ports: [{{containerPort: 9376, name: http}}]}}]}}
"""


def service(name: str, extra: str = "", ports: str = "[{name: http, port: 80, targetPort: http}]", app=None) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {app or name}}}
  ports: {ports}
{extra}"""


def external(name: str, target: str) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{type: ExternalName, externalName: {target}}}
"""


KUBE_DNS = """\
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.10
  selector: {k8s-app: kube-dns}
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}]
"""

DOCS = (LAB, KUBE_DNS, deployment("web", 3), service("web"), deployment("big", 40),
        service("big", extra="  clusterIP: None\n"), external("alias", f"web.default.svc.{D}"),
        external("out", "www.example.com"))


def build(*docs: str):
    cluster, _ = reconcile(model.load_text("---\n".join(textwrap.dedent(d) for d in docs), file="x.yaml"))
    return records(cluster), cluster


# ----------------------------------------------------------------------------- a client, written independently


def query(name: str, qtype: str | int = "A", qid: int = 0x4242, *, rd: bool = True, edns: int | None = None,
          edns_version: int = 0, opcode: int = 0, qclass: int = 1) -> bytes:
    flags = (opcode << 11) | (0x0100 if rd else 0)
    msg = struct.pack("!6H", qid, flags, 1, 0, 0, 1 if edns is not None else 0)
    for label in name.rstrip(".").split("."):
        msg += bytes([len(label)]) + label.encode()
    msg += b"\0" + struct.pack("!HH", TYPES[qtype] if isinstance(qtype, str) else qtype, qclass)
    if edns is not None:
        msg += b"\0" + struct.pack("!HHIH", 41, edns, edns_version << 16, 0)
    return msg


def _name(msg: bytes, off: int) -> tuple[str, int]:
    labels, end, hops = [], None, 0
    while True:
        n = msg[off]
        if n >= 0xC0:
            hops += 1
            assert hops < 20, "compression loop"
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            continue
        off += 1
        if n == 0:
            return ".".join(labels), end if end is not None else off
        labels.append(msg[off:off + n].decode())
        off += n


def parse(msg: bytes) -> dict:
    qid, flags, qd, an, ns, ar = struct.unpack_from("!6H", msg)
    off = 12
    out = {"id": qid, "qr": bool(flags & 0x8000), "opcode": (flags >> 11) & 0xF, "aa": bool(flags & 0x0400),
           "tc": bool(flags & 0x0200), "rd": bool(flags & 0x0100), "ra": bool(flags & 0x0080), "rcode": flags & 0xF,
           "question": [], "answer": [], "authority": [], "additional": [], "opt": None, "size": len(msg)}
    for _ in range(qd):
        name, off = _name(msg, off)
        qtype, qclass = struct.unpack_from("!HH", msg, off)
        off += 4
        out["question"].append((name, NAMES.get(qtype, qtype), qclass))
    for section, count in (("answer", an), ("authority", ns), ("additional", ar)):
        for _ in range(count):
            name, off = _name(msg, off)
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", msg, off)
            off += 10
            rd, end = msg[off:off + rdlen], off + rdlen
            assert len(rd) == rdlen
            t = NAMES.get(rtype, rtype)
            if t == "OPT":
                out["opt"] = {"size": rclass, "ext_rcode": ttl >> 24, "version": (ttl >> 16) & 0xFF,
                              "do": bool(ttl & 0x8000)}
                off = end
                continue
            if t == "A":
                data = (socket.inet_ntoa(rd),)
            elif t in ("CNAME", "NS", "PTR"):
                data = (_name(msg, off)[0],)
            elif t == "SRV":
                data = struct.unpack_from("!HHH", rd) + (_name(msg, off + 6)[0],)
                assert rd[6] < 0xC0, "SRV targets must not be compressed"
            elif t == "SOA":
                mname, o = _name(msg, off)
                rname, o = _name(msg, o)
                data = (mname, rname) + struct.unpack_from("!5I", msg, o)
                assert o + 20 == end
            elif t == "TXT":
                data, o = [], 0
                while o < len(rd):
                    data.append(rd[o + 1:o + 1 + rd[o]].decode())
                    o += 1 + rd[o]
                data = tuple(data)
            else:
                data = (rd,)
            assert rclass == 1
            out[section].append((name, t, ttl, data))
            off = end
    assert off == len(msg), "trailing bytes"
    return out


def udp(port: int, msg: bytes, timeout: float = 3.0) -> dict | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(msg, (LOCALHOST, port))
        try:
            return parse(s.recv(65535))
        except TimeoutError:
            return None


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "connection closed early"
        buf += chunk
    return buf


def tcp(port: int, *msgs: bytes) -> list[dict]:
    """Send every message in one write (pipelined), read one framed answer per message."""
    with socket.create_connection((LOCALHOST, port), timeout=3) as s:
        s.sendall(b"".join(struct.pack("!H", len(m)) + m for m in msgs))
        out = []
        for _ in msgs:
            (n,) = struct.unpack("!H", _recv_exact(s, 2))
            out.append(parse(_recv_exact(s, n)))
        return out


# ----------------------------------------------------------------------------- the server process


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


class Running:
    def __init__(self, zone_path: Path, *extra: str) -> None:
        self.zone_path = zone_path
        self.port = free_port()
        r, w = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "testbed.dns_server", "--zone", str(zone_path), "--address", LOCALHOST,
                 "--port", str(self.port), "--ready-fd", str(w), *extra],
                pass_fds=(w,), cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
        finally:
            os.close(w)
        try:
            ready, _, _ = select.select([r], [], [], 10)
            self.ready = os.read(r, 1) if ready else None
        finally:
            os.close(r)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def stderr(self) -> str:
        self.stop()
        return self.proc.stderr.read().decode()

    def close(self) -> None:
        self.stop()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    zone, cluster = build(*DOCS)
    path = tmp_path_factory.mktemp("dns") / "zone.json"
    zone.write(str(path))
    srv = Running(path)
    assert srv.ready == b"R", srv.stderr()
    yield srv, zone, cluster
    srv.close()


def cip(cluster, name: str) -> str:
    return next(s.cluster_ip for s in cluster.services if s.service.name == name)


# ----------------------------------------------------------------------------- answers


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_record(lab, transport):
    srv, _, cluster = lab
    msg = query(f"Web.Default.svc.{D}", qid=0xBEEF)
    r = udp(srv.port, msg) if transport == "udp" else tcp(srv.port, msg)[0]
    assert r["id"] == 0xBEEF and r["qr"] and r["aa"] and r["rd"] and not r["tc"] and r["rcode"] == NOERROR
    assert r["question"] == [(f"Web.Default.svc.{D}", "A", 1)]  # echoed as asked
    assert r["answer"] == [(f"Web.Default.svc.{D}", "A", 5, (cip(cluster, "web"),))]
    assert r["opt"] is None  # no EDNS in the query, none in the answer


def test_srv_with_the_target_in_additional(lab):
    srv, _, cluster = lab
    r = udp(srv.port, query(f"_http._tcp.web.default.svc.{D}", "SRV"))
    target = f"web.default.svc.{D}"
    assert r["rcode"] == NOERROR and r["answer"] == [(f"_http._tcp.{target}", "SRV", 5, (0, 100, 80, target))]
    assert r["additional"] == [(target, "A", 5, (cip(cluster, "web"),))]


def test_headless_srv_over_tcp(lab):
    srv, _, cluster = lab
    (r,) = tcp(srv.port, query(f"_http._tcp.big.default.svc.{D}", "SRV"))
    assert r["rcode"] == NOERROR and not r["tc"] and len(r["answer"]) == 40
    assert {a[3][3] for a in r["answer"]} == {f"{p.ip.replace('.', '-')}.big.default.svc.{D}" for p in cluster.pods
                                              if p.owner == "default/big"}
    assert {a[3][:3] for a in r["answer"]} == {(0, 2, 9376)}  # weight 100/40, the endpoint (target) port


def test_cname_chain_inside_the_zone(lab):
    srv, _, cluster = lab
    r = udp(srv.port, query(f"alias.default.svc.{D}", "A"))
    assert r["rcode"] == NOERROR and r["aa"]
    assert r["answer"] == [(f"alias.default.svc.{D}", "CNAME", 5, (f"web.default.svc.{D}",)),
                           (f"web.default.svc.{D}", "A", 5, (cip(cluster, "web"),))]


def test_cname_out_of_the_zone_is_not_chased(lab):
    srv, _, _ = lab
    r = udp(srv.port, query(f"out.default.svc.{D}", "A"))
    assert r["rcode"] == NOERROR and r["answer"] == [(f"out.default.svc.{D}", "CNAME", 5, ("www.example.com",))]
    assert r["authority"] == [] and r["additional"] == []


def test_nxdomain_carries_the_soa(lab):
    srv, zone, _ = lab
    r = udp(srv.port, query(f"nope.default.svc.{D}", "A"))
    assert r["rcode"] == NXDOMAIN and r["aa"] and r["answer"] == []
    ((name, t, ttl, soa),) = r["authority"]
    assert (name, t, ttl) == (D, "SOA", 5) and soa == (f"ns.dns.{D}", f"hostmaster.{D}", zone.soa.data[2], 7200, 1800,
                                                      86400, 5)


def test_aaaa_of_an_existing_name_is_nodata(lab):
    srv, _, _ = lab
    r = udp(srv.port, query(f"web.default.svc.{D}", "AAAA"))
    assert r["rcode"] == NOERROR and r["aa"] and r["answer"] == [] and [a[1] for a in r["authority"]] == ["SOA"]
    r = udp(srv.port, query(f"web.default.svc.{D}", 65))  # HTTPS, asked by modern stub resolvers
    assert r["rcode"] == NOERROR and r["answer"] == []


@pytest.mark.parametrize("name", ["example.com", "www.google.com", "1.1.1.1.in-addr.arpa", "cluster.local.evil"])
def test_names_outside_the_zone_are_refused(lab, name):
    srv, _, _ = lab
    r = udp(srv.port, query(name, "A"))
    assert r["rcode"] == REFUSED and not r["aa"] and r["answer"] == r["authority"] == []
    assert r["question"] == [(name, "A", 1)]


def test_ptr_soa_ns_txt_any(lab):
    srv, _, cluster = lab
    ip = cip(cluster, "web")
    rev = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    assert udp(srv.port, query(rev, "PTR"))["answer"] == [(rev, "PTR", 5, (f"web.default.svc.{D}",))]
    assert udp(srv.port, query(D, "SOA"))["answer"][0][1] == "SOA"
    ns = udp(srv.port, query(D, "NS"))
    assert ns["answer"] == [(D, "NS", 5, (f"ns.dns.{D}",))] and ns["additional"] == [(f"ns.dns.{D}", "A", 5, ("10.96.0.10",))]
    assert udp(srv.port, query(f"dns-version.{D}", "TXT"))["answer"] == [(f"dns-version.{D}", "TXT", 5, ("1.1.0",))]
    assert {a[1] for a in udp(srv.port, query(D, "ANY"))["answer"]} == {"SOA", "NS"}
    assert udp(srv.port, query(f"kube-dns.kube-system.svc.{D}"))["answer"][0][3] == ("10.96.0.10",)


def test_pod_records(lab):
    srv, _, cluster = lab
    p = cluster.pods[0]
    r = udp(srv.port, query(f"{p.ip.replace('.', '-')}.default.pod.{D}"))
    assert r["answer"][0][3] == (p.ip,)


# ----------------------------------------------------------------------------- size, EDNS, errors


def test_big_udp_answer_is_truncated_and_tcp_has_all_of_it(lab):
    srv, _, cluster = lab
    ips = {p.ip for p in cluster.pods if p.owner == "default/big"}
    r = udp(srv.port, query(f"big.default.svc.{D}"))
    assert r["tc"] and r["rcode"] == NOERROR and r["size"] <= 512
    assert 0 < len(r["answer"]) < 40 and {a[3][0] for a in r["answer"]} <= ips  # whole records that fit
    (full,) = tcp(srv.port, query(f"big.default.svc.{D}"))
    assert not full["tc"] and {a[3][0] for a in full["answer"]} == ips and full["size"] > 512


def test_edns_buffer_size_lifts_the_udp_limit_and_gets_an_opt_back(lab):
    srv, _, _cluster = lab
    r = udp(srv.port, query(f"big.default.svc.{D}", edns=4096))
    assert not r["tc"] and len(r["answer"]) == 40 and 512 < r["size"] <= 4096
    assert r["opt"] == {"size": 1232, "ext_rcode": 0, "version": 0, "do": False}
    small = udp(srv.port, query(f"big.default.svc.{D}", edns=100))  # below 512 counts as 512
    assert small["tc"] and small["size"] <= 512 and small["opt"] is not None


def test_edns_version_1_is_badvers(lab):
    srv, _, _ = lab
    r = udp(srv.port, query(f"web.default.svc.{D}", edns=1232, edns_version=1))
    assert r["rcode"] == 0 and r["opt"]["ext_rcode"] == 1 and r["answer"] == []  # BADVERS = 16 = 1 << 4 | 0


def test_truncation_drops_additional_records_without_tc(lab):
    srv, _, _ = lab
    (full,) = tcp(srv.port, query(f"_http._tcp.big.default.svc.{D}", "SRV", edns=4096))
    assert len(full["answer"]) == len(full["additional"]) == 40 and 1000 < full["size"] <= 4096
    r = udp(srv.port, query(f"_http._tcp.big.default.svc.{D}", "SRV", edns=full["size"] - 200))
    assert not r["tc"] and len(r["answer"]) == 40 and 0 < len(r["additional"]) < 40  # all SRV, some of the A


def test_a_records_rotate(lab):
    srv, _, _ = lab
    first = [udp(srv.port, query(f"big.default.svc.{D}", edns=4096))["answer"] for _ in range(3)]
    assert len({a[0] for a in first}) > 1 and len({frozenset(a) for a in first}) == 1


def test_malformed_and_unsupported(lab):
    srv, _, _ = lab
    garbage = struct.pack("!6H", 7, 0x0100, 1, 0, 0, 0) + b"\x05abc"
    r = udp(srv.port, garbage)
    assert r["id"] == 7 and r["rcode"] == FORMERR and r["question"] == []
    two = struct.pack("!6H", 8, 0, 2, 0, 0, 0) + query("a.b")[12:] * 2
    assert udp(srv.port, two)["rcode"] == FORMERR
    assert udp(srv.port, query(f"web.default.svc.{D}", opcode=2))["rcode"] == NOTIMP
    assert udp(srv.port, query(f"web.default.svc.{D}", qclass=3))["rcode"] == REFUSED  # CHAOS
    (axfr,) = tcp(srv.port, query(D, "AXFR"))
    assert axfr["rcode"] == REFUSED
    response = bytearray(query(f"web.default.svc.{D}"))
    response[2] |= 0x80  # QR: a response is never answered
    assert udp(srv.port, bytes(response), timeout=0.3) is None
    assert udp(srv.port, b"\x01\x02", timeout=0.3) is None
    assert udp(srv.port, query(f"web.default.svc.{D}"))["rcode"] == NOERROR  # still serving


def test_compressed_question_pointing_forward_is_formerr(lab):
    srv, _, _ = lab
    msg = struct.pack("!6H", 9, 0, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)  # points at itself
    assert udp(srv.port, msg)["rcode"] == FORMERR


def test_tcp_pipelined_queries_in_order(lab):
    srv, _, _ = lab
    rs = tcp(srv.port, query(f"web.default.svc.{D}", qid=1), query("example.com", qid=2), query(f"x.{D}", qid=3))
    assert [(r["id"], r["rcode"]) for r in rs] == [(1, NOERROR), (2, REFUSED), (3, NXDOMAIN)]


def test_responses_decode_with_scapy(lab):
    scapy_dns = pytest.importorskip("scapy.layers.dns")
    from scapy.packet import Padding, Raw
    srv, _, _cluster = lab
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for name, qtype in ((f"alias.default.svc.{D}", "A"), (f"_http._tcp.web.default.svc.{D}", "SRV"),
                            (f"nope.{D}", "A"), (D, "ANY")):
            s.sendto(query(name, qtype, edns=1232), (LOCALHOST, srv.port))
            raw = s.recv(65535)
            pkt = scapy_dns.DNS(raw)
            mine = parse(raw)
            assert pkt.id == mine["id"] and pkt.rcode == mine["rcode"] and pkt.aa == 1
            assert pkt.ancount == len(mine["answer"]) and pkt.nscount == len(mine["authority"])
            assert not pkt.haslayer(Raw) and not pkt.haslayer(Padding)  # scapy consumed exactly the message
            if pkt.ancount:
                assert pkt.an[0].rrname.decode().rstrip(".") == mine["answer"][0][0]


# ----------------------------------------------------------------------------- lifecycle


def test_sighup_reloads_the_zone_and_sigterm_exits_0(tmp_path):
    path = tmp_path / "zone.json"
    zone, _cluster = build(LAB, deployment("web", 1), service("web"))
    zone.write(str(path))
    srv = Running(path)
    try:
        assert srv.ready == b"R", srv.stderr()
        assert udp(srv.port, query(f"new.default.svc.{D}"))["rcode"] == NXDOMAIN
        zone2, cluster2 = build(LAB, deployment("web", 1), service("web"), service("new", app="web"))
        zone2.write(str(path))
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while (r := udp(srv.port, query(f"new.default.svc.{D}")))["rcode"] != NOERROR:
            assert time.monotonic() < deadline, "zone not reloaded"
            time.sleep(0.02)
        assert r["answer"][0][3] == (cip(cluster2, "new"),)
        # A zone that does not load is reported and the previous one kept.
        path.write_text("{not json")
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        assert srv.proc.poll() is None
        assert udp(srv.port, query(f"new.default.svc.{D}"))["rcode"] == NOERROR
        assert srv.stop() == 0
        assert "keeping the previous zone" in srv.proc.stderr.read().decode()
    finally:
        srv.close()


def test_open_tcp_connection_does_not_block_sigterm(tmp_path):
    path = tmp_path / "zone.json"
    build(LAB)[0].write(str(path))
    srv = Running(path)
    try:
        assert srv.ready == b"R"
        with socket.create_connection((LOCALHOST, srv.port)) as s:
            s.sendall(b"\x00")  # half a length prefix
            time.sleep(0.1)
            assert srv.stop() == 0
    finally:
        srv.close()


def test_unreadable_zone_exits_2_without_ready(tmp_path):
    srv = Running(tmp_path / "missing.json")
    try:
        assert srv.ready == b""
        assert srv.proc.wait(5) == 2
        assert "cannot start" in srv.proc.stderr.read().decode()
    finally:
        srv.close()


def test_port_in_use_exits_2(tmp_path):
    path = tmp_path / "zone.json"
    build(LAB)[0].write(str(path))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind((LOCALHOST, 0))
        port = blocker.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "testbed.dns_server", "--zone", str(path), "--address", LOCALHOST,
                               "--port", str(port)], check=False, cwd=REPO, capture_output=True, timeout=10)
    assert proc.returncode == 2 and b"cannot start" in proc.stderr


def test_usage_errors():
    for argv in ([], ["--zone"], ["--zone", "z", "--port", "x"], ["--zone", "z", "--port", "0"], ["--bogus"]):
        with pytest.raises(dns_server.UsageError):
            dns_server.parse_args(argv)
    assert dns_server.parse_args(["--zone=z", "--port=5353", "--netns", "/run/netns/x"]) == {
        "zone": "z", "netns": "/run/netns/x", "address": "0.0.0.0", "port": 5353, "ready_fd": None}


def test_respond_in_process_matches_the_zone():
    zone, cluster = build(LAB, deployment("web", 1), service("web"))
    r = parse(dns_server.respond(zone, query(f"web.default.svc.{D}")))
    assert r["answer"][0][3] == (cip(cluster, "web"),)
    assert isinstance(Zone.from_json(zone.to_json()), Zone)
