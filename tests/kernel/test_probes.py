"""probes.connect against netexec across a veth pair between two lab namespaces (needs root)."""
from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from probes.connect import distribution, tcp_request, udp_request
from probes.poll import wait_until

# The `kernel` marker is meant to be registered by the shared tests/conftest.py; until then pytest
# may warn that it is unknown. The skip below is local to this module.
pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces and veths"),
]

REPO = Path(__file__).resolve().parents[2]
A_IP, B_IP = "10.99.0.1", "10.99.0.2"
PORT, CLOSED = 8080, 8081
_PIDS: dict[str, int] = {}


def lab_pid(ns: str) -> int:
    return _PIDS[ns]


def _configure(ns: str, address: str, make_veth_peer_in: str | None = None) -> None:
    from pyroute2 import IPRoute

    from testbed.kernel import netns

    with netns.entered(ns):
        ipr = IPRoute()  # the netlink socket lives in `ns`
    try:
        if make_veth_peer_in:
            ipr.link("add", ifname="eth0", kind="veth",
                     peer={"ifname": "eth0", "net_ns_fd": netns.path(make_veth_peer_in)})
        lo = ipr.link_lookup(ifname="lo")[0]
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=eth0, address=address, prefixlen=24)
        ipr.link("set", index=lo, state="up")
        ipr.link("set", index=eth0, state="up")
    finally:
        ipr.close()


@pytest.fixture(scope="module")
def lab():
    from testbed.kernel import netns

    tag = secrets.token_hex(3)
    a, b = f"tbtest-probe-a-{tag}", f"tbtest-probe-b-{tag}"
    proc = None
    created: list[str] = []
    try:
        for name in (a, b):
            netns.create(name)
            created.append(name)
        _configure(a, A_IP, make_veth_peer_in=b)
        _configure(b, B_IP)

        r, w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "testbed.netexec", "--hostname", "pod-b",
                 "--netns", netns.path(b), "--tcp", str(PORT), "--udp", str(PORT), "--ready-fd", str(w)],
                pass_fds=(w,), cwd=REPO, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))),
            )
        finally:
            os.close(w)
        try:
            ready, _, _ = select.select([r], [], [], 10)
            got = os.read(r, 1) if ready else b"?"
        finally:
            os.close(r)
        if got != b"R":
            proc.kill()
            proc.wait(5)
            pytest.fail(f"netexec did not become ready ({got!r}): {proc.stderr.read().decode()!r}")
        # bounded: the first answer also proves the veth carrier is up
        wait_until(lambda: tcp_request(a, B_IP, PORT, timeout=0.5).ok, timeout=5, message="first answer from pod-b")
        _PIDS[b] = proc.pid
        yield a, b
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            proc.stderr.close()
        for name in created:
            netns.delete(name)


def test_tcp_answered_with_hostname(lab):
    a, _ = lab
    r = tcp_request(a, B_IP, PORT, "/hostname")
    assert (r.outcome, r.status, r.body, r.error) == ("answered", 200, "pod-b", None)
    assert r.local.startswith(A_IP + ":")


def test_clientip_is_the_client_in_a(lab):
    a, _ = lab
    r = tcp_request(a, B_IP, PORT, "/clientip")
    assert r.body.split(":")[0] == A_IP
    assert r.body == r.local
    r = tcp_request(a, B_IP, PORT, "/clientip", source_port=40123)
    assert r.body == f"{A_IP}:40123"


def test_closed_tcp_port_is_refused_quickly(lab):
    a, _ = lab
    r = tcp_request(a, B_IP, CLOSED, timeout=2.0)
    assert r.outcome == "refused", r
    assert r.elapsed < 1.0  # an RST, not the timeout


def test_udp(lab):
    a, _ = lab
    r = udp_request(a, B_IP, PORT, "hostname")
    assert (r.outcome, r.body) == ("answered", "pod-b")
    r = udp_request(a, B_IP, PORT, "clientip")
    assert r.body == r.local and r.body.startswith(A_IP + ":")
    r = udp_request(a, B_IP, CLOSED, "hostname", timeout=2.0)
    assert r.outcome == "refused", r  # ICMP port unreachable on a connected socket


def test_no_route_is_unreachable(lab):
    a, _ = lab
    r = tcp_request(a, "10.99.77.1", PORT, timeout=1.0)  # no route in `a`: fails locally
    assert r.outcome == "unreachable", r


def test_netexec_runs_in_b(lab):
    from testbed.kernel import netns

    _, b = lab
    pid = lab_pid(b)
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns.path(b)).st_ino
    assert os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_distribution_over_one_backend(lab, proto):
    a, _ = lab
    d = distribution(a, B_IP, PORT, count=300, proto=proto, expected=["pod-b"])
    assert d.counts == {"pod-b": 300}, d
    assert d.failures == {} and d.total == 300 and d.answered == 300
    assert d.p_value == 1.0
    # without an expectation the observed backends are the categories
    d = distribution(a, B_IP, PORT, count=30, proto=proto, concurrency=1)
    assert d.counts == {"pod-b": 30} and d.p_value == 1.0
    # a backend that is not expected makes the fit impossible
    d = distribution(a, B_IP, PORT, count=10, proto=proto, expected=["pod-x", "pod-y"])
    assert d.p_value == 0.0


def test_distribution_counts_failures(lab):
    a, _ = lab
    d = distribution(a, B_IP, CLOSED, count=20, proto="tcp")
    assert d.counts == {} and d.failures == {"refused": 20} and d.p_value is None
    assert d.errors and "refused" in d.errors[0].lower()
