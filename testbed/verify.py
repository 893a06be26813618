"""`testbed verify`: build a lab in each proxy mode, prove Service behaviour with real traffic.

Each behaviour is a row; each mode a column; each cell pass / fail / skip with the reason. The
checks are derived from the topology (every proxied Service port), so a user's own file is
verified the same way as the default lab.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from probes import connect

from . import model
from .control import ClusterState, PodInfo, ServiceInfo
from .kernel import wiring

DISTRIBUTION_CONNECTIONS = 300
P_VALUE_FLOOR = 0.001
# Modes this build cannot run yet, and why (shown in the matrix, not hidden).
UNAVAILABLE = {
    "nftables": "nftables proxy mode is not implemented yet (issue #4)",
    "ipvs": "IPVS proxy mode is not implemented yet (issue #5); this kernel also lacks CONFIG_IP_VS",
    "userspace": "userspace proxy mode is not implemented yet (issue #6)",
}


@dataclass(frozen=True)
class Cell:
    status: str  # pass | fail | skip
    reason: str = ""


@dataclass
class Matrix:
    modes: list[str]
    rows: dict[str, dict[str, Cell]] = field(default_factory=dict)

    def put(self, behaviour: str, mode: str, cell: Cell) -> None:
        self.rows.setdefault(behaviour, {})[mode] = cell

    @property
    def failed(self) -> bool:
        return any(c.status == "fail" for r in self.rows.values() for c in r.values())

    def to_json(self) -> dict:
        return {"modes": self.modes, "rows": [
            {"behaviour": b, "results": {m: {"status": c.status, "reason": c.reason} for m, c in r.items()}}
            for b, r in self.rows.items()]}


Check = tuple[str, Callable[[], Cell]]


def _backend_names(cluster: ClusterState, info: ServiceInfo, port_index: int) -> dict[str, PodInfo]:
    ips = {e.ip for e in info.endpoints[port_index] if e.ready}
    return {p.name: p for p in cluster.pods if p.ip in ips}


def _client_pod(cluster: ClusterState) -> PodInfo | None:
    """A pod to send from: one that backs no Service if there is one (like e2e's exec pod)."""
    backing = {e.ip for s in cluster.services for eps in s.endpoints for e in eps}
    free = [p for p in cluster.pods if p.ip not in backing]
    return (free or list(cluster.pods) or [None])[0]


def _pns(lab: str, p: PodInfo) -> str:
    return wiring.pod_ns(lab, p.namespace, p.name)


def _distribution_cell(dist, expected: set[str], what: str) -> Cell:
    if dist.failures:
        return Cell("fail", f"{sum(dist.failures.values())}/{dist.total} {what} failed: {dist.failures} {list(dist.errors)[:2]}")
    missing = expected - set(dist.counts)
    extra = set(dist.counts) - expected
    if missing or extra:
        return Cell("fail", f"backends missing {sorted(missing)}, unexpected {sorted(extra)}; counts {dist.counts}")
    if dist.p_value is None or dist.p_value <= P_VALUE_FLOOR:
        return Cell("fail", f"split {dist.counts} fails chi-square (p={dist.p_value})")
    return Cell("pass", f"{dist.total} {what} over {len(expected)} backends, p={dist.p_value:.3f}")


def checks(lab: str, cluster: ClusterState) -> list[Check]:
    """The behaviour rows for this cluster, each a (name, thunk) run against the live lab."""
    out: list[Check] = []
    client_pod = _client_pod(cluster)
    outside = cluster.clients[0] if cluster.clients else None
    # SNAT picks the outgoing interface's address: the node IP, or its pod bridge for a local backend.
    node_ips = {n.ip for n in cluster.nodes} | {n.gateway for n in cluster.nodes}
    for info in cluster.services:
        if not info.proxied:
            continue
        svc = info.service
        for i, sp in enumerate(svc.ports):
            label = f"{svc.name}:{sp.port}/{sp.protocol}"
            backends = _backend_names(cluster, info, i)
            eps = info.endpoints[i]
            if sp.protocol == "SCTP" or client_pod is None:
                continue
            proto = sp.protocol.lower()
            if not eps:
                def refused(info=info, sp=sp, proto=proto):
                    fn = connect.tcp_request if proto == "tcp" else connect.udp_request
                    r = fn(_pns(lab, client_pod), info.cluster_ip, sp.port, timeout=3.0)
                    if r.outcome == "refused" and r.elapsed < 1.0:
                        return Cell("pass", f"refused after {r.elapsed * 1000:.1f} ms")
                    return Cell("fail", f"expected refused at once, got {r.outcome} after {r.elapsed:.2f} s ({r.error})")
                out.append((f"ClusterIP {label}, no endpoints: refused at once", refused))
                continue
            if not backends:
                continue  # endpoints outside the lab's pods (hand-written slices): nothing to dial
            expected = set(backends)

            def spread(info=info, sp=sp, proto=proto, expected=expected):
                d = connect.distribution(_pns(lab, client_pod), info.cluster_ip, sp.port,
                                         count=DISTRIBUTION_CONNECTIONS, proto=proto, expected=sorted(expected))
                return _distribution_cell(d, expected, "connections" if proto == "tcp" else "datagrams")
            out.append((f"ClusterIP {label} from a pod reaches every backend evenly", spread))

            def source(info=info, sp=sp, proto=proto):
                # Answers from the client pod itself are hairpin (masqueraded by design): skip those.
                fn = connect.tcp_request if proto == "tcp" else connect.udp_request
                arg = {"path": "/whoami"} if proto == "tcp" else {"payload": "whoami"}
                for _ in range(50):
                    r = fn(_pns(lab, client_pod), info.cluster_ip, sp.port, **arg)
                    if not r.ok:
                        return Cell("fail", f"{r.outcome}: {r.error}")
                    who, _, peer = r.body.partition(" ")
                    if who != client_pod.name:
                        break
                else:
                    return Cell("fail", "only the client pod itself ever answered")
                seen = peer.rsplit(":", 1)[0]
                if seen == client_pod.ip:
                    return Cell("pass", f"{who} saw {seen} (the client pod, no SNAT)")
                return Cell("fail", f"{who} saw {seen}, expected the client pod's {client_pod.ip}")
            out.append((f"ClusterIP {label}: backend sees the client pod's IP", source))

            np_ = info.node_ports[i]
            if np_ and outside and proto == "tcp":
                def nodeport(np_=np_, expected=expected):
                    notes = []
                    for n in cluster.nodes:
                        d = connect.distribution(wiring.host_ns(lab, outside.name), n.ip, np_, count=120,
                                                 expected=sorted(expected))
                        cell = _distribution_cell(d, expected, f"connections via {n.name}")
                        if cell.status != "pass":
                            return Cell("fail", f"via {n.name} {n.ip}:{np_}: {cell.reason}")
                        r = connect.tcp_request(wiring.host_ns(lab, outside.name), n.ip, np_, path="/clientip")
                        seen = r.body.rsplit(":", 1)[0] if r.ok else None
                        if seen not in node_ips:
                            return Cell("fail", f"via {n.name}: backend saw {seen or r.outcome}, expected a node IP (SNAT)")
                        notes.append(f"{n.name}: backend saw {seen}")
                    return Cell("pass", "reaches backends on every node; replies from the dialled node IP; " + "; ".join(notes))
                out.append((f"NodePort {svc.name}:{np_} from outside via each node (SNAT to a node IP)", nodeport))
    hairpin = _hairpin_check(lab, cluster)
    if hairpin:
        out.append(hairpin)
    return out


def _hairpin_check(lab: str, cluster: ClusterState) -> Check | None:
    for info in cluster.services:
        if not info.proxied:
            continue
        for i, sp in enumerate(info.service.ports):
            backends = _backend_names(cluster, info, i)
            if sp.protocol != "TCP" or not backends:
                continue
            pod = sorted(backends.values(), key=lambda p: p.key)[0]
            node = cluster.node(pod.node)

            def run(info=info, sp=sp, pod=pod, node=node, n=len(backends)):
                ns = _pns(lab, pod)
                # Each connection picks a backend at random; try until this pod answers itself.
                for _ in range(40 * n):
                    r = connect.tcp_request(ns, info.cluster_ip, sp.port, path="/whoami")
                    if not r.ok:
                        return Cell("fail", f"{r.outcome}: {r.error}")
                    who, _, peer = r.body.partition(" ")
                    if who == pod.name:
                        seen = peer.rsplit(":", 1)[0]
                        if seen != node.gateway:
                            return Cell("fail", f"{pod.name} reached itself but saw {seen}, expected the hairpin masquerade to {node.gateway}")
                        return Cell("pass", f"{pod.name} reached itself via {info.cluster_ip}:{sp.port}, seen from {seen} (hairpin masquerade)")
                return Cell("fail", f"{pod.name} never reached itself in {40 * n} tries")
            return (f"A pod reaches itself through its Service ({info.service.name}, hairpin)", run)
    return None


def pod_replacement_check(lab_obj, cluster: ClusterState) -> Check | None:
    """Delete one Deployment pod behind a Service: no new connection reaches it once rules are applied."""
    for info in cluster.services:
        if not info.proxied:
            continue
        for i, sp in enumerate(info.service.ports):
            backends = _backend_names(cluster, info, i)
            owned = [p for p in backends.values() if p.owner]
            if sp.protocol != "TCP" or len(backends) < 2 or not owned:
                continue
            victim = sorted(owned, key=lambda p: p.key)[-1]
            client = next((p for p in cluster.pods if p.key != victim.key), None)

            def run(info=info, sp=sp, victim=victim, client=client):
                report = lab_obj.delete("pod", victim.name, victim.namespace)
                after = lab_obj.cluster()
                names = {p.name for p in after.pods}
                new = [k for k in report.added_pods]
                if victim.name in names or not new:
                    return Cell("fail", f"expected {victim.name} replaced by a new pod, got added={new}")
                d = connect.distribution(_pns(lab_obj.name, client), info.cluster_ip, sp.port, count=200)
                if victim.name in d.counts:
                    return Cell("fail", f"{d.counts[victim.name]} connections still reached deleted {victim.name}")
                replacement = new[0].split("/", 1)[1]
                if replacement not in d.counts or d.failures:
                    return Cell("fail", f"replacement {replacement} not reached or failures: {d.counts} {d.failures}")
                return Cell("pass", f"{victim.name} ({victim.ip}) replaced by {replacement}; "
                                    f"rules on {len(report.nodes_synced)} nodes in {report.seconds_to_rules * 1000:.0f} ms; 0/200 to the old pod")
            return (f"Deleted pod: new connections never reach it, its replacement is reached ({info.service.name})", run)
    return None


def run_mode(topo_path: str | None, mode: str, matrix: Matrix, progress=lambda e, i: None, name: str | None = None) -> None:
    """Build the lab in `mode`, run every check into `matrix`, always tear down."""
    from .lab import Lab  # the kernel side only when verifying for real

    if mode in UNAVAILABLE and mode not in model.IMPLEMENTED_MODES:
        matrix.put("(lab built)", mode, Cell("skip", UNAVAILABLE[mode]))
        return
    lab_name = name or f"verify-{mode}"[:16]
    try:
        lab = Lab.up(topo_path, name=lab_name, mode=mode, progress=progress)
    except Exception as e:  # the whole column fails with the reason
        matrix.put("(lab built)", mode, Cell("fail", str(e)))
        return
    try:
        matrix.put("(lab built)", mode, Cell("pass", f"{len(lab.cluster().pods)} pods, {len(lab.cluster().nodes)} nodes"))
        cluster = lab.cluster()
        all_checks = checks(lab_name, cluster)
        repl = pod_replacement_check(lab, cluster)
        if repl:
            all_checks.append(repl)
        for behaviour, thunk in all_checks:
            progress("check", {"behaviour": behaviour, "mode": mode})
            try:
                cell = thunk()
            except Exception as e:
                cell = Cell("fail", f"{type(e).__name__}: {e}")
            matrix.put(behaviour, mode, cell)
    finally:
        lab.down()
