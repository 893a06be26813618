"""A minimal synchronous rtnetlink client: just what pod wiring needs, without pyroute2's event loop.

pyroute2 0.9 routes every request through an asyncio loop (~0.6–0.9 ms each); here a request is a
`struct`-packed message written to a plain NETLINK_ROUTE socket and its ack read back (~20 µs of
Python). Several requests can go out in one `send` (a `Batch`): the kernel handles the messages of
one write in order, each in the sender's context, so one write and one read cover them all.

A socket belongs to the namespace it was opened in: `RtSocket(ns)` opens it inside `ns` and every
request on it acts there. Errors raise `NetlinkError` (an `OSError`) naming the operation, e.g.
`[Errno 17] RTM_NEWLINK veth veth1234 (peer eth0): File exists`, with the kernel's extended-ack
message when it gave one.
"""
from __future__ import annotations

import errno as _errno
import ipaddress
import os
import socket
import struct

from . import netns

# netlink(7) / rtnetlink(7) constants
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_ECHO = 0x8
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_ACK_TLVS = 0x200  # in an ack: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NAMES = {16: "RTM_NEWLINK", 17: "RTM_DELLINK", 18: "RTM_GETLINK", 19: "RTM_SETLINK", 20: "RTM_NEWADDR",
             21: "RTM_DELADDR", 24: "RTM_NEWROUTE", 25: "RTM_DELROUTE"}

IFF_UP = 0x1
IFLA_IFNAME = 3
IFLA_LINK = 5
IFLA_MASTER = 10
IFLA_PROTINFO = 12
IFLA_LINKINFO = 18
IFLA_IFALIAS = 20
IFLA_AF_SPEC = 26
IFLA_NET_NS_FD = 28
IFLA_INET6_ADDR_GEN_MODE = 8
IN6_ADDR_GEN_MODE_NONE = 1
HAS_IPV6 = os.path.exists("/proc/sys/net/ipv6")  # booted with ipv6.disable=1: no inet6 settings at all
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFLA_BRPORT_MODE = 4  # hairpin

IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
RTA_GATEWAY = 5
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4  # what pyroute2 (and so testbed before) puts on the routes it adds
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_ATTR = struct.Struct("=HH")
_I32 = struct.Struct("=i")
_U32 = struct.Struct("=I")

RECV_TIMEOUT = 10.0


class NetlinkError(OSError):
    """A request the kernel refused: `errno` is the kernel's, `op` says which request it was."""

    def __init__(self, code: int, op: str, detail: str = ""):
        text = f"{op}: {os.strerror(code)}" + (f" ({detail})" if detail else "")
        super().__init__(code, text)
        self.code = code
        self.op = op
        self.detail = detail


# ----------------------------------------------------------------------------- encoding


def attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return _ATTR.pack(n, kind) + data + b"\0" * (-n & 3)


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def nest(kind: int, *parts: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def ifinfo(index: int = 0, flags: int = 0, change: int = 0, family: int = socket.AF_UNSPEC) -> bytes:
    return _IFINFO.pack(family, 0, index, flags, change)


def parse_attrs(buf: bytes | memoryview, off: int, end: int) -> dict[int, bytes]:
    """Top-level attributes of a message body as {type: payload} (flags bits stripped)."""
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        n, kind = _ATTR.unpack_from(buf, off)
        if n < 4:
            break
        out[kind & 0x3FFF] = bytes(buf[off + 4:off + n])
        off += (n + 3) & ~3
    return out


class Reply:
    """A data message the kernel sent back for a request (an RTM_GETLINK answer, an NLM_F_ECHO copy)."""

    __slots__ = ("body", "type")

    def __init__(self, type_: int, body: bytes):
        self.type = type_
        self.body = body

    @property
    def index(self) -> int:
        """ifi_index of a link message."""
        return _IFINFO.unpack_from(self.body, 0)[2]

    def attrs(self, header: int = _IFINFO.size) -> dict[int, bytes]:
        return parse_attrs(self.body, header, len(self.body))

    def attr_u32(self, kind: int) -> int | None:
        value = self.attrs().get(kind)
        return _U32.unpack_from(value)[0] if value is not None and len(value) >= 4 else None


# ----------------------------------------------------------------------------- socket


class RtSocket:
    """One NETLINK_ROUTE socket, opened in namespace `ns` (None: this thread's current one)."""

    def __init__(self, ns: str | None = None, ns_fd: int | None = None):
        if ns_fd is not None:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                netns.setns(ns_fd)
                try:
                    self._sock = self._open()
                finally:
                    netns.setns(own)
            finally:
                os.close(own)
        elif ns is not None:
            with netns.entered(ns):
                self._sock = self._open()
        else:
            self._sock = self._open()
        self._seq = 0
        self.ns = ns

    @staticmethod
    def _open() -> socket.socket:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            s.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)  # the kernel's reason with an error
            s.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # errors do not echo the whole request
        except OSError:
            pass
        s.bind((0, 0))
        s.settimeout(RECV_TIMEOUT)
        return s

    def close(self) -> None:
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def batch(self) -> Batch:
        return Batch(self)

    # -- transport

    def transact(self, requests: list[tuple[int, int, bytes, str]]) -> list[list[Reply]]:
        """Send every (type, flags, body, op) in one write, each with NLM_F_REQUEST|NLM_F_ACK, and
        read until every one is acknowledged. Returns each request's data replies; raises the first
        failed request's error (in request order) after all acks are in."""
        chunks = []
        pending: dict[int, int] = {}
        for i, (kind, flags, body, _) in enumerate(requests):
            self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
            pending[self._seq] = i
            chunks.append(_HDR.pack(_HDR.size + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, self._seq, 0))
            chunks.append(body)
        self._sock.send(b"".join(chunks))
        replies: list[list[Reply]] = [[] for _ in requests]
        errors: dict[int, tuple[int, str]] = {}
        while pending:
            try:
                buf = self._sock.recv(65536)
            except TimeoutError:
                first = requests[min(pending.values())][3]
                raise NetlinkError(_errno.ETIMEDOUT, first, "no ack from the kernel") from None
            off, end = 0, len(buf)
            while off + _HDR.size <= end:
                length, kind, flags, seq, _ = _HDR.unpack_from(buf, off)
                if length < _HDR.size or off + length > end:
                    break
                i = pending.get(seq)
                if i is not None:
                    if kind == NLMSG_ERROR:
                        code = -_I32.unpack_from(buf, off + 16)[0]
                        if code:
                            errors[i] = (code, _ext_ack_message(buf, off, length, flags))
                        del pending[seq]
                    elif kind == NLMSG_DONE:
                        pass
                    else:
                        replies[i].append(Reply(kind, buf[off + 16:off + length]))
                off += (length + 3) & ~3
        if errors:
            i = min(errors)
            code, detail = errors[i]
            where = f" in netns {self.ns}" if self.ns else ""
            raise NetlinkError(code, requests[i][3] + where, detail)
        return replies

    # -- single operations (each one round trip)

    def link_index(self, ifname: str) -> int:
        """One RTM_GETLINK by name. Raises NetlinkError (ENODEV) when there is no such link."""
        return self.get_link(ifname).index

    def get_link(self, ifname: str) -> Reply:
        reply = self.transact([(RTM_GETLINK, 0, ifinfo() + attr_str(IFLA_IFNAME, ifname),
                                f"RTM_GETLINK {ifname}")])[0]
        if not reply:
            raise NetlinkError(_errno.ENODEV, f"RTM_GETLINK {ifname}", "no answer")
        return reply[0]

    def add_veth(self, ifname: str, peer: str, peer_ns_fd: int | None = None, *, alias: str | None = None,
                 master: int | None = None, up: bool = True, hairpin: bool = False,
                 ipv6_link_local: bool = True) -> tuple[int, int | None]:
        """A veth pair: `ifname` here (optionally up, enslaved to bridge `master` with hairpin on, with
        `alias`) and `peer` in the namespace open as `peer_ns_fd` (here when None). Returns (ifindex
        here, the peer's ifindex in its namespace, or None when the kernel did not say).

        The create goes with NLM_F_ECHO: Linux ≥ 6.3 answers with the new link, so its index and, in
        IFLA_LINK, the peer's index come back without a lookup (older kernels: one RTM_GETLINK). The
        alias and hairpin follow in one more write, by index: the kernel ignores IFLA_IFALIAS on create,
        and bridge-port options need the port to exist."""
        peer_attrs = attr_str(IFLA_IFNAME, peer)
        if peer_ns_fd is not None:
            peer_attrs += attr_u32(IFLA_NET_NS_FD, peer_ns_fd)
        body = ifinfo(flags=IFF_UP if up else 0, change=IFF_UP) + attr_str(IFLA_IFNAME, ifname)
        if master:
            body += attr_u32(IFLA_MASTER, master)
        body += nest(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "veth"),
                     nest(IFLA_INFO_DATA, nest(VETH_INFO_PEER, ifinfo() + peer_attrs)))
        replies = self.transact([(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO, body,
                                  f"RTM_NEWLINK veth {ifname} (peer {peer})")])[0]
        echo = next((r for r in replies if r.type == RTM_NEWLINK), None)
        if echo is None:
            echo = self.get_link(ifname)
        index = echo.index
        then = self.batch()
        if alias is not None:
            then.set_link(index, alias=alias)
        if hairpin:
            then.set_hairpin(index)
        if not ipv6_link_local:
            then.no_ipv6_link_local(index)
        then.commit()
        return index, echo.attr_u32(IFLA_LINK)

    def set_hairpin(self, index: int, on: bool = True) -> None:
        self.batch().set_hairpin(index, on).commit()

    def set_link(self, index: int, *, up: bool | None = None, alias: str | None = None) -> None:
        self.batch().set_link(index, up=up, alias=alias).commit()

    def delete_link(self, ifname: str | None = None, index: int = 0) -> None:
        """RTM_DELLINK by index or by name (a veth takes its peer with it)."""
        body = ifinfo(index=index) + (attr_str(IFLA_IFNAME, ifname) if ifname else b"")
        self.transact([(RTM_DELLINK, 0, body, f"RTM_DELLINK {ifname or index}")])


