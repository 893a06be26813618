"""Namespaces, veth pairs, bridges, addresses and routes through in-process netlink (pyroute2).

Anatomy (all inside namespaces the lab owns; the root namespace is never touched):
  <lab>-fabric      bridge `fabric0`; one veth port per node and client
  <lab>-<host>      a node or client: `eth0` on the fabric; a node also has bridge `cbr0` (its pod
                    gateway), routes to the other nodes' pod CIDRs, forwarding and br_netfilter on
  <lab>-<ns>.<pod>  a pod: `eth0` (veth to its node's `cbr0`, hairpin on), default route via cbr0
Every namespace's `lo` and every link we make carry the alias `testbed:<lab>:...`: `down` uses it to
tell what is ours without the state file.

Pods, the many, are wired through `fastlink` (plain rtnetlink, a few writes per pod); the rest, a
handful of links per lab, through pyroute2.
"""
from __future__ import annotations

import errno
import hashlib
import os
from contextlib import contextmanager

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import fastlink, netns

FABRIC_BRIDGE = "fabric0"
POD_BRIDGE = "cbr0"
ALIAS_PREFIX = "testbed:"


def owner_alias(lab: str, role: str, name: str) -> str:
    return fit_name(f"{ALIAS_PREFIX}{lab}:{role}:{name}", 250)  # IFALIASZ is 256 with its NUL


def fabric_ns(lab: str) -> str:
    return f"{lab}-fabric"


def host_ns(lab: str, host: str) -> str:
    return f"{lab}-{host}"


def pod_ns(lab: str, namespace: str, pod: str) -> str:
    return fit_name(f"{lab}-{namespace}.{pod}")


def netns_of(lab: str, pod) -> str:
    """The network namespace a pod runs in: its own, or its node's for a hostNetwork pod."""
    if getattr(pod, "host_network", False):
        return host_ns(lab, pod.node)
    return pod_ns(lab, pod.namespace, pod.name)


def fit_name(name: str, limit: int = 200) -> str:
    """A name that fits in a file name (a netns under /run/netns, a log): Kubernetes allows 253-character
    pod names in 63-character namespaces, more than NAME_MAX; a long one keeps its start and a hash."""
    if len(name) <= limit:
        return name
    return f"{name[:limit - 13]}~{hashlib.sha1(name.encode()).hexdigest()[:12]}"


def short_link(prefix: str, key: str) -> str:
    """A link name within the kernel's 15 characters, stable for the same key."""
    return prefix + hashlib.sha1(key.encode()).hexdigest()[: 15 - len(prefix)]


class Netlink:
    """One netlink socket per namespace, opened inside it and reused for the whole build: a pyroute2
    `IPRoute` (`ipr_of(ns)`) and a `fastlink.RtSocket` (`ipr_of.fast(ns)`), each made on first use."""

    def __init__(self):
        self._socks: dict[str, IPRoute] = {}
        self._fast: dict[str, fastlink.RtSocket] = {}
        self._bridges: dict[tuple[str, str], int] = {}

    def __call__(self, ns: str) -> IPRoute:
        sock = self._socks.get(ns)
        if sock is None:
            with netns.entered(ns):
                sock = IPRoute()
            self._socks[ns] = sock
        return sock

    def fast(self, ns: str) -> fastlink.RtSocket:
        sock = self._fast.get(ns)
        if sock is None:
            sock = self._fast[ns] = fastlink.RtSocket(ns)
        return sock

    def bridge_index(self, ns: str, bridge: str) -> int:
        key = (ns, bridge)
        if key not in self._bridges:
            try:
                self._bridges[key] = self.fast(ns).link_index(bridge)
            except fastlink.NetlinkError as e:
                if e.errno != errno.ENODEV:
                    raise
                raise LookupError(f"no link {bridge} in {ns}") from None
        return self._bridges[key]

    def forget(self, ns: str) -> None:
        self._bridges = {k: v for k, v in self._bridges.items() if k[0] != ns}
        for socks in (self._socks, self._fast):
            sock = socks.pop(ns, None)
            if sock is not None:
                sock.close()

    def close(self) -> None:
        for ns in set(self._socks) | set(self._fast):
            self.forget(ns)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _index(ipr: IPRoute, ifname: str) -> int:
    """One RTM_GETLINK by name (link_lookup dumps every link: quadratic on a bridge with many pods)."""
    try:
        return ipr.link("get", ifname=ifname)[0]["index"]
    except NetlinkError:
        raise LookupError(f"no link {ifname}") from None


