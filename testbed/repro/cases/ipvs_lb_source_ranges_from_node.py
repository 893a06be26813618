"""IPVS mode before 1.29: `loadBalancerSourceRanges` did not hold for a node's own traffic. The LB IP
is bound to kube-ipvs0 on every node, so a node reaching it is local delivery that never passes the
KUBE-LOAD-BALANCER-SOURCE-CIDR check of PREROUTING; 1.29 added KUBE-IPVS-OUT-FILTER, from OUTPUT,
which drops what the ranges exclude (kubernetes#119656, fixed by #119791)."""
from __future__ import annotations

from probes import connect
from probes.poll import wait_until

from ...conformance_rows import RANGES_IN_USERSPACE
from .. import objects as o
from ..catalogue import Measurement, Repro, Variant, kube_proxy_version, mark_target

TRIES = 5
CLIENT, CLIENT_IP = "outside", "172.18.0.150"  # the only source the ranges allow


def documents() -> list[dict]:
    lab = o.lab("ipvs-lb-ranges", proxyMode="ipvs", clients=[{"name": CLIENT, "ip": CLIENT_IP}])
    backend = o.pod("lb-backend", node="node-2", labels={"app": "lb"}, ports=[{"name": "http", "containerPort": 9376}])
    svc = mark_target(o.service("lb", [{"name": "http", "port": 80, "targetPort": "http"}], type="LoadBalancer",
                                loadBalancerSourceRanges=[f"{CLIENT_IP}/32"]))
    return [lab, backend, svc]


def _answered(ns: str, ip: str, port: int) -> int:
    return sum(connect.tcp_request(ns, ip, port, timeout=1.0).ok for _ in range(TRIES))


def measure(ctx) -> Measurement:
    wait_until(lambda: ctx.target().load_balancer_ips or None, timeout=15, message="the LoadBalancer's IP")
    info = ctx.target()
    lb_ip, port = info.load_balancer_ips[0], info.service.ports[0].port
    client_ns, _ = ctx.source(f"client/{CLIENT}")
    allowed = _answered(client_ns, lb_ip, port)
    from_node = _answered(ctx.node_ns("node-1"), lb_ip, port)
    return Measurement(from_node > 0 or allowed < TRIES,
                       f"node-1 (outside the ranges): {from_node}/{TRIES} connections to the LB IP {lb_ip} answered; "
                       f"the allowed client {CLIENT_IP}: {allowed}/{TRIES}",
                       {"from_node": from_node, "allowed_client": allowed, "tries": TRIES, "lb_ip": lb_ip})


REPRO = Repro(
    name="ipvs-lb-source-ranges-from-node",
    title="IPVS mode: loadBalancerSourceRanges do not hold for the nodes themselves",
    upstream=("kubernetes/kubernetes#119656", "kubernetes/kubernetes#119791"),
    mechanism="the LB IP is local on every node (kube-ipvs0): a node's own packets skip the PREROUTING source check",
    modes=("ipvs",),
    not_in={m: "the source-range check of this mode's rules sees the node's own traffic too (OUTPUT)"
            for m in ("iptables", "nftables")} | {"userspace": RANGES_IN_USERSPACE},
    needs=("ipvs",),
    triggered=f"a LoadBalancer whose loadBalancerSourceRanges allow only {CLIENT_IP}/32; node-1 and that client "
              "connect to the LB IP",
    measured=f"{TRIES} connections from node-1's own namespace and {TRIES} from the allowed client",
    fix="kube-proxy 1.29's KUBE-IPVS-OUT-FILTER (from OUTPUT) drops node traffic to an LB IP whose ranges exclude it "
        "(the ipvs-out-filter switch, docs/versions.md)",
    documents=documents,
    bug=Variant('spec.kubeProxy.version: "1.28"', kube_proxy_version("1.28")),
    fixed=Variant('spec.kubeProxy.version: "1.29"', kube_proxy_version("1.29")),
    measure=measure,
)
