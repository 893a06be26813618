"""The processes a lab starts (pod workloads): started inside a namespace, ended by recorded PID.

A PID is only signalled while its start time still matches the one recorded, so a reused PID
belonging to someone else is never touched.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import state
from .kernel import netns


def _stat(path: str) -> list[str] | None:
    """The fields of a /proc/…/stat file after the command name (state first), or None."""
    try:
        return Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks): identifies a process beyond its PID."""
    fields = _stat(f"/proc/{pid}/stat")
    return fields[19] if fields else None


def alive(pid: int, started: str) -> bool:
    fields = _stat(f"/proc/{pid}/stat")
    return bool(fields) and fields[19] == started and fields[0] != "Z"


def gone(pid: int, started: str) -> bool:
    """Whether the process has let go of everything it held (files, locks). Stricter than not
    alive(): a killed multi-threaded process shows its leader as a zombie while the other threads
    are still exiting, and until the last one has, its open files (the lab's lock) stay held."""
    if start_time(pid) != started:
        return True
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    return all((fields := _stat(f"/proc/{pid}/task/{tid}/stat")) is None or fields[0] in ("Z", "X") for tid in threads)


def addon_file(lab: str, workload: str) -> Path:
    """The data file a dns or ingress pod serves from (rewritten by the lab, reloaded on SIGHUP)."""
    return state.lab_dir(lab) / {"dns": "dns/zone.json", "ingress": "ingress/routes.json"}[workload]


def workload_spec(lab: str, pod) -> dict:
    """What a pod runs: netexec on its container ports (9376/TCP when it declares none; SCTP ports
    are skipped by netexec itself where the kernel has no SCTP), or the DNS server / ingress
    controller for the add-on pods."""
    from .kernel import wiring

    # The kubelet's hostname: spec.hostname, else the pod's name cut to a DNS label's 63 characters.
    hostname = (getattr(pod, "hostname", None) or pod.name)[:63].rstrip("-.")
    # A host-network pod shares its node's ports with kube-proxy's own (10249, 10256, the agent serves
    # them) and with the node's other host-network pods: it serves only the ports it declares.
    ports = [c for c in pod.ports if not getattr(pod, "host_network", False) or c.port not in (10249, 10256)]
    default = [] if getattr(pod, "host_network", False) else [9376]
    spec = {"key": pod.key, "ns": wiring.netns_of(lab, pod), "hostname": hostname,
            "tcp": sorted({c.port for c in ports if c.protocol == "TCP"}) or default,
            "udp": sorted({c.port for c in ports if c.protocol == "UDP"}),
            "sctp": sorted({c.port for c in ports if c.protocol == "SCTP"}), "workload": getattr(pod, "workload", "netexec")}
    if spec["workload"] == "dns":
        spec["argv"] = ["-m", "testbed.dns_server", "--zone", str(addon_file(lab, "dns"))]
    elif spec["workload"] == "ingress":
        spec["argv"] = ["-m", "testbed.ingress_proxy", "--routes", str(addon_file(lab, "ingress")),
                        "--port", str(spec["tcp"][0])]
    return spec


AGENT_STARTED = "agent.started"  # in the lab's directory: the pid of an agent that has run its first step


def agent_started(lab: str, rec: dict) -> bool:
    """The agent recorded in `rec` has run its first step (testbed.agent writes the marker)."""
    try:
        return (state.lab_dir(lab) / AGENT_STARTED).read_text().strip() == str(rec["pid"])
    except OSError:
        return False


