"""kube-proxy's IPVS mode in a namespace: kube-ipvs0, virtual/real servers, ipsets, iptables glue.

`apply(ns, previous, plan)` reconciles by difference, as kube-proxy's syncProxyRules does: it
computes `render.ipvs.diff(previous, plan)` and performs only that, in upstream's order —
sysctls (start-up), ipsets, then per virtual server as syncService/syncEndpoint do it: the
virtual server (add/edit), its address bound on kube-ipvs0, its real servers; then the iptables
glue (one `iptables-restore --noflush`, plus the jumps from built-in chains), then addresses
unbound, stale virtual servers deleted and stale sets destroyed. (The bind before the real servers
matters: the kernel rejects a real server with EINVAL while the namespace has no local routing
table, i.e. loopback down and no address yet; binding the first VIP creates that table.)
previous=None reads the live state first (kube-proxy after a restart): live virtual servers
that the plan lacks are deleted, like upstream's cleanLegacyService.

Netlink goes through pyroute2 sockets opened inside the namespace (`netns.entered`). pyroute2
0.9.7 quirks handled here: IPVSDest defaults to direct routing (fwd_method=3), so every
destination is written with fwd_method=0 (masquerade) explicitly; `service("update")` sends
IPVS_CMD_DEL_SERVICE, so edits use "set"; `from_message()` reports the default fwd_method
instead of the kernel's, so dumps are parsed from the raw attributes; there is no flush helper,
so cleanup deletes virtual servers one by one.

Graceful termination (graceful_termination.go): a real server that leaves a TCP virtual server
while it still has connections is set to weight 0 instead of deleted. Upstream retries the
deletion every minute; here leftover weight-0 real servers of a virtual server are retried
whenever that virtual server's real servers change again, or on a full apply (previous=None).
UDP/SCTP real servers are deleted at once (expire_nodest_conn=1 drops their flows).
"""
from __future__ import annotations

import errno
import os
import socket
from contextlib import contextmanager

from pyroute2 import IPVS, IPRoute
from pyroute2.ipvs import IPVSDest, IPVSService
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import KernelFeatureError
from ..render import ipvs as ripvs
from ..render.ipvs import IpvsPlan, RealServer, VirtualServer
from . import ipset as kipset
from . import iptables as kiptables
from . import netns

NO_IPVS = "this kernel has no IPVS (CONFIG_IP_VS): run it with `testbed vm -- …`"
DUMMY_ALIAS = "kube-proxy IPVS service addresses (testbed)"
DUMMY_KIND = "dummy"  # tests on kernels without dummy links substitute another kind
PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": 132}
_PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}
FWD_MASQ = 0
FWD_METHODS = {0: "masq", 1: "local", 2: "tunnel", 3: "route", 4: "bypass"}
_FWD_MASK = 0x7
_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL)


# --- sockets and feature detection ---------------------------------------------------------------

def _open_ipvs() -> IPVS:
    """An IPVS generic-netlink socket in the current thread's namespace. Looking the family up
    also autoloads ip_vs on a modular kernel; failure means there is no IPVS."""
    try:
        return IPVS()
    except (NetlinkError, OSError) as e:
        raise KernelFeatureError(NO_IPVS) from e


def available(ns: str) -> bool:
    """Whether the namespace can use IPVS (/proc/net/ip_vs there, or the netlink family exists)."""
    with netns.entered(ns):
        if os.path.exists("/proc/thread-self/net/ip_vs"):
            return True
        try:
            _open_ipvs().close()
        except KernelFeatureError:
            return False
        return True


def require(ns: str) -> None:
    if not available(ns):
        raise KernelFeatureError(NO_IPVS)


@contextmanager
def _sockets(ns: str):
    with netns.entered(ns):
        ipvs = _open_ipvs()
        ipr = IPRoute()
    try:
        yield ipvs, ipr
    finally:
        ipvs.close()
        ipr.close()


