"""Userspace proxy mode end to end in throwaway namespaces: rules + proxy process + real packets.

One node (`tbtest-us-<hex>-node-1`, eth0 172.18.0.2 on a fabric, pod bridge cbr0 10.244.1.1/24) with
two netexec backend pods and a client pod. The node runs testbed.userspace_proxy and the rules
from testbed.render.userspace. Pod traffic to a ClusterIP is REDIRECTed to the proxy port; the
proxy connects to the backends itself, so they see the node's address; a refused or silent
endpoint is retried on the next one without the client noticing.
"""
from __future__ import annotations

import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probes.connect import tcp_request, udp_request
from testbed.kernel import iptables as kiptables
from testbed.kernel import netns, wiring
from testbed.proxy import Endpoint, NodeView, ServicePort
from testbed.render import iptables as ipt
from testbed.render import userspace as us
from testbed.userspace_proxy import client_failures

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces"),
    pytest.mark.skipif(not shutil.which("iptables-restore", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"),
                       reason="needs iptables-restore"),
]

REPO = Path(__file__).resolve().parents[2]
NODE, NODE_IP, GATEWAY = "node-1", "172.18.0.2", "172.18.0.1"
CBR0_IP = "10.244.1.1"
PODS = {"b1": "10.244.1.2", "b2": "10.244.1.3", "client": "10.244.1.4"}
NOWHERE = "10.244.1.99"  # on the pod subnet, no pod: connects to it time out (no ARP answer)
CLUSTER_IP, SILENT_IP = "10.96.0.10", "10.96.0.11"
NODE_PORT = 30080


class Lab:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.tmp = tmp
        self.workloads: dict[str, dict] = {}
        self.proxy: subprocess.Popen | None = None
        self.plan: us.UserspacePlan | None = None

    @property
    def node_ns(self) -> str:
        return wiring.host_ns(self.name, NODE)

    def pod_ns(self, pod: str) -> str:
        return wiring.pod_ns(self.name, "default", pod)

    def namespaces(self) -> list[str]:
        return [n for n in netns.list_names() if n.startswith(self.name + "-")]


def _view() -> NodeView:
    b = (Endpoint(PODS["b1"], 8080, node=NODE), Endpoint(PODS["b2"], 8080, node=NODE))
    return NodeView(NODE, (NODE_IP,), services=(
        ServicePort("default", "web", "http", "TCP", 80, CLUSTER_IP, node_port=NODE_PORT, endpoints=b),
        ServicePort("default", "web", "dns", "UDP", 53, CLUSTER_IP, endpoints=b),
        ServicePort("default", "silent", "", "TCP", 80, SILENT_IP,
                    endpoints=(Endpoint(NOWHERE, 8080, node=NODE), Endpoint(PODS["b2"], 8080, node=NODE))),
    ))


def _start_proxy(lab: Lab, table: Path) -> subprocess.Popen:
    r, w = os.pipe()
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    try:
        try:
            with open(lab.tmp / "proxy.log", "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "testbed.userspace_proxy", "--netns", netns.path(lab.node_ns),
                     "--table", str(table), "--ready-fd", str(w)],
                    pass_fds=(w,), env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True)
        finally:
            os.close(w)
        try:
            ready, _, _ = select.select([r], [], [], 10)
            if not ready or os.read(r, 1) != b"R":
                raise RuntimeError(f"userspace proxy did not start: {(lab.tmp / 'proxy.log').read_text()}")
        except BaseException:
            proc.kill()
            proc.wait(5)
            raise
    finally:
        os.close(r)
    return proc


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from testbed import state, supervisor

    tmp = tmp_path_factory.mktemp("userspace")
    lab = Lab(f"tbtest-us-{secrets.token_hex(3)}", tmp)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(state, "RUN_DIR", tmp / "run")  # workload logs and journal stay in tmp
        try:
            with wiring.Netlink() as ipr_of:
                wiring.build_fabric(lab.name, ipr_of)
                wiring.fabric_gateway(lab.name, GATEWAY, 24, ipr_of)
                wiring.attach_host(lab.name, "node", NODE, NODE_IP, 24, GATEWAY, ipr_of)
                wiring.setup_node(lab.name, NODE, CBR0_IP, 24, [], ipr_of)
                for pod, ip in PODS.items():
                    wiring.add_pod(lab.name, NODE, "default", pod, ip, 24, CBR0_IP, ipr_of)
            lab.workloads = supervisor.start_workloads(lab.name, [
                {"key": f"default/{pod}", "ns": lab.pod_ns(pod), "hostname": pod, "tcp": [8080], "udp": [8080]}
                for pod in ("b1", "b2")])
            lab.plan = us.plan(_view())
            table = tmp / "table.json"
            table.write_text(lab.plan.to_json())
            lab.proxy = _start_proxy(lab, table)
            kiptables.restore(lab.node_ns, us.iptables_restore(lab.plan, NODE_IP))
            yield lab
        finally:
            if lab.proxy is not None and lab.proxy.poll() is None:
                lab.proxy.terminate()
                try:
                    lab.proxy.wait(5)
                except subprocess.TimeoutExpired:
                    lab.proxy.kill()
                    lab.proxy.wait(5)
            supervisor.stop_many([(w["pid"], w["start"]) for w in lab.workloads.values()])
            for ns in lab.namespaces():
                netns.delete(ns)
    assert not lab.namespaces()


