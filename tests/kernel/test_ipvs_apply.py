"""Apply IPVS-mode plans (testbed.render.ipvs) to a throwaway namespace and read the kernel back.

Two groups:
- ipsets + iptables glue + missing-IPVS behaviour: runs on any kernel with ipset and iptables (this
  host included); the namespace gets the 17 sets, the restore input and the jumps, read back with
  `ipset save`/`ipset list` and `iptables-save` and compared with the plan;
- TestIpvsKernel: needs IPVS (and the dummy link type), so the `kernel_feature("ipvs")` marker
  skips it where /proc/net/ip_vs is missing; it runs inside `testbed vm`. It applies a plan, reads
  the IPVS table back (services, real servers, schedulers, persistence, masquerade forwarding,
  kube-ipvs0 and its addresses, sysctls), applies a changed plan by difference (and proves the
  untouched objects were not rewritten), reconciles from live state, and cleans up.
"""
import dataclasses
import errno
import os
import shutil
import socket
import struct
import subprocess
import uuid
from typing import ClassVar

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from testbed.errors import KernelFeatureError
from testbed.kernel import ipset as kipset
from testbed.kernel import iptables as kiptables
from testbed.kernel import ipvs as kipvs
from testbed.kernel import netns
from testbed.proxy import Endpoint as E
from testbed.proxy import NodeView, ProxyConfig
from testbed.proxy import ServicePort as SP
from testbed.render import iptables as riptables
from testbed.render import ipvs


def _tool(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not (_tool("ipset") and _tool("iptables-restore")), reason="needs ipset and iptables"),
]

N = "node-a"
NODE_IPS = ("192.168.0.10", "172.18.0.2")
WEB = SP("default", "web", "http", "TCP", 80, "10.96.0.10", endpoints=(
    E("10.244.1.3", 9376, node=N), E("10.244.2.4", 9376, node="node-b"), E("10.244.1.10", 9376, node=N)))
NP = SP("default", "np", "", "UDP", 53, "10.96.0.30", node_port=30053,
        endpoints=(E("10.244.2.7", 5353, node="node-b"), E("10.244.1.2", 5353, node=N)))
STICKY = SP("ns5", "sticky", "p80", "TCP", 80, "10.96.0.45", session_affinity_timeout=10800,
            endpoints=(E("10.244.1.3", 80, node=N), E("10.244.2.3", 80, node="node-b")))
SH = SP("ns7", "hash", "", "TCP", 443, "10.96.0.47", scheduler="sh",
        endpoints=(E("10.244.1.4", 8443, node=N), E("10.244.2.4", 8443, node="node-b")))
MH = SP("ns7", "maglev", "", "TCP", 8080, "10.96.0.48", scheduler="mh", endpoints=(E("10.244.2.5", 8080, node="node-b"),))
EMPTY = SP("ns6", "empty", "p80", "TCP", 80, "10.96.0.60", node_port=30082)
# eTP=Local LB whose source range covers the node (no `-m ipvs` rule: xt_ipvs needs IPVS).
LOCAL = SP("ns2", "lb", "p80", "TCP", 80, "10.96.0.40", node_port=30080, external_ips=("192.168.99.22",),
           load_balancer_ips=("203.0.113.10",), load_balancer_source_ranges=("192.168.0.0/16", "198.51.100.7/32"),
           external_policy_local=True, health_check_node_port=31000,
           endpoints=(E("10.244.1.2", 8080, node=N), E("10.244.2.7", 8080, node="node-b")))
SCTP = SP("ns4", "sc", "", "SCTP", 9, "10.96.0.70", node_port=30090, endpoints=(E("10.244.1.6", 9, node=N),))


def V(*svcs, **cfg):
    return NodeView(N, NODE_IPS, config=ProxyConfig(**cfg), services=svcs)


@pytest.fixture
def ns():
    name = f"tbtest-ipvs-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.delete(name)