def make_namespace(lab: str, ns: str, role: str, name: str, ipr_of: Netlink) -> None:
    """Create a namespace and mark it as the lab's (alias on its `lo`), with `lo` up."""
    netns.create(ns)
    ipr = ipr_of(ns)
    ipr.link("set", index=1, state="up", ifalias=owner_alias(lab, role, name))


def ns_owner(ns: str) -> str | None:
    """The owner alias on a namespace's `lo`, or None when it is not one of ours."""
    try:
        with netns.entered(ns):
            ipr = IPRoute()
    except OSError:
        return None
    try:
        links = ipr.get_links(1)
        return links[0].get_attr("IFLA_IFALIAS") if links else None
    except NetlinkError:
        return None
    finally:
        ipr.close()


@contextmanager
def _ns_fd(ns: str):
    fd = os.open(netns.path(ns), os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def veth_into(ipr: IPRoute, ifname: str, peer_ns: str, peer_name: str, alias: str, master: int | None = None) -> int:
    """A veth pair: `ifname` here (up, optionally enslaved, with `alias`) and `peer_name` inside `peer_ns`."""
    with _ns_fd(peer_ns) as fd:
        kw = {"master": master} if master else {}
        ipr.link("add", ifname=ifname, kind="veth", state="up", peer={"ifname": peer_name, "net_ns_fd": fd}, **kw)
    idx = _index(ipr, ifname)
    ipr.link("set", index=idx, ifalias=alias)  # the kernel ignores IFLA_IFALIAS when it creates a link
    return idx


def set_sysctls(ns: str, values: dict[str, str]) -> None:
    with netns.entered(ns):
        for key, value in values.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)


