"""The lab's cluster DNS server: a tiny authoritative server for the zone `testbed.dns.records` builds.

    python -m testbed.dns_server --zone FILE [--netns PATH] [--address 0.0.0.0] [--port 53] [--ready-fd FD]

One process, one thread, one `selectors` loop over a UDP socket and a TCP listener on the same port; standard
library only (it imports `testbed.dns`, which imports nothing heavy), so it starts in tens of milliseconds.

What it answers is `Zone.resolve` (see testbed/dns.py): authoritative answers inside the zone, NXDOMAIN / NODATA
with the SOA, and REFUSED for every name outside it — there is no upstream, nothing is forwarded, no query leaves
the lab. On the wire:

- Queries: opcode QUERY, exactly one question, class IN (or ANY); QTYPE A, AAAA, NS, CNAME, SOA, PTR, SRV, TXT,
  ANY (everything at the name), any other type is NODATA for an existing name. AXFR/IXFR and other classes are
  REFUSED, other opcodes NOTIMP, malformed messages FORMERR, messages with QR set are dropped (never answered).
- Responses copy the ID, RD and the question (as asked, case kept); AA is set on answers from the zone; RA is
  not (nothing is recursed). Names are compressed (never SRV targets, RFC 2782). A/AAAA RRsets of two or more
  records rotate from one query to the next, like CoreDNS's `loadbalance` in kubeadm's Corefile.
- UDP answers are limited to 512 bytes, or to the EDNS0 buffer size the client announces (at most 4096): a bigger
  answer keeps the records that fit and sets TC, so the client retries over TCP (omitting additional records
  does not set TC, RFC 2181 9). TCP (2-byte length framing, several queries per connection, idle connections
  closed after 30 s) is never truncated below 65535 bytes.
- EDNS0: an OPT record in the query gets one in the response (buffer 1232, version 0, the DO bit echoed, options
  ignored); a version above 0 gets BADVERS.

Startup contract (as testbed.netexec): `--netns PATH` is entered with setns(CLONE_NEWNET) first; when both sockets
are bound one byte b"R" is written to `--ready-fd` and it is closed. A zone that cannot be read or sockets that
cannot be bound: one line on stderr, exit status 2 (ready fd closed unwritten). SIGHUP re-reads the zone file
(a zone that fails to load is reported on stderr and the previous one kept); SIGTERM/SIGINT exit with status 0.
"""
from __future__ import annotations

import errno
import selectors
import signal
import socket
import struct
import sys
import time

from .startup import ReadyFd, enter_netns
from .dns import FORMERR, NOERROR, NOTIMP, REFUSED, SERVFAIL, Record, Result, Zone

USAGE = "usage: python -m testbed.dns_server --zone FILE [--netns PATH] [--address IP] [--port 53] [--ready-fd FD]"

TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
              41: "OPT", 251: "IXFR", 252: "AXFR", 255: "ANY"}
TYPE_CODES = {v: k for k, v in TYPE_NAMES.items()}
CLASS_IN, CLASS_ANY = 1, 255
OPT = 41
BADVERS = 16
PLAIN_UDP = 512
MAX_UDP = 4096
EDNS_SIZE = 1232  # what we announce (the DNS flag day 2020 value: no fragmentation on any sane path)
TCP_MAX = 65535
IDLE = 30.0
MAX_CONNS = 512


class FormatError(Exception):
    pass


class UsageError(Exception):
    pass


class _Stop(Exception):
    pass


# ----------------------------------------------------------------------------- parsing


def read_name(msg: bytes, off: int) -> tuple[list[bytes], int]:
    """Labels of the name at `off` (compression followed, backwards only) and the offset after it."""
    labels: list[bytes] = []
    end = None
    total = 1
    while True:
        if off >= len(msg):
            raise FormatError("name runs past the message")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise FormatError("truncated compression pointer")
            ptr = ((n & 0x3F) << 8) | msg[off + 1]
            if ptr >= off:
                raise FormatError("compression pointer does not point backwards")
            if end is None:
                end = off + 2
            off = ptr
            continue
        if n & 0xC0:
            raise FormatError("unsupported label type")
        off += 1
        if n == 0:
            return labels, (off if end is None else end)
        label = msg[off:off + n]
        if len(label) < n:
            raise FormatError("label runs past the message")
        total += n + 1
        if total > 255:
            raise FormatError("name longer than 255 octets")
        labels.append(label)
        off += n


def labels_text(labels: list[bytes]) -> str:
    """Presentation text of a name; a '.' or '\\' inside a label is escaped, so it can never match a zone name."""
    return ".".join(lb.decode("latin-1").replace("\\", "\\\\").replace(".", "\\.") for lb in labels)


