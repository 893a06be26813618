"""A dump of a real cluster → the Lab that rebuilds it: what the Lab document does not pin is
inferred from the objects.

What `kubectl get nodes,services,endpointslices,pods -A -o yaml` (or `get all`) prints carries the
cluster's addresses: Node objects (name, InternalIP, podCIDR, labels, taints, kube-proxy version),
pods' `status.podIP`, ClusterIPs, NodePorts, LoadBalancer ingress IPs. Those are kept (testbed.model
and testbed.control honour them); here the lab around them is completed:

- nodes: the Node objects, plus nodes the pods and EndpointSlices name (merged with the Lab
  document's `spec.nodes` by name; the document's pins win);
- the node network: the smallest network holding every node's InternalIP (at least a /24);
- the Service CIDR: a ServiceCIDR object's, else the first well-known default (kubeadm's 10.96.0.0/12,
  kind's 10.96.0.0/16, k3s' 10.43.0.0/16, MicroK8s' 10.152.183.0/24, …) that holds every ClusterIP,
  else the smallest network that does and has `default/kubernetes` (the API server's Service, always
  the range's first address) at its start;
- the cluster CIDR (kube-proxy's --cluster-cidr): kube-proxy's own ConfigMap (kube-system/kube-proxy)
  if dumped, else a well-known default holding every podCIDR and pod IP, else their /16;
- the proxy mode, IPVS scheduler and masqueradeAll: kube-proxy's ConfigMap, when dumped;
- kube-proxy's version (whose rules are rendered): the one most Node objects report in
  `status.nodeInfo.kubeProxyVersion`; a node that runs another renders its own;
- a pod's address is kept when it lies in its node's podCIDR (a node without one gets the smallest
  of the node mask's size that holds its pods); otherwise the pod gets a new one, with a note.

Inference is said once (`LabSpec.inferred`): a render is exact where the inputs pinned or dumped the
values, and the note says which were guessed.
"""
from __future__ import annotations

import ipaddress
from dataclasses import replace

from . import versions

SERVICE_CIDR_DEFAULTS = ("10.96.0.0/12", "10.96.0.0/16", "10.43.0.0/16", "10.152.183.0/24", "10.100.0.0/16",
                         "172.20.0.0/16", "10.0.0.0/16", "34.118.224.0/20")
CLUSTER_CIDR_DEFAULTS = ("10.244.0.0/16", "10.42.0.0/16", "10.1.0.0/16", "192.168.0.0/16", "10.32.0.0/12",
                         "10.0.0.0/14", "100.64.0.0/10")
PROXY_MODE_NAMES = {"": "iptables", "iptables": "iptables", "ipvs": "ipvs", "nftables": "nftables",
                    "userspace": "userspace"}


