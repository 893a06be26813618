"""`testbed bench`: how this machine's Service networking scales, measured in one run.

    testbed bench [--quick] [--json PATH] [--plots DIR] [--modes iptables,nftables,ipvs]
    python -m testbed.bench [same options]          (prints the JSON when --json is -)

Three parts, each against the number of Services or pods, each a median over repeated runs with
its spread (min–max of the runs); ratios are taken between figures of the same run:

1. Data plane — connection-setup (first-packet) latency from a pod to the Service that is matched
   last in iptables order. One small lab-like node (a `cbr0` bridge, a client pod and two backend
   pods running testbed's netexec, wired by `testbed.kernel.wiring`) gets N synthetic Services,
   each with the two backends as endpoints, rendered by the real renderers and installed by the
   real proxiers. The client makes many TCP connects (a fresh source port each, closed with RST so
   no TIME_WAIT piles up); connect() start → established is one SYN through the node's NAT rules
   and the SYN-ACK back. Per round: p01 / p50 / p99.
2. Control plane — a full sync (a fresh node, as kube-proxy at start-up) and a one-Service change
   (one endpoint of one Service removed or restored) per mode and size, split into rendering and
   the kernel tool (`iptables-restore --noflush`, `nft -f`, IPVS netlink) as the proxier reports it.
3. Lab build — pods per second for 10…1,000 pods on one node with testbed's netlink wiring, and
   the same topology wired by `ip` commands in the same run (benchmarks/build.py's comparison).

IPVS runs inside `testbed vm` (this host kernel has no IPVS): the host starts
`python -m testbed.bench --ipvs-only … --json -` in the guest and merges its JSON; the guest runs
under qemu's software emulation, so its absolute figures are only comparable with each other.
Where a part cannot run, the result says `not_measured` with the reason; no figure is made up.

A single full sync that is projected (from the two previous sizes of the same mode) to take longer
than `max_sync_s` is not run: that figure is `not_measured` with the projection as the reason, and
the data-plane rules are installed with `iptables-restore` without `--noflush` (the same rendered
input, one transaction into the fresh node: the same rules, far faster on iptables-nft), or as
several `nft -f` transactions.

Everything lives in namespaces named `tbbench<hex>-…` and processes this run starts; all of them
are removed in `finally` (also on Ctrl-C). Nothing runs in the root namespace.
"""
from __future__ import annotations

import argparse
import io
import ipaddress
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from . import modes as proxy_modes
from .proxy import Endpoint, NodeView, ProxyConfig, ServicePort

SCHEMA = 1
MODES = proxy_modes.benchmarked()  # iptables, nftables, ipvs: the modes with a fast install
SIZES_FULL = (100, 1000, 5000, 10000, 30000)
SIZES_QUICK = (100, 1000, 5000)
PODS_FULL = (10, 100, 300, 1000)
PODS_QUICK = (10, 100, 300)

# The synthetic node: its pods' network, the two backends every Service points at.
POD_CIDR = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
CLIENT_IP = "10.244.0.2"
BACKENDS = (("10.244.0.3", 9376), ("10.244.0.4", 9376))
NODE_NAME = "node"
NODE_IP = "172.18.0.2"  # kube-proxy's node IP; no NodePorts are made, so it is never dialled
SERVICE_BASE = "10.96.0.16"  # first synthetic ClusterIP (10.96.0.0/12 holds 2^20 addresses)
SERVICE_NAMESPACE = "bench"
SERVICE_PORT = 80

# Targets of issue #8 (benchmarks print them; tests do not time anything).
TARGET_MS_PER_POD = 3.0
TARGET_UP_1000_S = 3.0
TARGET_DOWN_1000_S = 2.0
TARGET_RENDER_SHARE = 0.20  # rendering ≤ 20 % on top of the kernel tool's time, at 10,000 Services
TARGET_NFT_CHANGE_RATIO = 2.0  # "about the same": one-change at 10,000 within 2× of at 100
FLAT_RATIO = 1.5  # a data-plane curve is "flat" when p50 at the largest size ≤ 1.5× the smallest
GROWS_RATIO = 2.0  # iptables "grows" when p50 at the largest size ≥ 2× the smallest

# Published figures the report compares with.
PUBLISHED = {
    "kubecon_2017": {
        "source": 'KubeCon EU 2017, "Scale Kubernetes to Support 50,000 Services"',
        "iptables_rule_add": {"1": "2 ms", "5000": "11 min", "20000": "5 h"},
        "ipvs": "flat",
    },
    "k8s_blog_2025": {
        "source": 'Kubernetes blog, "NFTables mode for kube-proxy" (2025)',
        "iptables_p50_growth_1000_to_30000": 18.0,
        "nftables": "flat; at 30,000 Services nftables' worst case beats iptables' best case",
    },
}

Progress = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


# --------------------------------------------------------------------------- statistics


