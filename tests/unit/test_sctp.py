"""SCTP Service ports: kube-proxy's SCTP rules in every renderer, netexec's --sctp ports (skipped
where the kernel has no SCTP), the probes, and the conformance rows that need SCTP (no root, no
kernel: the traffic itself is proven by the service-types row inside `testbed vm`)."""
from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import pytest

from probes import connect
from testbed import conformance, model, netexec, supervisor
from testbed.conformance import NO_SCTP_IN_USERSPACE, Row, derive_rows, skip_reason
from testbed.conformance_rows import SERVICE_TYPES
from testbed.control import reconcile
from testbed.proxy import Endpoint, NodeView, ProxyConfig, ServicePort
from testbed.render import iptables as ipt
from testbed.render import ipvs, nftables

SCTP_SP = ServicePort("default", "sig", "sctp", "SCTP", 9000, "10.96.0.90", node_port=30900,
                      endpoints=(Endpoint("10.244.1.5", 7000, node="node-a"),))


def V(*svcs):
    return NodeView("node-a", ("192.168.0.10",), config=ProxyConfig(), services=svcs)


# ----------------------------------------------------------------------------- renderers


def test_iptables_matches_sctp_like_kube_proxy():
    text = ipt.render(V(SCTP_SP))
    assert ("-A KUBE-SERVICES -m comment --comment \"default/sig:sctp cluster IP\" -m sctp -p sctp -d 10.96.0.90 --dport 9000 "
            "-j KUBE-SVC-") in text
    assert "-A KUBE-NODEPORTS -m comment --comment default/sig:sctp -m sctp -p sctp --dport 30900 -j KUBE-EXT-" in text
    assert "-m sctp -p sctp -j DNAT --to-destination 10.244.1.5:7000" in text
    assert " -p tcp" not in text.split("*nat", 1)[1].split("KUBE-SVC-", 1)[1]  # nothing of the Service says tcp


def test_nftables_keys_sctp_by_l4proto():
    text = nftables.render(V(SCTP_SP))
    assert "add element ip kube-proxy service-ips { 10.96.0.90 . sctp . 9000 : goto service-" in text
    assert "add element ip kube-proxy service-nodeports { sctp . 30900 : goto external-" in text
    assert "meta l4proto sctp dnat to 10.244.1.5:7000" in text


def test_ipvs_sctp_virtual_servers_are_protocol_132():
    from testbed.kernel import ipvs as kipvs

    plan = ipvs.plan(V(SCTP_SP))
    vss = [vs for vs in plan.virtual_servers if vs.port in (9000, 30900)]
    assert {vs.protocol for vs in vss} == {"sctp"} and {vs.role for vs in vss} >= {"cluster-ip", "node-port"}
    cluster = next(vs for vs in vss if vs.role == "cluster-ip")
    assert cluster.key == "10.96.0.90:9000/SCTP"
    assert [rs.address for rs in cluster.real_servers] == ["10.244.1.5:7000"]
    assert kipvs._service(cluster)["protocol"] == 132  # IPPROTO_SCTP on the netlink wire
    assert "10.96.0.90,sctp:9000" in plan.ipset("KUBE-CLUSTER-IP").entries
    assert plan.ipset("KUBE-NODE-PORT-SCTP-HASH").entries == ("192.168.0.10,sctp:30900",)


# ----------------------------------------------------------------------------- pods


def test_netexec_parses_sctp_ports():
    opts = netexec.parse_args(["--hostname", "p", "--tcp", "80", "--sctp", "9000", "--sctp=9001"])
    assert opts["sctp"] == [9000, 9001] and opts["tcp"] == [80]
    with pytest.raises(netexec.UsageError):
        netexec.parse_args(["--hostname", "p", "--sctp", "0"])


def _run_netexec(monkeypatch, sctp_error: int):
    """netexec.main with SCTP binding failing with `sctp_error`: (exit status, TCP ports bound, ready byte)."""
    bound = []

    def no_sctp(self, port):
        raise OSError(sctp_error, os.strerror(sctp_error))

    def stop(self):
        raise netexec._Stop()

    monkeypatch.setattr(netexec.Server, "bind_tcp", lambda self, port, proto=0: bound.append(port))
    monkeypatch.setattr(netexec.Server, "bind_sctp", no_sctp)
    monkeypatch.setattr(netexec.Server, "serve", stop)
    r, w = os.pipe()
    try:
        code = netexec.main(["--hostname", "p", "--tcp", "8080", "--sctp", "9000", "--ready-fd", str(w)])
        return code, bound, os.read(r, 1)
    finally:
        os.close(r)