def complete(topo, node_objects, kube_proxy: dict | None, service_cidrs: list[str], notes, dumped: bool = False):
    """The topology with its Lab completed from the objects (a no-op for a topology without any).

    The Service CIDR and the NodePort range are inferred only from a dump (`dumped`: objects with a
    uid or resourceVersion, which only an API server writes): a cluster's values are valid by
    construction, while a hand-written ClusterIP outside the range is a mistake worth an error."""
    from .model import NodeSpec

    lab = topo.lab
    pinned = lab.pinned
    inferred: list[str] = []
    changes: dict = {}

    # Nodes: Node objects, then names other objects use, merged with the Lab document's.
    named = [p.node_name for p in topo.pods if p.node_name]
    named += [d.template.node_name for d in topo.deployments if d.template.node_name]
    named += [e.node_name for s in topo.slices for e in s.endpoints if e.node_name]
    nodes = list(lab.nodes)
    if node_objects:
        by_name = {n.name: n for n in node_objects}
        if "nodes" in pinned:
            nodes = [_merge(n, by_name.get(n.name)) for n in lab.nodes]
            nodes += [n for n in node_objects if n.name not in {x.name for x in lab.nodes}]
        else:
            nodes = list(node_objects)
    have = {n.name for n in nodes}
    extra = [n for n in dict.fromkeys(named) if n not in have]
    if extra and not node_objects and "nodes" not in pinned and not set(named) & {n.name for n in lab.nodes}:
        nodes = []  # a dump without Node objects: its pods name the nodes (node-1 and node-2 are not in it)
    if extra and "nodes" not in pinned:
        nodes += [NodeSpec(n) for n in extra]
    # kube-proxy's version: the Lab document's wins; else the one most nodes run (each renders its own).
    if "kubeProxy" in pinned:
        mine = {n.name: n.kube_proxy_version for n in lab.nodes} if "nodes" in pinned else {}
        nodes = [replace(n, kube_proxy_version=mine.get(n.name)) for n in nodes]
    else:
        common = versions.most_common([n.kube_proxy_version for n in node_objects or () if n.kube_proxy_version])
        if common and common != lab.kube_proxy_version:
            changes["kube_proxy_version"] = common
            odd = [f"{n.name} ({n.kube_proxy_version})" for n in nodes if n.kube_proxy_version not in (None, common)]
            inferred.append(f"kubeProxy.version {common} (the Node objects' kubeProxyVersion"
                            + (f"; {_short(odd)} render their own)" if odd else ")"))
    if nodes != list(lab.nodes):
        changes["nodes"] = tuple(nodes)
        if (node_objects or extra) and "nodes" not in pinned:
            inferred.append(f"nodes {_short([n.name for n in nodes])} (from the "
                            f"{'Node objects' if node_objects else 'pods'})")

    # The node network around the nodes' addresses.
    node_ips = [ipaddress.ip_address(n.ip) for n in nodes if n.ip]
    if node_ips and "nodeNetwork" not in pinned:
        net = _covering(node_ips, longest=24)
        if str(net) != lab.node_network:
            changes["node_network"] = str(net)
            inferred.append(f"nodeNetwork {net} (around the nodes' InternalIPs)")

    # The Service CIDR around the ClusterIPs.
    cips = [ipaddress.ip_address(s.cluster_ip) for s in topo.services if s.cluster_ip and not s.headless]
    if "serviceCIDR" not in pinned:
        cidr = None
        how = ""
        if service_cidrs:
            cidr, how = ipaddress.ip_network(service_cidrs[0]), "the ServiceCIDR object"
        elif cips and dumped:
            # The smallest default that fits: kind's /16 inside kubeadm's /12 is kind's (a kubeadm
            # cluster with more than a handful of Services has ClusterIPs all over its /12).
            fits = [ipaddress.ip_network(c) for c in SERVICE_CIDR_DEFAULTS
                    if all(ip in ipaddress.ip_network(c) for ip in cips)]
            cidr = max(fits, key=lambda n: n.prefixlen) if fits else None
            how = "the smallest well-known default that holds every ClusterIP"
            if cidr is None:
                api = next((ipaddress.ip_address(s.cluster_ip) for s in topo.services
                            if s.key == "default/kubernetes" and s.cluster_ip and not s.headless), None)
                # The API server's address is the range's first after the network address (none before 0.0.0.0).
                cidr = _covering(cips, longest=24, network_at=api - 1 if api and int(api) else None)
                how = "the smallest range holding every ClusterIP"
        if cidr is not None and str(cidr) != lab.service_cidr:
            changes["service_cidr"] = str(cidr)
            inferred.append(f"serviceCIDR {cidr} ({how}; pin spec.serviceCIDR for an exact render)")
    # The other ServiceCIDR objects: more ranges the API server allocates ClusterIPs from.
    extra = [c for c in dict.fromkeys(service_cidrs) if c != changes.get("service_cidr", lab.service_cidr)]
    if extra and "additionalServiceCIDRs" not in pinned:
        changes["extra_service_cidrs"] = tuple(str(ipaddress.ip_network(c)) for c in extra)
        inferred.append(f"additionalServiceCIDRs {', '.join(changes['extra_service_cidrs'])} (the other ServiceCIDR objects)")

    # kube-proxy's own settings, if its ConfigMap was dumped.
    conf = kube_proxy or {}
    if conf:
        mode = PROXY_MODE_NAMES.get(str(conf.get("mode") or ""))
        if mode and "proxyMode" not in pinned and mode != lab.proxy_mode:
            changes["proxy_mode"] = mode
            inferred.append(f"proxyMode {mode} (kube-system/kube-proxy's config.conf)")
        ipvs = conf.get("ipvs") if isinstance(conf.get("ipvs"), dict) else {}
        if ipvs.get("scheduler") and "ipvsScheduler" not in pinned:
            changes["ipvs_scheduler"] = str(ipvs["scheduler"])
        ipt = conf.get("iptables") if isinstance(conf.get("iptables"), dict) else {}
        if isinstance(ipt.get("masqueradeAll"), bool) and "masqueradeAll" not in pinned:
            changes["masquerade_all"] = ipt["masqueradeAll"]

    # The cluster CIDR (kube-proxy's --cluster-cidr) around the pods.
    pod_space = [ipaddress.ip_network(n.pod_cidr) for n in nodes if n.pod_cidr]
    pod_space += [ipaddress.ip_network(f"{p.ip}/32") for p in topo.pods if p.ip and not p.host_network]
    if "clusterCIDR" not in pinned:
        cidr, how = None, ""
        if isinstance(conf.get("clusterCIDR"), str) and conf["clusterCIDR"]:
            first = next((c for c in conf["clusterCIDR"].split(",") if ":" not in c), None)
            if first:
                cidr, how = ipaddress.ip_network(first.strip(), strict=False), "kube-system/kube-proxy's config.conf"
        elif pod_space:
            cidr = next((ipaddress.ip_network(c) for c in CLUSTER_CIDR_DEFAULTS
                         if all(s.subnet_of(ipaddress.ip_network(c)) for s in pod_space)), None)
            how = "a well-known default that holds every podCIDR and pod IP"
            if cidr is None:
                cidr = _covering([s.network_address for s in pod_space] + [s.broadcast_address for s in pod_space],
                                 longest=16)
                how = "the range that holds every podCIDR and pod IP"
        if cidr is not None and str(cidr) != lab.cluster_cidr:
            changes["cluster_cidr"] = str(cidr)
            inferred.append(f"clusterCIDR {cidr} ({how})")
    masks = {ipaddress.ip_network(n.pod_cidr).prefixlen for n in nodes if n.pod_cidr}
    if len(masks) == 1 and "nodeCIDRMaskSize" not in pinned:
        changes["node_cidr_mask"] = masks.pop()

    # The API server's --service-node-port-range, widened to hold every NodePort the objects have.
    ports = [p.node_port for s in topo.services for p in s.ports if p.node_port]
    ports += [s.health_check_node_port for s in topo.services if s.health_check_node_port]
    lo, hi = lab.node_port_range
    if ports and dumped and "serviceNodePortRange" not in pinned and (min(ports) < lo or max(ports) > hi):
        changes["node_port_range"] = (min(lo, min(ports)), max(hi, max(ports)))
        inferred.append(f"serviceNodePortRange {changes['node_port_range'][0]}-{changes['node_port_range'][1]} "
                        "(widened to hold every NodePort)")

    # A dump is the whole cluster: the DNS add-on is its own kube-dns (its CoreDNS pods run testbed's
    # DNS server), or none if it had none, so that the rules are the cluster's.
    kube_dns = next((s for s in topo.services if s.key == "kube-system/kube-dns" and s.cluster_ip and not s.headless), None)
    if kube_dns and "clusterDNS" not in pinned:
        changes["cluster_dns_ip"] = kube_dns.cluster_ip  # what the pods' resolv.conf names
    if node_objects and "clusterDNS" not in pinned and lab.cluster_dns:
        if not any(s.key == "kube-system/kube-dns" for s in topo.services):
            changes["cluster_dns"] = False
            inferred.append("clusterDNS off (the dump has no kube-system/kube-dns Service)")

    if changes:
        topo = replace(topo, lab=replace(lab, **changes, inferred=tuple(inferred)))
    return _pod_addresses(topo, notes) if any(p.ip or p.host_network for p in topo.pods) else topo