def percentile(values, q: float) -> float:
    """The q-th percentile (0–100), linear between closest ranks (numpy's default method)."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"expected a percentile in 0..100, got {q}")
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values) -> float:
    xs = list(values)
    if not xs:
        raise ValueError("median of no values")
    return statistics.median(xs)


def spread(values) -> dict:
    """Median of repeated runs with their spread: min, max, and (max−min)/median."""
    xs = list(values)
    m = median(xs)
    lo, hi = min(xs), max(xs)
    return {"median": m, "min": lo, "max": hi, "n": len(xs), "rel_spread": (hi - lo) / m if m else 0.0}


def latency_summary(samples_ms) -> dict:
    """p01 / p50 / p99 (and the mean) of one round of connection-setup latencies, in ms."""
    xs = list(samples_ms)
    return {"p01": percentile(xs, 1), "p50": percentile(xs, 50), "p99": percentile(xs, 99),
            "mean": statistics.fmean(xs), "n": len(xs)}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def project(points: list[tuple[int, float]], n: int) -> float | None:
    """Extrapolate a cost to `n` from the last two (size, seconds) points with a power law whose
    exponent is clamped to [1, 3] (at least linear, at most cubic). None with fewer than 2 points."""
    pts = [(s, t) for s, t in points if t > 0]
    if not pts:
        return None
    if len(pts) == 1:
        s, t = pts[0]
        return t * n / s
    (s0, t0), (s1, t1) = pts[-2], pts[-1]
    k = math.log(t1 / t0) / math.log(s1 / s0) if s1 != s0 else 1.0
    k = min(3.0, max(1.0, k))
    return t1 * (n / s1) ** k


# --------------------------------------------------------------------------- synthetic Services


def service_ip(i: int) -> str:
    return str(ipaddress.ip_address(SERVICE_BASE) + i)


def service_name(i: int, n: int) -> str:
    return f"svc-{i:0{max(5, len(str(n - 1)))}d}"


def synthetic_service(i: int, n: int, backends=BACKENDS) -> ServicePort:
    return ServicePort(SERVICE_NAMESPACE, service_name(i, n), "", "TCP", SERVICE_PORT, service_ip(i),
                       endpoints=tuple(Endpoint(ip, port, node=NODE_NAME) for ip, port in backends))


def synthetic_view(n: int, backends=BACKENDS, node_ip: str = NODE_IP) -> NodeView:
    """kube-proxy's view of a node with `n` ClusterIP Services (TCP 80), each backed by `backends`."""
    if n < 1:
        raise ValueError(f"expected at least 1 Service, got {n}")
    return NodeView(NODE_NAME, (node_ip,), ProxyConfig(cluster_cidr="10.244.0.0/16"),
                    tuple(synthetic_service(i, n, backends) for i in range(n)))


_KUBE_SERVICES_NAT = re.compile(r"^-A KUBE-SERVICES .*?-d (\S+?)(?:/32)? --dport (\d+) -j KUBE-(?:SVC|SVL|EXT|FW)-")


def iptables_order(text: str) -> list[tuple[str, int]]:
    """(ClusterIP, port) of the nat KUBE-SERVICES rules in the order the packet meets them."""
    out, table = [], ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif table == "nat":
            m = _KUBE_SERVICES_NAT.match(line)
            if m:
                out.append((m[1], int(m[2])))
    return out


def last_matched(view: NodeView, text: str | None = None) -> ServicePort:
    """The Service whose ClusterIP rule is the last one in KUBE-SERVICES as rendered for iptables
    mode: the worst case for iptables' linear walk (nftables and IPVS look it up in a map)."""
    from .render import iptables as riptables

    order = iptables_order(text if text is not None else riptables.render(view))
    if not order:
        raise ValueError("the rendered rules have no ClusterIP rule in KUBE-SERVICES")
    ip, port = order[-1]
    for sp in view.services:
        if sp.cluster_ip == ip and sp.port == port:
            return sp
    raise ValueError(f"rendered rule for {ip}:{port} matches no Service of the view")


def iptables_sorted(view: NodeView) -> list[ServicePort]:
    """The Services in the order render.iptables writes their KUBE-SERVICES rules: by
    (svcPortName, protocol), IPv4 ClusterIPs only (tests check this against the rendered text)."""
    svcs = [s for s in view.services if s.cluster_ip and ":" not in s.cluster_ip]
    return sorted(svcs, key=lambda s: (s.port_name_string, s.proto))


def changed_view(view: NodeView, index: int, drop: bool) -> NodeView:
    """The view with one Service changed: its last endpoint removed (`drop`) or all of them back."""
    services = list(view.services)
    sp = services[index]
    eps = tuple(Endpoint(ip, port, node=NODE_NAME) for ip, port in BACKENDS)
    services[index] = replace(sp, endpoints=eps[:-1] if drop else eps)
    return replace(view, services=tuple(services))


# --------------------------------------------------------------------------- proxiers


@dataclass
class Timing:
    render: float
    kernel: float
    total: float

    def to_json(self) -> dict:
        return {"render_s": self.render, "kernel_s": self.kernel, "total_s": self.total}


def proxier_for(mode: str):
    """The mode's proxier (testbed.modes), the one a lab's sync uses."""
    return proxy_modes.get(mode).proxier


def timed_sync(p, ns: str, view: NodeView, rec: dict) -> Timing:
    t0 = time.perf_counter()
    st = p.sync(ns, view, rec)
    return Timing(st.render, st.kernel, time.perf_counter() - t0)


def fast_install(mode: str, ns: str, view: NodeView, rec: dict) -> None:
    """Put the rules a full sync would leave into a fresh node without timing them: the mode's
    own fast install (testbed.modes), applied in a way that does not take minutes at 30,000 Services."""
    install = proxy_modes.get(mode).fast_install
    if install is None:
        proxier_for(mode).sync(ns, view, rec)
    else:
        install(ns, view, rec)


def _preexec(ns: str):
    from .kernel import netns

    return netns.preexec(ns)


# --------------------------------------------------------------------------- namespaces and processes


class Run:
    """This run's namespaces and processes: journaled under a lab name (so `testbed down NAME`
    can clean up after a crash) and all removed by close()."""

    def __init__(self, name: str | None = None):
        self.name = name or f"tbbench{uuid.uuid4().hex[:6]}"
        self.procs: list[tuple[int, str]] = []

    def ns(self, suffix: str) -> str:
        return f"{self.name}-{suffix}"

    def journal_ns(self, ns: str) -> None:
        from . import state

        state.journal(self.name, "ns", ns)

    def namespaces(self) -> list[str]:
        from .kernel import netns

        return [n for n in netns.list_names() if n.startswith(self.name)]

    def close(self) -> None:
        from . import state, supervisor
        from .kernel import netns

        try:
            supervisor.stop_many(self.procs)
            self.procs = []
            for n in self.namespaces():
                netns.delete(n)
        finally:
            try:
                from .lab import Lab

                Lab(self.name).down()  # whatever the journal names (processes, namespaces), and the state dir
            except Exception:  # noqa: BLE001 - the state directory goes in any case
                shutil.rmtree(state.lab_dir(self.name), ignore_errors=True)