def bridge_mac() -> str:
    """A random locally administered unicast MAC for a bridge, given when it is created.

    A bridge whose address was never set takes the lowest MAC of its ports and changes it as ports
    come and go (a new pod's veth, a deleted pod's). Clients keep the old gateway MAC in their ARP
    cache until it goes stale (15–45 s, then 5 s of delay and the probes); a frame to it is passed
    up as another host's (PACKET_OTHERHOST) and dropped by IP. A Service DNATed in br_netfilter's
    PREROUTING is re-addressed before that (iptables/nftables modes survive it); an IPVS ClusterIP
    is local on kube-ipvs0, so its SYNs were lost (the delete-backend row's timeouts in the guest).
    A set address (NET_ADDR_SET) is kept: the CNI bridge plugin sets the bridge's MAC for this
    reason (containernetworking/cni#285, kubernetes#30783)."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def build_fabric(lab: str, ipr_of: Netlink) -> None:
    ns = fabric_ns(lab)
    make_namespace(lab, ns, "fabric", "fabric", ipr_of)
    ipr = ipr_of(ns)
    ipr.link("add", ifname=FABRIC_BRIDGE, kind="bridge", address=bridge_mac(),
             ifalias=owner_alias(lab, "link", FABRIC_BRIDGE))
    # No STP, no forwarding delay: ports forward as soon as they are up.
    ipr.link("set", index=_index(ipr, FABRIC_BRIDGE), state="up", kind="bridge", br_forward_delay=0, br_stp_state=0)


def fabric_gateway(lab: str, ip: str, prefixlen: int, ipr_of: Netlink) -> None:
    """The fabric's own address: the hosts' default gateway, so a node routes (and its FORWARD
    rules see) traffic to unallocated addresses as a real node does. Nothing forwards past it."""
    ipr = ipr_of(fabric_ns(lab))
    ipr.addr("add", index=_index(ipr, FABRIC_BRIDGE), address=ip, prefixlen=prefixlen)


def attach_host(lab: str, role: str, host: str, ip: str, prefixlen: int, gateway: str, ipr_of: Netlink) -> None:
    """A node or client namespace with `eth0` on the fabric bridge."""
    ns = host_ns(lab, host)
    make_namespace(lab, ns, role, host, ipr_of)
    fab = ipr_of(fabric_ns(lab))
    veth_into(fab, short_link("f", host), ns, "eth0", owner_alias(lab, "link", host),
              master=_index(fab, FABRIC_BRIDGE))
    ipr = ipr_of(ns)
    eth0 = _index(ipr, "eth0")
    ipr.link("set", index=eth0, state="up", ifalias=owner_alias(lab, "link", f"{host}/eth0"))
    ipr.addr("add", index=eth0, address=ip, prefixlen=prefixlen)
    ipr.route("add", dst="0.0.0.0/0", gateway=gateway)


NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",  # bridged pod↔pod replies must see conntrack (un-DNAT)
}
# kube-proxy's iptables mode sets it for localhost NodePorts (its proxier does, here too); the
# nftables and IPVS modes leave it alone (#92938), so those nodes stay closed to CVE-2020-8558.
ROUTE_LOCALNET = "net.ipv4.conf.all.route_localnet"


TCP_BE_LIBERAL = "net.netfilter.nf_conntrack_tcp_be_liberal"  # per network namespace


def setup_node(lab: str, node: str, gateway: str, pod_prefixlen: int, routes: list[tuple[str, str]], ipr_of: Netlink,
               tcp_be_liberal: bool = False) -> None:
    """The node's pod bridge with the pods' gateway address, and routes to the other nodes' pod CIDRs.
    `tcp_be_liberal`: kube-proxy's conntrack.tcpBeLiberal, which sets the node's sysctl (its own namespace's)."""
    ns = host_ns(lab, node)
    ipr = ipr_of(ns)
    ipr.link("add", ifname=POD_BRIDGE, kind="bridge", address=bridge_mac(),
             ifalias=owner_alias(lab, "link", f"{node}/{POD_BRIDGE}"))
    br = _index(ipr, POD_BRIDGE)
    ipr.link("set", index=br, state="up", kind="bridge", br_forward_delay=0, br_stp_state=0)
    ipr.addr("add", index=br, address=gateway, prefixlen=pod_prefixlen)
    for cidr, via in routes:
        ipr.route("add", dst=cidr, gateway=via)
    set_sysctls(ns, {**NODE_SYSCTLS, **({TCP_BE_LIBERAL: "1"} if tcp_be_liberal else {})})


def add_pod(lab: str, node: str, namespace: str, pod: str, ip: str, prefixlen: int, gateway: str, ipr_of: Netlink,
            hairpin: bool = True) -> str:
    """A pod namespace wired to its node's bridge; returns the namespace name.

    Three netlink writes (fastlink): on the node, the veth create (its echo gives both ends' indexes)
    and then its alias + hairpin; in the pod, `lo` up + alias, eth0's address, eth0 up and the default
    route in one write. Errors raise `fastlink.NetlinkError` naming the request and namespace.

    Neither veth end gets an IPv6 link-local address (addrgenmode none; the lab is IPv4): otherwise
    each new pod's DAD, MLD and router solicitations are flooded by the bridge to every other pod,
    which made a 1,000-pod build 3× slower per pod. A real IPv4 pod has one; nothing here uses it."""
    ns = pod_ns(lab, namespace, pod)
    alias = owner_alias(lab, "pod", f"{namespace}/{pod}")
    netns.create(ns)
    node_ns = host_ns(lab, node)
    master = ipr_of.bridge_index(node_ns, POD_BRIDGE)
    with _ns_fd(ns) as fd:
        # hairpin (kubelet's hairpin-veth): a pod may reach itself through a Service
        _, eth0 = ipr_of.fast(node_ns).add_veth(short_link("veth", f"{namespace}/{pod}"), "eth0", fd, alias=alias,
                                                master=master, up=True, hairpin=hairpin, ipv6_link_local=False)
        with fastlink.RtSocket(ns, ns_fd=fd) as sock:
            if eth0 is None:  # a kernel without NLM_F_ECHO on create (< 6.3)
                eth0 = sock.link_index("eth0")
            (sock.batch()
             .set_link(1, up=True, alias=alias)
             .no_ipv6_link_local(eth0)
             .add_address(eth0, ip, prefixlen)
             .set_link(eth0, up=True)
             .add_route("0.0.0.0/0", gateway)
             .commit())
    return ns


def remove_pod(lab: str, node: str, namespace: str, pod: str, ipr_of: Netlink) -> None:
    """Delete the pod's host-side veth (its peer goes with it) and the namespace."""
    try:
        ipr_of.fast(host_ns(lab, node)).delete_link(short_link("veth", f"{namespace}/{pod}"))
    except (OSError, NetlinkError, LookupError):
        pass
    netns.delete(pod_ns(lab, namespace, pod))
