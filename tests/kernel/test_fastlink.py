"""Pod wiring through fastlink (plain rtnetlink): what `wiring.add_pod` leaves in the kernel, read back
with pyroute2 and `ip`, and real TCP through the node's bridge (root; the plugin skips these otherwise).

Everything lives in throwaway namespaces `tbtest-fl-<hex>-…`, deleted in finally; the root namespace
is never touched.
"""
from __future__ import annotations

import errno
import os
import socket
import subprocess
import uuid

import pytest
from pyroute2 import IPRoute

from testbed.kernel import fastlink, netns, wiring

pytestmark = pytest.mark.kernel

GATEWAY = "10.77.0.1"
PREFIX = 24
PODS = {"p0": "10.77.0.10", "p1": "10.77.0.11", "p2": "10.77.0.12"}


@pytest.fixture
def lab():
    """A node namespace with its pod bridge, and three pods wired by add_pod; all removed afterwards."""
    name = f"tbtest-fl-{uuid.uuid4().hex[:8]}"
    try:
        with wiring.Netlink() as ipr_of:
            wiring.make_namespace(name, wiring.host_ns(name, "node"), "node", "node", ipr_of)
            wiring.setup_node(name, "node", GATEWAY, PREFIX, [], ipr_of)
            for pod, ip in PODS.items():
                assert wiring.add_pod(name, "node", "default", pod, ip, PREFIX, GATEWAY, ipr_of) == \
                    wiring.pod_ns(name, "default", pod)
        yield name
    finally:
        for n in netns.list_names():
            if n.startswith(f"{name}-"):
                netns.delete(n)


def ipr_in(ns: str) -> IPRoute:
    with netns.entered(ns):
        return IPRoute()


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def link(ipr: IPRoute, ifname: str):
    (msg,) = ipr.link("get", ifname=ifname)
    return msg


def node_of(lab: str) -> str:
    return wiring.host_ns(lab, "node")


def alias_of(lab: str, pod: str) -> str:
    return f"testbed:{lab}:pod:default/{pod}"


# ----------------------------------------------------------------------------- what add_pod leaves


def test_host_side_veth_is_an_up_hairpin_port_of_the_pod_bridge_with_the_pod_alias(lab):
    with ipr_in(node_of(lab)) as ipr:
        bridge = link(ipr, wiring.POD_BRIDGE)["index"]
        for pod in PODS:
            name = wiring.short_link("veth", f"default/{pod}")
            veth = link(ipr, name)
            assert veth.get_attr("IFLA_IFNAME") == name
            assert veth.get_attr("IFLA_IFALIAS") == alias_of(lab, pod)
            assert veth.get_attr("IFLA_MASTER") == bridge
            assert veth["flags"] & 1, "host-side veth not up"
            assert veth.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "veth"
            text = ip("-n", node_of(lab), "-d", "link", "show", "dev", name)
            assert "hairpin on" in text, text
            assert "master cbr0" in text, text
            assert f"alias {alias_of(lab, pod)}" in text, text


def test_pod_side_eth0_lo_address_and_default_route(lab):
    with ipr_in(node_of(lab)) as node_ipr:
        for pod, addr in PODS.items():
            ns = wiring.pod_ns(lab, "default", pod)
            host_if = link(node_ipr, wiring.short_link("veth", f"default/{pod}"))
            with ipr_in(ns) as ipr:
                eth0 = link(ipr, "eth0")
                assert eth0["flags"] & 1, "eth0 not up"
                # the two ends are each other's peers
                assert eth0.get_attr("IFLA_LINK") == host_if["index"]
                assert host_if.get_attr("IFLA_LINK") == eth0["index"]
                lo = link(ipr, "lo")
                assert lo["index"] == 1 and lo["flags"] & 1, "lo not up"
                assert lo.get_attr("IFLA_IFALIAS") == alias_of(lab, pod)
                addrs = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                         for a in ipr.addr("dump", index=eth0["index"], family=socket.AF_INET)]
                assert addrs == [(addr, PREFIX)]
                (default,) = [r for r in ipr.route("dump", family=socket.AF_INET, table=254) if r["dst_len"] == 0]
                assert default.get_attr("RTA_GATEWAY") == GATEWAY
                assert default.get_attr("RTA_OIF") == eth0["index"]
            assert wiring.ns_owner(ns) == alias_of(lab, pod)
            if os.path.exists("/proc/sys/net/ipv6"):  # addrgenmode none on both ends: no fe80:: to flood
                assert ip("-n", ns, "-6", "addr", "show", "dev", "eth0").strip() == ""
                assert "addrgenmode none" in ip("-d", "-n", ns, "link", "show", "eth0")
                assert "addrgenmode none" in ip("-d", "-n", node_of(lab), "link", "show", host_if.get_attr("IFLA_IFNAME"))
            route = ip("-n", ns, "route", "show", "default")
            assert route.split() == ["default", "via", GATEWAY, "dev", "eth0", "proto", "static"], route