# --- netlink objects -----------------------------------------------------------------------------

def _service(vs: VirtualServer) -> IPVSService:
    """A full service spec (scheduler, flags with a 0xFFFF mask, timeout; netmask /32 added by
    pyroute2 for IPv4), as kube-proxy's toIPVSService writes it."""
    return IPVSService(addr=vs.ip, port=vs.port, protocol=PROTOCOLS[vs.protocol], sched_name=vs.scheduler,
                       flags={"flags": vs.flags, "mask": 0xFFFF}, timeout=vs.timeout)


def _service_key(protocol: str, ip: str, port: int) -> IPVSService:
    return IPVSService(addr=ip, port=port, protocol=PROTOCOLS[protocol])


def _dest(rs: RealServer) -> IPVSDest:
    # fwd_method explicitly: pyroute2's IPVSDest defaults to 3 (direct routing).
    return IPVSDest(addr=rs.ip, port=rs.port, fwd_method=FWD_MASQ if rs.masq else 3, weight=rs.weight)


def parse_service(msg) -> dict:
    """An IPVS_CMD_GET_SERVICE reply -> {protocol, ip, port, scheduler, flags, persistence, fwmark}.
    flags has the kernel's HASHED bit cleared; persistence is the timeout when `persistent`."""
    a = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
    proto = a.get_attr("IPVS_SVC_ATTR_PROTOCOL")
    flags = (a.get_attr("IPVS_SVC_ATTR_FLAGS") or {}).get("flags", 0) & ~ripvs.FLAG_HASHED
    timeout = a.get_attr("IPVS_SVC_ATTR_TIMEOUT") or 0
    return {
        "protocol": _PROTOCOL_NAMES.get(proto, str(proto)),
        "ip": a.get_attr("IPVS_SVC_ATTR_ADDR"),
        "port": a.get_attr("IPVS_SVC_ATTR_PORT"),
        "fwmark": a.get_attr("IPVS_SVC_ATTR_FWMARK") or 0,
        "scheduler": a.get_attr("IPVS_SVC_ATTR_SCHED_NAME"),
        "flags": flags,
        "persistence": timeout if flags & ripvs.FLAG_PERSISTENT else None,
    }


def parse_dest(msg) -> dict:
    """An IPVS_CMD_GET_DEST reply -> {ip, port, weight, forward, active, inactive, conns} (raw
    attributes: pyroute2's from_message() would report its own default fwd_method); conns is the
    real server's count of connections scheduled to it since it was added."""
    a = msg.get_attr("IPVS_CMD_ATTR_DEST")
    fwd = (a.get_attr("IPVS_DEST_ATTR_FWD_METHOD") or 0) & _FWD_MASK
    stats = a.get_attr("IPVS_DEST_ATTR_STATS64") or a.get_attr("IPVS_DEST_ATTR_STATS")
    return {
        "ip": a.get_attr("IPVS_DEST_ATTR_ADDR"),
        "port": a.get_attr("IPVS_DEST_ATTR_PORT"),
        "weight": a.get_attr("IPVS_DEST_ATTR_WEIGHT"),
        "forward": FWD_METHODS.get(fwd, str(fwd)),
        "active": a.get_attr("IPVS_DEST_ATTR_ACTIVE_CONNS") or 0,
        "inactive": a.get_attr("IPVS_DEST_ATTR_INACT_CONNS") or 0,
        "conns": (stats.get_attr("IPVS_STATS_ATTR_CONNS") or 0) if stats is not None else 0,
    }


def _dump_dests(ipvs: IPVS, protocol: str, ip: str, port: int) -> list[dict]:
    return [parse_dest(m) for m in tuple(ipvs.dest("dump", service=_service_key(protocol, ip, port)))]


def _key(protocol: str, ip: str, port: int) -> str:
    return f"{ip}:{port}/{protocol.upper()}"


# --- reading -------------------------------------------------------------------------------------