class Batch:
    """Requests collected and sent in one write by `commit()`; the kernel runs them in order, and the
    first refused one (in that order) is raised once every ack is in. A refused request does not stop
    the ones after it, so batch only requests whose later members are harmless when an earlier fails."""

    def __init__(self, sock: RtSocket):
        self.sock = sock
        self.requests: list[tuple[int, int, bytes, str]] = []

    def set_link(self, index: int, *, up: bool | None = None, alias: str | None = None) -> Batch:
        flags = IFF_UP if up else 0
        change = IFF_UP if up is not None else 0
        body = ifinfo(index=index, flags=flags, change=change)
        if alias is not None:
            body += attr(IFLA_IFALIAS, alias.encode())
        what = " ".join(w for w in ("up" if up else "down" if up is not None else "", "alias" if alias is not None else "") if w)
        self.requests.append((RTM_SETLINK, 0, body, f"RTM_SETLINK {index} {what}".rstrip()))
        return self

    def set_hairpin(self, index: int, on: bool = True) -> Batch:
        """Bridge-port hairpin mode (what `ip link set … type bridge_slave hairpin on` sets)."""
        body = ifinfo(index=index, family=socket.AF_BRIDGE) + nest(IFLA_PROTINFO, attr(IFLA_BRPORT_MODE, bytes([int(on)])))
        self.requests.append((RTM_SETLINK, 0, body, f"RTM_SETLINK bridge port {index} hairpin {'on' if on else 'off'}"))
        return self

    def no_ipv6_link_local(self, index: int) -> Batch:
        """addrgenmode none (`ip link set … addrgenmode none`), before the link has carrier: no fe80::
        address, so no DAD, MLD report or router solicitation from it (nothing when IPv6 is off)."""
        if HAS_IPV6:
            body = ifinfo(index=index) + nest(IFLA_AF_SPEC, nest(socket.AF_INET6, attr(
                IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE]))))
            self.requests.append((RTM_SETLINK, 0, body, f"RTM_SETLINK {index} addrgenmode none"))
        return self

    def add_address(self, index: int, address: str, prefixlen: int) -> Batch:
        ip = ipaddress.ip_address(address)
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        body = (_IFADDR.pack(family, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
                + attr(IFA_LOCAL, ip.packed) + attr(IFA_ADDRESS, ip.packed))
        self.requests.append((RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"RTM_NEWADDR {address}/{prefixlen} on {index}"))
        return self

    def add_route(self, dst: str, gateway: str) -> Batch:
        net = ipaddress.ip_network(dst)
        gw = ipaddress.ip_address(gateway)
        family = socket.AF_INET if net.version == 4 else socket.AF_INET6
        body = _RTMSG.pack(family, net.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        if net.prefixlen:
            body += attr(RTA_DST, net.network_address.packed)
        body += attr(RTA_GATEWAY, gw.packed)
        self.requests.append((RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, f"RTM_NEWROUTE {dst} via {gateway}"))
        return self

    def commit(self) -> list[list[Reply]]:
        if not self.requests:
            return []
        return self.sock.transact(self.requests)


def _ext_ack_message(buf: bytes, off: int, length: int, flags: int) -> str:
    """NLMSGERR_ATTR_MSG of an error ack (NETLINK_EXT_ACK), or ''."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    inner_len = _HDR.unpack_from(buf, off + 20)[0]
    # nlmsgerr = error(4) + the request's header (capped: NETLINK_CAP_ACK) or the whole request
    start = off + 20 + (_HDR.size if flags & 0x100 else inner_len)  # 0x100: NLM_F_CAPPED
    msg = parse_attrs(buf, (start + 3) & ~3, off + length).get(NLMSGERR_ATTR_MSG)
    return msg.rstrip(b"\0").decode(errors="replace") if msg else ""