def text_labels(name: str) -> list[bytes]:
    if not name:
        return []
    labels = [lb.encode("ascii") for lb in name.split(".")]
    if any(not 0 < len(lb) < 64 for lb in labels) or sum(len(lb) + 1 for lb in labels) + 1 > 255:
        raise ValueError(f"not a valid DNS name: {name!r}")
    return labels


class Query:
    __slots__ = ("error", "flags", "id", "labels", "opt", "qclass", "qtype")

    def __init__(self) -> None:
        self.id = 0
        self.flags = 0
        self.labels: list[bytes] | None = None
        self.qtype = 0
        self.qclass = 0
        self.opt: tuple[int, int, bool] | None = None  # (udp size, version, DO)
        self.error: str | None = None

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


def parse_query(msg: bytes) -> Query | None:
    """None for what must not be answered (shorter than a header, or a response); else a Query, `error` set
    when it is malformed (FORMERR)."""
    if len(msg) < 12:
        return None
    q = Query()
    q.id, q.flags, qd, an, ns, ar = struct.unpack_from("!6H", msg)
    if q.flags & 0x8000:
        return None
    try:
        off = 12
        if qd != 1:
            raise FormatError(f"{qd} questions")
        q.labels, off = read_name(msg, off)
        if off + 4 > len(msg):
            raise FormatError("truncated question")
        q.qtype, q.qclass = struct.unpack_from("!HH", msg, off)
        off += 4
        for i in range(an + ns + ar):
            labels, off = read_name(msg, off)
            if off + 10 > len(msg):
                raise FormatError("truncated record")
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", msg, off)
            off += 10 + rdlen
            if off > len(msg):
                raise FormatError("truncated rdata")
            if rtype == OPT:
                if i < an + ns or labels or q.opt is not None:
                    raise FormatError("misplaced or repeated OPT")
                q.opt = (rclass, (ttl >> 16) & 0xFF, bool(ttl & 0x8000))
    except FormatError as e:
        q.error = str(e)
    return q


# ----------------------------------------------------------------------------- writing


class Writer:
    """A message under construction, with name compression and rollback (for truncation)."""

    def __init__(self) -> None:
        self.buf = bytearray(12)
        self.ptrs: dict[tuple[bytes, ...], int] = {}
        self.log: list[tuple[bytes, ...]] = []

    def mark(self) -> tuple[int, int]:
        return len(self.buf), len(self.log)

    def rollback(self, mark: tuple[int, int]) -> None:
        size, nlog = mark
        del self.buf[size:]
        for key in self.log[nlog:]:
            del self.ptrs[key]
        del self.log[nlog:]

    def name(self, labels: list[bytes], compress: bool = True) -> None:
        for i in range(len(labels)):
            key = tuple(labels[i:])
            if compress:
                at = self.ptrs.get(key)
                if at is not None:
                    self.buf += struct.pack("!H", 0xC000 | at)
                    return
                if len(self.buf) < 0x3FFF:
                    self.ptrs[key] = len(self.buf)
                    self.log.append(key)
            self.buf.append(len(labels[i]))
            self.buf += labels[i]
        self.buf.append(0)

    def record(self, owner: list[bytes], r: Record) -> None:
        code = TYPE_CODES[r.type]
        self.name(owner)
        self.buf += struct.pack("!HHI", code, CLASS_IN, r.ttl)
        at = len(self.buf)
        self.buf += b"\0\0"
        d = r.data
        if r.type == "A":
            self.buf += socket.inet_pton(socket.AF_INET, d[0])
        elif r.type == "AAAA":
            self.buf += socket.inet_pton(socket.AF_INET6, d[0])
        elif r.type in ("CNAME", "NS", "PTR"):
            self.name(text_labels(d[0]))
        elif r.type == "SRV":
            self.buf += struct.pack("!HHH", d[0], d[1], d[2])
            self.name(text_labels(d[3]), compress=False)
        elif r.type == "TXT":
            for s in d:
                raw = str(s).encode("utf-8")
                for i in range(0, max(len(raw), 1), 255):
                    chunk = raw[i:i + 255]
                    self.buf.append(len(chunk))
                    self.buf += chunk
        elif r.type == "SOA":
            self.name(text_labels(d[0]))
            self.name(text_labels(d[1]))
            self.buf += struct.pack("!IIIII", *d[2:7])
        else:  # pragma: no cover - Record.from_json refuses other types
            raise ValueError(f"cannot encode {r.type}")
        rdlen = len(self.buf) - at - 2
        if rdlen > 0xFFFF:
            raise ValueError("rdata too long")
        struct.pack_into("!H", self.buf, at, rdlen)


def _opt_record(opt: tuple[int, int, bool], ext_rcode: int) -> bytes:
    ttl = (ext_rcode << 24) | (0x8000 if opt[2] else 0)
    return b"\0" + struct.pack("!HHIH", OPT, EDNS_SIZE, ttl, 0)