# ----------------------------------------------------------------------------- packets


def listen(ns: str, addr: str) -> socket.socket:
    with netns.entered(ns):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, 0))
    srv.listen(4)
    srv.settimeout(3)
    return srv


def tcp_exchange(src_ns: str, srv: socket.socket) -> str:
    """Connect from `src_ns` to the listener, send a line, return the peer address the server saw."""
    with netns.entered(src_ns):
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        cli.settimeout(3)
        cli.connect(srv.getsockname())
        conn, peer = srv.accept()
        with conn:
            cli.sendall(b"hello\n")
            conn.settimeout(3)
            assert conn.recv(16) == b"hello\n"
        return peer[0]
    finally:
        cli.close()


def test_pods_reach_each_other_and_the_gateway_through_the_bridge(lab):
    names = {pod: wiring.pod_ns(lab, "default", pod) for pod in PODS}
    for dst, dst_ip in PODS.items():
        srv = listen(names[dst], dst_ip)
        try:
            for src, src_ip in PODS.items():
                if src != dst:
                    assert tcp_exchange(names[src], srv) == src_ip, (src, dst)
        finally:
            srv.close()
    srv = listen(node_of(lab), GATEWAY)  # the node's cbr0 address: the pods' default gateway
    try:
        for src, src_ip in PODS.items():
            assert tcp_exchange(names[src], srv) == src_ip
    finally:
        srv.close()


def test_the_pod_bridge_keeps_its_mac_when_a_port_with_a_lower_one_joins(lab):
    """An unset bridge address follows the lowest port MAC, so a new pod could change the gateway's
    MAC under the pods' ARP caches (IPVS ClusterIPs then time out until the entry goes stale):
    cbr0's address is set when it is created, as the CNI bridge plugin does."""
    node = node_of(lab)
    with netns.entered(node), IPRoute() as ipr:
        before = link(ipr, wiring.POD_BRIDGE).get_attr("IFLA_ADDRESS")
    assert int(before.split(":")[0], 16) & 0x03 == 0x02, before  # locally administered, unicast
    srv = listen(node, GATEWAY)
    try:
        assert tcp_exchange(wiring.pod_ns(lab, "default", "p0"), srv) == PODS["p0"]  # p0 caches the MAC
        ip("-n", node, "link", "add", "lowmac", "address", "02:00:00:00:00:00", "type", "veth", "peer", "name", "lowmacp")
        ip("-n", node, "link", "set", "lowmac", "master", wiring.POD_BRIDGE, "up")
        ip("-n", node, "link", "set", "lowmacp", "up")
        with netns.entered(node), IPRoute() as ipr:
            assert link(ipr, wiring.POD_BRIDGE).get_attr("IFLA_ADDRESS") == before
        assert tcp_exchange(wiring.pod_ns(lab, "default", "p1"), srv) == PODS["p1"]
    finally:
        srv.close()


# ----------------------------------------------------------------------------- errors, removal