def _dummy_index(ipr: IPRoute, name: str) -> int | None:
    try:
        return ipr.link("get", ifname=name)[0]["index"]
    except NetlinkError as e:
        if e.code in (errno.ENODEV, errno.ENOENT):
            return None
        raise


def _addresses(ipr: IPRoute, index: int | None) -> list[str]:
    if index is None:
        return []
    return sorted(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET, index=index))


def _read(ipvs: IPVS, ipr: IPRoute, dummy: str, stats: bool) -> dict:
    services: dict[str, dict] = {}
    for msg in tuple(ipvs.service("dump")):  # the whole dump before the per-service requests
        s = parse_service(msg)
        if s["ip"] is None:  # fwmark service: never kube-proxy's
            continue
        dests = {}
        for d in _dump_dests(ipvs, s["protocol"], s["ip"], s["port"]):
            if not stats:
                d = {k: v for k, v in d.items() if k not in ("active", "inactive", "conns")}
            dests[f"{d['ip']}:{d['port']}"] = d
        s.pop("fwmark")
        s["destinations"] = dict(sorted(dests.items()))
        services[_key(s["protocol"], s["ip"], s["port"])] = s
    return {"services": dict(sorted(services.items())), "addresses": _addresses(ipr, _dummy_index(ipr, dummy))}


def read(ns: str, *, stats: bool = False, dummy: str = ripvs.DUMMY_DEVICE) -> dict:
    """The live IPVS table of the namespace, in the shape `table(plan)` gives:

    {"services": {"10.96.0.10:80/TCP": {"protocol": "tcp", "ip": …, "port": …, "scheduler": "rr",
                  "flags": 0, "persistence": None,
                  "destinations": {"10.244.1.3:9376": {"ip": …, "port": …, "weight": 1, "forward": "masq"}}}},
     "addresses": [addresses on kube-ipvs0, sorted]}
    stats=True adds each destination's "active"/"inactive" connection counts and "conns" (scheduled so far).
    """
    with _sockets(ns) as (ipvs, ipr):
        return _read(ipvs, ipr, dummy, stats)


def table(plan: IpvsPlan) -> dict:
    """What read() returns once `plan` is applied (no other virtual servers in the namespace)."""
    services = {}
    for vs in plan.virtual_servers:
        services[vs.key] = {
            "protocol": vs.protocol, "ip": vs.ip, "port": vs.port, "scheduler": vs.scheduler,
            "flags": vs.flags, "persistence": vs.persistence,
            "destinations": dict(sorted((rs.address, {
                "ip": rs.ip, "port": rs.port, "weight": rs.weight, "forward": "masq" if rs.masq else "route",
            }) for rs in vs.real_servers)),
        }
    return {"services": dict(sorted(services.items())), "addresses": sorted(plan.addresses)}


def save_text(tbl: dict) -> str:
    """A read()/table() result in `ipvsadm-save -n` form (services and real servers sorted)."""
    servers = []
    for s in tbl["services"].values():
        rss = tuple(RealServer(d["ip"], d["port"], d["weight"], d["forward"] == "masq")
                    for d in s["destinations"].values())
        servers.append(VirtualServer(s["protocol"], s["ip"], s["port"], s["scheduler"], s["persistence"], s["flags"], rss))
    return ripvs.ipvsadm_save(servers)


def _live_plan(ipvs: IPVS, ipr: IPRoute, ns: str, plan: IpvsPlan) -> IpvsPlan:
    """The namespace's current state as an IpvsPlan, for a full reconcile (previous=None).

    iptables, jumps and sysctls are left empty so they are always (re)applied; ipsets are the
    live sets kube-proxy owns (kipset.apply re-reads them and fixes wrong types)."""
    tbl = _read(ipvs, ipr, plan.dummy, stats=False)
    servers = []
    for s in tbl["services"].values():
        rss = tuple(RealServer(d["ip"], d["port"], d["weight"], d["forward"] == "masq")
                    for d in s["destinations"].values())
        servers.append(VirtualServer(s["protocol"], s["ip"], s["port"], s["scheduler"], s["persistence"], s["flags"], rss))
    live_sets = kipset.list_sets(ns)
    sets = tuple(live_sets[name] for name in ripvs.IPSET_NAMES if name in live_sets)
    return IpvsPlan(addresses=tuple(tbl["addresses"]), virtual_servers=tuple(servers), ipsets=sets, dummy=plan.dummy)


