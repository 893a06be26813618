"""nftables mode before 1.34: a node that has no local endpoint of an `externalTrafficPolicy: Local`
LoadBalancer reaches the LB IP itself and is dropped. The filter chains ran before DNAT, saw the LB IP
with no local endpoint and dropped it, although traffic from the node itself is short-circuited to any
endpoint (kubernetes#132456 moved the chains after DNAT)."""
from __future__ import annotations

from probes import connect

from .. import objects as o
from ..catalogue import Measurement, Repro, Variant, kube_proxy_version, mark_target

TRIES = 10


def documents() -> list[dict]:
    lab = o.lab("etp-local-lb", proxyMode="nftables")
    backend = o.pod("lb-backend", node="node-2", labels={"app": "lb"}, ports=[{"name": "http", "containerPort": 9376}])
    svc = mark_target(o.service("lb", [{"name": "http", "port": 80, "targetPort": "http"}],
                                type="LoadBalancer", externalTrafficPolicy="Local"))
    return [lab, backend, svc]


def measure(ctx) -> Measurement:
    from probes.poll import wait_until
    info = ctx.target()
    wait_until(lambda: ctx.target().load_balancer_ips or None, timeout=15, message="the LoadBalancer's IP")
    lb_ip = ctx.target().load_balancer_ips[0]
    ns = ctx.node_ns("node-1")  # the node without the endpoint
    results = [connect.tcp_request(ns, lb_ip, info.service.ports[0].port, timeout=1.0) for _ in range(TRIES)]
    failed = [r for r in results if not r.ok]
    kinds = sorted({r.outcome for r in failed})
    return Measurement(bool(failed), f"{len(failed)}/{TRIES} connections from node-1 (no local endpoint) to the LB IP "
                                     f"{lb_ip} failed" + (f" ({', '.join(kinds)})" if kinds else ""),
                       {"failed": len(failed), "tries": TRIES, "lb_ip": lb_ip})


REPRO = Repro(
    name="nft-etp-local-lb-from-node",
    title="nftables mode: a node without a local endpoint cannot reach an eTP=Local LoadBalancer IP",
    upstream=("kubernetes/kubernetes#132456",),
    mechanism="the filter chains ran at priority -110, before DNAT: they saw the LB IP, no local endpoint, and dropped",
    modes=("nftables",),
    not_in={m: "only kube-proxy's nftables mode had the pre-DNAT filter chains" for m in ("iptables", "ipvs", "userspace")},
    needs=(),
    triggered="node-1, which has no endpoint of the Local LoadBalancer, connects to its LB IP itself",
    measured=f"{TRIES} connections from node-1's own namespace to the LB IP",
    fix="kube-proxy 1.34 (and 1.33 patch releases from #133969 on) filters after DNAT: filter-prerouting-pre-dnat only "
        "drops what must not be DNATed",
    documents=documents,
    bug=Variant('spec.kubeProxy.version: "1.33"', kube_proxy_version("1.33")),
    fixed=Variant('spec.kubeProxy.version: "1.34"', kube_proxy_version("1.34")),
    measure=measure,
)