def _port(lab: Lab, key: str) -> int:
    return lab.plan.ports[key]


def test_rules_are_in_the_kernel(lab):
    saved = kiptables.save(lab.node_ns)
    have = set(ipt.normalize_saved(saved))
    missing = [r for r in ipt.normalize_rendered(us.iptables_restore(lab.plan, NODE_IP)) if r not in have]
    assert not missing, f"{missing}\n--- saved ---\n{saved}"


def test_proxy_runs_in_the_node_namespace(lab):
    assert os.stat(f"/proc/{lab.proxy.pid}/ns/net").st_ino == os.stat(netns.path(lab.node_ns)).st_ino


def test_cluster_ip_round_robin_and_source_ip_lost(lab):
    client = lab.pod_ns("client")
    results = [tcp_request(client, CLUSTER_IP, 80, "/whoami", timeout=5) for _ in range(6)]
    assert all(r.ok for r in results), [(r.outcome, r.error) for r in results]
    hosts = [r.body.split()[0] for r in results]
    assert {hosts[0], hosts[1]} == {"b1", "b2"} and hosts == hosts[:2] * 3, hosts  # strict alternation
    seen_ips = {r.body.split()[1].rsplit(":", 1)[0] for r in results}
    assert seen_ips == {CBR0_IP}, seen_ips  # the node's address on the pod bridge, never the client's
    assert PODS["client"] not in seen_ips


def test_udp_cluster_ip(lab):
    client = lab.pod_ns("client")
    results = [udp_request(client, CLUSTER_IP, 53, "whoami", timeout=2) for _ in range(4)]
    assert all(r.ok for r in results), [(r.outcome, r.error) for r in results]
    assert {r.body.split()[0] for r in results} == {"b1", "b2"}
    assert {r.body.split()[1].rsplit(":", 1)[0] for r in results} == {CBR0_IP}


def test_host_traffic_is_dnated_to_the_node_ip(lab):
    r = tcp_request(lab.node_ns, CLUSTER_IP, 80, "/hostname", timeout=5)
    assert r.ok and r.body in ("b1", "b2"), r
    rules = kiptables.save(lab.node_ns, "nat")
    assert f"--to-destination {NODE_IP}:{_port(lab, 'default/web:http/tcp')}" in rules


def test_node_port_from_a_pod_and_from_the_node(lab):
    for ns in (lab.pod_ns("client"), lab.node_ns):
        r = tcp_request(ns, NODE_IP, NODE_PORT, "/hostname", timeout=5)
        assert r.ok and r.body in ("b1", "b2"), (ns, r)


def test_silent_endpoint_times_out_and_is_retried(lab):
    client = lab.pod_ns("client")
    results = [tcp_request(client, SILENT_IP, 80, "/hostname", timeout=5) for _ in range(4)]
    assert all(r.ok and r.body == "b2" for r in results), [(r.outcome, r.body, r.error) for r in results]
    # With [silent, b2], a retry moves the round-robin index past b2 back to the silent endpoint, so
    # after the first request (which may find b2 first) every request waits for the first dial
    # timeout (250ms) before it reaches b2: upstream's LoadBalancerRR + TryConnectEndpoints behave the same.
    assert all(r.elapsed >= 0.25 for r in results[1:]), [r.elapsed for r in results]
    # One timed-out dial per connection, not two (the proxy's log names each client's ip:port):
    # counted, not timed, so a loaded machine cannot change the verdict.
    failed = client_failures((lab.tmp / "proxy.log").read_text())
    silent = [("timeout", f"{NOWHERE}:8080", "i/o timeout")]
    assert all(failed.get(r.local) == silent for r in results[1:]), {r.local: failed.get(r.local) for r in results}
    assert failed.get(results[0].local) in (None, silent), failed.get(results[0].local)


def test_killed_backend_is_invisible_to_clients(lab):
    from testbed import supervisor

    w = lab.workloads["default/b1"]
    assert supervisor.stop(w["pid"], w["start"])
    client = lab.pod_ns("client")
    results = [tcp_request(client, CLUSTER_IP, 80, "/hostname", timeout=5) for _ in range(10)]
    assert all(r.ok for r in results), [(r.outcome, r.error) for r in results]
    assert {r.body for r in results} == {"b2"}


def test_cleanup_rules_and_sigterm(lab):
    kiptables.restore(lab.node_ns, us.cleanup_restore())
    saved = kiptables.save(lab.node_ns)
    assert "KUBE-" not in saved, saved
    lab.proxy.send_signal(signal.SIGTERM)
    start = time.monotonic()
    assert lab.proxy.wait(5) == 0
    assert time.monotonic() - start < 2