# --- applying ------------------------------------------------------------------------------------

def _ensure_dummy(ipr: IPRoute, name: str, alias: str | None) -> int:
    """EnsureDummyDevice: create it if missing (left down, as kube-proxy leaves it)."""
    index = _dummy_index(ipr, name)
    if index is not None:
        return index
    try:
        ipr.link("add", ifname=name, kind=DUMMY_KIND)
    except NetlinkError as e:
        if e.code == errno.EOPNOTSUPP:
            raise KernelFeatureError("this kernel has no dummy links (CONFIG_DUMMY), which IPVS mode's "
                                     "kube-ipvs0 needs: run it with `testbed vm -- …`") from e
        if e.code != errno.EEXIST:
            raise
    index = _dummy_index(ipr, name)
    if alias:
        ipr.link("set", index=index, ifalias=alias)  # the kernel ignores IFLA_IFALIAS on create
    return index


def _add_service(ipvs: IPVS, vs: VirtualServer) -> None:
    try:
        ipvs.service("add", service=_service(vs))
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise
        ipvs.service("set", service=_service(vs))


def _add_dest(ipvs: IPVS, vs: VirtualServer, rs: RealServer) -> None:
    try:
        ipvs.dest("add", service=_service_key(vs.protocol, vs.ip, vs.port), dest=_dest(rs))
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise
        ipvs.dest("set", service=_service_key(vs.protocol, vs.ip, vs.port), dest=_dest(rs))


def _delete_dest(ipvs: IPVS, vs: VirtualServer, ip: str, port: int) -> None:
    try:
        ipvs.dest("del", service=_service_key(vs.protocol, vs.ip, vs.port), dest=IPVSDest(addr=ip, port=port))
    except NetlinkError as e:
        if e.code not in _GONE:
            raise


def _sync_dests(ipvs: IPVS, vs: VirtualServer, graceful: bool) -> None:
    """syncEndpoint against the live real servers of one virtual server: add the missing ones, fix
    weights, remove the rest (TCP ones with connections only quiesced to weight 0)."""
    want = {rs.address: rs for rs in vs.real_servers}
    live = {f"{d['ip']}:{d['port']}": d for d in _dump_dests(ipvs, vs.protocol, vs.ip, vs.port)}
    for addr, rs in want.items():
        d = live.get(addr)
        if d is None:
            _add_dest(ipvs, vs, rs)
        elif d["weight"] != rs.weight or d["forward"] != ("masq" if rs.masq else "route"):
            ipvs.dest("set", service=_service_key(vs.protocol, vs.ip, vs.port), dest=_dest(rs))
    for addr, d in live.items():
        if addr in want:
            continue
        busy = d["active"] + d["inactive"] > 0
        if graceful and vs.protocol == "tcp" and busy:
            if d["weight"] != 0:
                ipvs.dest("set", service=_service_key(vs.protocol, vs.ip, vs.port),
                          dest=_dest(RealServer(d["ip"], d["port"], 0, d["forward"] == "masq")))
        else:
            _delete_dest(ipvs, vs, d["ip"], d["port"])


def _write_sysctls(ns: str, sysctls) -> None:
    with netns.entered(ns):
        for key, value in sysctls:
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)


