"""Pod wiring speed: testbed's in-process netlink against the same topology wired with `ip` commands.

    sudo .venv/bin/python benchmarks/build.py [--pods 300] [--repeat 3]

Both sides build, in fresh namespaces named `bench…`, one node namespace with a pod bridge and N pod
namespaces each with a veth to the bridge (hairpin on), an address, `lo` and `eth0` up and a
default route; then tear everything down. Prints ms per pod for each, and their ratio, measured in
the same run. No packets are sent. Targets (issue #2): ≤ 3 ms per pod, 300 pods in under 1 s.

Tearing down only unmounts the namespaces: the kernel destroys them afterwards, in the background and
under rtnl_lock. Before each build the benchmark waits (bounded) until that is done, so no build pays
for the previous one's cleanup; the wait is reported, not counted.

Per-pod cost grows with the pod count on both sides: each new pod's eth0 sends IPv6 link-local
multicast (DAD, MLD reports, router solicitations) that cbr0 floods to every other pod, so the
kernel's softirq work is quadratic in pods on one bridge (~2 ms/pod at 300, ~10 ms/pod at 1000).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.kernel import netns, wiring  # noqa: E402

LAB = "bench"
SETTLE_TIMEOUT = 60.0


def pod_ip(i: int) -> str:
    return str(ipaddress.ip_address("10.200.0.0") + 2 + i)


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


def settle(baseline: int | None) -> float:
    """Wait until the kernel has destroyed the last run's namespaces: back to `baseline` (others' labs
    may come and go, so a little above is fine) or no progress for 2 s; at most SETTLE_TIMEOUT."""
    if baseline is None:
        return 0.0
    t0 = time.perf_counter()
    best, best_at = live_namespaces(), t0
    while time.perf_counter() - t0 < SETTLE_TIMEOUT:
        now = live_namespaces()
        if now is None or now <= baseline + 5:
            break
        if now < best:
            best, best_at = now, time.perf_counter()
        elif time.perf_counter() - best_at > 2.0:
            break
        time.sleep(0.05)
    return time.perf_counter() - t0


def build_testbed(n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    with wiring.Netlink() as ipr_of:
        wiring.make_namespace(LAB, wiring.host_ns(LAB, "node"), "node", "node", ipr_of)
        wiring.setup_node(LAB, "node", "10.200.0.1", 16, [], ipr_of)
        for i in range(n):
            wiring.add_pod(LAB, "node", "default", f"p{i}", pod_ip(i), 16, "10.200.0.1", ipr_of)
    built = time.perf_counter() - t0
    t1 = time.perf_counter()
    for i in range(n):
        netns.delete(wiring.pod_ns(LAB, "default", f"p{i}"))
    netns.delete(wiring.host_ns(LAB, "node"))
    return built, time.perf_counter() - t1


def build_ip_commands(n: int) -> tuple[float, float]:
    node = "benchip-node"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, stdout=subprocess.DEVNULL)

    t0 = time.perf_counter()
    ip("netns", "add", node)
    ip("-n", node, "link", "add", "cbr0", "type", "bridge")
    ip("-n", node, "addr", "add", "10.200.0.1/16", "dev", "cbr0")
    ip("-n", node, "link", "set", "cbr0", "up")
    for i in range(n):
        pod = f"benchip-p{i}"
        ip("netns", "add", pod)
        ip("-n", node, "link", "add", f"veth{i}", "master", "cbr0", "up", "type", "veth", "peer", "name", "eth0", "netns", pod)
        ip("-n", node, "link", "set", f"veth{i}", "type", "bridge_slave", "hairpin", "on")
        ip("-n", pod, "link", "set", "lo", "up")
        ip("-n", pod, "addr", "add", f"{pod_ip(i)}/16", "dev", "eth0")
        ip("-n", pod, "link", "set", "eth0", "up")
        ip("-n", pod, "route", "add", "default", "via", "10.200.0.1")
    built = time.perf_counter() - t0
    t1 = time.perf_counter()
    for i in range(n):
        ip("netns", "del", f"benchip-p{i}")
    ip("netns", "del", node)
    return built, time.perf_counter() - t1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces): run with sudo", file=sys.stderr)
        return 1
    ours, theirs = [], []
    baseline = live_namespaces()
    waited = 0.0
    for _ in range(args.repeat):
        waited += settle(baseline)
        ours.append(build_testbed(args.pods))
        waited += settle(baseline)
        theirs.append(build_ip_commands(args.pods))
    waited += settle(baseline)
    n = args.pods

    def line(name: str, runs: list[tuple[float, float]]) -> tuple[float, float]:
        b = statistics.median(r[0] for r in runs)
        d = statistics.median(r[1] for r in runs)
        spread = max(r[0] for r in runs) - min(r[0] for r in runs)
        print(f"{name:<22} build {b * 1000:8.1f} ms ({b / n * 1000:5.2f} ms/pod, spread {spread * 1000:.1f} ms)"
              f"   teardown {d * 1000:8.1f} ms")
        return b, d

    print(f"{n} pods on one node, median of {args.repeat} runs, {os.cpu_count()} cores")
    b1, d1 = line("testbed (netlink)", ours)
    b2, d2 = line("ip commands", theirs)
    print(f"ratio build ip/testbed: {b2 / b1:.1f}x   teardown: {d2 / d1:.1f}x")
    print(f"target ≤ 3 ms/pod: {'met' if b1 / n * 1000 <= 3 else 'NOT met'} ({b1 / n * 1000:.2f} ms/pod)")
    if baseline is not None:
        print(f"(not counted: {waited:.1f} s waiting for the kernel to destroy torn-down namespaces before builds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
