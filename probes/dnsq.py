"""One DNS query from inside a lab namespace (scapy builds and parses the message)."""
from __future__ import annotations

import random
import socket
from dataclasses import dataclass

from testbed.kernel import netns as _netns

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33}


@dataclass(frozen=True)
class Answer:
    outcome: str  # answered | timeout | refused | error
    rcode: str | None = None
    records: tuple[tuple[str, str, str], ...] = ()  # (name, type, data); SRV data "prio weight port target"

    def data(self, rtype: str) -> list[str]:
        return [d for _, t, d in self.records if t == rtype]


def query(netns: str | None, server: str, name: str, qtype: str = "A", timeout: float = 2.0) -> Answer:
    from scapy.layers.dns import DNS, DNSQR

    qid = random.randint(0, 0xFFFF)
    msg = bytes(DNS(id=qid, rd=1, qd=DNSQR(qname=name, qtype=TYPES[qtype])))
    if netns:
        with _netns.entered(netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.connect((server, 53))
        sock.send(msg)
        data = sock.recv(65535)
    except ConnectionRefusedError:
        return Answer("refused")
    except (socket.timeout, TimeoutError):
        return Answer("timeout")
    except OSError as e:
        return Answer("error", str(e))
    finally:
        sock.close()
    reply = DNS(data)
    records = []
    for i in range(reply.ancount or 0):
        rr = reply.an[i]
        rtype = {v: k for k, v in TYPES.items()}.get(rr.type, str(rr.type))
        if rtype == "SRV":
            target = rr.target.decode() if isinstance(rr.target, bytes) else str(rr.target)
            value = f"{rr.priority} {rr.weight} {rr.port} {target}"
        else:
            value = rr.rdata.decode() if isinstance(rr.rdata, bytes) else str(rr.rdata)
        rname = rr.rrname.decode() if isinstance(rr.rrname, bytes) else str(rr.rrname)
        records.append((rname, rtype, value))
    return Answer("answered", RCODES.get(reply.rcode, str(reply.rcode)), tuple(records))
