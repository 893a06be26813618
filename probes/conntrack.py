"""A node's conntrack table as data (conntrack -L inside the node's namespace)."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from testbed.errors import KernelFeatureError
from testbed.kernel import netns as _netns


@dataclass(frozen=True)
class Flow:
    proto: str
    state: str | None
    orig_src: str
    orig_dst: str
    orig_sport: int | None
    orig_dport: int | None
    reply_src: str
    reply_dst: str
    reply_sport: int | None
    reply_dport: int | None
    mark: int = 0
    timeout: int | None = None

    @property
    def dnat(self) -> bool:
        """The reply comes from someone other than the original destination."""
        return self.reply_src != self.orig_dst

    @property
    def snat(self) -> bool:
        return self.reply_dst != self.orig_src


_KV = re.compile(r"(\w+)=(\S+)")


def parse(text: str) -> list[Flow]:
    flows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] not in ("tcp", "udp", "sctp", "icmp"):
            continue
        proto = parts[0]
        timeout = int(parts[2]) if parts[2].isdigit() else None
        state = parts[3] if proto in ("tcp", "sctp") and "=" not in parts[3] else None
        orig: dict[str, str] = {}
        reply: dict[str, str] = {}
        mark = 0
        for k, v in _KV.findall(line):
            if k == "mark":
                mark = int(v)
                continue
            (orig if k not in orig else reply).setdefault(k, v)
        port = lambda d, k: int(d[k]) if k in d else None  # noqa: E731
        flows.append(Flow(proto, state, orig.get("src", ""), orig.get("dst", ""), port(orig, "sport"), port(orig, "dport"),
                          reply.get("src", ""), reply.get("dst", ""), port(reply, "sport"), port(reply, "dport"), mark, timeout))
    return flows


def table(node_ns: str, dst: str | None = None, port: int | None = None, proto: str | None = None) -> list[Flow]:
    """Entries of the namespace's conntrack table, optionally only those for a Service address/port."""
    binary = shutil.which("conntrack") or shutil.which("conntrack", path="/usr/sbin:/sbin")
    if not binary:
        raise KernelFeatureError("conntrack is not installed: apt-get install conntrack")
    argv = [binary, "-L"]
    if proto:
        argv += ["-p", proto]
    if dst:
        argv += ["--orig-dst", dst]
    if port and proto:
        argv += ["--orig-port-dst", str(port)]
    out = subprocess.run(argv, capture_output=True, text=True, preexec_fn=_netns.preexec(node_ns))
    if out.returncode != 0:
        raise RuntimeError(f"conntrack -L in {node_ns} failed: {out.stderr.strip()}")
    flows = parse(out.stdout)
    return [f for f in flows if (port is None or f.orig_dport == port)]