def _pod_addresses(topo, notes):
    """Keep a dumped pod's address where it lies in its node's podCIDR; a node without a podCIDR gets one
    around its pods."""
    lab = topo.lab
    cluster = ipaddress.ip_network(lab.cluster_cidr)
    by_node: dict[str, list] = {}
    for p in topo.pods:
        if p.ip and p.node_name and not p.host_network:
            by_node.setdefault(p.node_name, []).append(ipaddress.ip_address(p.ip))
    nodes = []
    taken = [ipaddress.ip_network(n.pod_cidr) for n in lab.nodes if n.pod_cidr]
    for n in lab.nodes:
        if not n.pod_cidr and by_node.get(n.name):
            net = _covering(by_node[n.name], longest=lab.node_cidr_mask, max_prefix=lab.node_cidr_mask)
            if net.subnet_of(cluster) and not any(net.overlaps(t) for t in taken):
                n = replace(n, pod_cidr=str(net))
                taken.append(net)
        nodes.append(n)
    cidrs = {n.name: ipaddress.ip_network(n.pod_cidr) for n in nodes if n.pod_cidr}
    pods = []
    for p in topo.pods:
        if p.host_network:
            p = replace(p, ip=None)  # the node's address, whatever the dump says
        elif p.ip and (p.node_name not in cidrs or ipaddress.ip_address(p.ip) not in cidrs[p.node_name]
                     or ipaddress.ip_address(p.ip) in (cidrs[p.node_name].network_address,
                                                       cidrs[p.node_name].network_address + 1)):
            where = f"node {p.node_name}'s podCIDR {cidrs[p.node_name]}" if p.node_name in cidrs else "no node's podCIDR"
            notes.effect(topo.source, f"Pod {p.key}", "status.podIP", f"{p.ip} is outside {where} (a CNI with its own "
                         "IPAM, or the node's gateway address): the pod gets a new address")
            p = replace(p, ip=None)
        pods.append(p)
    return replace(topo, lab=replace(lab, nodes=tuple(nodes)), pods=tuple(pods))