def live_namespaces() -> int | None:
    """Network namespaces the kernel still holds, destroyed or not (net_namespace slab objects)."""
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                if line.startswith("net_namespace "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def settle(baseline: int | None, timeout: float = 60.0, stall: float = 1.0) -> float:
    """Wait until the kernel has destroyed the namespaces removed since `baseline` was read (back
    to it, or no progress for `stall` s: other labs may come and go; at most `timeout`), so no
    measurement pays for an earlier cleanup. Returns the wait."""
    if baseline is None:
        return 0.0
    t0 = time.perf_counter()
    best, best_at = live_namespaces(), t0
    while time.perf_counter() - t0 < timeout:
        now = live_namespaces()
        if now is None or now <= baseline:
            break
        if best is None or now < best:
            best, best_at = now, time.perf_counter()
        elif time.perf_counter() - best_at > stall:
            break
        time.sleep(0.02)
    return time.perf_counter() - t0


@dataclass
class Node:
    """The data-plane node: `<run>-<tag>` with cbr0, and pods client, be-a, be-b (netexec)."""

    ns: str
    client_ns: str
    procs: list[tuple[int, str]]
    pod_namespaces: list[str]


def build_node(run: Run, tag: str) -> Node:
    from . import supervisor
    from .kernel import wiring

    lab, node = run.name, tag
    prefix = ipaddress.ip_network(POD_CIDR).prefixlen
    pods = [("client", CLIENT_IP)] + [(f"be{i}", ip) for i, (ip, _) in enumerate(BACKENDS)]
    ns = wiring.host_ns(lab, node)
    pod_nss = [wiring.pod_ns(lab, SERVICE_NAMESPACE, f"{tag}.{p}") for p, _ in pods]
    with wiring.Netlink() as ipr_of:
        run.journal_ns(ns)
        wiring.make_namespace(lab, ns, "node", node, ipr_of)
        wiring.setup_node(lab, node, GATEWAY, prefix, [], ipr_of)
        for (pod, ip), pns in zip(pods, pod_nss, strict=True):
            run.journal_ns(pns)
            wiring.add_pod(lab, node, SERVICE_NAMESPACE, f"{tag}.{pod}", ip, prefix, GATEWAY, ipr_of)
    specs = [{"key": f"{SERVICE_NAMESPACE}/{tag}.be{i}", "ns": pod_nss[1 + i], "hostname": f"be{i}",
              "tcp": [port], "udp": []} for i, (_, port) in enumerate(BACKENDS)]
    started = supervisor.start_workloads(lab, specs)
    procs = [(v["pid"], v["start"]) for v in started.values()]
    run.procs += procs
    return Node(ns, pod_nss[0], procs, pod_nss)


def remove_node(run: Run, node: Node) -> None:
    from . import supervisor
    from .kernel import netns

    supervisor.stop_many(node.procs)
    run.procs = [p for p in run.procs if p not in node.procs]
    for n in node.pod_namespaces + [node.ns]:
        netns.delete(n)


def flush_conntrack(ns: str) -> None:
    tool = shutil.which("conntrack") or shutil.which("conntrack", path="/usr/sbin:/sbin")
    if tool:
        subprocess.run([tool, "-F"], capture_output=True, preexec_fn=_preexec(ns), check=False)


_LINGER0 = struct.pack("ii", 1, 0)


def connect_latencies(ns: str, ip: str, port: int, count: int, timeout: float = 2.0) -> tuple[list[float], int]:
    """`count` TCP connects from inside `ns`: ms from connect() start to established, and the
    number that failed. Each socket gets a fresh ephemeral port and is closed with RST."""
    from .kernel import netns

    out: list[float] = []
    failed = 0
    clock = time.perf_counter_ns
    with netns.entered(ns):
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
                s.settimeout(timeout)
                t0 = clock()
                s.connect((ip, port))
                out.append((clock() - t0) / 1e6)
            except OSError:
                failed += 1
            finally:
                s.close()
    return out, failed


# --------------------------------------------------------------------------- measurement plans


@dataclass
class Plan:
    modes: tuple[str, ...]
    sizes: tuple[int, ...]
    pods: tuple[int, ...]
    connections: int  # per round
    rounds: int
    warmup: int
    repeat: int  # control-plane samples (at most) per kind, mode and size
    build_repeat: int
    budget_s: float  # control-plane samples stop once a kind at one size has taken this long
    max_sync_s: float  # a single sync projected to take longer is not run
    control: bool  # measure the control plane (else only install the rules for the data plane)
    vm_control: bool
    vm_sizes: tuple[int, ...]  # IPVS in `testbed vm` (software-emulated: everything is ~10-30× slower)
    vm_budget_s: float
    vm_max_sync_s: float
    vm_timeout_s: float
    quick: bool
    latency_repeat: int = 3  # runs of each change per mode for the programming-latency part (0: skip)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def make_plan(args) -> Plan:
    quick = bool(getattr(args, "quick", False))
    modes = parse_list(getattr(args, "modes", None)) or list(MODES)
    if modes == ["none"]:  # the build comparison alone (benchmarks/build.py)
        modes = []
    for m in modes:
        if m not in MODES:
            raise ValueError(f"expected modes among {', '.join(MODES)}, got {m!r}")
    sizes = tuple(int(s) for s in parse_list(getattr(args, "sizes", None))) or (SIZES_QUICK if quick else SIZES_FULL)
    pods = tuple(int(s) for s in parse_list(getattr(args, "pods", None))) or (PODS_QUICK if quick else PODS_FULL)
    if any(s < 1 for s in sizes) or any(p < 1 for p in pods):
        raise ValueError("sizes and pod counts must be positive")

    def opt(name, full, q):
        v = getattr(args, name, None)
        return v if v is not None else (q if quick else full)

    return Plan(modes=tuple(modes), sizes=tuple(sorted(set(sizes))), pods=tuple(sorted(set(pods))),
                connections=opt("connections", 1000, 300), rounds=opt("rounds", 5, 3), warmup=opt("warmup", 50, 20),
                repeat=opt("repeat", 3, 2), build_repeat=opt("build_repeat", 3, 2),
                budget_s=opt("budget", 150.0, 12.0), max_sync_s=opt("max_sync", 100.0, 20.0),
                control=not getattr(args, "no_control", False), vm_control=not quick and not getattr(args, "no_control", False),
                vm_sizes=tuple(s for s in sorted(set(sizes)) if not quick or s <= 1000) or tuple(sorted(set(sizes)))[:1],
                vm_budget_s=opt("vm_budget", 100.0, 15.0), vm_max_sync_s=opt("vm_max_sync", 120.0, 15.0),
                vm_timeout_s=opt("vm_timeout", 3600.0, 240.0), quick=quick,
                latency_repeat=0 if getattr(args, "no_latency", False) else opt("latency_repeat", 5, 2))


def parse_list(value) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [x.strip() for item in items for x in str(item).split(",") if x.strip()]


# --------------------------------------------------------------------------- data + control plane


def measure_mode(run: Run, mode: str, plan: Plan, progress: Progress = _quiet) -> dict:
    """Data plane and control plane of one mode at every size: {"sizes": [per-size dicts]}."""
    p = proxier_for(mode)
    out = {"mode": mode, "tool": _tool(mode), "sizes": []}
    history = {"full": [], "one_change": []}
    for n in plan.sizes:
        entry = {"services": n}
        out["sizes"].append(entry)
        view = synthetic_view(n)
        target = iptables_sorted(view)[-1]  # = last_matched(view), without rendering 30,000 Services
        entry["target"] = {"service": target.port_name_string, "cluster_ip": target.cluster_ip, "port": target.port}
        full_samples: list[Timing] = []
        change_samples: list[Timing] = []
        skip_full = (_skip_reason(history["full"], n, plan, mode) if plan.control
                     else "not run: control plane not measured in this run")
        baseline = live_namespaces()
        node = build_node(run, f"{mode[:4]}{n}")
        try:
            rec: dict = {}
            if not skip_full:
                try:
                    full_samples.append(timed_sync(p, node.ns, view, rec))
                    progress(f"{mode} {n:>6} Services: full sync {full_samples[0].total:.2f} s")
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    skip_full = f"failed: {_one_line(e)}"
                    progress(f"{mode} {n:>6} Services: full sync {skip_full}")
                    remove_node(run, node)  # the kernel may hold half a transaction: start again
                    settle(baseline)
                    baseline = live_namespaces()
                    node = build_node(run, f"{mode[:4]}{n}")
                    rec = {}
            if skip_full:
                fast_install(mode, node.ns, view, rec)
            try:
                entry["data_plane"] = data_plane(node, target, plan)
            except (RuntimeError, OSError) as e:
                entry["data_plane"] = {"not_measured": f"failed: {_one_line(e)}"}
            dp = entry["data_plane"]
            if "p50" in dp:
                progress(f"{mode} {n:>6} Services: first packet p01/p50/p99 "
                         f"{dp['p01']['median']:.3f} / {dp['p50']['median']:.3f} / {dp['p99']['median']:.3f} ms")
            skip_change = _skip_reason(history["one_change"], n, plan, mode) if plan.control else skip_full
            if not skip_change:
                index = n // 2 if n > 1 else 0
                spent = 0.0
                try:
                    for k in range(max(2, plan.repeat)):
                        t = timed_sync(p, node.ns, changed_view(view, index, drop=k % 2 == 0), rec)
                        change_samples.append(t)
                        spent += t.total
                        if len(change_samples) >= plan.repeat or spent + t.total > plan.budget_s:
                            break
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    skip_change = f"failed: {_one_line(e)}"
                if change_samples:
                    progress(f"{mode} {n:>6} Services: one-Service change {median(t.total for t in change_samples):.3f} s")
        finally:
            remove_node(run, node)
            settle(baseline)
        # More full-sync samples, each on a fresh namespace (kube-proxy starting on an empty node).
        if full_samples:
            spent = full_samples[0].total
            try:
                while len(full_samples) < plan.repeat and spent + full_samples[-1].total <= plan.budget_s:
                    baseline = live_namespaces()
                    full_samples.append(fresh_full_sync(run, p, view))
                    spent += full_samples[-1].total
                    settle(baseline)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                progress(f"{mode} {n:>6} Services: another full sync failed: {_one_line(e)}")
        entry["full_sync"] = sync_summary(full_samples, skip_full)
        entry["one_change"] = sync_summary(change_samples, skip_change)
        if full_samples:
            history["full"].append((n, median(t.total for t in full_samples)))
        if change_samples:
            history["one_change"].append((n, median(t.total for t in change_samples)))
    return out


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:300] + "…"


