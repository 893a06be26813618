"""What each IPVS scheduler does, and how the matrix tells it from the others (pure).

kube-proxy's IPVS mode gives every virtual server the one scheduler of `--ipvs-scheduler` and every
real server weight 1; testbed also takes a per-Service annotation (testbed.dev/ipvs-scheduler).
A scheduler row adds a copy of its target Service under that annotation, sends connections
through it from one pod (the least-loaded ones while holding another connection open), reads
the real servers' counters from the IPVS of the client's node (each node's kube-proxy programs
its own virtual servers, so connection state is per node), and deletes the copy again.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

ANNOTATION = "testbed.dev/ipvs-scheduler"


@dataclass(frozen=True)
class Behaviour:
    kind: str  # in-turn | per-source | per-connection | per-destination | least-loaded
    claim: str  # what the row shows, in a phrase


BEHAVIOURS = {
    "rr": Behaviour("in-turn", "new connections take the real servers in turn"),
    "wrr": Behaviour("in-turn", "in turn, as rr: kube-proxy gives every real server weight 1"),
    "sh": Behaviour("per-source", "one source address stays on one real server"),
    "mh": Behaviour("per-connection", "Maglev hash of source address and port (kube-proxy sets mh-port): "
                                      "a client's connections spread"),
    "dh": Behaviour("per-destination", "one destination maps to one real server, on every node"),
    "lblc": Behaviour("per-destination", "a destination keeps its server while not overloaded"),
    "lblcr": Behaviour("per-destination", "a destination keeps its server set while not overloaded"),
    "lc": Behaviour("least-loaded", "a new connection avoids the server holding one"),
    "wlc": Behaviour("least-loaded", "as lc (weights are all 1): avoids the server holding one"),
    "sed": Behaviour("least-loaded", "shortest expected delay: avoids the busy server"),
    "nq": Behaviour("least-loaded", "never queue: an idle server first, not the busy one"),
}
# per-connection: 12 connections from fresh ports all hashed to one of 4 servers by chance: 4 x 4^-12
CONNECTIONS = {"in-turn": 8, "per-source": 8, "per-connection": 12, "per-destination": 6, "least-loaded": 6}


def copy_of(service, port, scheduler: str) -> dict:
    """A Service manifest like `service` (a model.Service) on one of its ports, under `scheduler`."""
    target = port.target_port if port.target_port is not None else port.port
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"{service.name}-{scheduler}", "namespace": service.namespace,
                         "annotations": {ANNOTATION: scheduler}},
            "spec": {"selector": dict(service.selector or ()),
                     "ports": [{"name": port.name or "p", "protocol": port.protocol, "port": port.port,
                                "targetPort": target}]}}


def judge(scheduler: str, sequence: list[str], servers: int, busy: str | None = None,
          other_node: list[str] | None = None) -> str | None:
    """Why `sequence` (the pods that answered, in order) is not `scheduler`'s behaviour, or None.
    servers: real servers of the virtual server; busy: the pod holding the open connection
    (least-loaded); other_node: answers to the same connections from a client on another node
    (dh: that node's IPVS must agree)."""
    kind = BEHAVIOURS[scheduler].kind
    if kind == "in-turn":
        if len(set(sequence)) != min(servers, len(sequence)):
            return f"{len(set(sequence))} of {servers} real servers answered {len(sequence)} connections"
        if any(a != b for a, b in zip(sequence, sequence[servers:], strict=False)):
            return f"not in a fixed turn of {servers}: {sequence}"
        return None
    if kind == "least-loaded":
        if busy is None:
            return "no connection was held open"
        hit = sequence.count(busy)
        return f"{hit} of {len(sequence)} new connections went to {busy}, which held one" if hit else None
    if kind == "per-connection":
        if len(set(sequence)) < 2:
            return f"all {len(sequence)} connections from fresh source ports reached {sequence[0]}: not hashed by port"
        return None
    both = sequence + (other_node or [])
    if len(set(both)) != 1:
        where = f" (this node {sequence}, the other {other_node})" if other_node else ""
        return f"{len(set(both))} real servers answered: {sorted(set(both))}{where}"
    return None


def expected_counts(sequence: list[str], busy: str | None = None) -> dict[str, int]:
    """{pod: connections its real server must have counted}: the answers, and the held one."""
    return dict(Counter(sequence + ([busy] if busy else [])))


def counters_disagree(conns: dict[str, int], want: dict[str, int]) -> str | None:
    """Why the node's IPVS counters (real server → connections scheduled) do not match the
    answers, or None: the scheduling the packets showed is the one the kernel did."""
    bad = {pod for pod in set(conns) | set(want) if conns.get(pod, 0) != want.get(pod, 0)}
    if not bad:
        return None
    return f"the node's IPVS counted {counts_text(conns)}, the answers say {counts_text(want)}"


def counts_text(conns: dict[str, int]) -> str:
    """{pod: connections scheduled to it} → 'web-a 2, web-b 2' (most first, then by name)."""
    return ", ".join(f"{pod} {n}" for pod, n in sorted(conns.items(), key=lambda kv: (-kv[1], kv[0])))