def _merge(mine, dumped):
    """A Lab document's node merged with the Node object of the same name: the document's pins win."""
    if dumped is None:
        return mine
    return replace(mine, ip=mine.ip or dumped.ip, pod_cidr=mine.pod_cidr or dumped.pod_cidr,
                   labels=mine.labels or dumped.labels, taints=mine.taints or dumped.taints,
                   kube_proxy_version=mine.kube_proxy_version or dumped.kube_proxy_version)


def _covering(addrs, longest: int, max_prefix: int | None = None, network_at=None):
    """The smallest network holding every address, with a prefix of at most `longest`; with
    `network_at`, preferably the smallest one that starts there."""
    lo, hi = int(min(addrs)), int(max(addrs))
    if network_at is not None and int(network_at) <= lo:
        for prefix in range(longest, -1, -1):
            net = ipaddress.ip_network((int(network_at), prefix), strict=False)
            if net.network_address == network_at and int(net.broadcast_address) >= hi:
                return net
    for prefix in range(min(longest, max_prefix or 32), -1, -1):
        net = ipaddress.ip_network((lo, prefix), strict=False)
        if int(net.broadcast_address) >= hi:
            return net
    return ipaddress.ip_network((0, 0))


def _short(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f", … ({len(names)} in all)" if len(names) > n else "")