def start_agent(lab: str, env: dict[str, str] | None = None, held: bool = False) -> dict:
    """The lab's agent (prober and grace-period clock), recorded like every process we start.
    `env`: variables added to its environment (a test's fault hook, testbed.faultpoint).
    held: the agent imports, then waits for release_agent (its first step reads the lab, so `up`
    starts it before building and releases it once the lab is there: on a slow machine its
    seconds of imports overlap the build); the record's "go" is the fd to release it with."""
    logs = state.lab_dir(lab) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **(env or {}), PYTHONPATH=str(Path(__file__).resolve().parent.parent), PYTHONDONTWRITEBYTECODE="1")
    argv, keep, go = [sys.executable, "-m", "testbed.agent", "--lab", lab], (), None
    if held:
        r, go = os.pipe()
        argv, keep = argv + ["--go-fd", str(r)], (r,)
    try:
        with open(logs / "agent.log", "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                    env=env, close_fds=True, pass_fds=keep)
    except BaseException:
        if go is not None:
            os.close(go)
        raise
    finally:
        for fd in keep:
            os.close(fd)
    rec = {"pid": proc.pid, "start": start_time(proc.pid) or "?"}
    state.journal(lab, "pid", proc.pid, rec["start"])
    return {**rec, "go": go} if held else rec


def release_agent(rec: dict) -> dict:
    """Let a held agent (start_agent(held=True)) run; closing its fd without this ends it instead.
    Returns the record without the fd, as the lab keeps it."""
    go = rec.get("go")
    if go is not None:
        try:
            os.write(go, b"G")
        except BrokenPipeError:
            pass  # it died meanwhile: wait_agent_started says so, the next command restarts it
        finally:
            os.close(go)
            rec["go"] = None
    return {k: v for k, v in rec.items() if k != "go"}


def start_userspace_proxy(lab: str, node: str, table: str, timeout: float | None = None) -> dict:
    """The userspace proxy for one node, inside that node's namespace; waits until it listens."""
    from .kernel import wiring

    logs = state.lab_dir(lab) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    r, w = os.pipe()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), PYTHONDONTWRITEBYTECODE="1")
    argv = [sys.executable, "-m", "testbed.userspace_proxy", "--table", table,
            "--netns", netns.path(wiring.host_ns(lab, node)), "--ready-fd", str(w)]
    with open(logs / f"userspace-proxy-{node}.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(w,),
                                start_new_session=True, env=env, close_fds=True)
    os.close(w)
    rec = {"pid": proc.pid, "start": start_time(proc.pid) or "?"}
    state.journal(lab, "pid", proc.pid, rec["start"])
    try:
        ready, _, _ = select.select([r], [], [], timeout or START_TIMEOUT)
        data = os.read(r, 1) if ready else b""
    finally:
        os.close(r)
    if data != b"R":
        stop(rec["pid"], rec["start"])
        raise RuntimeError(f"the userspace proxy on {node} did not start (see {logs / f'userspace-proxy-{node}.log'})")
    return rec


# The `testbed vm` guest runs Python 20–30× slower than the host: give processes longer to start.
START_TIMEOUT = 90.0 if os.environ.get("TESTBED_IN_VM") == "1" else 10.0


def start_workloads(lab: str, specs: list[dict], timeout: float = START_TIMEOUT) -> dict[str, dict]:
    """Start netexec for each spec {key, ns, hostname, tcp, udp, sctp} in parallel; wait until all serve.

    Returns key → {pid, start}. Raises RuntimeError naming the pods that failed to come up.
    """
    return launch_workloads(lab, specs).wait(timeout)


@dataclass
class Starting:
    """Workload processes started and not yet known to serve (launch_workloads)."""

    started: dict[str, dict]  # key → {pid, start}
    pending: dict  # ready-pipe fd → (spec, process)
    logs: Path

    def wait(self, timeout: float = START_TIMEOUT) -> dict[str, dict]:
        """Until every one serves; key → {pid, start}. RuntimeError names the ones that did not."""
        deadline = time.monotonic() + timeout
        failed = []
        while self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                failed += [s["key"] + " (no ready signal in time)" for s, _ in self.pending.values()]
                break
            ready, _, _ = select.select(list(self.pending), [], [], left)
            for fd in ready:
                spec, proc = self.pending.pop(fd)
                data = os.read(fd, 1)
                os.close(fd)
                if data != b"R":
                    proc.wait(timeout=2)
                    failed.append(f"{spec['key']} (exit {proc.returncode}; see {self.logs})")
        for fd in self.pending:
            os.close(fd)
        self.pending = {}
        if failed:
            raise RuntimeError("workloads failed to start: " + ", ".join(failed))
        return self.started