def _jumps_text(ns: str, plan: IpvsPlan) -> dict[str, list[str]]:
    """`-I CHAIN 1 …` for each jump not already there, in EnsureRule(Prepend) call order."""
    saved = kiptables.save(ns)
    present: set[tuple[str, str]] = set()
    table = ""
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A "):
            present.add((table, line))
    out: dict[str, list[str]] = {}
    for table, chain, comment, target in plan.jumps:
        spec = f'-m comment --comment "{comment}" -j {target}'
        if (table, f"-A {chain} {spec}") not in present:
            out.setdefault(table, []).append(f"-I {chain} 1 {spec}")
    return out


def _restore_text(plan: IpvsPlan, jumps: dict[str, list[str]]) -> str:
    """plan.iptables with the missing jumps inserted after each table's chain declarations."""
    out: list[str] = []
    table = ""
    pending: list[str] = []
    for line in plan.iptables.splitlines():
        if line.startswith("*"):
            table = line[1:]
            pending = list(jumps.get(table, ()))
        elif pending and not line.startswith(":"):
            out += pending
            pending = []
        out.append(line)
    return "\n".join(out) + "\n"


def apply(ns: str, previous: IpvsPlan | None, plan: IpvsPlan, *, graceful: bool = True,
          alias: str | None = DUMMY_ALIAS) -> None:
    """Take the namespace from `previous` (what the last apply left; None = unknown, read it) to
    `plan`, touching only what differs. Raises KernelFeatureError without IPVS (nothing changed)."""
    require(ns)
    with _sockets(ns) as (ipvs, ipr):
        live = previous is None
        if live:
            previous = _live_plan(ipvs, ipr, ns, plan)
        d = ripvs.diff(previous, plan)
        if d.sysctls:
            _write_sysctls(ns, plan.sysctls)  # after the IPVS socket: ip_vs is loaded by now
        # ipsets first: the iptables rules below match on them.
        if live:
            kipset.apply(ns, plan.ipsets, None, destroy_stale=False)
        else:
            kipset.restore(ns, kipset.restore_text(d.ipsets))
        index = _ensure_dummy(ipr, plan.dummy, alias)
        unbound = list(d.bind)

        def bind(addr: str) -> None:
            if addr not in unbound:
                return
            unbound.remove(addr)
            try:
                ipr.addr("add", index=index, address=addr, prefixlen=32)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise

        # Upstream's per-service order: syncService (add/edit the virtual server, then bind its
        # address on kube-ipvs0), then syncEndpoint. The bind must precede the real servers: the
        # kernel (ip_vs_new_dest) refuses a destination whose inet_addr_type() is not
        # unicast/local, and in a namespace with no local routing table yet (loopback down, no
        # address anywhere) every address looks like broadcast -> EINVAL. The /32 on kube-ipvs0
        # creates that table.
        for vs in d.add_services:
            _add_service(ipvs, vs)
            bind(vs.ip)
            for rs in vs.real_servers:
                _add_dest(ipvs, vs, rs)
        for vs in d.edit_services:
            ipvs.service("set", service=_service(vs))  # never "update": pyroute2 maps it to DEL_SERVICE
        for addr in tuple(unbound):  # addresses of services that already existed (a full reconcile)
            bind(addr)
        for ch in d.destinations:
            _sync_dests(ipvs, ch.vs, graceful)
        if d.iptables or d.jumps:
            jumps = _jumps_text(ns, plan) if (d.jumps or live) else {}
            kiptables.restore(ns, _restore_text(plan, jumps))
        for addr in d.unbind:
            try:
                ipr.addr("del", index=index, address=addr, prefixlen=32)
            except NetlinkError as e:
                if e.code not in _GONE:
                    raise
        for vs in d.delete_services:
            try:
                ipvs.service("del", service=_service_key(vs.protocol, vs.ip, vs.port))
            except NetlinkError as e:
                if e.code not in _GONE:
                    raise
        if d.destroy_ipsets and not live:
            kipset.restore(ns, "".join(f"destroy {name}\n" for name in d.destroy_ipsets))