def _skip_reason(history: list[tuple[int, float]], n: int, plan: Plan, mode: str = "") -> str | None:
    guess = project(history, n)
    if guess is not None and guess > plan.max_sync_s:
        last = history[-1]
        why = "; testbed.kernel.nft gives nft -f 120 s" if mode == "nftables" else ""
        return (f"not run: projected {guess:.0f} s from {last[1]:.1f} s at {last[0]:,} Services "
                f"(limit {plan.max_sync_s:.0f} s per sync{why})")
    return None


def fresh_full_sync(run: Run, p, view: NodeView) -> Timing:
    """A full sync on a fresh node (its pod bridge and routes, no pods): kube-proxy's start-up."""
    from .kernel import netns, wiring

    ns = wiring.host_ns(run.name, "cp")
    run.journal_ns(ns)
    try:
        with wiring.Netlink() as ipr_of:
            wiring.make_namespace(run.name, ns, "node", "cp", ipr_of)
            # IPVS refuses real servers it has no route to: the node has its pod CIDR on cbr0.
            wiring.setup_node(run.name, "cp", GATEWAY, ipaddress.ip_network(POD_CIDR).prefixlen, [], ipr_of)
        return timed_sync(p, ns, view, {})
    finally:
        netns.delete(ns)


def sync_summary(samples: list[Timing], skipped: str | None) -> dict:
    if not samples:
        return {"not_measured": skipped or "not run"}
    out = {
        "total_s": spread([t.total for t in samples]),
        "render_s": spread([t.render for t in samples]),
        "kernel_s": spread([t.kernel for t in samples]),
        "samples": [t.to_json() for t in samples],
    }
    r, k = out["render_s"]["median"], out["kernel_s"]["median"]
    out["render_share"] = r / (r + k) if r + k else None  # of render + kernel
    out["render_over_kernel"] = r / k if k else None  # what rendering adds on top of the tool
    return out