def launch_workloads(lab: str, specs: list[dict]) -> Starting:
    """Start netexec for each spec, recorded in the journal, without waiting: `.wait()` does."""
    from .kernel import wiring

    logs = state.lab_dir(lab) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = Starting({}, {}, logs)
    for spec in specs:
        if spec.get("workload", "netexec") == "netexec" and not (spec.get("tcp") or spec.get("udp") or spec.get("sctp")):
            continue  # a host-network pod that declares no port: nothing of ours to run
        r, w = os.pipe()
        if spec.get("argv"):
            argv = [sys.executable, *spec["argv"], "--netns", netns.path(spec["ns"]), "--ready-fd", str(w)]
        else:
            argv = [sys.executable, "-m", "testbed.netexec", "--hostname", spec["hostname"],
                    "--netns", netns.path(spec["ns"]), "--ready-fd", str(w)]
            for p in spec.get("tcp", ()):
                argv += ["--tcp", str(p)]
            for p in spec.get("udp", ()):
                argv += ["--udp", str(p)]
            for p in spec.get("sctp", ()):
                argv += ["--sctp", str(p)]
        log = open(logs / f"{wiring.fit_name(spec['key'].replace('/', '_'))}.log", "ab")
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(w,),
                                start_new_session=True, env=env, close_fds=True)
        log.close()
        os.close(w)
        out.started[spec["key"]] = {"pid": proc.pid, "start": start_time(proc.pid) or "?"}
        state.journal(lab, "pid", proc.pid, out.started[spec["key"]]["start"])
        out.pending[r] = (spec, proc)
    return out


def stop(pid: int, started: str, timeout: float = 3.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout`, only if the PID is still the process we started; returns
    once it is gone() (a caller that killed it already, as `testbed pod stop` does, waits here too)."""
    if gone(pid, started):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if _wait_gone(pid, started, timeout):
        return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    # Gone before returning (gone(), not just a zombie leader): a killed netexec's other threads hold
    # its listening sockets until they have exited, and on a busy machine the caller's next
    # connection could otherwise still be answered by it.
    _wait_gone(pid, started, 5.0)
    return True


def _wait_gone(pid: int, started: str, timeout: float) -> bool:
    """Reap and poll until the process is gone(), for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if gone(pid, started):
            return True
        time.sleep(0.005)
    return False


def stop_many(procs: list[tuple[int, str]], timeout: float = 3.0) -> int:
    """Stop several recorded processes at once (signal all, then wait), returning how many were alive."""
    live = [(p, s) for p, s in procs if alive(p, s)]
    for pid, _ in live:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p, s) for p, s in live):
        for pid, _ in live:
            _reap(pid)
        time.sleep(0.005)
    for pid, st in live:
        if alive(pid, st):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(pid)
    return len(live)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def pids_in_named(names) -> list[tuple[int, str]]:
    """Processes inside any of the named network namespaces (names that no longer exist are skipped)."""
    inodes = set()
    for n in names:
        try:
            inodes.add(os.stat(netns.path(n)).st_ino)
        except OSError:
            pass
    return pids_in_namespaces(inodes)


def pids_in_namespaces(inodes: set[int]) -> list[tuple[int, str]]:
    """Processes whose network namespace is one of ours (for `down` after a crash lost the PIDs)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ino = os.stat(f"/proc/{entry}/ns/net").st_ino
        except OSError:
            continue
        if ino in inodes and int(entry) != os.getpid():
            st = start_time(int(entry))
            if st:
                out.append((int(entry), st))
    return out