def _run(ns, *argv):
    proc = subprocess.run(list(argv), text=True, capture_output=True, preexec_fn=netns.preexec(ns), timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _sets(ns):
    """Kube-proxy's sets in the namespace: name -> (type, entries)."""
    return {n: (s.type, s.entries) for n, s in kipset.list_sets(ns).items() if n in ipvs.IPSET_NAMES}


def _want_sets(plan):
    return {s.name: (s.type, s.entries) for s in plan.ipsets}


def _by_chain(lines):
    out = {}
    for line in lines:
        table, rest = line.split(" ", 1)
        if rest.startswith(":"):
            out.setdefault((table, rest[1:]), [])
        else:
            out.setdefault((table, rest.split()[1]), []).append(line)
    return {k: v for k, v in out.items() if v or k[1].startswith("KUBE-")}


def _saved_glue(ns):
    """iptables-save, normalised (render.iptables.normalize_saved), per (table, chain)."""
    saved = kiptables.save(ns).replace("\\'", "'")  # iptables-save escapes ' inside comments
    return _by_chain(riptables.normalize_saved(saved))


def _want_glue(plan):
    """plan.iptables plus the jumps where EnsureRule(Prepend) leaves them (last prepended first)."""
    text = plan.iptables
    for table in ("nat", "filter"):
        jumps = [j for j in plan.jumps if j[0] == table]
        lines = [f'-A {chain} -m comment --comment "{comment}" -j {target}' for _, chain, comment, target in reversed(jumps)]
        text += f"*{table}\n" + "".join(line + "\n" for line in lines) + "COMMIT\n"
    return _by_chain(riptables.normalize_rendered(text))


# --- ipsets and iptables glue (any kernel with ipset) --------------------------------------------

def test_ipsets_and_glue_apply_read_back_change_and_cleanup(ns):
    plan = ipvs.plan(V(WEB, NP, STICKY, EMPTY, LOCAL, SCTP))
    kipvs.apply_glue(ns, None, plan)
    assert _sets(ns) == _want_sets(plan)
    assert "KUBE-LOAD-BALANCER-SOURCE-CIDR 203.0.113.10,tcp:80,198.51.100.7\n" in _run(ns, "ipset", "save")
    listing = _run(ns, "ipset", "list", "KUBE-CLUSTER-IP")
    assert "Type: hash:ip,port" in listing and "10.96.0.45,tcp:80" in listing
    assert set(_run(ns, "ipset", "list", "-n").split()) >= set(ipvs.IPSET_NAMES)
    assert _saved_glue(ns) == _want_glue(plan)
    kipvs.apply_glue(ns, None, plan)  # again from live state: nothing doubles
    assert _saved_glue(ns) == _want_glue(plan)

    # By difference: a hand-made entry in a set the change does not touch stays.
    _run(ns, "ipset", "add", "KUBE-NODE-PORT-UDP", "31999")
    web2 = dataclasses.replace(WEB, endpoints=WEB.endpoints[1:] + (E("10.244.1.11", 9376, node=N),),
                               external_ips=("192.168.99.30",))
    new = ipvs.plan(V(web2, NP, STICKY, LOCAL))  # EMPTY and SCTP gone, WEB changed
    kipvs.apply_glue(ns, plan, new)
    want = _want_sets(new)
    want["KUBE-NODE-PORT-UDP"] = ("bitmap:port", ("30053", "31999"))
    assert _sets(ns) == want
    assert _saved_glue(ns) == _want_glue(new)
    assert "KUBE-NODE-PORT-SCTP-HASH" not in kiptables.save(ns)
    assert "KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ" in kiptables.save(ns)

    kipvs.apply_glue(ns, None, new)  # a full reconcile removes the hand-made entry
    assert _sets(ns) == _want_sets(new)

    kipvs.cleanup(ns)
    assert "KUBE-" not in kiptables.save(ns)
    assert _sets(ns) == {}


def test_missing_ipvs_is_a_kernel_feature_error_and_changes_nothing(ns):
    if os.path.exists("/proc/net/ip_vs"):
        pytest.skip("this kernel has IPVS")
    assert not kipvs.available(ns)
    with pytest.raises(KernelFeatureError) as err:
        kipvs.apply(ns, None, ipvs.plan(V(WEB)))
    assert str(err.value) == "this kernel has no IPVS (CONFIG_IP_VS): run it with `testbed vm -- …`"
    assert _sets(ns) == {}
    assert "KUBE-" not in kiptables.save(ns)
    with pytest.raises(KernelFeatureError):
        kipvs.read(ns)
    kipvs.cleanup(ns)  # nothing there: still fine without IPVS


# --- apply() against a simulated IPVS (any kernel): real netns, ipsets, iptables, addresses --------

def _nla(kind, payload):
    size = 4 + len(payload)
    return struct.pack("HH", size, kind) + payload + b"\0" * ((4 - size % 4) % 4)


def _reply(service=None, dest=None):
    """A decoded genetlink reply laid out as the kernel writes it (16-byte nf_inet_addr)."""
    from pyroute2.netlink.generic import ipvs as genl

    body = struct.pack("BBH", genl.IPVS_CMD_NEW_SERVICE, 1, 0)
    if service is not None:
        body += _nla(1 | 0x8000, service)
    if dest is not None:
        body += _nla(2 | 0x8000, dest)
    msg = genl.ipvsmsg(struct.pack("IHHII", 16 + len(body), 30, 0, 1, 0) + body)
    msg.decode()
    return msg


def _addr16(ip):
    return socket.inet_aton(ip) + b"\0" * 12


class FakeIPVS:
    """pyroute2.IPVS's interface over an in-memory table with the kernel's rules: EEXIST on a second
    add, ESRCH/ENOENT for missing objects, full specs required on add/set, flags merged through the
    mask with HASHED added, replies in the kernel's attribute layout. `update` (pyroute2 sends
    IPVS_CMD_DEL_SERVICE for it) is refused. Adding a real server fails with EINVAL while the
    namespace has no local routing table, as ip_vs_new_dest() does (inet_addr_type() then calls
    every address broadcast): a fresh namespace has loopback down and no address."""

    def __init__(self, ns=None):
        self.ns = ns
        self.services = {}
        self.dests = {}
        self.calls = []

    def _has_local_table(self):
        from pyroute2 import IPRoute

        with netns.entered(self.ns):
            ipr = IPRoute()
        try:
            return bool(tuple(ipr.route("dump", table=255, family=socket.AF_INET)))
        finally:
            ipr.close()

    def close(self):
        pass

    @staticmethod
    def _attrs(obj):
        return dict(obj.dump_nla()["attrs"])

    @staticmethod
    def _key(service):
        a = dict(service.dump_key()["attrs"])
        return (a["IPVS_SVC_ATTR_PROTOCOL"], a["IPVS_SVC_ATTR_ADDR"], a["IPVS_SVC_ATTR_PORT"])

    def service(self, command, service=None):
        if command == "dump":
            return tuple(self._service_reply(k, v) for k, v in self.services.items())
        key = self._key(service)
        self.calls.append(("service", command, key))
        if command in ("add", "set"):
            a = self._attrs(service)
            assert a["IPVS_SVC_ATTR_NETMASK"] == "255.255.255.255" and "IPVS_SVC_ATTR_TIMEOUT" in a
            if command == "add" and key in self.services:
                raise NetlinkError(errno.EEXIST)
            if command == "set" and key not in self.services:
                raise NetlinkError(errno.ESRCH)
            if a["IPVS_SVC_ATTR_SCHED_NAME"] not in ipvs.SCHEDULERS:
                raise NetlinkError(errno.ENOENT)
            old = self.services.get(key, {"flags": 0})["flags"]
            f = a["IPVS_SVC_ATTR_FLAGS"]
            self.services[key] = {"sched": a["IPVS_SVC_ATTR_SCHED_NAME"], "timeout": a["IPVS_SVC_ATTR_TIMEOUT"],
                                  "flags": (old & ~f["mask"]) | (f["flags"] & f["mask"]) | 0x2}
            self.dests.setdefault(key, {})
        elif command == "del":
            if key not in self.services:
                raise NetlinkError(errno.ESRCH)
            del self.services[key], self.dests[key]
        else:
            raise AssertionError(f"service({command!r}) must not be used")
        return ()

    def dest(self, command, service, dest=None):
        key = self._key(service)
        if key not in self.services:
            raise NetlinkError(errno.ESRCH)
        table = self.dests[key]
        if command == "dump":
            return tuple(self._dest_reply(d, v) for d, v in table.items())
        a = self._attrs(dest)
        d = (a["IPVS_DEST_ATTR_ADDR"], a["IPVS_DEST_ATTR_PORT"])
        self.calls.append(("dest", command, key, d))
        if command in ("add", "set"):
            if command == "add" and d in table:
                raise NetlinkError(errno.EEXIST)
            if command == "add" and self.ns is not None and not self._has_local_table():
                raise NetlinkError(errno.EINVAL)
            if command == "set" and d not in table:
                raise NetlinkError(errno.ENOENT)
            entry = table.setdefault(d, {"active": 0, "inactive": 0})
            entry.update(fwd=a["IPVS_DEST_ATTR_FWD_METHOD"], weight=a["IPVS_DEST_ATTR_WEIGHT"])
        elif command == "del":
            if d not in table:
                raise NetlinkError(errno.ENOENT)
            del table[d]
        else:
            raise AssertionError(f"dest({command!r}) must not be used")
        return ()

    def _service_reply(self, key, v):
        proto, ip, port = key
        return _reply(service=(
            _nla(1, struct.pack("H", 2)) + _nla(2, struct.pack("H", proto)) + _nla(3, _addr16(ip))
            + _nla(4, struct.pack(">H", port)) + _nla(6, v["sched"].encode() + b"\0")
            + _nla(7, struct.pack("II", v["flags"], 0xFFFFFFFF)) + _nla(8, struct.pack("I", v["timeout"]))
            + _nla(9, socket.inet_aton("255.255.255.255"))))

    @staticmethod
    def _dest_reply(d, v):
        return _reply(dest=(
            _nla(1, _addr16(d[0])) + _nla(11, struct.pack("H", 2)) + _nla(2, struct.pack(">H", d[1]))
            + _nla(3, struct.pack("I", v["fwd"])) + _nla(4, struct.pack("I", v["weight"]))
            + _nla(5, struct.pack("I", 0)) + _nla(6, struct.pack("I", 0))
            + _nla(7, struct.pack("I", v["active"])) + _nla(8, struct.pack("I", v["inactive"]))))

    def touched(self, since):
        return {c[2] for c in self.calls[since:]}


@pytest.fixture
def sim(ns, monkeypatch):
    """apply()/read()/cleanup() with FakeIPVS for the IPVS netlink family and a bridge standing in
    for the dummy link; sysctl writes are recorded (net.ipv4.vs.* needs ip_vs)."""
    fake = FakeIPVS(ns)
    written = []
    monkeypatch.setattr(kipvs, "_open_ipvs", lambda: fake)
    monkeypatch.setattr(kipvs, "available", lambda ns: True)
    monkeypatch.setattr(kipvs, "DUMMY_KIND", "bridge")
    monkeypatch.setattr(kipvs, "_write_sysctls", lambda ns, items: written.append(tuple(items)))
    return fake, written


def _k(vs):
    return (kipvs.PROTOCOLS[vs.protocol], vs.ip, vs.port)


def test_apply_by_difference_against_simulated_ipvs(ns, sim):
    fake, written = sim
    p1 = ipvs.plan(V(WEB, NP, STICKY, SH, MH, EMPTY, LOCAL))
    kipvs.apply(ns, None, p1)
    assert kipvs.read(ns) == kipvs.table(p1)
    assert all(v["fwd"] == kipvs.FWD_MASQ for t in fake.dests.values() for v in t.values())
    assert written == [ipvs.SYSCTLS]
    assert _link(ns, "kube-ipvs0").get_attr("IFLA_IFALIAS") == kipvs.DUMMY_ALIAS
    assert _sets(ns) == _want_sets(p1)
    assert _saved_glue(ns) == _want_glue(p1)

    # Graceful termination: a busy TCP real server leaving WEB is quiesced (weight 0), a busy UDP
    # one leaving NP is deleted at once; nothing else is touched.
    web, np_ = p1.virtual_server("10.96.0.10:80/TCP"), p1.virtual_server("10.96.0.30:53/UDP")
    fake.dests[_k(web)][("10.244.1.3", 9376)]["active"] = 2
    fake.dests[_k(np_)][("10.244.1.2", 5353)]["inactive"] = 1
    web2 = dataclasses.replace(WEB, endpoints=WEB.endpoints[1:] + (E("10.244.1.11", 9376, node=N),))
    np2 = dataclasses.replace(NP, endpoints=NP.endpoints[:1])
    sticky2 = dataclasses.replace(STICKY, scheduler="wrr")
    p2 = ipvs.plan(V(web2, np2, sticky2, SH, MH, LOCAL))  # EMPTY gone
    mark = len(fake.calls)
    kipvs.apply(ns, p1, p2)
    want = kipvs.table(p2)
    want["services"]["10.96.0.10:80/TCP"]["destinations"]["10.244.1.3:9376"] = {
        "ip": "10.244.1.3", "port": 9376, "weight": 0, "forward": "masq"}
    dests = want["services"]["10.96.0.10:80/TCP"]["destinations"]
    want["services"]["10.96.0.10:80/TCP"]["destinations"] = dict(sorted(dests.items()))
    assert kipvs.read(ns) == want
    changed = {_k(vs) for vs in p1.virtual_servers
               if vs.key.startswith(("10.96.0.10:", "10.96.0.30:", "10.96.0.45:", "10.96.0.60:"))}
    changed |= {(6, "192.168.0.10", 30082), (6, "172.18.0.2", 30082), (17, "192.168.0.10", 30053), (17, "172.18.0.2", 30053)}
    assert fake.touched(mark) == changed
    assert written == [ipvs.SYSCTLS]  # only at start-up
    assert _sets(ns) == _want_sets(p2)

    # Once idle, the drained real server goes at the next change of that virtual server.
    fake.dests[_k(web)][("10.244.1.3", 9376)]["active"] = 0
    web3 = dataclasses.replace(web2, endpoints=web2.endpoints + (E("10.244.2.12", 9376, node="node-b"),))
    p3 = ipvs.plan(V(web3, np2, sticky2, SH, MH, LOCAL))
    kipvs.apply(ns, p2, p3)
    assert kipvs.read(ns) == kipvs.table(p3)

    # previous=None: reconcile from the live table (a foreign service goes, like cleanLegacyService).
    fake.service("add", service=kipvs._service(ipvs.VirtualServer("tcp", "10.1.1.1", 1234)))
    kipvs.apply(ns, None, p3)
    assert kipvs.read(ns) == kipvs.table(p3)
    # A stale `previous` that lacks what is there: adds meet EEXIST and become edits.
    kipvs.apply(ns, ipvs.IpvsPlan(), p3)
    assert kipvs.read(ns) == kipvs.table(p3)
    assert not [c for c in fake.calls if c[1] == "update"]

    kipvs.cleanup(ns)
    assert fake.services == {}
    with pytest.raises(NetlinkError):
        _link(ns, "kube-ipvs0")
    assert _sets(ns) == {}
    assert "KUBE-" not in kiptables.save(ns)


# --- IPVS itself (only where the kernel has it: `testbed vm`) -------------------------------------

def _ipvs_socket(ns):
    from pyroute2 import IPVS

    with netns.entered(ns):
        return IPVS()


def _link(ns, name):
    from pyroute2 import IPRoute

    with netns.entered(ns):
        ipr = IPRoute()
    try:
        links = ipr.link("get", ifname=name)
        return links[0]
    finally:
        ipr.close()


def _sysctl(ns, key):
    with netns.entered(ns), open("/proc/sys/" + key.replace(".", "/")) as f:
        return f.read().strip()


class TestIpvsKernel:
    pytestmark: ClassVar[list] = [pytest.mark.kernel, pytest.mark.kernel_feature("ipvs")]

    def test_apply_read_change_reconcile_cleanup(self, ns):
        # `ns` is fresh (loopback down, no address, so no local routing table): the kernel takes
        # real servers only once the first VIP is bound on kube-ipvs0 (see FakeIPVS).
        p1 = ipvs.plan(V(WEB, NP, STICKY, SH, MH, EMPTY, LOCAL))
        kipvs.apply(ns, None, p1)
        got = kipvs.read(ns)
        assert got == kipvs.table(p1)
        svcs = got["services"]
        assert all(d["forward"] == "masq" for s in svcs.values() for d in s["destinations"].values())
        assert svcs["10.96.0.10:80/TCP"]["scheduler"] == "rr"
        assert len(svcs["10.96.0.10:80/TCP"]["destinations"]) == 3
        assert (svcs["10.96.0.45:80/TCP"]["persistence"], svcs["10.96.0.45:80/TCP"]["flags"]) == (10800, 0x1)
        assert svcs["10.96.0.47:443/TCP"]["scheduler"] == "sh"
        assert (svcs["10.96.0.48:8080/TCP"]["scheduler"], svcs["10.96.0.48:8080/TCP"]["flags"]) == ("mh", 0x10)
        assert svcs["10.96.0.60:80/TCP"]["destinations"] == {}  # no endpoints: the service stays, empty
        assert {k for k in svcs if k.endswith(":30053/UDP")} == {"192.168.0.10:30053/UDP", "172.18.0.2:30053/UDP"}
        assert list(svcs["203.0.113.10:80/TCP"]["destinations"]) == ["10.244.1.2:8080"]  # eTP=Local
        link = _link(ns, "kube-ipvs0")
        assert link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "dummy"
        assert link.get_attr("IFLA_IFALIAS") == kipvs.DUMMY_ALIAS
        assert got["addresses"] == sorted(p1.addresses)
        for key, value in ipvs.SYSCTLS:
            assert _sysctl(ns, key) == value
        assert _sets(ns) == _want_sets(p1)
        assert _saved_glue(ns) == _want_glue(p1)

        # Prove the next apply works by difference: hand-change an object the change leaves alone.
        sock = _ipvs_socket(ns)
        try:
            sticky = p1.virtual_server("10.96.0.45:80/TCP")
            sock.dest("set", service=kipvs._service_key("tcp", sticky.ip, sticky.port),
                      dest=kipvs._dest(dataclasses.replace(sticky.real_servers[0], weight=7)))
        finally:
            sock.close()

        web2 = dataclasses.replace(WEB, endpoints=WEB.endpoints[1:] + (E("10.244.1.11", 9376, node=N),))
        np2 = dataclasses.replace(NP, scheduler="lc")
        new_svc = SP("ns9", "new", "", "TCP", 9000, "10.96.0.90", endpoints=(E("10.244.2.9", 9000, node="node-b"),))
        p2 = ipvs.plan(V(web2, np2, STICKY, SH, MH, LOCAL, new_svc))  # EMPTY gone
        kipvs.apply(ns, p1, p2)
        want = kipvs.table(p2)
        want["services"]["10.96.0.45:80/TCP"]["destinations"]["10.244.1.3:80"]["weight"] = 7  # untouched
        assert kipvs.read(ns) == want
        assert _sets(ns) == _want_sets(p2)

        kipvs.apply(ns, None, p2)  # from live state: the hand-made weight is reconciled too
        assert kipvs.read(ns) == kipvs.table(p2)

        kipvs.cleanup(ns)
        assert kipvs.read(ns) == {"services": {}, "addresses": []}
        with pytest.raises(NetlinkError):
            _link(ns, "kube-ipvs0")
        assert _sets(ns) == {}
        assert "KUBE-" not in kiptables.save(ns)

    def test_full_apply_deletes_foreign_virtual_servers(self, ns):
        from pyroute2.ipvs import IPVSService

        sock = _ipvs_socket(ns)
        try:
            sock.service("add", service=IPVSService(addr="10.1.1.1", port=1234, protocol=6, sched_name="rr"))
        finally:
            sock.close()
        plan = ipvs.plan(V(WEB))
        kipvs.apply(ns, None, plan)  # like cleanLegacyService: only the plan's services remain
        assert kipvs.read(ns) == kipvs.table(plan)
        kipvs.cleanup(ns)

    def test_ipvsadm_save_matches_the_render(self, ns):
        if not _tool("ipvsadm-save"):
            pytest.skip("needs ipvsadm")
        plan = ipvs.plan(V(WEB, NP, STICKY, SH, MH, EMPTY))
        kipvs.apply(ns, None, plan)
        try:
            saved = _run(ns, _tool("ipvsadm-save"), "-n")
            assert sorted(saved.splitlines()) == sorted(ipvs.ipvsadm_save(plan.virtual_servers).splitlines())
        finally:
            kipvs.cleanup(ns)