def test_netexec_skips_sctp_ports_where_the_kernel_has_no_sctp(monkeypatch, capsys):
    code, bound, ready = _run_netexec(monkeypatch, errno.EPROTONOSUPPORT)
    assert (code, bound, ready) == (0, [8080], b"R")  # the pod still serves its TCP port
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "SCTP port 9000 skipped: this kernel has no SCTP" in err[0]


def test_netexec_other_sctp_errors_still_fail_the_start(monkeypatch, capsys):
    code, _, ready = _run_netexec(monkeypatch, errno.EADDRINUSE)
    assert code == 2 and ready == b""
    assert "cannot start" in capsys.readouterr().err


@pytest.mark.skipif(conformance.kernel_has_sctp(), reason="this kernel has SCTP")
def test_bind_sctp_without_sctp_is_eprotonosupport():
    server = netexec.Server("p")
    try:
        with pytest.raises(OSError) as e:
            server.bind_sctp(9000)  # socket() fails before any bind: nothing is opened
        assert e.value.errno in netexec.NO_SCTP
    finally:
        server.close()


def test_workload_spec_passes_sctp_container_ports():
    ports = [SimpleNamespace(port=8080, protocol="TCP"), SimpleNamespace(port=9000, protocol="SCTP"),
             SimpleNamespace(port=5353, protocol="UDP")]
    pod = SimpleNamespace(key="default/p", namespace="default", name="p", ports=ports)
    spec = supervisor.workload_spec("lab", pod)
    assert (spec["tcp"], spec["udp"], spec["sctp"]) == ([8080], [5353], [9000])


# ----------------------------------------------------------------------------- probes


def test_request_dispatches_by_protocol():
    with pytest.raises(ValueError):
        connect.request(None, "10.0.0.1", 80, "icmp")
    with pytest.raises(ValueError):
        connect.distribution(None, "10.0.0.1", 80, count=0, proto="icmp")
    assert connect.distribution(None, "10.0.0.1", 80, count=0, proto="sctp").total == 0


@pytest.mark.skipif(conformance.kernel_has_sctp(), reason="this kernel has SCTP")
def test_sctp_request_without_sctp_is_an_error_not_a_refusal():
    r = connect.sctp_request(None, "192.0.2.1", 9000, timeout=0.5)  # socket() fails: nothing is sent
    assert r.outcome == "error" and "Protocol not supported" in r.error


# ----------------------------------------------------------------------------- conformance rows


def test_skip_reason_static_skip_then_kernel_needs(monkeypatch):
    row = Row("r", "pod/c", "sctp", "svc/s:9000", needs=("sctp",), skip={"userspace": "no"})
    monkeypatch.setitem(conformance.FEATURES, "sctp", (lambda: False, "no SCTP here"))
    assert skip_reason(row, "userspace") == "no"
    assert skip_reason(row, "iptables") == "no SCTP here"
    monkeypatch.setitem(conformance.FEATURES, "sctp", (lambda: True, "no SCTP here"))
    assert skip_reason(row, "iptables") is None
    assert skip_reason(Row("r", "pod/c", "tcp", "svc/s:80"), "iptables") is None


def test_run_row_skips_before_touching_the_lab(monkeypatch):
    monkeypatch.setitem(conformance.FEATURES, "sctp", (lambda: False, "no SCTP here"))
    row = Row("r", "pod/c", "sctp", "svc/s:9000", needs=("sctp",))
    cell = conformance.run_row(object(), row, "iptables")  # a lab without .cluster(): never used
    assert (cell.status, cell.reason) == ("skip", "no SCTP here")


def test_the_no_sctp_reason_says_how_to_get_it():
    assert "CONFIG_IP_SCTP" in conformance.FEATURES["sctp"][1] and "testbed vm" in conformance.FEATURES["sctp"][1]


def _service_types():
    cluster, _ = reconcile(model.load_file(model.builtin("service-types")))
    return cluster


def test_service_types_row_resolves_against_its_topology():
    row = next(r for r in SERVICE_TYPES if r.proto == "sctp")
    assert row.needs == ("sctp",) and row.skip == {"userspace": NO_SCTP_IN_USERSPACE}
    cluster = _service_types()
    _, port, info, i = conformance._resolve_target(cluster, row.target, "sctp")
    assert (port, info.service.ports[i].protocol) == (9000, "SCTP")
    assert len(conformance._backends(cluster, info, i)) == 3  # every web pod declares 9000/SCTP


def test_derive_rows_covers_sctp_ports_guarded():
    rows = [r for r in derive_rows(_service_types()) if r.proto == "sctp"]
    assert rows and all(r.needs == ("sctp",) and "userspace" in r.skip for r in rows)
    assert rows[0].target == "svc/sctp:9000" and rows[0].backends == "svc"
