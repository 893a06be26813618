"""IPVS mode's state in one comparable form: `ipvsadm-save -n` (ipvsadm -S -n) and `ipset save`
output, in one file or several, and the text `testbed render --mode ipvs` prints.

`ipvsadm-save -n` lines are `-A -t|-u|--sctp-service IP:PORT -s SCHED [-p TIMEOUT] [-b FLAGS]`
for a virtual server and `-a -t IP:PORT -r IP:PORT -m|-g|-i -w WEIGHT` for each real server, in
the kernel's order (not sorted). `ipset save` lines are `create NAME TYPE OPTIONS…` and
`add NAME ENTRY [OPTIONS…]`; the options are the kernel's (hashsize, bucketsize, initval…) and
only the type is compared. A /32 net in an entry is printed bare by ipset and taken so.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from testbed.errors import TestbedError
from testbed.noderules import iptables

_PROTO = {"-t": "TCP", "--tcp-service": "TCP", "-u": "UDP", "--udp-service": "UDP", "--sctp-service": "SCTP",
          "-f": "FWM", "--fwmark-service": "FWM"}
_FWD = {"-m": "masq", "--masquerading": "masq", "-g": "route", "--gatewaying": "route",
        "-i": "tunnel", "--ipip": "tunnel"}
_ADDR = re.compile(r"^(\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:.]+\]):(\d+)$")


@dataclass
class VirtualServer:
    key: str  # `IP:PORT/PROTO` (kube-proxy's VirtualServer.String()) or `FWM N`
    scheduler: str = "rr"
    persistence: int | None = None
    flags: tuple[str, ...] = ()
    real_servers: dict[str, tuple[str, int]] = field(default_factory=dict)  # IP:PORT -> (forwarding, weight)

    @property
    def ip(self) -> str:
        return self.key.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.key.rsplit(":", 1)[1].split("/")[0])

    @property
    def protocol(self) -> str:
        return self.key.rsplit("/", 1)[1]

    def service_text(self) -> str:
        out = f"-s {self.scheduler}"
        if self.persistence is not None:
            out += f" -p {self.persistence}"
        if self.flags:
            out += f" -b {','.join(self.flags)}"
        return out


@dataclass
class IpSet:
    name: str
    type: str
    entries: list[str] = field(default_factory=list)


@dataclass
class IpvsState:
    virtual_servers: dict[str, VirtualServer] = field(default_factory=dict)
    ipsets: dict[str, IpSet] = field(default_factory=dict)
    iptables: iptables.Tables | None = None
    # which parts the input had: "ipvsadm", "ipset" (an empty ipvsadm-save prints nothing)
    parts: set[str] = field(default_factory=set)


def line_kind(line: str) -> str | None:
    """"ipvsadm", "ipset" or None for one non-blank, non-comment line."""
    if re.match(r"-[Aa]\s+(-t|-u|-f|--(tcp|udp|sctp|fwmark)-service)\s", line):
        return "ipvsadm"
    if re.match(r"(create|add)\s+\S+\s", line):
        return "ipset"
    return None


def _address(text: str, where: str) -> str:
    if not _ADDR.match(text):
        raise TestbedError(f"{where}: expected a numeric IP:PORT (output of `ipvsadm-save -n`), got {text!r}")
    return text


def _ipvsadm(state: IpvsState, line: str, where: str) -> None:
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise TestbedError(f"{where}: {e}") from None
    verb = words[0]
    proto = next((w for w in words[1:] if w in _PROTO), None)
    if proto is None or words.index(proto) + 1 >= len(words):
        raise TestbedError(f"{where}: expected -t|-u|--sctp-service IP:PORT (or -f MARK) after {verb}, got {line!r}")
    target = words[words.index(proto) + 1]
    if _PROTO[proto] == "FWM":
        key = f"FWM {target}"
    else:
        key = f"{_address(target, where)}/{_PROTO[proto]}"

    def opt(*names: str) -> str | None:
        for i, w in enumerate(words):
            if w in names and i + 1 < len(words):
                return words[i + 1]
        return None

    if verb == "-A":
        vs = state.virtual_servers.setdefault(key, VirtualServer(key))
        vs.scheduler = opt("-s", "--scheduler") or "wlc"  # ipvsadm's defaults: wlc, and -p alone is 300 s
        timeout = opt("-p", "--persistent")
        persistent = "-p" in words or "--persistent" in words
        vs.persistence = int(timeout) if timeout and timeout.isdigit() else (300 if persistent else None)
        flags = opt("-b", "--sched-flags")
        vs.flags = tuple(sorted(flags.split(","))) if flags else ()
        return
    vs = state.virtual_servers.get(key)
    if vs is None:
        raise TestbedError(f"{where}: real server of {key}, which has no `-A` line before it")
    rs = opt("-r", "--real-server")
    if rs is None:
        raise TestbedError(f"{where}: expected -r IP:PORT, got {line!r}")
    fwd = next((_FWD[w] for w in words if w in _FWD), "route")
    weight = opt("-w", "--weight")
    vs.real_servers[_address(rs, where)] = (fwd, int(weight) if weight and weight.lstrip("-").isdigit() else 1)


def _entry(text: str) -> str:
    """An ipset entry as kube-proxy writes it: a /32 net is the bare address in `ipset save`."""
    return ",".join(p.removesuffix("/32") for p in text.split(","))


def _ipset(state: IpvsState, line: str, where: str) -> None:
    words = line.split()
    if words[0] == "create":
        if len(words) < 3:
            raise TestbedError(f"{where}: expected `create NAME TYPE …`, got {line!r}")
        state.ipsets[words[1]] = IpSet(words[1], words[2])
        return
    s = state.ipsets.get(words[1])
    if s is None:
        raise TestbedError(f"{where}: entry of set {words[1]}, which has no `create` line before it")
    s.entries.append(_entry(words[2]))


def parse(text: str, source: str = "<rules>", state: IpvsState | None = None) -> IpvsState:
    """`ipvsadm-save -n` and/or `ipset save` output -> IpvsState (added to `state` if given)."""
    state = state or IpvsState()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind = line_kind(line)
        where = f"{source}: line {n}"
        if kind == "ipvsadm":
            _ipvsadm(state, line, where)
        elif kind == "ipset":
            _ipset(state, line, where)
        else:
            raise TestbedError(f"{where}: expected an `ipvsadm-save -n` line (-A/-a) or an `ipset save` line "
                               f"(create/add), got {line!r}")
        state.parts.add(kind)
    return state


def parse_render(text: str, source: str = "<render>") -> IpvsState:
    """What `testbed render --mode ipvs` prints (render.ipvs.render_text) -> IpvsState, with the
    iptables part (jumps and restore input) read as iptables.parse would read a node's."""
    state = IpvsState(parts={"ipvsadm", "ipset"})
    restore: list[str] = []
    jumps: dict[str, list[str]] = {}
    in_restore = False
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{source}: line {n}"
        if line == "# iptables-restore --noflush":
            in_restore = True
            continue
        if in_restore:
            restore.append(raw)
            continue
        if not line or line.startswith("#") or " = " in line or line.startswith("ip "):
            continue  # sysctls and kube-ipvs0: not in a node's ipvsadm/ipset/iptables dump
        if line.startswith("ipset "):
            _ipset(state, line[len("ipset "):], where)
        elif line.startswith("iptables "):
            words = shlex.split(line)
            table, chain = words[words.index("-t") + 1], words[words.index("-I") + 1]
            rest = words[words.index("-I") + 2:]
            jumps.setdefault(table, []).append(shlex.join(["-I", chain, "1", *rest]))
        elif line_kind(line) == "ipvsadm":
            _ipvsadm(state, line, where)
        else:
            raise TestbedError(f"{where}: not part of IPVS mode's render text: {line!r}")
    text = "".join(f"*{t}\n" + "\n".join(rules) + "\nCOMMIT\n" for t, rules in jumps.items()) + "\n".join(restore) + "\n"
    state.iptables = iptables.parse(text, source)
    return state
