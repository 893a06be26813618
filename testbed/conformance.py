"""Conformance rows and the matrix: (from, protocol, to) → expected outcome, backends, source seen.

A row reads like kube-proxy's packet-flow tables. It is data; `run_row` proves it on a live lab
with real packets: one crafted packet (scapy, captured at the client and at every pod at once) for
DNAT / SNAT / un-NAT / refused-or-dropped, plus, where asked, 300 connections and a chi-square
test for the balance. The same rows feed the pytest suite (tests/conformance) and `testbed verify`.
"""
from __future__ import annotations

import functools
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Mapping

from probes import connect
from probes.handshake import Handshake, handshake

from . import versions
from .control import ClusterState, PodInfo, lb_address
from .kernel import wiring

P_VALUE_FLOOR = 0.001


@dataclass(frozen=True)
class Row:
    """One behaviour.

    source: pod/NAME | client/NAME | node/NAME | backend/SVC (a pod backing SVC: hairpin)
    target: svc/NAME:PORT (its ClusterIP) | nodeport/NAME:PORT@NODE (a node IP, the NodePort)
            | localhost/NAME:PORT (127.0.0.1, the NodePort, from a node) | unserved/NAME:PORT
            (the ClusterIP on a port the Service does not have) | lb/NAME:PORT (its load-balancer
            address) | external/NAME:PORT (its first externalIP) | dns/FQDN (check dns) |
            ingress/HOST/PATH (check http, through the ingress controller's Service)
    expect: answered | refused | dropped | closed (accepted, then closed unanswered), or per mode
            {"iptables": ..., "*": ...}, per release below a version {"nftables<1.34": ..., "<1.30": ...}
            (the lab's kube-proxy version: the mode's bound first, the lowest first); check failover:
            failures (the dead backend keeps its share), no-failure (a proxy retries), recovers (a
            readiness probe removes it: time to recovery)
    backends: svc (any ready endpoint of the target) | self (the source pod) | zone (a ready endpoint
              on a node in the source node's topology.kubernetes.io/zone) | None
    source_seen: client (no SNAT) | node (a node address) | gateway (the source pod's node bridge)
    balance: also run 300 connections and require every backend, chi-square p > 0.001
    action: delete-backend (delete a Deployment pod behind the target, check its replacement);
            cycle-udp-backend (a UDP client keeps its source port while the pod answering it is deleted);
            stray-segment (an out-of-window segment from the backend on a live connection: answered | reset)
    notes: per-mode explanation shown with the result (documented kube-proxy differences); "*" for all
    skip: mode → why the row does not apply in that mode (static)
    needs: kernel features the row needs (names in FEATURES, e.g. "sctp"): where this kernel lacks
           one, the row is a skip saying what is missing and how to get it
    """

    behaviour: str
    source: str
    proto: str
    target: str
    expect: str | Mapping[str, str] = "answered"
    backends: str | None | Mapping[str, str | None] = None
    source_seen: str | None | Mapping[str, str | None] = None
    balance: bool = False
    action: str | None = None
    notes: Mapping[str, str] = field(default_factory=dict)
    check: str = "packet"  # packet | affinity | dns | http | failover | scheduler
    answer: tuple = ()  # dns: (TYPE, what) e.g. ("A", "svc/web"), ("CNAME", "x."), ("NXDOMAIN",); http: (status,)
    skip: Mapping[str, str] = field(default_factory=dict)  # mode → why this row does not apply there
    needs: tuple[str, ...] = ()  # kernel features (FEATURES), checked when the row runs
    short: str = ""  # the matrix's row name (fits 80 columns); the behaviour stays in the evidence
    scheduler: str = ""  # check scheduler: the IPVS scheduler shown on a copy of the target (ipvs_schedulers.py)

    def source_expected(self, mode: str, version: versions.Version = versions.DEFAULT) -> str | None:
        return by_mode(self.source_seen, mode, version, None)

    def expected(self, mode: str, version: versions.Version = versions.DEFAULT) -> str:
        return by_mode(self.expect, mode, version, "answered")

    def note(self, mode: str, version: versions.Version = versions.DEFAULT) -> str:
        return by_mode(self.notes, mode, version, "")

    @property
    def key(self) -> str:
        return f"{self.source} {self.proto} {self.target}" + (f" [{self.action}]" if self.action else "")


def by_mode(value, mode: str, version: versions.Version, default):
    """A row's value for a mode at a kube-proxy release: a plain value, or a mapping whose keys are
    "MODE<X.Y" / "<X.Y" (below that release; the mode's first, then the lowest bound), MODE, "*"."""
    if not isinstance(value, Mapping):
        return value
    below = []
    for key, v in value.items():
        m, sep, bound = key.partition("<")
        if sep and m in ("", mode) and version < versions.parse(bound):
            below.append((m == "", versions.parse(bound), v))
    if below:
        return min(below, key=lambda b: b[:2])[2]
    return value.get(mode, value.get("*", default))


@functools.cache
def kernel_has_sctp() -> bool:
    """SCTP sockets work here: loaded (/proc/net/sctp), or creating one succeeds (which autoloads
    the sctp module where it is one). The socket is never bound or connected."""
    if os.path.exists("/proc/net/sctp"):
        return True
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, connect.SCTP).close()
    except OSError:
        return False
    return True


# Kernel features a row can need: name → (is it here?, the skip reason where it is not).
FEATURES = {
    "sctp": (kernel_has_sctp, ("this kernel has no SCTP (CONFIG_IP_SCTP): run in `testbed vm`, whose guest "
                               "kernel loads the sctp module")),
}
# kube-proxy's userspace proxier refused SCTP ports (newProxySocket); testbed/render/userspace.py skips them.
NO_POLICIES_IN_USERSPACE = "kube-proxy's userspace mode has no traffic policies (eTP/iTP came later)"
NO_SCTP_IN_USERSPACE = ("kube-proxy's userspace proxier never supported SCTP "
                        "(newProxySocket: \"SCTP is not supported for user space proxy\")")


def skip_reason(row: Row, mode: str) -> str | None:
    """Why `row` cannot run in `mode` here (its static per-mode skip, then its kernel needs), or None."""
    if mode in row.skip:
        return row.skip[mode]
    for need in row.needs:
        present, why = FEATURES[need]
        if not present():
            return why
    return None


