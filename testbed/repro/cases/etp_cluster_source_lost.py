"""externalTrafficPolicy: Cluster (the default) hides the outside client's address: whichever node
the NodePort is reached on masquerades the connection, so the backend sees a node's address — the
node's own IP when it forwards to another node, its pod bridge's when the endpoint is local — as users
report ("my app sees the node IP, not the client's"). With `Local` the node only sends to its own
endpoints and does not SNAT: the client's IP is seen, and a node without an endpoint drops."""
from __future__ import annotations

from probes import connect

from ...conformance import NO_POLICIES_IN_USERSPACE
from .. import objects as o
from ..catalogue import NODE_PORT_TYPES, Measurement, Repro, Variant, adopt_service, lab_doc, mark_target, serves, \
    set_target_spec

TRIES = 5
CLIENT = "outside"  # the Lab's client outside the cluster, on the node network


def documents() -> list[dict]:
    lab = o.lab("etp-source", clients=[{"name": CLIENT}])
    backend = o.pod("web-backend", node="node-2", labels={"app": "web"},
                    ports=[{"name": "http", "containerPort": 9376}])
    svc = mark_target(o.service("web", [{"name": "http", "port": 80, "targetPort": "http"}], type="NodePort"))
    return [lab, backend, svc]


def _ask(ns: str, ip: str, port: int) -> list[connect.Result]:
    return [connect.tcp_request(ns, ip, port, path="/whoami", timeout=1.0) for _ in range(TRIES)]


def _seen(results: list[connect.Result]) -> list[str]:
    """The source address the backend saw, per answered request (netexec's /whoami: "host ip:port")."""
    return [r.body.split()[-1].rsplit(":", 1)[0] for r in results if r.ok and r.body]


def measure(ctx) -> Measurement:
    info = ctx.target()
    i, _ = ctx.target_port("tcp")
    node_port = info.node_ports[i]
    if not node_port:
        raise RuntimeError(f"Service {info.key} has no NodePort for its TCP port")
    cluster = ctx.cluster()
    owners = {}  # address → whose it is
    for n in cluster.nodes:
        owners[n.ip], owners[n.gateway] = f"{n.name}'s", f"{n.name}'s bridge"
    ns, client_ip = ctx.source(f"client/{CLIENT}")
    owners[client_ip] = "the client's own"
    local = {p.node for p, _ in ctx.backends(i).values()}
    if not local:
        raise RuntimeError(f"Service {info.key} has no ready endpoint")
    via = [("endpoint", sorted(local)[0])]
    remote = next((n.name for n in cluster.nodes if n.name not in local), None)
    if remote:
        via.append(("no endpoint", remote))
    parts, figures, lost = [], {"client_ip": client_ip, "node_port": node_port, "tries": TRIES}, 0
    for what, node in via:
        results = _ask(ns, cluster.node(node).ip, node_port)
        seen = _seen(results)
        snat = [s for s in seen if s != client_ip]
        lost += len(snat)
        outcomes = [r.outcome for r in results if not r.ok]
        failed = {k: outcomes.count(k) for k in sorted(set(outcomes))}
        text = f"via {node} ({what}): {len(seen)}/{TRIES} answered"
        if seen:
            text += ", source seen " + ", ".join(f"{s} ({owners.get(s, 'not a lab address')})" for s in sorted(set(seen)))
        if failed:
            text += " (" + ", ".join(f"{n} {k}" for k, n in failed.items()) + ")"
        parts.append(text)
        figures[node] = {"endpoint": what == "endpoint", "answered": len(seen), "snat": len(snat),
                         "seen": sorted(set(seen)), "failed": failed}
    if not remote:
        parts.append("every node has an endpoint")
    figures["snat"] = lost
    return Measurement(lost > 0, "; ".join(parts), figures)


def adopt(docs: list[dict], source: str) -> list[dict]:
    docs = adopt_service(docs, documents(), serves("TCP", NODE_PORT_TYPES),
                         "a NodePort or LoadBalancer Service with a selector and a TCP port", source)
    clients = lab_doc(docs).setdefault("spec", {}).setdefault("clients", [])
    if not any(isinstance(c, dict) and c.get("name") == CLIENT for c in clients):
        clients.append({"name": CLIENT})
    return docs


REPRO = Repro(
    name="etp-cluster-source-lost",
    title="externalTrafficPolicy Cluster: the backend sees a node's address, not the outside client's",
    upstream=("kubernetes.io/docs/tutorials/services/source-ip",),
    mechanism="external traffic to a NodePort is marked for masquerade: the node SNATs it to its own address "
              "(its IP towards another node, its bridge's towards a local pod)",
    modes=("iptables", "nftables", "ipvs"),
    not_in={"userspace": NO_POLICIES_IN_USERSPACE},
    needs=(),
    triggered="the outside client connects to the NodePort via the node with the only endpoint and via a node "
              "without one",
    measured=f"{TRIES} requests to netexec's /whoami through each node: who answered and which source it saw",
    fix="externalTrafficPolicy: Local: the node sends only to its own endpoints and does not SNAT (the client's IP "
        "is seen); a node without an endpoint drops",
    documents=documents,
    bug=Variant("spec.externalTrafficPolicy: Cluster (the default)", set_target_spec(externalTrafficPolicy="Cluster")),
    fixed=Variant("spec.externalTrafficPolicy: Local", set_target_spec(externalTrafficPolicy="Local")),
    measure=measure,
    with_files="a NodePort or LoadBalancer Service with a selector and a TCP port (the first one; its NodePort is "
               "reached from the outside client)",
    adopt=adopt,
)