def encode(q: Query, rcode: int, result: Result | None = None, *, limit: int = PLAIN_UDP) -> bytes:
    """The response to `q`: header, question (when parsed), the result's sections, OPT; truncated to `limit`."""
    w = Writer()
    counts = [0, 0, 0, 0]
    if q.labels is not None and q.error is None:
        w.name(q.labels)
        w.buf += struct.pack("!HH", q.qtype, q.qclass)
        counts[0] = 1
    opt = _opt_record(q.opt, rcode >> 4) if q.opt is not None else b""
    tc = False
    aa = bool(result and result.authoritative and rcode in (NOERROR, 3))
    if result is not None:
        qname = labels_text(q.labels).translate(_LOWER) if q.labels is not None else None
        sections = (result.answer, result.authority, result.additional)
        for i, rrs in enumerate(sections):
            for r in rrs:
                mark = w.mark()
                owner = q.labels if r.name == qname else text_labels(r.name)
                w.record(owner, r)
                if len(w.buf) + len(opt) > limit:
                    w.rollback(mark)
                    tc = i < 2  # dropping additional records is not truncation (RFC 2181 9)
                    break
                counts[i + 1] += 1
            else:
                continue
            break
    if opt:
        w.buf += opt
        counts[3] += 1
    rd = q.flags & 0x0100
    flags = 0x8000 | (q.opcode << 11) | (0x0400 if aa else 0) | (0x0200 if tc else 0) | rd | (rcode & 0xF)
    struct.pack_into("!6H", w.buf, 0, q.id, flags, *counts)
    return bytes(w.buf)


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _rotate(answer: tuple[Record, ...], n: int) -> tuple[Record, ...]:
    """Rotate each run of two or more A/AAAA records of one name by n (CoreDNS `loadbalance` round robin)."""
    out: list[Record] = []
    i = 0
    while i < len(answer):
        j = i + 1
        r = answer[i]
        while j < len(answer) and r.type in ("A", "AAAA") and answer[j].type == r.type and answer[j].name == r.name:
            j += 1
        run = answer[i:j]
        k = n % len(run)
        out.extend(run[k:] + run[:k])
        i = j
    return tuple(out)


def respond(zone: Zone, msg: bytes, *, tcp: bool = False, rotation: int = 0) -> bytes | None:
    """One query message → one response message (None: send nothing)."""
    q = parse_query(msg)
    if q is None:
        return None
    if q.error is not None:
        return encode(q, FORMERR)
    limit = TCP_MAX if tcp else (max(PLAIN_UDP, min(q.opt[0], MAX_UDP)) if q.opt else PLAIN_UDP)
    if q.opcode != 0:
        return encode(q, NOTIMP, limit=limit)
    if q.opt is not None and q.opt[1] > 0:
        return encode(q, BADVERS, limit=limit)
    if q.qclass not in (CLASS_IN, CLASS_ANY) or q.qtype in (251, 252):
        return encode(q, REFUSED, limit=limit)
    if q.qtype == OPT:
        return encode(q, FORMERR, limit=limit)
    try:
        result = zone.resolve(labels_text(q.labels), TYPE_NAMES.get(q.qtype, f"TYPE{q.qtype}"))
        if rotation and len(result.answer) > 1:
            result = Result(result.rcode, _rotate(result.answer, rotation), result.authority, result.additional,
                            result.authoritative)
        return encode(q, result.rcode, result, limit=limit)
    except (ValueError, KeyError, OSError, struct.error):  # a record the wire cannot carry (a bad externalName)
        return encode(q, SERVFAIL, limit=limit)


# ----------------------------------------------------------------------------- serving