def data_plane(node: Node, target: ServicePort, plan: Plan) -> dict:
    flush_conntrack(node.ns)
    _, failed = connect_latencies(node.client_ns, target.cluster_ip, target.port, plan.warmup)
    if failed == plan.warmup:
        return {"not_measured": f"no connection to {target.cluster_ip}:{target.port} succeeded (rules not working?)"}
    rounds, failures, pooled = [], 0, []
    for _ in range(plan.rounds):
        lat, f = connect_latencies(node.client_ns, target.cluster_ip, target.port, plan.connections)
        failures += f
        if lat:
            rounds.append(latency_summary(lat))
            pooled += lat
    if not rounds:
        return {"not_measured": "every connection failed"}
    out = {k: spread([r[k] for r in rounds]) for k in ("p01", "p50", "p99")}
    out.update(rounds=rounds, failed=failures, connections=plan.connections * plan.rounds,
               pooled=latency_summary(pooled), unit="ms")
    return out


# --------------------------------------------------------------------------- lab build


def pod_ip(i: int) -> str:
    return str(ipaddress.ip_address("10.200.0.0") + 2 + i)


def build_testbed(run: Run, n: int) -> tuple[float, float]:
    """One node and n pods wired by testbed's netlink (benchmarks/build.py's topology); (up, down) s."""
    from .kernel import netns, wiring

    lab = run.name
    t0 = time.perf_counter()
    with wiring.Netlink() as ipr_of:
        wiring.make_namespace(lab, wiring.host_ns(lab, "bnode"), "node", "bnode", ipr_of)
        wiring.setup_node(lab, "bnode", "10.200.0.1", 16, [], ipr_of)
        for i in range(n):
            wiring.add_pod(lab, "bnode", "b", f"p{i}", pod_ip(i), 16, "10.200.0.1", ipr_of)
    up = time.perf_counter() - t0
    t1 = time.perf_counter()
    for i in range(n):
        netns.delete(wiring.pod_ns(lab, "b", f"p{i}"))
    netns.delete(wiring.host_ns(lab, "bnode"))
    return up, time.perf_counter() - t1


def build_ip_commands(run: Run, n: int) -> tuple[float, float]:
    """The same topology wired with `ip` commands (iproute2), one command per step."""
    node = run.ns("ipnode")

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, stdout=subprocess.DEVNULL)

    t0 = time.perf_counter()
    ip("netns", "add", node)
    ip("-n", node, "link", "add", "cbr0", "type", "bridge")
    ip("-n", node, "addr", "add", "10.200.0.1/16", "dev", "cbr0")
    ip("-n", node, "link", "set", "cbr0", "up")
    for i in range(n):
        pod = run.ns(f"ip{i}")
        ip("netns", "add", pod)
        ip("-n", node, "link", "add", f"veth{i}", "master", "cbr0", "up", "type", "veth", "peer", "name", "eth0", "netns", pod)
        ip("-n", node, "link", "set", f"veth{i}", "type", "bridge_slave", "hairpin", "on")
        ip("-n", node, "link", "set", f"veth{i}", "addrgenmode", "none")  # as testbed: no IPv6 link-local
        ip("-n", pod, "link", "set", "lo", "up")
        ip("-n", pod, "link", "set", "eth0", "addrgenmode", "none")
        ip("-n", pod, "addr", "add", f"{pod_ip(i)}/16", "dev", "eth0")
        ip("-n", pod, "link", "set", "eth0", "up")
        ip("-n", pod, "route", "add", "default", "via", "10.200.0.1")
    up = time.perf_counter() - t0
    t1 = time.perf_counter()
    for i in range(n):
        ip("netns", "del", run.ns(f"ip{i}"))
    ip("netns", "del", node)
    return up, time.perf_counter() - t1


def measure_build(run: Run, plan: Plan, progress: Progress = _quiet) -> dict:
    if not shutil.which("ip"):
        return {"not_measured": "the `ip` command (iproute2) is not installed"}
    out = {"sizes": [], "waited_s": 0.0}
    for n in plan.pods:
        ours, theirs, destroyed = [], [], []
        for _ in range(plan.build_repeat):
            baseline = live_namespaces()
            ours.append(build_testbed(run, n))
            destroyed.append(settle(baseline, timeout=120, stall=2.0))  # the kernel's own teardown after the unmounts
            out["waited_s"] += destroyed[-1]
            baseline = live_namespaces()
            theirs.append(build_ip_commands(run, n))
            out["waited_s"] += settle(baseline, timeout=120, stall=2.0)
        e = {
            "pods": n,
            "testbed": _build_side(ours, n),
            "ip": _build_side(theirs, n),
            "kernel_destroy_s": spread(destroyed),
        }
        e["ratio_up"] = ratio(e["ip"]["up_s"]["median"], e["testbed"]["up_s"]["median"])
        e["ratio_down"] = ratio(e["ip"]["down_s"]["median"], e["testbed"]["down_s"]["median"])
        out["sizes"].append(e)
        progress(f"build {n:>5} pods: testbed {e['testbed']['ms_per_pod']['median']:.2f} ms/pod, "
                 f"ip {e['ip']['ms_per_pod']['median']:.2f} ms/pod ({e['ratio_up']:.1f}×); "
                 f"down {e['testbed']['down_s']['median']:.2f} s")
    return out


def _build_side(runs: list[tuple[float, float]], n: int) -> dict:
    return {"up_s": spread([r[0] for r in runs]), "down_s": spread([r[1] for r in runs]),
            "ms_per_pod": spread([r[0] / n * 1000 for r in runs]), "pods_per_s": spread([n / r[0] for r in runs])}


# --------------------------------------------------------------------------- IPVS in the VM


def ipvs_here() -> str | None:
    """None when this kernel has IPVS (inside `testbed vm`), else why not (the mode's own check)."""
    return proxy_modes.missing("ipvs")