@dataclass(frozen=True)
class Cell:
    status: str  # pass | fail | skip
    reason: str = ""
    # What was seen, for the HTML report: dialled, dnat, source_seen, reply, p_value, counts,
    # timeline ([[seconds, outcome], ...]), recovery_ms, trace (text).
    data: Mapping = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Matrix:
    modes: list[str]
    rows: dict[str, dict[str, Cell]] = field(default_factory=dict)
    shorts: dict[str, str] = field(default_factory=dict)  # behaviour → short row name, where given

    def put(self, behaviour: str, mode: str, cell: Cell, short: str = "") -> None:
        self.rows.setdefault(behaviour, {})[mode] = cell
        if short:
            self.shorts[behaviour] = short

    @property
    def failed(self) -> bool:
        return any(c.status == "fail" for r in self.rows.values() for c in r.values())

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for r in self.rows.values() for c in r.values()) for s in ("pass", "fail", "skip")}

    def to_json(self) -> dict:
        return {"modes": list(self.modes), "rows": [
            {"behaviour": b, **({"short": self.shorts[b]} if b in self.shorts else {}),
             "results": {m: {"status": c.status, "reason": c.reason, **({"data": dict(c.data)} if c.data else {})}
                         for m, c in r.items()}}
            for b, r in self.rows.items()]}

    @classmethod
    def from_json(cls, data: dict) -> "Matrix":
        m = cls(list(data["modes"]))
        for row in data["rows"]:
            for mode, c in row["results"].items():
                m.put(row["behaviour"], mode, Cell(c["status"], c.get("reason", ""), c.get("data") or {}),
                      row.get("short", ""))
        return m

    def to_markdown(self) -> str:
        def esc(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")
        lines = ["| behaviour | " + " | ".join(self.modes) + " |", "|---|" + "---|" * len(self.modes)]
        for b, r in self.rows.items():
            cells = []
            for m in self.modes:
                c = r.get(m)
                cells.append("-" if c is None else f"**{c.status}** {esc(c.reason)}")
            lines.append(f"| {esc(b)} | " + " | ".join(cells) + " |")
        n = self.counts()
        lines.append("")
        lines.append(f"{n['pass']} passed, {n['fail']} failed, {n['skip']} skipped")
        return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- resolving a row


@dataclass(frozen=True)
class _Source:
    ns: str
    ip: str
    pod: PodInfo | None


def _service(cluster: ClusterState, name: str):
    for s in cluster.services:
        if s.service.name == name or s.key == name:
            return s
    raise LookupError(f"no Service {name!r}")


def _port_index(info, port: int, proto: str) -> int:
    for i, sp in enumerate(info.service.ports):
        if sp.port == port and sp.protocol.lower() == proto:
            return i
    raise LookupError(f"Service {info.key} has no port {port}/{proto}")


def _backends(cluster: ClusterState, info, i: int) -> dict[str, PodInfo]:
    return {p.name: p for p in cluster.ready_backends(info, i)}


def _zone(cluster: ClusterState, node: str | None) -> str | None:
    spec = next((n for n in cluster.lab.nodes if n.name == node), None)
    return spec.label_map.get("topology.kubernetes.io/zone") if spec else None


def _node_of(cluster: ClusterState, src: "_Source") -> str | None:
    if src.pod is not None:
        return src.pod.node
    return next((n.name for n in cluster.nodes if n.ip == src.ip), None)


def _resolve_source(lab: str, cluster: ClusterState, source: str) -> _Source:
    kind, _, name = source.partition("/")
    if kind == "pod":
        p = next((p for p in cluster.pods if p.name == name or p.key == name), None)
        if p is None:
            raise LookupError(f"no pod {name!r}")
        return _Source(wiring.netns_of(lab, p), p.ip, p)
    if kind == "backend":
        info = _service(cluster, name)
        pods = sorted({p.key: p for i in range(len(info.service.ports)) for p in _backends(cluster, info, i).values()}.values(),
                      key=lambda p: p.key)
        if not pods:
            raise LookupError(f"Service {name!r} has no ready backend pod")
        p = pods[0]
        return _Source(wiring.netns_of(lab, p), p.ip, p)
    if kind in ("node", "client"):
        hosts = cluster.nodes if kind == "node" else cluster.clients
        h = next((h for h in hosts if h.name == name), None)
        if h is None:
            raise LookupError(f"no {kind} {name!r}")
        return _Source(wiring.host_ns(lab, h.name), h.ip, None)
    raise LookupError(f"unknown source {source!r}")


_TARGET = re.compile(r"(svc|nodeport|localhost|unserved|lb|external)/([^:]+):(\d+)(?:@(.+))?")


def _resolve_target(cluster: ClusterState, target: str, proto: str):
    """→ (ip, port, service info, port index) for the address the row dials."""
    m = _TARGET.fullmatch(target)
    if not m:
        raise LookupError(f"unknown target {target!r}")
    kind, name, port, node = m[1], m[2], int(m[3]), m[4]
    info = _service(cluster, name)
    if kind == "unserved":
        return info.cluster_ip, port, info, None
    i = _port_index(info, port, proto)
    if kind == "svc":
        return info.cluster_ip, port, info, i
    if kind == "lb":
        if not info.load_balancer_ips:
            raise LookupError(f"Service {info.key} has no load-balancer address yet")
        return info.load_balancer_ips[0], port, info, i
    if kind == "external":
        if not info.service.external_ips:
            raise LookupError(f"Service {info.key} has no externalIPs")
        return info.service.external_ips[0], port, info, i
    np_ = info.node_ports[i]
    if not np_:
        raise LookupError(f"Service {info.key} port {port} has no NodePort")
    if kind == "localhost":
        return "127.0.0.1", np_, info, i
    return cluster.node(node).ip, np_, info, i


def _pod_namespaces(lab: str, cluster: ClusterState) -> dict[str, str]:
    # A host-network pod's namespace is its node's, which every packet crossing the node goes through:
    # not a place that says who answered (rows whose backends are host-network pods ask the answer).
    return {p.name: wiring.netns_of(lab, p) for p in cluster.pods if not p.host_network}


def _node_addresses(cluster: ClusterState) -> set[str]:
    return {n.ip for n in cluster.nodes} | {n.gateway for n in cluster.nodes} | {"127.0.0.1"}


def _wait_lb_healthy(lab, info) -> None:
    """eTP=Local load balancers send nowhere until their first health check passed (≈1 s after
    the agent's first step)."""
    from probes.poll import wait_until

    if info.service.type == "LoadBalancer" and info.health_check_node_port:
        type(lab)(lab.name).wait_agent_started()
        try:
            wait_until(lambda: (type(lab)(lab.name).saved.get("lb") or {}).get("healthy", {}).get(info.key),
                       timeout=10, message=f"a healthy node for {info.key}'s load balancer")
        except TimeoutError as e:
            raise TimeoutError(f"{e}; {_agent_evidence(lab)}") from None


def _agent_evidence(lab) -> str:
    """Why the agent's health checks did not land: is it alive, and what did it last log."""
    from . import state

    rec, alive = type(lab)(lab.name).agent_record()
    rec = rec or {}
    try:
        tail = (state.lab_dir(lab.name) / "logs" / "agent.log").read_text(errors="replace").strip().splitlines()[-5:]
    except OSError:
        tail = []
    return (f"agent pid {rec.get('pid')} {'alive' if alive else 'NOT running'}; its log: "
            + (" | ".join(tail) if tail else "(empty)"))


def _run_failover(lab, cluster: ClusterState, row: Row, mode: str) -> Cell:
    """A backend's server dies: a timeline of new connections, then the server is started again
    (and, with a readiness probe, made ready again). `expect` says what the client sees: `failures`
    (its share of new connections is refused until something removes the endpoint), `no-failure`
    (a proxy retries elsewhere) or `recovers` (the readiness probe removes it: time to recovery).

    With a probe, the timeline lasts until the lab has published the endpoint as unready (the rules
    on every node no longer have it), then one second more, however long that took. Every failed
    connection is explained in the evidence; in userspace mode from the proxy's own log (which
    names the client's ip:port): a connection that reached the dying backend, dials that timed out,
    or a proxy that gave up after its four dials."""
    from probes.failover import failover
    from probes.poll import wait_until

    src = _resolve_source(lab.name, cluster, row.source)
    ip, port, info, i = _resolve_target(cluster, row.target, row.proto.lower())
    probed = any(p.has_readiness_probe for p in cluster.pods if p.ip in {e.ip for e in info.endpoints[i]})
    if probed:  # pods with a readiness probe start unready: wait until all of them serve
        type(lab)(lab.name).wait_agent_started()
        wait_until(lambda: all(e.ready for e in _target_endpoints(lab, info, i)), timeout=15,
                   message=f"every endpoint of {info.key} ready")
        cluster = lab.cluster()
        info = _service(cluster, info.key)
    victim = sorted(_backends(cluster, info, i).values(), key=lambda p: p.key)[-1]
    victim_port = next(e.port for e in info.endpoints[i] if e.ip == victim.ip)
    victim_ep = f"{victim.ip}:{victim_port}"

    def removed():
        return all(not e.ready for e in _target_endpoints(lab, info, i) if e.ip == victim.ip)

    logs = ProxyLogs(lab.name) if mode == "userspace" else None
    try:
        t = failover(src.ns, ip, port, lambda: lab.stage(victim.name, "stop"), before=0.3,
                     after=1.0 if probed else 2.0, interval=0.02, timeout=probe_timeout(mode),
                     settled=removed if probed else None)
    finally:
        lab.stage(victim.name, "start")
        wait_until(lambda: connect.tcp_request(src.ns, victim.ip, victim_port).ok, timeout=15,
                   message=f"{victim.name}'s server back")
        if probed:
            wait_until(lambda: all(e.ready for e in _target_endpoints(lab, info, i)), timeout=15,
                       message=f"{victim.name} ready again")
    after = [s for s in t.samples if s.at >= 0]
    failed = [s for s in after if s.outcome != "answered"]
    span = after[-1].at if after else 0.0
    summary = (f"{len(failed)}/{len(after)} new connections failed in {span:.1f} s after {victim.name}'s "
               f"server died (killed within {t.change_took * 1000:.0f} ms)")
    expected = row.expected(mode)
    seen = {"victim": victim.name, "timeline": [[round(s.at, 3), s.outcome] for s in t.samples],
            "recovery_ms": None if t.recovery is None or expected != "recovers" else round(t.recovery * 1000)}
    if expected == "recovers":
        if t.settled_at is None:
            return Cell("fail", summary + f"{_kinds(failed)}: the readiness probe did not remove it within 15 s", seen)
        late = [s for s in after if s.at > t.settled_at]
        bad = [s for s in late if s.outcome != "answered" or s.backend == victim.name]
        if bad or t.recovery is None:
            return Cell("fail", summary + f"{_kinds(failed)}: {len(bad)}/{len(late)} connections made after its "
                                          f"endpoint left the rules ({t.settled_at * 1000:.0f} ms) failed or reached it", seen)
        return Cell("pass", f"recovered {t.recovery * 1000:.0f} ms after {victim.name}'s server died (its "
                            f"endpoint left every node's rules at {t.settled_at * 1000:.0f} ms); "
                            f"{len(failed)}/{len(after)} new connections failed before{_kinds(failed)}", seen)
    if expected == "no-failure":
        if logs is None:
            return Cell("pass" if not failed else "fail", summary + _kinds(failed), seen)
        why = logs.explain(failed, victim_ep, t.change_took)
        unexpected = [w for ok, w in why if not ok]
        evidence = summary + (": " + "; ".join(w for _, w in why) if why else "")
        if unexpected:
            return Cell("fail", evidence + " — not what kube-proxy's userspace proxier does", seen)
        return Cell("pass", evidence + ("; the proxy retried another backend for every connection it dialled "
                                        "after the server died" if failed else "; the proxy retried another backend"), seen)
    if not failed:
        return Cell("fail", summary + ": expected its share of connections to fail (nothing removes the endpoint)", seen)
    return Cell("pass", summary + _kinds(failed) + "; no readiness probe, so the endpoint stays and keeps its share", seen)


def _kinds(failed) -> str:
    """" (refused ×12, timeout ×1)": what the client saw."""
    counts: dict[str, int] = {}
    for s in failed:
        counts[s.outcome] = counts.get(s.outcome, 0) + 1
    return f" ({', '.join(f'{k} ×{n}' for k, n in sorted(counts.items()))})" if counts else ""


def probe_timeout(mode: str) -> float:
    """Each probe request's deadline. The userspace proxy may dial for up to the sum of upstream's
    EndpointDialTimeouts before it answers or gives up: the client waits that long, so a
    connection the proxy delivers late is not miscounted as failed (kube-proxy's clients wait)."""
    if mode == "userspace":
        from .userspace_proxy import ENDPOINT_DIAL_TIMEOUTS

        return sum(ENDPOINT_DIAL_TIMEOUTS) + 0.5
    # The killed server's port answers with a RST at once: the deadline only matters on a slow
    # machine (loaded, or the `testbed vm` guest), where a late answer is still an answer.
    return 2.0


class ProxyLogs:
    """The userspace proxies' logs of one lab, read from where they were when this was made."""

    def __init__(self, lab: str) -> None:
        from . import state

        # supervisor.start_userspace_proxy's file names: one per node.
        self.files = sorted((state.lab_dir(lab) / "logs").glob("userspace-proxy-*.log"))
        self.offsets = {f: f.stat().st_size for f in self.files}

    def failures(self) -> dict[str, list[tuple[str, str, str]]]:
        from .userspace_proxy import client_failures

        out: dict[str, list[tuple[str, str, str]]] = {}
        for f in self.files:
            with open(f, "rb") as fh:
                fh.seek(self.offsets[f])
                text = fh.read().decode("utf-8", "replace")
            for client, events in client_failures(text).items():
                out.setdefault(client, []).extend(events)
        return out

    def explain(self, failed, victim_ep: str, killed_within: float) -> list[tuple[bool, str]]:
        """(as kube-proxy would?, why) for each failed connection, from the proxy's log lines that
        name its client ip:port."""
        events = self.failures()
        out = []
        for s in failed:
            ev = events.get(s.local, [])
            when = (f"sent {s.at * 1000:.0f} ms after the kill began, done by {killed_within * 1000:.0f} ms; "
                    f"{s.outcome} after {s.elapsed * 1000:.0f} ms")
            broken = [e for e in ev if e[0] == "broken"]
            dials = [e for e in ev if e[0] in ("timeout", "refused")]
            timed_out = sum(e[0] == "timeout" for e in dials)
            if broken:
                # The proxy's dial had succeeded: the backend died with the connection open, and
                # upstream's copyBytes closes both sides too. Only the victim, only while it was dying.
                ok = broken[0][1] == victim_ep and s.at < killed_within
                whom = "the dying backend" if broken[0][1] == victim_ep else f"live backend {broken[0][1]}"
                out.append((ok, f"{s.local} reached {whom}, which ended it unanswered ({when}; {broken[0][2]})"))
            elif any(e[0] == "gave-up" for e in ev):
                # Upstream gives up after its four dials too; under load only if some timed out.
                out.append((timed_out > 0, f"{s.local}: the proxy gave up after {len(dials)} dials, {timed_out} "
                                           f"timed out ({when}), as upstream's four (250 ms … 2 s) would"))
            elif timed_out:
                out.append((False, f"{s.local}: the client's deadline passed while the proxy was still dialling "
                                   f"({timed_out} dial timeout(s); {when})"))
            else:
                out.append((False, f"{s.local}: the proxy logged nothing for it ({when}; {s.error or s.outcome})"))
        return out


def _target_endpoints(lab, info, i: int):
    """The Service port's endpoints as the lab has them now."""
    current = next(s for s in type(lab)(lab.name).cluster().services if s.key == info.key)
    return current.endpoints[i]


def _run_affinity(lab, cluster: ClusterState, row: Row) -> Cell:
    from probes.affinity import affinity

    src = _resolve_source(lab.name, cluster, row.source)
    ip, port, info, _ = _resolve_target(cluster, row.target, row.proto.lower())
    a = affinity(src.ns, ip, port, requests=15, proto=row.proto.lower())
    if not a.sticky:
        return Cell("fail", f"15 requests went to {sorted(set(a.sequence))} ({a.failures} failed): not sticky")
    return Cell("pass", f"15 requests in a row all reached {a.sequence[0]} (ClientIP affinity)")


def _ipvs_service(lab, node: str, ip: str, port: int, proto: str, pods: dict[str, str]) -> tuple[str | None, dict]:
    """(scheduler, {pod name: its real server's counters}) of ip:port's virtual server in `node`'s IPVS."""
    from .kernel import ipvs as kipvs

    vs = kipvs.read(wiring.host_ns(lab.name, node), stats=True)["services"].get(f"{ip}:{port}/{proto.upper()}", {})
    return vs.get("scheduler"), {pods.get(d["ip"], d["ip"]): d for d in vs.get("destinations", {}).values()}


def _run_scheduler(lab, cluster: ClusterState, row: Row) -> Cell:
    """Show one IPVS scheduler on a copy of the target Service that carries it (ipvs_schedulers.py):
    connections from the source pod (and, for dh, from the other node), the answering pods in
    order, and the real servers' counters in the client node's IPVS. The copy is deleted after."""
    import tempfile

    import yaml

    from probes.affinity import affinity
    from probes.poll import wait_until

    from . import ipvs_schedulers as sched

    src = _resolve_source(lab.name, cluster, row.source)
    _, port, info, i = _resolve_target(cluster, row.target, row.proto.lower())
    manifest = sched.copy_of(info.service, info.service.ports[i], row.scheduler)
    name = manifest["metadata"]["name"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="testbed-scheduler-") as f:
        yaml.safe_dump(manifest, f)
        f.flush()
        lab.apply(f.name)
    try:
        now = type(lab)(lab.name).cluster()
        ip, node = _service(now, f"{info.service.namespace}/{name}").cluster_ip, _node_of(now, src)
        pods = {p.ip: p.name for p in now.pods}

        def ipvs() -> dict:
            used, dests = _ipvs_service(lab, node, ip, port, row.proto, pods)
            if used != row.scheduler:
                raise LookupError(f"{node}'s IPVS schedules {ip}:{port} with {used}, not {row.scheduler}")
            return dests

        servers = len(ipvs())
        if servers < 2:
            return Cell("fail", f"{servers} real server(s) behind {ip}:{port} in {node}'s IPVS: nothing to choose")
        kind = sched.BEHAVIOURS[row.scheduler].kind
        n = sched.CONNECTIONS[kind]

        def answers(ns: str) -> list[str]:
            a = affinity(ns, ip, port, requests=n)
            if a.failures:
                raise LookupError(f"{a.failures} of {n} connections to {ip}:{port} failed")
            return list(a.sequence)

        busy, other, held = None, None, 0
        if kind == "least-loaded":
            with connect.held_open(src.ns, ip, port) as busy:
                wait_until(lambda: ipvs().get(busy, {}).get("active"), timeout=5,
                           message=f"{busy}'s open connection counted active in {node}'s IPVS")
                seq = answers(src.ns)
                held = ipvs()[busy]["active"]
        else:
            seq = answers(src.ns)
            if row.scheduler == "dh":
                peer = next(x.name for x in now.nodes if x.name != node)
                other = answers(wiring.host_ns(lab.name, peer))
        want = sched.expected_counts(seq, busy)
        # The kernel folds its per-CPU counters into what it reports every 2 s (the estimator).
        try:
            wait_until(lambda: sum(d["conns"] for d in ipvs().values()) >= sum(want.values()), timeout=8,
                       interval=0.25, message="the node's IPVS counters")
        except TimeoutError:
            pass  # judged below: the counters say what they say
        conns = {pod: d["conns"] for pod, d in ipvs().items()}
        seen = {"scheduler": row.scheduler, "sequence": seq, "other_node": other, "busy": busy, "ipvs_conns": conns}
        counters = f"{node}'s IPVS ({row.scheduler}) scheduled {sched.counts_text(conns)}"
        why = sched.judge(row.scheduler, seq, servers, busy, other) or sched.counters_disagree(conns, want)
        if why:
            return Cell("fail", f"{why}; {counters}", seen)
        if kind == "least-loaded":
            how = f"{busy} held a connection (active {held} before and after): {n} new ones went to the others"
        elif kind == "in-turn":
            how = f"{n} connections took the {servers} real servers in turn"
        elif kind == "per-connection":
            how = f"{n} connections from fresh source ports reached {len(set(seq))} of the {servers} real servers"
        else:
            how = f"{n} connections all reached {seq[0]}" + (f", and {n} from the other node" if other else "")
        return Cell("pass", f"{how}; {counters}", seen)
    finally:
        lab.delete("service", name, info.service.namespace)


def _run_dns(lab, cluster: ClusterState, row: Row) -> Cell:
    from probes import dnsq

    from .control import dns_ip

    src = _resolve_source(lab.name, cluster, row.source)
    name = row.target.removeprefix("dns/")
    kind, *rest = row.answer
    qtype = {"NXDOMAIN": "A", "ENDPOINTS": "A"}.get(kind, kind)
    a = dnsq.query(src.ns, dns_ip(cluster.lab), name, qtype)
    if a.outcome != "answered":
        return Cell("fail", f"no DNS answer from {dns_ip(cluster.lab)}: {a.outcome}")
    if kind == "NXDOMAIN":
        return Cell("pass" if a.rcode == "NXDOMAIN" else "fail", f"{name}: {a.rcode}")
    if kind == "A":
        want = {_service(cluster, rest[0].removeprefix("svc/")).cluster_ip}
    elif kind == "ENDPOINTS":  # a headless Service: the ready pod IPs
        info = _service(cluster, rest[0].removeprefix("svc/"))
        want = {e.ip for eps in info.endpoints for e in eps if e.ready}
    else:
        want = {rest[0]}
    got = set(a.data("A" if kind == "ENDPOINTS" else kind))
    if kind == "SRV":
        got = {" ".join(d.split()[2:]) for d in got}
    if got != want:
        return Cell("fail", f"{name} {qtype}: got {sorted(got) or a.rcode}, expected {sorted(want)}")
    return Cell("pass", f"{name} {qtype} → {', '.join(sorted(got))} (via {dns_ip(cluster.lab)}, the kube-dns ClusterIP)")


def _run_http(lab, cluster: ClusterState, row: Row) -> Cell:
    """Through the ingress controller's Service (its load-balancer address, else a node's NodePort)."""
    from probes import http

    from .control import INGRESS_NAMESPACE

    src = _resolve_source(lab.name, cluster, row.source)
    host, _, path = row.target.removeprefix("ingress/").partition("/")
    ctrl = _service(cluster, f"{INGRESS_NAMESPACE}/ingress-controller")
    if ctrl.load_balancer_ips:
        ip, port = ctrl.load_balancer_ips[0], ctrl.service.ports[0].port
    else:
        ip, port = cluster.nodes[0].ip, ctrl.node_ports[0]
    r = http.get(src.ns, ip, port, host, "/" + path)
    if r.outcome != "answered":
        return Cell("fail", f"GET http://{host}/{path} via {ip}:{port}: {r.outcome} ({r.error})")
    if row.answer:
        ok = r.status == row.answer[0]
        return Cell("pass" if ok else "fail", f"GET http://{host}/{path} → {r.status} {r.body[:40]!r}")
    info = _service(cluster, row.backends.removeprefix("svc/"))
    pods = {p.name for i in range(len(info.service.ports)) for p in _backends(cluster, info, i).values()}
    if r.pod not in pods:
        return Cell("fail", f"GET http://{host}/{path} answered by {r.pod!r} ({r.status}), expected a pod of {info.key}")
    return Cell("pass", f"GET http://{host}/{path} via {ip}:{port} → {r.pod} of {info.service.name}")


def run_row(lab, row: Row, mode: str) -> Cell:
    """Prove one row on a live lab (a testbed.lab.Lab) in `mode`."""
    why = skip_reason(row, mode)
    if why:
        return Cell("skip", why)
    cluster = lab.cluster()
    note = row.note(mode, cluster.kube_proxy_version())
    try:
        if row.check == "dns":
            cell = _run_dns(lab, cluster, row)
        elif row.check == "http":
            cell = _run_http(lab, cluster, row)
        elif row.check == "affinity":
            cell = _run_affinity(lab, cluster, row)
        elif row.check == "failover":
            cell = _run_failover(lab, cluster, row, mode)
        elif row.check == "scheduler":
            cell = _run_scheduler(lab, cluster, row)
        else:
            cell = _run(lab, cluster, row, mode)
    except LookupError as e:
        return Cell("fail", f"row does not fit this lab: {e}")
    if note and cell.status == "pass":
        return Cell(cell.status, f"{cell.reason} ({note})", cell.data)
    return cell


def _run(lab, cluster: ClusterState, row: Row, mode: str) -> Cell:
    name = lab.name
    proto = row.proto.lower()
    if row.action == "delete-backend":
        return _delete_backend(lab, cluster, row, proto)
    if row.action == "cycle-udp-backend":
        return _cycle_udp_backend(lab, cluster, row, mode)
    if row.action == "stray-segment":
        return _stray_segment(lab, cluster, row, mode)
    src = _resolve_source(name, cluster, row.source)
    ip, port, info, i = _resolve_target(cluster, row.target, proto)
    _wait_lb_healthy(lab, info)
    version = cluster.kube_proxy_version()
    expected = row.expected(mode, version)
    kind = by_mode(row.backends, mode, version, None)
    backends = _backends(cluster, info, i) if i is not None else {}
    if kind == "zone":  # topology-aware routing: the source node's zone only
        backends = {n: p for n, p in backends.items() if _zone(cluster, p.node) == _zone(cluster, _node_of(cluster, src))}
    pods = _pod_namespaces(name, cluster)
    pods.update({n: wiring.netns_of(name, p) for n, p in backends.items() if p.host_network})
    if src.pod is not None and not src.pod.host_network:  # a pod talking to itself is captured on its own eth0 too
        pods.setdefault(src.pod.name, src.ns)
    attempts = 40 * max(1, len(backends)) if kind == "self" else 1
    # From a node to 127.0.0.1 the packet leaves from loopback, as a local client's would.
    src_ip = "127.0.0.1" if ip == "127.0.0.1" else src.ip
    # A host-network pod is its node's namespace: it sends as the node does.
    from_node = row.source.startswith("node/") or (src.pod is not None and src.pod.host_network)
    iface = "any" if from_node else "eth0"  # a node's replies arrive on eth0 or cbr0
    h = None
    # A proxy (userspace mode) only opens its own connection once the client's handshake is
    # complete, so one crafted SYN cannot reach a backend there: a real connection is used. So it
    # is for SCTP, which the crafted-packet probe does not speak (an INIT alone proves no answer).
    # So it is for host-network backends: their node's namespace sees every packet that crosses the node,
    # so who answered is told by the answer itself.
    host_network = frozenset(wiring.netns_of(name, p) for p in backends.values() if p.host_network)
    if mode == "userspace" or proto == "sctp" or host_network:
        probe = functools.partial(connect_probe, node_namespaces=host_network)
    else:
        probe = handshake
    for _ in range(attempts):
        try:
            h = probe(src.ns, src_ip, ip, port, proto, backends=pods, timeout=1.0 if expected == "dropped" else 2.0,
                      iface=iface)
        except PermissionError:  # the node's own netfilter output hook dropped it: sendto() says EPERM
            h = Handshake(proto, f"{src_ip}:0", f"{ip}:{port}", "dropped", reply="EPERM")
        if kind != "self" or h.backend == (src.pod.name if src.pod else None) or h.outcome != "answered":
            break
    evidence = {"dialled": h.dialled, "outcome": h.outcome, "reply": h.reply, "backend": h.backend,
            "dnat": h.backend_saw_dst, "source_seen": h.backend_saw_src, "ms": round(h.elapsed * 1000)}
    if h.outcome != expected:
        extra = f" by {h.reply}" if h.reply else ""
        return Cell("fail", f"expected {expected}, got {h.outcome}{extra} (backend {h.backend or '-'}, "
                            f"saw {h.backend_saw_src or '-'} → {h.backend_saw_dst or '-'})", evidence)
    if expected == "refused":
        return Cell("pass", f"refused by {h.reply} after {h.elapsed * 1000:.0f} ms", evidence)
    if expected == "dropped":
        if h.reply == "EPERM":
            return Cell("pass", "dropped by the node's own output hook (sendto: EPERM)", evidence)
        return Cell("pass", f"no answer within {h.elapsed:.1f} s", evidence)
    if expected == "closed":
        return Cell("pass", f"connection accepted, then closed without an answer after {h.elapsed * 1000:.0f} ms")
    facts = []
    if kind in ("svc", "zone"):
        if h.backend not in backends:
            return Cell("fail", f"answered by {h.backend!r}, not one of {sorted(backends)}")
    elif kind == "self":
        if src.pod is None or h.backend != src.pod.name:
            return Cell("fail", f"{src.pod.name if src.pod else '?'} never reached itself in {attempts} tries")
        facts.append(f"{h.backend} reached itself")
    if h.backend is not None and i is not None:
        want_dst = {f"{p.ip}:{e.port}" for p in backends.values() for e in info.endpoints[i] if e.ip == p.ip}
        if h.backend_saw_dst not in want_dst:
            return Cell("fail", f"backend saw destination {h.backend_saw_dst}, expected the DNAT to one of {sorted(want_dst)}")
        facts.append(f"DNAT {h.dialled} → {h.backend_saw_dst}")
    if from_node:
        # The node itself does the NAT, so its capture sees the reply before the un-NAT: a real
        # connection proves it instead (the kernel completes it only if the reply is un-NATed).
        r = connect.request(src.ns, ip, port, proto)
        if not r.ok:
            return Cell("fail", f"a real connection to {ip}:{port} from the node failed: {r.outcome} ({r.error})")
    elif not h.unnat:
        return Cell("fail", f"reply came from {h.reply_from}, not from the dialled {h.dialled} (un-NAT)")
    seen = (h.backend_saw_src or "").rsplit(":", 1)[0]
    source_seen = row.source_expected(mode, version)
    if source_seen == "client" and seen != src.ip:
        return Cell("fail", f"backend saw source {seen}, expected the client's own {src.ip} (no SNAT)")
    if source_seen == "node" and seen not in _node_addresses(cluster):
        return Cell("fail", f"backend saw source {seen}, expected a node address (SNAT)")
    if source_seen == "lb" and seen != lb_address(cluster.lab):
        return Cell("fail", f"backend saw source {seen}, expected the load balancer's own {lb_address(cluster.lab)}")
    if source_seen == "gateway":
        gw = cluster.node(src.pod.node).gateway if src.pod else None
        if seen != gw:
            return Cell("fail", f"backend saw source {seen}, expected the hairpin masquerade to {gw}")
    if source_seen:
        facts.append(f"source seen {seen}" + {"client": " (preserved)", "node": " (a node address)",
                                              "gateway": " (the node's bridge: hairpin masquerade)",
                                              "lb": " (the load balancer's: full NAT)"}[source_seen])
    facts.append("reply from the dialled address")
    if row.balance:
        d = connect.distribution(src.ns, ip, port, count=300, proto=proto, expected=sorted(backends))
        if not d.failures and set(d.counts) == set(backends) and (d.p_value is None or d.p_value <= P_VALUE_FLOOR):
            # A fair balancer fails p > 0.001 one time in a thousand: a second, independent sample
            # must fail too (a biased one does), so the matrix does not flake across its many rows.
            first = d
            d = connect.distribution(src.ns, ip, port, count=300, proto=proto, expected=sorted(backends))
            facts.append(f"first sample {first.counts} had p={first.p_value:.4f}; resampled")
        if d.failures:
            return Cell("fail", f"{sum(d.failures.values())}/300 failed: {d.failures}")
        if set(d.counts) != set(backends):
            return Cell("fail", f"300 connections reached {sorted(d.counts)}, expected all of {sorted(backends)}")
        if d.p_value is None or d.p_value <= P_VALUE_FLOOR:
            return Cell("fail", f"split {d.counts} fails chi-square (p={d.p_value})")
        facts.append(f"300 over {len(backends)} backends, p={d.p_value:.3f}")
        evidence.update(p_value=d.p_value, counts=dict(d.counts))
    return Cell("pass", "; ".join(facts), evidence)


def connect_probe(client_ns: str, client_ip: str, dst_ip: str, dst_port: int, proto: str = "tcp",
                  backends: Mapping[str, str] | None = None, timeout: float = 2.0, iface: str = "eth0",
                  node_namespaces: frozenset[str] = frozenset()) -> Handshake:
    """Like probes.handshake.handshake, but over a real connection (request /whoami; tcp, udp or
    sctp): what a proxy in the path, or SCTP's four-way handshake, makes necessary. The backend's
    captures still show the destination it saw."""
    from probes.capture import Capture
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.sctp import SCTP  # importing it also binds IP proto 132 to it for dissection

    # A backend in a node's namespace (a host-network pod) gets packets on any of the node's links.
    caps = {name: Capture(ns, "any" if ns in node_namespaces else "eth0").start() for name, ns in (backends or {}).items()}
    try:
        r = connect.request(client_ns, dst_ip, dst_port, proto, timeout=timeout, path="/whoami", payload="whoami")
    finally:
        for c in caps.values():
            c.stop()
    dialled = f"{dst_ip}:{dst_port}"
    if r.outcome == "error" and r.local:  # connected, then closed without an answer
        return Handshake(proto, r.local, dialled, "closed", "syn-ack", dialled, elapsed=r.elapsed)
    if not r.ok:
        outcome = {"refused": "refused", "timeout": "dropped"}.get(r.outcome, r.outcome)
        return Handshake(proto, r.local, dialled, outcome, reply="refused" if outcome == "refused" else None,
                         elapsed=r.elapsed)
    who, _, peer = r.body.partition(" ")
    saw_dst = None
    layer = {"tcp": TCP, "udp": UDP, "sctp": SCTP}[proto]
    src_port = int(peer.rsplit(":", 1)[1]) if ":" in peer else None
    for c in caps.get(who, Capture(None)).packets:
        p = c.packet()
        if not c.outgoing and p.haslayer(IP) and p.haslayer(layer) and p[layer].sport == src_port:
            saw_dst = f"{p[IP].dst}:{p[layer].dport}"
            if p[IP].dst != dst_ip:  # a node's namespace sees the packet before its own DNAT too: the DNATed one
                break
    reply = {"tcp": "syn-ack", "udp": "udp", "sctp": "init-ack"}[proto]
    return Handshake(proto, r.local, dialled, "answered", reply, dialled, who or None, peer or None, saw_dst, r.elapsed)


def _delete_backend(lab, cluster: ClusterState, row: Row, proto: str) -> Cell:
    """Delete the last Deployment pod behind the target: no new connection reaches it, its replacement is reached."""
    src = _resolve_source(lab.name, cluster, row.source)
    ip, port, info, i = _resolve_target(cluster, row.target, proto)
    owned = sorted((p for p in _backends(cluster, info, i).values() if p.owner), key=lambda p: p.key)
    if not owned:
        return Cell("fail", f"Service {info.key} has no Deployment pod to delete")
    victim = owned[-1]
    report = lab.delete("pod", victim.name, victim.namespace)
    after = lab.cluster()
    new = [k.split("/", 1)[1] for k in report.added_pods]
    left = next((p for p in after.pods if p.name == victim.name), None)
    if (left is not None and not left.terminating) or not new:
        return Cell("fail", f"expected {victim.name} to be terminating or gone and replaced by a new pod, got added={new}")
    replacement = next(p for p in after.pods if p.name == new[0])
    if replacement.ip == victim.ip:
        return Cell("fail", f"replacement {replacement.name} reused the old IP {victim.ip}")
    # The `testbed vm` guest runs 20–30× slower: fewer parallel connections, longer to answer.
    slow = os.environ.get("TESTBED_IN_VM") == "1"
    d = connect.distribution(src.ns, ip, port, count=200, proto=proto, concurrency=2 if slow else 8,
                             timeout=10.0 if slow else 2.0)
    if victim.name in d.counts:
        return Cell("fail", f"{d.counts[victim.name]} of 200 new connections still reached deleted {victim.name}")
    if replacement.name not in d.counts or d.failures:
        return Cell("fail", f"replacement {replacement.name} not reached, or failures: {d.counts} {d.failures}")
    state = "terminating for its grace period" if left is not None else "removed"
    return Cell("pass", f"{victim.name} ({victim.ip}, {state}) → {replacement.name} ({replacement.ip}); rules on "
                        f"{len(report.nodes_synced)} nodes {report.seconds_to_rules * 1000:.0f} ms after the change; "
                        "0/200 to the old pod")


UDP_CLIENT_PORT = 12345  # a UDP client that keeps its socket (a resolver, statsd, a game client)


def cycle_udp_backend(lab, ns: str, ip: str, port: int, backends, source_port: int, tries: int, what: str):
    """A datagram from `source_port` to ip:port; the pod that answered it (one of `backends()`,
    {pod name: PodInfo}) is deleted with grace 0, so its controller makes one with a new IP; once
    it has left `backends()` and ip:port answers a fresh source port, `tries` datagrams are sent
    from `source_port` again. Returns (the deleted pod, their results, the deletion's sync report).
    Raises LookupError when the first datagram is not answered by one of `what`."""
    from probes.poll import wait_until

    first = connect.udp_request(ns, ip, port, source_port=source_port)
    victim = backends().get(first.body) if first.ok else None
    if victim is None:
        raise LookupError(f"port {source_port} was not answered by {what}: {first.outcome} {first.body!r}")
    report = lab.delete("pod", victim.name, victim.namespace, grace=0)
    wait_until(lambda: victim.name not in backends() and backends() or None, timeout=15,
               message=f"{victim.name} gone and a ready endpoint left")
    wait_until(lambda: connect.udp_request(ns, ip, port, timeout=0.5).ok, timeout=15,
               message=f"{ip}:{port} answering a fresh source port")
    return victim, [connect.udp_request(ns, ip, port, source_port=source_port, timeout=0.5) for _ in range(tries)], report


def _cycle_udp_backend(lab, cluster: ClusterState, row: Row, mode: str) -> Cell:
    """Upstream's e2e "should be able to preserve UDP traffic when server pod cycles": a client
    keeps one source port; the backend that answered it is deleted; once the Service answers a
    fresh port, the old port must be answered too, by a live backend. Without kube-proxy's
    conntrack clean-up the old entry would keep DNATing it to the deleted pod."""
    src = _resolve_source(lab.name, cluster, row.source)
    ip, port, info, i = _resolve_target(cluster, row.target, "udp")

    def owned():  # a controller's pods: the deleted one is replaced
        now = type(lab)(lab.name).cluster()
        return {p.name: p for p in _backends(now, _service(now, info.key), i).values() if p.owner}

    try:
        victim, answers, report = cycle_udp_backend(lab, src.ns, ip, port, owned, UDP_CLIENT_PORT, 5,
                                                    f"a Deployment pod of {info.key}")
    except LookupError as e:
        return Cell("fail", str(e))
    live = {p.name for p in type(lab)(lab.name).cluster().pods if not p.terminating}
    seen = {"victim": victim.name, "answers": [a.body if a.ok else a.outcome for a in answers]}
    dead = [a for a in answers if a.ok and a.body not in live]
    if mode == "userspace":
        # The proxy's session for this client address still holds its socket to the deleted pod
        # until 250 ms pass without a datagram or a read fails: what is sent into it is lost, as
        # with kube-proxy's userspace proxier; the next datagram opens a session to a live one.
        lead = next((k for k, a in enumerate(answers) if a.ok), len(answers))
        bad = dead or lead > 1 or any(not a.ok for a in answers[lead:])
    else:
        bad = dead or [a for a in answers if not a.ok]
    if bad:
        return Cell("fail", f"{len(bad)}/5 requests from port {UDP_CLIENT_PORT} lost or answered by the deleted "
                            f"{victim.name} after it was replaced: {seen['answers']}", seen)
    return Cell("pass", f"port {UDP_CLIENT_PORT} answered by {victim.name}, which was deleted; then "
                        f"{sum(a.ok for a in answers)}/5 answered by "
                        f"{sorted(set(seen['answers']))} ({len(report.nodes_synced)} nodes synced)", seen)


def _stray_segment(lab, cluster: ClusterState, row: Row, mode: str) -> Cell:
    """Upstream's e2e "should not be vulnerable to the invalid conntrack state bug": on a live
    keep-alive connection to the Service, the answering backend sends one segment far outside the
    window (probes.stray); conntrack marks it INVALID, so it is not un-DNATed unless a rule drops
    it, and the client's RST to the pod's IP resets the connection. The next request says."""
    from probes.stray import stray_segment
    src = _resolve_source(lab.name, cluster, row.source)
    ip, port, info, i = _resolve_target(cluster, row.target, "tcp")
    backends = _backends(cluster, info, i)
    target_port = next((e.port for e in info.endpoints[i] if e.ready), None)
    if not backends or target_port is None:
        return Cell("fail", f"{info.key} has no ready endpoint")
    servers = {name: (wiring.netns_of(lab.name, p), p.ip) for name, p in backends.items() if not p.host_network}
    s = stray_segment(src.ns, servers, target_port, ip, port)
    seen = {"backend": s.first, "after": s.after, "unnatted_at_client": s.unnatted_at_client,
            "client_resets": s.client_resets}
    if not s.sent:
        return Cell("fail", f"no backend segment of the connection was captured (first answer {s.first!r})", seen)
    outcome = "reset" if s.reset else s.after
    expected = row.expected(mode, cluster.kube_proxy_version())
    how = (f"the stray from {s.first} reached the client un-NATed {s.unnatted_at_client}×, the client sent "
           f"{s.client_resets} RST(s)")
    if outcome != expected:
        return Cell("fail", f"expected {expected}, got {outcome}: {how}", seen)
    return Cell("pass", f"the connection {'survived' if outcome == 'answered' else 'was reset'} ({how})", seen)


# ----------------------------------------------------------------------------- rows from any topology


def derive_rows(cluster: ClusterState) -> list[Row]:
    """Rows for a user's topology: every proxied Service port, from a pod that backs nothing (or
    the first pod), every NodePort from the first outside client via every node, hairpin, and a
    pod replacement. SCTP ports' rows need SCTP in the kernel and skip in userspace mode. The
    default lab's hand-written table (testbed/conformance_rows.py) has the same shape."""
    rows: list[Row] = []
    free = cluster.pods_backing_nothing() or list(cluster.pods)
    if not free:
        return rows
    client = free[0]
    outside = cluster.clients[0] if cluster.clients else None
    hairpin = replacement = None
    # A deleted pod is replaced only when its controller is in the topology (a dump's pods may name a
    # ReplicaSet the dump does not hold).
    controllers = {(w.kind, w.key) for w in cluster.topology.workloads}
    controllers |= {("Deployment", w.owner) for w in cluster.topology.workloads if w.kind == "ReplicaSet" and w.owner}
    for info in cluster.services:
        if not info.proxied:
            continue
        name = info.service.name
        servers = {p.workload for i in range(len(info.service.ports)) for p in _backends(cluster, info, i).values()}
        if servers and "netexec" not in servers:
            # The DNS and ingress add-ons do not speak netexec's protocol: kube-dns is checked with a query.
            if "dns" in servers:
                rows.append(Row(f"cluster DNS ({info.key}) answers through its ClusterIP", f"pod/{client.name}", "udp",
                                f"dns/{name}.{info.service.namespace}.svc.{cluster.lab.cluster_domain}", check="dns",
                                answer=("A", f"svc/{name}"), short=f"DNS {info.key}"))
            continue
        for i, sp in enumerate(info.service.ports):
            proto = sp.protocol.lower()
            guard = {"needs": ("sctp",), "skip": {"userspace": NO_SCTP_IN_USERSPACE}} if proto == "sctp" else {}
            label = f"{name}:{sp.port}/{sp.protocol}"
            eps = [e for e in info.endpoints[i] if e.ready]
            target = f"svc/{name}:{sp.port}"
            if not eps:
                # Not for SCTP: its client ignores the ICMP unreachable of kube-proxy's REJECT and keeps
                # retrying its INIT (seen in testbed vm), so there is no quick refusal to prove.
                if proto != "sctp":
                    rows.append(Row(f"ClusterIP {label} without endpoints is refused", f"pod/{client.name}", proto,
                                    target, expect={"userspace": "closed", "*": "refused"}, short=f"{label} no endpoints",
                                    notes={"userspace": "the userspace proxy accepts, then closes: no REJECT rule"}))
                continue
            pods = _backends(cluster, info, i)
            if not pods:
                continue
            svc = info.service
            policy = {**guard, "skip": {"userspace": NO_POLICIES_IN_USERSPACE, **guard.get("skip", {})}}
            local_to = {n.name: [p for p in pods.values() if p.node == n.name] for n in cluster.nodes}
            if svc.session_affinity_timeout is not None and proto != "sctp":
                rows.append(Row(f"ClusterIP {label} from a pod: ClientIP affinity keeps one backend", f"pod/{client.name}",
                                proto, target, check="affinity", short=f"{label} affinity", **guard))
            elif svc.internal_policy_local:
                # internalTrafficPolicy: Local: only the client's node's endpoints (none there: nothing to show).
                if local_to.get(client.node):
                    rows.append(Row(f"ClusterIP {label} from a pod, internalTrafficPolicy Local: its node's endpoints only",
                                    f"pod/{client.name}", proto, target, backends="svc", short=f"{label} iTP Local",
                                    **policy))
            else:
                rows.append(Row(f"ClusterIP {label} from a pod: DNAT, source preserved, even split", f"pod/{client.name}",
                                proto, target, backends="svc",
                                # the userspace proxy connects from the node: the source is lost, as upstream's
                                source_seen={"userspace": "node", "*": "client"} if client.ip not in {
                                    p.ip for p in pods.values()} else None,
                                balance=True, short=f"{label} from a pod", **guard))
            local = svc.external_policy_local and bool(info.node_ports[i])
            if info.node_ports[i] and outside:
                for n in cluster.nodes:
                    if local and not local_to[n.name]:
                        continue  # externalTrafficPolicy: Local and no endpoint on that node: its NodePort drops
                    if local:
                        rows.append(Row(f"NodePort {label} via {n.name}, externalTrafficPolicy Local: a local "
                                        "endpoint, the client's address kept", f"client/{outside.name}", proto,
                                        f"nodeport/{name}:{sp.port}@{n.name}", backends="svc", source_seen="client",
                                        short=f"{label} eTP Local via {n.name}", **policy))
                        continue
                    rows.append(Row(f"NodePort {label} from outside via {n.name}: SNAT to the node, "
                                    "reply from the dialled address",
                                    f"client/{outside.name}", proto, f"nodeport/{name}:{sp.port}@{n.name}",
                                    backends="svc", source_seen="node",
                                    balance=proto == "tcp" and svc.session_affinity_timeout is None,
                                    short=f"{label} via {n.name}", **guard))
            if proto == "tcp" and hairpin is None:
                hairpin = Row(f"A pod reaches itself through its Service {name} (hairpin masquerade)", f"backend/{name}",
                              proto, target, backends="self", source_seen="gateway", short=f"hairpin via {name}")
            if proto == "tcp" and replacement is None and len(pods) >= 2 and any(
                    (p.owner_kind, p.owner) in controllers for p in pods.values()):
                replacement = Row(f"Deleted pod behind {name}: no new connection reaches it, its replacement is reached",
                                  f"pod/{client.name}", proto, target, action="delete-backend",
                                  short=f"deleted pod behind {name}")
    rows += [r for r in (hairpin, replacement) if r]
    return rows
