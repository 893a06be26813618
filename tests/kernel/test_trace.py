"""`testbed trace` on a real lab: the kernel's own trace of one probe through kube-proxy's iptables rules."""
from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest

from testbed.kernel import netns
from testbed.trace import TRACE_TABLE_PREFIX, run_trace, without_tracing_table

pytestmark = pytest.mark.kernel

DEFAULT = str(Path(__file__).resolve().parents[2] / "topologies" / "default.yaml")


def _chains(trace) -> list[str]:
    return [s.chain for n in trace.nodes for p in without_tracing_table(n.passes) for s in p.steps]


def _steps(trace):
    return [s for n in trace.nodes for p in without_tracing_table(n.passes) for s in p.steps]


def _ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def assert_no_leftovers(lab) -> None:
    """No tracing table on any node, no `nft monitor` running in any of the lab's namespaces."""
    inodes = set()
    for rec in lab.saved["nodes"].values():
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True,
                             preexec_fn=netns.preexec(rec["ns"])).stdout
        assert TRACE_TABLE_PREFIX not in out, out
        inodes.add(_ns_inode(netns.path(rec["ns"])))
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"nft") and b"monitor" in cmd:
            assert _ns_inode(f"/proc/{pid}/ns/net") not in inodes, f"nft monitor left running: pid {pid}"


@pytest.fixture
def lab(lab_factory):
    return lab_factory(DEFAULT, ready=True)  # no sync (a probed pod turning ready) while tracing


def test_clusterip_trace_dnat_to_a_web_pod(lab):
    cluster = lab.cluster()
    web_pods = {p.key: p for p in cluster.pods if p.owner and p.name.startswith("web-")}
    for _ in range(3):  # the endpoint is chosen at random: look at a few
        t = run_trace(lab, "client", "svc/web:80")
        chains = _chains(t)
        assert t.entry_node == "node-1" and t.nodes[0].node == "node-1" and t.nodes[0].complete
        assert "KUBE-SERVICES" in chains
        svc = [c for c in chains if c.startswith("KUBE-SVC-")]
        sep = [s for s in _steps(t) if s.chain.startswith("KUBE-SEP-") and s.action == "DNAT"]
        assert svc and len(sep) == 1, chains
        assert sep[0].iptables and "-j DNAT --to-destination" in sep[0].iptables
        assert sep[0].comment == "default/web:http"
        e = t.ending
        assert e.kind == "received" and e.backend in web_pods, e
        pod = web_pods[e.backend]
        assert e.backend_addr == f"{pod.ip}:9376" and sep[0].iptables.endswith(e.backend_addr)
        assert e.snat is False and f"DNAT from {t.dst_ip}:80" in e.summary
        assert t.nat and t.nat[0].node == "node-1" and t.nat[0].dnat_to == e.backend_addr and t.nat[0].snat_to is None
        # a backend on the other node: the trace continues there
        assert [n.node for n in t.nodes] == (["node-1"] if pod.node == "node-1" else ["node-1", "node-2"])
        hooks = [p.hook for n in t.nodes for p in without_tracing_table(n.passes)]
        assert hooks[:3] == ["prerouting", "forward", "postrouting"]
    assert_no_leftovers(lab)


def test_service_without_endpoints_is_rejected_in_filter_kube_services(lab):
    t = run_trace(lab, "client", "svc/empty:80")
    e = t.ending
    assert e.kind == "rejected", e
    assert (e.node, e.step.family, e.step.table, e.step.chain, e.step.verdict) == \
        ("node-1", "ip", "filter", "KUBE-SERVICES", "drop")
    assert e.step.action == "REJECT" and e.step.comment == "default/empty has no endpoints"
    assert e.how == "icmp port-unreachable"
    assert not any(s.action == "DNAT" for s in _steps(t)) and t.nat == []
    assert_no_leftovers(lab)


def test_nodeport_from_outside_is_masqueraded(lab):
    cluster = lab.cluster()
    node1 = cluster.node("node-1")
    t = run_trace(lab, "client/outside", "nodeport/web-nodeport@node-1")
    assert (t.dst_ip, t.dst_port, t.entry_node) == (node1.ip, 30080, "node-1")
    chains = _chains(t)
    assert "KUBE-NODEPORTS" in chains and any(c.startswith("KUBE-EXT-") for c in chains)
    masq = [s for s in _steps(t) if s.action == "MASQUERADE"]
    assert masq and masq[0].chain == "KUBE-POSTROUTING" and masq[0].table == "nat"
    e = t.ending
    assert e.kind == "received" and e.snat is True
    assert t.nat[0].dnat_to == e.backend_addr and t.nat[0].snat_to is not None
    assert_no_leftovers(lab)


def test_udp_and_the_cli_entry_point(lab, capsys):
    from testbed.trace_view import cmd_trace

    t = run_trace(lab, "default/client", "svc/web", proto="udp")
    assert t.dst_port == 53 and t.ending.kind == "received"
    assert any(s.action == "DNAT" for s in _steps(t))
    rc = cmd_trace(argparse.Namespace(lab=lab.name, source="client", target="svc/empty", proto="tcp"))
    out = capsys.readouterr().out
    assert rc == 0 and "KUBE-SERVICES" in out and "rejected by ip filter KUBE-SERVICES" in out
    assert_no_leftovers(lab)


def test_tables_and_monitors_are_removed_when_the_probe_fails(lab, monkeypatch):
    import probes.handshake

    def boom(*a, **kw):
        raise RuntimeError("probe failed")

    monkeypatch.setattr(probes.handshake, "handshake", boom)
    with pytest.raises(RuntimeError, match="probe failed"):
        run_trace(lab, "client", "svc/web:80")
    assert_no_leftovers(lab)


def test_nftables_mode_same_parser(lab_factory):
    """kube-proxy's nftables mode: the rules are table `ip kube-proxy`'s, read by the same code."""
    lab = lab_factory(DEFAULT, mode="nftables")
    t = run_trace(lab, "client", "svc/web:80")
    steps = _steps(t)
    assert {s.table for s in steps} == {"kube-proxy"}
    chains = [s.chain for s in steps]
    assert "services" in chains and any(c.startswith("service-") and "default/web/tcp/http" in c for c in chains)
    dnat = [s for s in steps if s.action == "DNAT"]
    assert len(dnat) == 1 and dnat[0].chain.startswith("endpoint-") and dnat[0].iptables is None
    assert t.ending.kind == "received" and dnat[0].rule.endswith(f"dnat to {t.ending.backend_addr}")
    hooks = [p.hook for p in without_tracing_table(t.nodes[0].passes)]
    assert hooks[:2] == ["prerouting", "prerouting"] and "forward" in hooks
    r = run_trace(lab, "client", "svc/empty:80")
    assert r.ending.kind == "rejected" and r.ending.how == "icmp port-unreachable"
    assert (r.ending.step.table, r.ending.step.action) == ("kube-proxy", "REJECT")
    assert_no_leftovers(lab)