def apply_glue(ns: str, previous: IpvsPlan | None, plan: IpvsPlan) -> None:
    """Only the ipsets and the iptables glue of `plan` (no IPVS, no kube-ipvs0): what runs on a
    kernel without IPVS, for testing those parts on their own."""
    if previous is None:
        kipset.apply(ns, plan.ipsets, None, destroy_stale=False)
        kiptables.restore(ns, _restore_text(plan, _jumps_text(ns, plan)))
        return
    d = ripvs.diff(previous, plan)
    kipset.restore(ns, kipset.restore_text(d.ipsets))
    if d.iptables or d.jumps:
        kiptables.restore(ns, _restore_text(plan, _jumps_text(ns, plan) if d.jumps else {}))
    if d.destroy_ipsets:
        kipset.restore(ns, "".join(f"destroy {name}\n" for name in d.destroy_ipsets))


# --- cleanup -------------------------------------------------------------------------------------

_BUILTIN = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")}


def cleanup_iptables_text(saved: str) -> str:
    """iptables-restore input removing IPVS mode's chains (iptablesCleanupChains) and every jump to
    them from built-in chains. A chain another (non-kube-proxy-IPVS) chain still jumps to is left
    alone. "" when there is nothing to remove."""
    ours = {t: {c for tt, c in ripvs.IPTABLES_CHAINS if tt == t} for t in _BUILTIN}
    present: dict[str, set[str]] = {}
    rules: dict[str, list[str]] = {}
    table = ""
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            present.setdefault(table, set())
            rules.setdefault(table, [])
        elif line.startswith(":"):
            present[table].add(line[1:].split()[0])
        elif line.startswith("-A "):
            rules[table].append(line)
    out: list[str] = []
    for t, builtins in _BUILTIN.items():
        chains = ours[t] & present.get(t, set())
        if not chains:
            continue
        deletes, foreign_refs = [], set()
        for line in rules.get(t, ()):
            words = line.split()
            src = words[1]
            target = words[words.index("-j") + 1] if "-j" in words else (words[words.index("-g") + 1] if "-g" in words else "")
            if target not in chains:
                continue
            if src in builtins:
                deletes.append("-D" + line[2:])
            elif src not in chains:
                foreign_refs.add(target)
        chains -= foreign_refs
        if not chains and not deletes:
            continue
        order = [c for tt, c in ripvs.IPTABLES_CHAINS if tt == t and c in chains]
        out += [f"*{t}", *deletes, *[f":{c} - [0:0]" for c in order], *[f"-X {c}" for c in order], "COMMIT"]
    return "\n".join(out) + ("\n" if out else "")


def cleanup(ns: str, dummy: str = ripvs.DUMMY_DEVICE) -> None:
    """`kube-proxy --cleanup` for IPVS mode: every virtual server, kube-ipvs0, the IPVS-mode
    iptables chains and their jumps, then kube-proxy's ipsets (after the rules using them).
    Works on a kernel without IPVS too (then there are no virtual servers to remove)."""
    with netns.entered(ns):
        ipr = IPRoute()
        try:
            ipvs = _open_ipvs()
        except KernelFeatureError:
            ipvs = None
    try:
        if ipvs is not None:
            for msg in tuple(ipvs.service("dump")):
                s = parse_service(msg)
                key = (IPVSService(fwmark=s["fwmark"], af=socket.AF_INET) if s["ip"] is None
                       else _service_key(s["protocol"], s["ip"], s["port"]))
                try:
                    ipvs.service("del", service=key)
                except NetlinkError as e:
                    if e.code not in _GONE:
                        raise
        index = _dummy_index(ipr, dummy)
        if index is not None:
            ipr.link("del", index=index)
    finally:
        ipr.close()
        if ipvs is not None:
            ipvs.close()
    text = cleanup_iptables_text(kiptables.save(ns))
    if text:
        kiptables.restore(ns, text)
    kipset.destroy(ns)
