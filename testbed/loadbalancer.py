"""A simulated cloud load balancer: the `<lab>-lb` namespace on the node network.

It holds every LoadBalancer address (published in the Service's status.loadBalancer.ingress) and
sends each new flow to one healthy node, in one of two styles real clouds use:

- `nodeport` (default; like a classic cloud LB with instance targets): full NAT to
  `nodeIP:nodePort`, the client's address replaced by the LB's own, so the node's KUBE-NODEPORTS
  rules do the rest;
- `passthrough` (like GCP's network LB or MetalLB): the packet is routed to the node unchanged
  (destination = the LB address), so the node's own load-balancer rules (KUBE-EXT-, KUBE-FW- with
  loadBalancerSourceRanges; nftables' firewall-ips) see the client's address, and replies go back
  to the client straight from the node.

loadBalancerSourceRanges: in `nodeport` mode the cloud enforces them, as clouds do (AWS security
groups, Azure NSGs, GCP firewall rules): a flow from outside the ranges is dropped at the LB. In
`passthrough` mode the LB lets it through and the node's kube-proxy rules drop it.

With externalTrafficPolicy: Local only the nodes whose health check
(`http://nodeIP:healthCheckNodePort/`, kube-proxy's health server: 200 with local ready endpoints,
503 otherwise) passes get traffic; with Cluster, every node does. No healthy node: TCP reset.
"""
from __future__ import annotations

from dataclasses import dataclass

from .control import ClusterState

TABLE = "testbed-lb"
MARK_TABLE_BASE = 100  # passthrough: routing table 100+i sends to node i
RULE_PRIORITY_BASE = 1000


@dataclass(frozen=True)
class Frontend:
    service: str  # ns/name
    ip: str
    proto: str  # tcp | udp
    port: int
    node_port: int | None
    health_port: int | None  # eTP=Local: healthCheckNodePort
    source_ranges: tuple[str, ...] = ()  # loadBalancerSourceRanges (empty: everyone)


def frontends(cluster: ClusterState) -> list[Frontend]:
    out = []
    for info in cluster.services:
        if info.service.type != "LoadBalancer" or not info.proxied:
            continue
        for sp, np_ in zip(info.service.ports, info.node_ports, strict=True):
            for ip in info.load_balancer_ips:
                out.append(Frontend(info.key, ip, sp.protocol.lower(), sp.port, np_, info.health_check_node_port,
                                    tuple(r.strip() for r in info.service.load_balancer_source_ranges if ":" not in r)))
    return sorted(out, key=lambda f: (f.ip, f.proto, f.port))


def addresses(cluster: ClusterState) -> list[str]:
    return sorted({ip for info in cluster.services if info.service.type == "LoadBalancer" for ip in info.load_balancer_ips})


def render(cluster: ClusterState, healthy: dict[str, list[str]], mode: str) -> str:
    """The LB's nft transaction. `healthy`: service key → the names of nodes that may get its traffic."""
    node_ip = {n.name: n.ip for n in cluster.nodes}
    index = {n.name: i for i, n in enumerate(cluster.nodes)}
    rules, firewall = [], []
    for f in frontends(cluster):
        if mode != "passthrough" and f.source_ranges:  # the cloud's own firewall, before its NAT
            firewall.append(f"add rule ip {TABLE} firewall ip daddr {f.ip} {f.proto} dport {f.port} "
                            f"ip saddr != {{ {', '.join(f.source_ranges)} }} drop "
                            f'comment "{f.service}:{f.port}/{f.proto} loadBalancerSourceRanges"')
        targets = [n for n in healthy.get(f.service, [n.name for n in cluster.nodes]) if n in node_ip]
        match = f'ip daddr {f.ip} {f.proto} dport {f.port}'
        comment = f'comment "{f.service}:{f.port}/{f.proto}"'
        if not targets:
            verdict = "reject with tcp reset" if f.proto == "tcp" else "reject"
            chain = "prerouting" if mode == "passthrough" else "forward_in"
            rules.append(f"add rule ip {TABLE} {chain} {match} {verdict} {comment}")
            continue
        if mode == "passthrough":
            # Stateless, like a cloud's network LB: a hash of the client's address and port picks
            # the node, so every packet of a flow goes the same way without conntrack here (the
            # replies bypass the LB, which conntrack would call invalid).
            marks = ", ".join(f"{i} : {index[n] + 1}" for i, n in enumerate(targets))
            rules.append(f"add rule ip {TABLE} prerouting {match} notrack meta mark set jhash ip saddr . {f.proto} sport "
                         f"mod {len(targets)} map {{ {marks} }} {comment}")
        else:
            if f.node_port is None:
                continue
            dests = ", ".join(f"{i} : {node_ip[n]} . {f.node_port}" for i, n in enumerate(targets))
            rules.append(f"add rule ip {TABLE} forward_in {match} dnat ip to numgen random mod {len(targets)} "
                         f"map {{ {dests} }} {comment}")
    head = [f"add table ip {TABLE}", f"delete table ip {TABLE}", f"add table ip {TABLE}"]
    if mode == "passthrough":
        head += [f"add chain ip {TABLE} prerouting {{ type filter hook prerouting priority -300 ; }}", *rules]
    else:
        if firewall:
            head += [f"add chain ip {TABLE} firewall {{ type filter hook prerouting priority -150 ; }}", *firewall]
        head += [f"add chain ip {TABLE} forward_in {{ type nat hook prerouting priority -100 ; }}",
                 f"add chain ip {TABLE} forward_out {{ type nat hook postrouting priority 100 ; }}",
                 *rules,
                 f"add rule ip {TABLE} forward_out ct status dnat masquerade"]
    return "\n".join(head) + "\n"


def pool_prefixes(lab) -> list[str]:
    """The LoadBalancer pool as CIDR prefixes (for the clients' route to it)."""
    import ipaddress

    from .control import _pool_addresses

    pool = _pool_addresses(lab)
    if not pool:
        return []
    first, last = ipaddress.ip_address(pool[0]), ipaddress.ip_address(pool[-1])
    return [str(n) for n in ipaddress.summarize_address_range(first, last)]


def routes(cluster: ClusterState) -> list[tuple[int, int, str]]:
    """passthrough: (fwmark, table, node IP) — a mark picks the node the flow is routed to."""
    return [(i + 1, MARK_TABLE_BASE + i + 1, n.ip) for i, n in enumerate(cluster.nodes)]