def _tool(mode: str) -> str:
    return proxy_modes.get(mode).tool


def measure_programming(run: Run, mode: str, plan: Plan, progress: Progress = _quiet) -> dict:
    """Network programming latency in a default lab of this mode (testbed.latency): each change
    `plan.latency_repeat` times; change → rules on every node and change → traffic shows it."""
    from . import latency
    from .lab import Lab

    name = f"{run.name}p"  # under the run's name: Run.close() removes it whatever happens
    lab = Lab.up(None, name=name, mode=mode)
    try:
        results = latency.measure(lab, repeat=plan.latency_repeat, progress=lambda msg: progress(f"{mode} latency {msg}"))
    finally:
        Lab(name).down()
    return {"mode": mode, "topology": "default", "summary": latency.summary([m.to_json() for m in results]),
            "samples": [m.to_json() for m in results]}


def measure_ipvs_in_vm(plan: Plan, progress: Progress = _quiet) -> dict:
    """Run the IPVS part in `testbed vm` and return its mode result, or {"not_measured": why}."""
    try:
        from . import vm
    except ImportError as e:
        return {"mode": "ipvs", "not_measured": f"the VM runner is not in this build ({e})"}
    available = getattr(vm, "available", None)
    if available is None or not hasattr(vm, "run"):
        return {"mode": "ipvs", "not_measured": "the VM runner has no available()/run()"}
    why = available()
    if why:
        return {"mode": "ipvs", "not_measured": why}
    argv = [sys.executable, "-m", "testbed.bench", "--ipvs-only", "--json", "-",
            "--sizes", ",".join(map(str, plan.vm_sizes)), "--connections", str(plan.connections),
            "--rounds", str(plan.rounds), "--warmup", str(plan.warmup), "--repeat", str(plan.repeat),
            "--budget", str(plan.vm_budget_s), "--max-sync", str(plan.vm_max_sync_s)]
    if not plan.vm_control:
        argv.append("--no-control")
    argv += ["--latency-repeat", str(plan.latency_repeat)] if plan.latency_repeat else ["--no-latency"]
    out, err = io.BytesIO(), _LineSink(progress)
    timings: dict = {}
    try:
        rc = vm.run(argv, timeout=plan.vm_timeout_s, stdout=out, stderr=err, cwd=str(Path(__file__).resolve().parent.parent),
                    env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}, timings=timings)
    except Exception as e:  # noqa: BLE001 - VMError and friends: the reason, not a figure
        return {"mode": "ipvs", "not_measured": f"testbed vm failed: {e}"}
    err.flush()
    if rc != 0:
        return {"mode": "ipvs", "not_measured": f"the benchmark in the VM exited {rc}: {err.tail()}"}
    try:
        doc = json.loads(out.getvalue().decode())
        result = doc["modes"]["ipvs"]
    except (ValueError, KeyError) as e:
        return {"mode": "ipvs", "not_measured": f"the VM's output was not the expected JSON ({e})"}
    result["where"] = {"vm": True, "kernel": doc.get("machine", {}).get("kernel"), "boot_s": timings.get("boot"),
                       "total_s": timings.get("total"), "emulated": "qemu TCG (software emulation)"}
    return result


class _LineSink(io.RawIOBase):
    """A binary stream for the guest's stderr: each line goes to `progress` as it arrives."""

    def __init__(self, progress: Progress):
        super().__init__()
        self.progress = progress
        self.buf = b""
        self.lines: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.buf += bytes(b)
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self._emit(line)
        return len(b)

    def flush(self) -> None:
        if self.buf:
            self._emit(self.buf)
            self.buf = b""

    def _emit(self, line: bytes) -> None:
        text = line.decode(errors="replace").rstrip()
        if text:
            self.lines.append(text)
            self.progress(f"[vm] {text}")

    def tail(self, n: int = 5) -> str:
        return " | ".join(self.lines[-n:]) or "no output"


# --------------------------------------------------------------------------- the whole run


