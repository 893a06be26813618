"""Conntrack inside a namespace: read the table, and kube-proxy's stale-UDP-entry reconciler.

kube-proxy (pkg/proxy/conntrack/cleanup.go, v1.32+) runs after each sync: for every UDP service
port that has at least one serving endpoint, it deletes the entries whose original destination is
a service IP:port (ClusterIP, external IP, LB IP) or whose original destination port is the
NodePort, and whose reply source is not one of the serving endpoints. That removes flows DNATed
to a deleted pod and flows that were not DNATed at all while the service had no endpoints, both
of which would otherwise black-hole a client that keeps its source port. Upstream's known gaps
are kept: a service with zero endpoints, or a deleted service, is skipped.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from ..errors import KernelFeatureError
from .. import versions
from ..proxy import NodeView
from . import netns


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
    """`conntrack -L` output → flows (the first src/dst/ports are the original tuple, the second the reply)."""
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

        def port(d: dict, k: str) -> int | None:
            return int(d[k]) if k in d else None

        flows.append(Flow(proto, state, orig.get("src", ""), orig.get("dst", ""), port(orig, "sport"), port(orig, "dport"),
                          reply.get("src", ""), reply.get("dst", ""), port(reply, "sport"), port(reply, "dport"), mark, timeout))
    return flows


def _binary() -> str:
    path = shutil.which("conntrack") or shutil.which("conntrack", path="/usr/sbin:/sbin")
    if not path:
        raise KernelFeatureError("conntrack is not installed: apt-get install conntrack")
    return path


def list_flows(ns: str, proto: str | None = None) -> list[Flow]:
    argv = [_binary(), "-L"] + (["-p", proto] if proto else [])
    out = subprocess.run(argv, capture_output=True, text=True, preexec_fn=netns.preexec(ns))
    if out.returncode != 0:
        raise RuntimeError(f"conntrack -L in {ns} failed: {out.stderr.strip()}")
    return parse(out.stdout)


def stale_udp(view: NodeView, flows: list[Flow]) -> list[Flow]:
    """The entries kube-proxy's reconciler would delete on this node (pure). Before 1.32 the
    event-based clean-up deleted the flows of endpoints that went away even when none was left;
    here that is a Service without serving endpoints processed with an empty set."""
    skips_empty = view.config.switch(versions.CONNTRACK_SKIPS_EMPTY)
    by_dest: dict[tuple[str, int], set[str]] = {}
    by_nodeport: dict[int, set[str]] = {}
    for sp in view.services:
        if sp.protocol != "UDP":
            continue
        serving = {e.ip for e in sp.endpoints if e.serving}
        if not serving and skips_empty:
            continue  # 1.32 on: the reconciler skips services without serving endpoints (#139628)
        for ip in (sp.cluster_ip, *sp.external_ips, *sp.load_balancer_ips):
            if ip:
                by_dest[(ip, sp.port)] = serving
        if sp.node_port:
            by_nodeport[sp.node_port] = serving
    out = []
    for f in flows:
        if f.proto != "udp":
            continue
        serving = by_dest.get((f.orig_dst, f.orig_dport))
        if serving is None:  # an empty set is a Service without endpoints, not "no Service"
            serving = by_nodeport.get(f.orig_dport)
        if serving is not None and f.reply_src not in serving:
            out.append(f)
    return out


def delete(ns: str, flows: list[Flow]) -> int:
    deleted = 0
    for f in flows:
        argv = [_binary(), "-D", "-p", f.proto, "--orig-src", f.orig_src, "--orig-dst", f.orig_dst,
                "--sport", str(f.orig_sport), "--dport", str(f.orig_dport)]
        r = subprocess.run(argv, capture_output=True, text=True, preexec_fn=netns.preexec(ns))
        deleted += r.returncode == 0
    return deleted


def cleanup_stale_udp(ns: str, view: NodeView) -> int:
    """Run the reconciler on one node; returns how many entries were deleted."""
    if not any(sp.protocol == "UDP" for sp in view.services):
        return 0
    stale = stale_udp(view, list_flows(ns, "udp"))
    return delete(ns, stale) if stale else 0