class Server:
    def __init__(self, zone_path: str) -> None:
        self.zone_path = zone_path
        self.zone = Zone.read(zone_path)
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, _Conn] = {}
        self.queries = 0

    def reload(self) -> None:
        try:
            zone = Zone.read(self.zone_path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            sys.stderr.write(f"dns_server: cannot reload {self.zone_path}: {e}; keeping the previous zone\n")
            return
        self.zone = zone  # quietly: the lab reloads on every sync, and nobody need drain our stderr

    def bind(self, address: str, port: int) -> None:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((address, port))
        u.setblocking(False)
        self.sel.register(u, selectors.EVENT_READ, self._datagram)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((address, port))
        t.listen(1024)
        t.setblocking(False)
        self.sel.register(t, selectors.EVENT_READ, self._accept)

    def answer(self, msg: bytes, tcp: bool) -> bytes | None:
        self.queries += 1
        try:
            return respond(self.zone, msg, tcp=tcp, rotation=self.queries)
        except Exception as e:  # noqa: BLE001 - never let one query take the server down
            sys.stderr.write(f"dns_server: internal error: {e!r}\n")
            q = parse_query(msg)
            return encode(q, SERVFAIL) if q is not None else None

    def serve(self) -> None:
        while True:
            for key, events in self.sel.select(timeout=IDLE / 3 if self.conns else None):
                key.data(key.fileobj, events)
            if self.conns:
                now = time.monotonic()
                for conn in [c for c in self.conns.values() if now - c.last > IDLE]:
                    conn.close()

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            try:
                key.fileobj.close()
            except OSError:
                pass
        self.sel.close()

    def _datagram(self, sock: socket.socket, _events: int) -> None:
        for _ in range(64):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            reply = self.answer(data, tcp=False)
            if reply is not None:
                try:
                    sock.sendto(reply, addr)
                except OSError:
                    pass

    def _accept(self, lsock: socket.socket, _events: int) -> None:
        for _ in range(64):
            try:
                sock, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return
                continue
            if len(self.conns) >= MAX_CONNS:
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(self, sock)
            self.conns[sock.fileno()] = conn
            self.sel.register(sock, selectors.EVENT_READ, conn.on_event)


class _Conn:
    __slots__ = ("closing", "inbuf", "last", "outbuf", "server", "sock", "writing")

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.closing = False
        self.writing = False
        self.last = time.monotonic()

    def on_event(self, _sock, events: int) -> None:
        self.last = time.monotonic()
        try:
            if events & selectors.EVENT_READ and not self.closing:
                self._read()
            if self.outbuf:
                try:
                    del self.outbuf[:self.sock.send(self.outbuf)]
                except (BlockingIOError, InterruptedError):
                    pass  # the selector says when it can take more
            if self.closing and not self.outbuf:
                self.close()
                return
            want_write = bool(self.outbuf)
            if want_write != self.writing:
                self.writing = want_write
                self.server.sel.modify(self.sock, selectors.EVENT_WRITE if want_write else selectors.EVENT_READ,
                                       self.on_event)
        except OSError:
            self.close()

    def _read(self) -> None:
        try:
            data = self.sock.recv(65537)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self.closing = True
            return
        self.inbuf += data
        while len(self.inbuf) >= 2:
            n = struct.unpack_from("!H", self.inbuf)[0]
            if len(self.inbuf) < 2 + n:
                return
            msg = bytes(self.inbuf[2:2 + n])
            del self.inbuf[:2 + n]
            reply = self.server.answer(msg, tcp=True)
            if reply is not None:
                self.outbuf += struct.pack("!H", len(reply)) + reply

    def close(self) -> None:
        self.server.conns.pop(self.sock.fileno(), None)
        try:
            self.server.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()


# ----------------------------------------------------------------------------- main



def parse_args(argv: list[str]) -> dict:
    opts: dict = {"zone": None, "netns": None, "address": "0.0.0.0", "port": 53, "ready_fd": None}
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE + "\n")
            raise SystemExit(0)
        key, eq, value = arg.partition("=")
        if key not in ("--zone", "--netns", "--address", "--port", "--ready-fd"):
            raise UsageError(f"unknown argument {arg!r}")
        if not eq:
            value = next(it, None)
            if value is None:
                raise UsageError(f"{key} needs a value")
        name = key[2:].replace("-", "_")
        if name in ("port", "ready_fd"):
            try:
                opts[name] = int(value)
            except ValueError:
                raise UsageError(f"{key}: not a number: {value!r}") from None
            if name == "port" and not 0 < opts[name] < 65536:
                raise UsageError(f"--port: out of range: {value}")
        else:
            opts[name] = value
    if not opts["zone"]:
        raise UsageError("--zone is required")
    return opts


_server: Server | None = None
_hup_pending = False


def _on_stop(_signum, _frame) -> None:
    raise _Stop()


def _on_hup(_signum, _frame) -> None:
    global _hup_pending
    if _server is None:  # the first read may already be under way: read again once it is done
        _hup_pending = True
    else:
        _server.reload()


def main(argv: list[str] | None = None) -> int:
    global _server
    signal.signal(signal.SIGHUP, _on_hup)  # first: a SIGHUP during start-up must not kill the server
    signal.signal(signal.SIGTERM, _on_stop)
    signal.signal(signal.SIGINT, _on_stop)
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        sys.stderr.write(f"dns_server: {e}\n{USAGE}\n")
        return 2
    try:
        with ReadyFd(opts["ready_fd"]) as ready:
            try:
                enter_netns(opts["netns"])
                _server = Server(opts["zone"])
                if _hup_pending:
                    _server.reload()
                _server.bind(opts["address"], opts["port"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                sys.stderr.write(f"dns_server: cannot start: {e}\n")
                return 2
            ready.signal()
        _server.serve()
    except (_Stop, KeyboardInterrupt):
        return 0
    finally:
        if _server is not None:
            _server.close()
            _server = None
    return 0


if __name__ == "__main__":
    sys.exit(main())