def machine() -> dict:
    cpu, mem = "", None
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
        mem = next((round(int(line.split()[1]) / 1024 / 1024, 1) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:")), None)
    except OSError:
        pass
    tools = {}
    for name, argv in (("iptables", ["iptables", "-V"]), ("nft", ["nft", "-v"]), ("ip", ["ip", "-V"])):
        path = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/sbin:/sbin")
        if path:
            proc = subprocess.run([path, *argv[1:]], capture_output=True, text=True, check=False)
            tools[name] = (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr) else "?"
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "memory_gib": mem,
            "python": platform.python_version(), "tools": tools, "in_vm": os.environ.get("TESTBED_IN_VM") == "1"}


def run(args, progress: Progress = _quiet, checkpoint: Callable[[dict], None] | None = None) -> dict:
    """Run the benchmark as `args` says (see add_arguments) and return the result document.
    `checkpoint(doc)` is called after each part with the document so far (to save it early)."""
    plan = make_plan(args)
    if os.geteuid() != 0:
        from .errors import PrivilegeError

        raise PrivilegeError("testbed bench needs root for network namespaces and rules: run it with sudo")
    started = time.time()
    t0 = time.perf_counter()
    doc = {"schema": SCHEMA, "started": started, "machine": machine(), "plan": plan.to_json(), "modes": {},
           "build": None, "published": PUBLISHED}
    ipvs_only = bool(getattr(args, "ipvs_only", False))
    r = Run()
    try:
        for mode in plan.modes:
            if mode == "ipvs":
                why = ipvs_here()
                if why is None:
                    doc["modes"]["ipvs"] = measure_mode(r, "ipvs", plan, progress)
                    doc["modes"]["ipvs"]["where"] = {"vm": doc["machine"]["in_vm"], "kernel": doc["machine"]["kernel"]}
                elif ipvs_only or getattr(args, "no_vm", False):
                    doc["modes"]["ipvs"] = {"mode": "ipvs", "not_measured": why}
                else:
                    progress("ipvs: this kernel has none; running that part in `testbed vm`")
                    doc["modes"]["ipvs"] = measure_ipvs_in_vm(plan, progress)
            elif not ipvs_only:
                doc["modes"][mode] = _guarded(lambda m=mode: measure_mode(r, m, plan, progress), mode)
            if checkpoint:
                checkpoint(doc)
        if plan.latency_repeat and plan.modes:  # `--modes none`: the lab build alone
            doc["programming"] = {}
            here = [m for m in (*plan.modes, "userspace") if m != "ipvs"] if not ipvs_only else []
            if "ipvs" in plan.modes and ipvs_here() is None:
                here.append("ipvs")
            elif "ipvs" in doc["modes"] and "programming" in doc["modes"]["ipvs"]:  # measured in the VM
                doc["programming"]["ipvs"] = doc["modes"]["ipvs"].pop("programming")
            for mode in here:
                doc["programming"][mode] = _guarded(lambda m=mode: measure_programming(r, m, plan, progress), mode)
            if ipvs_only and "ipvs" in doc["programming"]:
                doc["modes"].setdefault("ipvs", {})["programming"] = doc["programming"].pop("ipvs")
            if checkpoint:
                checkpoint(doc)
        if not ipvs_only and not getattr(args, "no_build", False):
            doc["build"] = _guarded(lambda: measure_build(r, plan, progress), "build")
    finally:
        r.close()
    doc["seconds"] = time.perf_counter() - t0
    doc["run"] = r.name
    doc["left_behind"] = {"namespaces": r.namespaces()}
    doc["summary"] = summarize(doc)
    return doc


def _guarded(fn, what: str) -> dict:
    from .errors import KernelFeatureError

    try:
        return fn()
    except KernelFeatureError as e:
        return {"mode": what, "not_measured": str(e)}


# --------------------------------------------------------------------------- ratios and targets


def _size_entry(mode_doc: dict | None, n: int) -> dict | None:
    for e in (mode_doc or {}).get("sizes", ()):
        if e["services"] == n:
            return e
    return None


def _fig(entry: dict | None, *path: str):
    cur = entry
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def summarize(doc: dict) -> dict:
    """The ratios (all inside this run) and each target: met / not met / not measured."""
    modes = doc.get("modes", {})
    ratios: dict = {"data_plane_p50_growth": {}, "full_sync_growth": {}}
    targets: list[dict] = []
    for mode, md in modes.items():
        sizes = [e for e in md.get("sizes", ()) if _fig(e, "data_plane", "p50", "median") is not None]
        if len(sizes) >= 2:
            a, b = sizes[0], sizes[-1]
            ratios["data_plane_p50_growth"][mode] = {
                "from": a["services"], "to": b["services"],
                "ratio": ratio(_fig(b, "data_plane", "p50", "median"), _fig(a, "data_plane", "p50", "median"))}
        full = [e for e in md.get("sizes", ()) if _fig(e, "full_sync", "total_s", "median") is not None]
        if len(full) >= 2:
            ratios["full_sync_growth"][mode] = {
                "from": full[0]["services"], "to": full[-1]["services"],
                "ratio": ratio(_fig(full[-1], "full_sync", "total_s", "median"), _fig(full[0], "full_sync", "total_s", "median"))}
    # The blog's comparison: iptables p50 from ~1,000 to 30,000 Services.
    ipt = modes.get("iptables")
    a = _fig(_size_entry(ipt, 1000), "data_plane", "p50", "median")
    b = _fig(_size_entry(ipt, 30000), "data_plane", "p50", "median")
    if a and b:
        ratios["iptables_p50_1000_to_30000"] = b / a
    largest = None
    for md in modes.values():
        for e in md.get("sizes", ()):
            if _fig(e, "data_plane", "p50") is not None:
                largest = max(largest or 0, e["services"])

    # Data-plane shape.
    for mode, want in (("iptables", "grows"), ("nftables", "flat"), ("ipvs", "flat")):
        g = ratios["data_plane_p50_growth"].get(mode)
        if mode not in modes:
            continue
        if g is None or g["ratio"] is None:
            targets.append(_target(f"data plane: {mode} first-packet p50 {want} with Services", None,
                                   modes[mode].get("not_measured") or "fewer than two sizes measured"))
            continue
        ok = g["ratio"] >= GROWS_RATIO if want == "grows" else g["ratio"] <= FLAT_RATIO
        bound = f"≥ {GROWS_RATIO}×" if want == "grows" else f"≤ {FLAT_RATIO}×"
        targets.append(_target(f"data plane: {mode} first-packet p50 {want} ({g['from']:,} → {g['to']:,} Services, {bound})",
                               ok, f"{g['ratio']:.2f}×"))
    if "nftables" in modes and "iptables" in modes:
        at = 30000
        worst = _fig(_size_entry(modes.get("nftables"), at), "data_plane", "p99", "median")
        best = _fig(_size_entry(ipt, at), "data_plane", "p01", "median")
        targets.append(_target(f"data plane: nftables p99 < iptables p01 at {at:,} Services (blog 2025)",
                               None if worst is None or best is None else worst < best,
                               f"not measured at {at:,} Services" if worst is None or best is None
                               else f"{worst:.3f} ms vs {best:.3f} ms"))

    # Control plane: rendering on top of the tool at 10,000 (or the largest measured) Services.
    for mode in ("iptables", "nftables"):
        md = modes.get(mode)
        if md is None:
            continue
        measured = [e for e in md.get("sizes", ()) if _fig(e, "full_sync", "render_over_kernel") is not None]
        at_10k = _size_entry(md, 10000)
        e = at_10k if _fig(at_10k, "full_sync", "render_over_kernel") is not None else (measured[-1] if measured else None)
        if e is None:
            targets.append(_target(f"sync: {mode} rendering ≤ {TARGET_RENDER_SHARE:.0%} on top of "
                                   f"{md.get('tool', 'the tool')} at 10,000 Services",
                                   None, md.get("not_measured") or "not measured"))
            continue
        r = e["full_sync"]["render_over_kernel"]
        targets.append(_target(f"sync: {mode} full-sync rendering ≤ {TARGET_RENDER_SHARE:.0%} on top of the kernel tool "
                               f"at {e['services']:,} Services",
                               r <= TARGET_RENDER_SHARE, f"+{r:.1%} (render {e['full_sync']['render_s']['median']:.3f} s, "
                               f"kernel {e['full_sync']['kernel_s']['median']:.3f} s)"))
    nft = modes.get("nftables")
    if nft is not None:
        small = _size_entry(nft, 100) or (nft.get("sizes") or [None])[0]
        big = _size_entry(nft, 10000) or ((nft.get("sizes") or [None])[-1])
        a, b = _fig(small, "one_change", "total_s", "median"), _fig(big, "one_change", "total_s", "median")
        if a and b and small is not big:
            ka, kb = _fig(small, "one_change", "kernel_s", "median"), _fig(big, "one_change", "kernel_s", "median")
            targets.append(_target(
                f"sync: nftables one-Service change at {big['services']:,} ≈ at {small['services']:,} Services "
                f"(≤ {TARGET_NFT_CHANGE_RATIO}×)",
                b / a <= TARGET_NFT_CHANGE_RATIO,
                f"{b / a:.1f}× ({a * 1000:.1f} → {b * 1000:.1f} ms; "
                f"nft -f alone {ka * 1000:.1f} → {kb * 1000:.1f} ms, {kb / ka:.1f}×)"))
        else:
            targets.append(_target("sync: nftables one-Service change flat", None, "not measured"))

    # Build.
    build = doc.get("build")
    if build:
        if build.get("not_measured"):
            targets.append(_target("build: ≤ 3 ms per pod", None, build["not_measured"]))
        else:
            e = build["sizes"][-1]
            v = e["testbed"]["ms_per_pod"]["median"]
            targets.append(_target(f"build: ≤ {TARGET_MS_PER_POD:g} ms per pod at {e['pods']:,} pods", v <= TARGET_MS_PER_POD,
                                   f"{v:.2f} ms/pod (ip commands: {e['ip']['ms_per_pod']['median']:.2f}, {e['ratio_up']:.1f}×)"))
            e = next((x for x in build["sizes"] if x["pods"] == 1000), None)
            if e is None:
                targets.append(_target("build: 1,000 pods up ≤ 3 s, down ≤ 2 s", None, "1,000 pods not in this run"))
            else:
                up, down = e["testbed"]["up_s"]["median"], e["testbed"]["down_s"]["median"]
                targets.append(_target(f"build: 1,000 pods up ≤ {TARGET_UP_1000_S:g} s", up <= TARGET_UP_1000_S, f"{up:.2f} s"))
                targets.append(_target(f"build: 1,000 pods down ≤ {TARGET_DOWN_1000_S:g} s", down <= TARGET_DOWN_1000_S,
                                       f"{down:.2f} s (+{e['kernel_destroy_s']['median']:.2f} s until the kernel freed them)"))
    return {"ratios": ratios, "targets": targets}


def _target(name: str, met: bool | None, value: str) -> dict:
    return {"target": name, "met": met, "value": value}


# --------------------------------------------------------------------------- CLI


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quick", action="store_true", help="CI size: 100, 1,000, 5,000 Services; 10, 100, 300 pods (~2 min)")
    ap.add_argument("--json", default="results/bench.json", metavar="PATH", help="write the results here ('-': stdout)")
    ap.add_argument("--plots", default="docs", metavar="DIR", help="write the PNG plots here ('' or 'none': no plots)")
    ap.add_argument("--modes", default=None,
                    help="comma-separated: iptables,nftables,ipvs (default: all; none: only the lab build)")
    ap.add_argument("--sizes", default=None, help="numbers of Services, comma-separated")
    ap.add_argument("--pods", default=None, help="pod counts for the build part, comma-separated")
    ap.add_argument("--connections", type=int, default=None, help="connections per round")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of connections per mode and size")
    ap.add_argument("--warmup", type=int, default=None, help="connections before measuring")
    ap.add_argument("--repeat", type=int, default=None, help="control-plane samples per kind, mode and size (at most)")
    ap.add_argument("--build-repeat", type=int, default=None, help="build runs per pod count")
    ap.add_argument("--budget", type=float, default=None, help="seconds of control-plane samples per kind, mode and size")
    ap.add_argument("--max-sync", type=float, default=None, help="skip a sync projected to take longer (seconds)")
    ap.add_argument("--vm-budget", type=float, default=None, help="--budget for the IPVS part in `testbed vm`")
    ap.add_argument("--vm-max-sync", type=float, default=None, help="--max-sync for the IPVS part in `testbed vm`")
    ap.add_argument("--vm-timeout", type=float, default=None, help="seconds for the IPVS part in `testbed vm`")
    ap.add_argument("--no-build", action="store_true", help="skip the lab-build part")
    ap.add_argument("--no-control", action="store_true", help="skip the control-plane part (rules are still installed)")
    ap.add_argument("--no-vm", action="store_true", help="do not start `testbed vm` for IPVS")
    ap.add_argument("--no-latency", action="store_true", help="skip the network-programming-latency part")
    ap.add_argument("--latency-repeat", type=int, default=None, help="runs of each change per mode (latency part)")
    ap.add_argument("--ipvs-only", action="store_true", help=argparse.SUPPRESS)  # what the VM runs


def write_json(doc: dict, path: str) -> None:
    text = json.dumps(doc, indent=1, default=str)
    if path == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="testbed bench", description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    if args.ipvs_only:  # inside the VM: JSON on stdout, progress on stderr, no rich, no plots
        try:
            doc = run(replace_modes(args, ["ipvs"]), progress=lambda m: print(m, file=sys.stderr, flush=True))
        except Exception as e:  # noqa: BLE001 - reported on stderr, exit 1
            import traceback

            traceback.print_exc()
            print(f"error: {e}", file=sys.stderr)
            return 1
        write_json(doc, args.json)
        return 0
    from .bench_view import cmd_bench

    return cmd_bench(args)


def replace_modes(args, modes: list[str]):
    ns = argparse.Namespace(**vars(args))
    ns.modes = modes
    return ns


if __name__ == "__main__":
    sys.exit(main())