def test_a_taken_host_side_name_raises_with_the_request_and_namespace(lab):
    node = node_of(lab)
    taken = wiring.short_link("veth", "default/dup")
    with ipr_in(node) as ipr:
        ipr.link("add", ifname=taken, kind="bridge")
    with wiring.Netlink() as ipr_of, pytest.raises(fastlink.NetlinkError) as info:
        wiring.add_pod(lab, "node", "default", "dup", "10.77.0.20", PREFIX, GATEWAY, ipr_of)
    err = info.value
    assert err.errno == errno.EEXIST
    assert err.op.startswith(f"RTM_NEWLINK veth {taken} (peer eth0)")
    assert node in str(err) and "File exists" in str(err)
    with ipr_in(node) as ipr:  # the link that was there is left alone (no alias, no master)
        other = link(ipr, taken)
        assert other.get_attr("IFLA_IFALIAS") is None and other.get_attr("IFLA_MASTER") is None


def test_a_failing_request_in_the_pod_batch_is_the_one_reported(lab):
    with wiring.Netlink() as ipr_of, pytest.raises(fastlink.NetlinkError) as info:  # gateway outside the pod's subnet
        wiring.add_pod(lab, "node", "default", "lost", "10.77.0.30", PREFIX, "10.99.0.1", ipr_of)
    assert info.value.errno == errno.ENETUNREACH
    assert info.value.op.startswith("RTM_NEWROUTE 0.0.0.0/0 via 10.99.0.1")
    assert "Network is unreachable" in str(info.value)


def test_fastlink_errors_for_missing_links(lab):
    with fastlink.RtSocket(node_of(lab)) as sock:
        with pytest.raises(fastlink.NetlinkError) as info:
            sock.link_index("nosuchlink")
        assert info.value.errno == errno.ENODEV and "RTM_GETLINK nosuchlink" in str(info.value)
        with pytest.raises(fastlink.NetlinkError) as info:
            sock.batch().add_address(99999, "10.77.0.99", 24).commit()
        assert info.value.errno == errno.ENODEV
        assert sock.link_index(wiring.POD_BRIDGE) > 0  # the socket is still in step after errors


def test_remove_pod_takes_both_veth_ends_and_the_namespace(lab):
    name = wiring.short_link("veth", "default/p1")
    with wiring.Netlink() as ipr_of:
        wiring.remove_pod(lab, "node", "default", "p1", ipr_of)
        wiring.remove_pod(lab, "node", "default", "p1", ipr_of)  # idempotent
    assert not netns.exists(wiring.pod_ns(lab, "default", "p1"))
    with ipr_in(node_of(lab)) as ipr:
        names = {m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
    assert name not in names
    assert wiring.short_link("veth", "default/p0") in names


def test_without_the_kernels_echo_the_indexes_are_looked_up(lab, monkeypatch):
    """Kernels before 6.3 do not answer NLM_F_ECHO on create: add_pod then asks for the indexes."""
    monkeypatch.setattr(fastlink, "NLM_F_ECHO", 0)
    with wiring.Netlink() as ipr_of:
        ns = wiring.add_pod(lab, "node", "default", "old", "10.77.0.40", PREFIX, GATEWAY, ipr_of)
    name = wiring.short_link("veth", "default/old")
    text = ip("-n", node_of(lab), "-d", "link", "show", "dev", name)
    assert "hairpin on" in text and f"alias {alias_of(lab, 'old')}" in text, text
    assert "inet 10.77.0.40/24" in ip("-n", ns, "addr", "show", "dev", "eth0")
    srv = listen(ns, "10.77.0.40")
    try:
        assert tcp_exchange(wiring.pod_ns(lab, "default", "p0"), srv) == PODS["p0"]
    finally:
        srv.close()


def test_netlink_cache_reuses_and_closes_fast_sockets(lab):
    ipr_of = wiring.Netlink()
    sock = ipr_of.fast(node_of(lab))
    assert ipr_of.fast(node_of(lab)) is sock
    assert ipr_of.bridge_index(node_of(lab), wiring.POD_BRIDGE) == sock.link_index(wiring.POD_BRIDGE)
    with pytest.raises(LookupError):
        ipr_of.bridge_index(node_of(lab), "nobridge")
    ipr_of.close()
    assert sock.fileno() == -1
