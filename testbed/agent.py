"""The lab's agent: the kubelet's prober and the grace-period clock, one process per lab.

    python -m testbed.agent --lab NAME      (started by `testbed up`, ended by `testbed down`)

- Readiness and liveness probes (httpGet, tcpSocket, exec) run as the kubelet runs them: httpGet
  and tcpSocket from the pod's node namespace to the pod IP, exec inside the pod's namespace;
  every `periodSeconds` after `initialDelaySeconds`, each attempt bounded by `timeoutSeconds`;
  readiness flips after `failureThreshold` failures / `successThreshold` successes in a row;
  a liveness failure restarts the pod's server (same pod, same IP, restart count + 1).
- Terminating pods are removed when their grace period ends.
- kube-proxy's health server on every node (healthCheckNodePort: 200 with local ready endpoints,
  503 otherwise) and the cloud load balancer's health checks of it, every second.
Every change goes through the lab's normal sync (endpoints, then one rules transaction per node).
A sync that fails (a node's rules refused, a full /run) does not end the agent: the lab records
which nodes are out of date, the agent logs the error and goes on after a pause. Killed, it is
started again by the next testbed command that opens the lab (Lab.ensure_agent).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import state, supervisor
from .errors import LabNotFound, TestbedError
from .healthserver import HealthServers
from .kernel import netns, wiring

TICK = 0.05
ERROR_PAUSE = 1.0  # after a failed step, before the next


@dataclass
class _Track:
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    result: bool | None = None


def _port(probe, pod) -> int | None:
    if isinstance(probe.port, int):
        return probe.port
    for c in pod.ports:
        if c.name == probe.port:
            return c.port
    return None


def run_probe(lab: str, pod, probe) -> bool:
    """One attempt of one probe; True on success."""
    from probes.connect import tcp_request

    from .model import foreign_command

    if probe.action == "exec":
        if foreign_command(probe.command):
            return True  # the container image's own command, absent here: named at load, taken as passing
        try:
            r = subprocess.run(list(probe.command), preexec_fn=netns.preexec(wiring.netns_of(lab, pod)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=probe.timeout)
            return r.returncode == 0
        except (subprocess.TimeoutExpired, OSError):
            return False
    port = _port(probe, pod)
    if port is None:
        return False
    node_ns = wiring.host_ns(lab, pod.node)
    if probe.action in ("tcp", "grpc"):  # gRPC: the connection only (the health protocol is not spoken)
        r = tcp_request(node_ns, pod.ip, port, path="/healthz", timeout=probe.timeout)
        return r.outcome == "answered" or r.outcome == "error"  # connected is enough
    r = tcp_request(node_ns, pod.ip, port, path=probe.path, timeout=probe.timeout)
    return r.ok and r.status is not None and 200 <= r.status < 400


class Agent:
    LB_CHECK_PERIOD = 1.0  # the cloud LB's health-check interval

    def __init__(self, lab_name: str):
        self.lab_name = lab_name
        self.tracks: dict[tuple[str, int], _Track] = {}
        self.seen_at: dict[str, float] = {}
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self.health = HealthServers(lab_name)
        self.next_lb_check = 0.0

    def check_load_balancers(self, lab, saved: dict, cluster) -> None:
        """The cloud LB's health checks: GET nodeIP:healthCheckNodePort from the LB namespace."""
        from probes.connect import tcp_request

        if not saved.get("lb"):
            return
        checks = [(info.key, n, info.health_check_node_port) for info in cluster.services
                  if info.service.type == "LoadBalancer" and info.health_check_node_port for n in cluster.nodes]
        if not checks:
            return
        ns = saved["lb"]["ns"]
        results = list(self.pool.map(lambda c: tcp_request(ns, c[1].ip, c[2], path="/", timeout=1.0), checks))
        healthy: dict[str, list[str]] = {}
        for (key, node, _), r in zip(checks, results, strict=True):
            healthy.setdefault(key, [])
            if r.ok and r.status == 200:
                healthy[key].append(node.name)
        if healthy != saved["lb"].get("healthy"):
            lab.set_lb_health(healthy)

    def step(self) -> float:
        """Run what is due; return how long to sleep."""
        from .lab import Lab

        lab = Lab(self.lab_name)
        saved = state.read(self.lab_name)
        if saved is None:
            raise SystemExit(0)
        now_wall = time.time()
        if any(r.get("terminating") and r["terminating"] <= now_wall for r in saved["alloc"]["pods"].values()):
            lab.expire_terminating(now_wall)
            return 0.0
        cluster = lab.cluster()
        self.health.update(cluster, saved)
        now = time.monotonic()
        if now >= self.next_lb_check:
            self.next_lb_check = now + self.LB_CHECK_PERIOD
            self.check_load_balancers(lab, saved, cluster)
        due = []
        live_keys = set()
        for pod in cluster.pods:
            if pod.terminating or pod.key not in saved["pods"]:
                continue
            started = self.seen_at.setdefault(pod.key, now)
            for i, probe in enumerate(pod.probes):
                key = (pod.key, i)
                live_keys.add(key)
                t = self.tracks.setdefault(key, _Track(next_at=started + probe.initial_delay))
                if now >= t.next_at:
                    t.next_at = now + probe.period
                    due.append((pod, i, probe, t))
        for key in list(self.tracks):
            if key not in live_keys:
                del self.tracks[key]
        if not due:
            wake = min([t.next_at for t in self.tracks.values()] + [self.next_lb_check], default=now + 0.5)
            return max(TICK, min(0.5, wake - now))
        results = list(self.pool.map(lambda d: run_probe(self.lab_name, d[0], d[2]), due))
        ready_changes: dict[str, bool] = {}
        restarts: dict[str, dict] = {}
        for (pod, _i, probe, t), ok in zip(due, results, strict=True):
            t.successes, t.failures = (t.successes + 1, 0) if ok else (0, t.failures + 1)
            if probe.kind == "readiness":
                if not ok and t.failures >= probe.failure_threshold and t.result is not False:
                    t.result = False
                    ready_changes[pod.key] = False
                elif ok and t.successes >= probe.success_threshold and t.result is not True:
                    t.result = True
                    ready_changes[pod.key] = True
            elif probe.kind == "liveness" and not ok and t.failures >= probe.failure_threshold:
                t.failures = 0
                restarts[pod.key] = self._restart(saved, pod)
                t.next_at = time.monotonic() + probe.initial_delay + probe.period
        restarts = {k: v for k, v in restarts.items() if v}
        if ready_changes or restarts:
            lab.set_pod_state(ready_changes, restarts)
        return 0.0

    def _restart(self, saved: dict, pod) -> dict | None:
        """Kill the pod's server and start it again in the same namespace (a container restart)."""
        rec = saved["pods"].get(pod.key)
        if rec and rec.get("proc"):
            supervisor.stop(rec["proc"]["pid"], rec["proc"]["start"], timeout=1.0)
        spec = supervisor.workload_spec(self.lab_name, pod)
        try:
            return supervisor.start_workloads(self.lab_name, [spec])[pod.key]
        except RuntimeError:
            return None

    def run(self) -> None:
        started = False
        while True:
            try:
                delay = self.step()
            except LabNotFound:
                return  # `down` removed the lab under us
            except (TestbedError, RuntimeError, OSError) as e:
                _log(f"step failed, again in {ERROR_PAUSE:.0f} s: {e}")
                delay = ERROR_PAUSE
            if not started:
                started = _mark_started(self.lab_name)
            if delay:
                time.sleep(delay)


def _mark_started(lab: str) -> bool:
    """After the first step (probes scheduled, health servers listening, the LB checked once):
    waits on the agent's work start their clocks here, not at `up`, since a busy machine can take
    seconds to import it (Lab.wait_agent_started)."""
    try:
        (state.lab_dir(lab) / supervisor.AGENT_STARTED).write_text(f"{os.getpid()}\n")
        return True
    except OSError:
        return False


def _log(message: str) -> None:
    """A line in the agent's log (its stderr); a full file system must not end the agent."""
    try:
        print(f"{time.strftime('%H:%M:%S')} agent: {message}", file=sys.stderr, flush=True)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="testbed.agent")
    ap.add_argument("--lab", required=True)
    ap.add_argument("--go-fd", type=int, help="wait for a byte on this fd before the first step (EOF: exit)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.go_fd is not None:
        with os.fdopen(args.go_fd, "rb", buffering=0) as go:
            if not go.read(1):
                return 0  # `up` failed before the lab was there: nothing to follow
    try:
        Agent(args.lab).run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
