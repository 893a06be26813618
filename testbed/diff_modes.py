"""Per proxy mode: rules (a node's dump or testbed's render, read by noderules) -> a Side, the
pieces `testbed diff` compares, each attributed to the Service port it serves.

A rule, element or virtual server belongs to a Service port (its svcPortName, `ns/name:port`) by:
- the hashed chain names, recomputed from the expected side's Service ports (KUBE-SVC-…,
  KUBE-SEP-…; nftables' `service-<hash>-ns/name/proto/port`, whose base names the port anyway);
- the comments kube-proxy writes (`"ns/web:http cluster IP"`, `ns/web:http`, element comments),
  which also name Services that no longer exist (a deleted Service's stale chains);
- addresses for IPVS, which has neither (ClusterIP:port, NodePorts, endpoints).
What belongs to no Service port is kube-proxy's own (BASE). What is not kube-proxy's at all
(a CNI's or Docker's chains, other nft tables, other ipsets) is set aside as Foreign.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from testbed.noderules import iptables as nipt
from testbed.noderules import ipvs as nipvs
from testbed.noderules import nft as nnft
from testbed.proxy import Endpoint, NodeView, ServicePort
from testbed.render import ipvs as ripvs
from testbed.render import iptables as riptables
from testbed.render import names

BASE = ""  # owner of kube-proxy's own rules (not one Service port's)
CHAIN = "(chain)"  # the entry that says a chain exists

_SVC_PORT = re.compile(r"(?:^| )([a-z0-9][-a-z0-9.]*/[a-z0-9][-a-z0-9]*(?::[-a-z0-9]+)?)(?= |$)")
CANARY = "KUBE-PROXY-CANARY"
# Chains kube-proxy writes in some mode or version (iptables, IPVS glue, the old KUBE-XLB-).
KUBE_PROXY_CHAINS = (set(riptables.FILTER_CHAINS) | set(riptables.NAT_CHAINS)
                     | {c for _, c in ripvs.IPTABLES_CHAINS} | {CANARY})
_FOREIGN_OWNERS = (
    ("KUBE-KUBELET-CANARY", "kubelet"), ("KUBE-MARK-DROP", "kubelet"), ("KUBE-FIREWALL", "kubelet"),
    ("DOCKER", "Docker"), ("CNI-", "CNI plugins"), ("FLANNEL", "flannel"), ("cali-", "Calico"),
    ("CILIUM", "Cilium"), ("KUBE-ROUTER", "kube-router"), ("KUBE-NWPLCY", "kube-router"),
    ("KUBE-POD-FW", "kube-router"), ("WEAVE", "Weave Net"), ("ANTREA", "Antrea"), ("OVN", "OVN"),
)


def foreign_owner(name: str) -> str:
    """Who probably wrote a chain, table or set that is not kube-proxy's (a guess by name)."""
    for prefix, owner in _FOREIGN_OWNERS:
        if name.startswith(prefix) or f" {prefix}" in name:
            return owner
    return "other"


@dataclass(frozen=True)
class Foreign:
    """Something on the node that kube-proxy did not write: not compared, not a difference."""

    what: str  # "nat FLANNEL-POSTRTG", "nat POSTROUTING (rules not jumping to kube-proxy)", "table ip filter"
    owner: str  # a guess: flannel, Docker, CNI plugins, kubelet, other
    count: int  # rules (chains), chains and sets (tables), entries (ipsets)
    unit: str = "rules"


@dataclass
class Side:
    """One side of the comparison: owner -> place -> entries, in order."""

    entries: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    facets: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # display names of owners that are no svcPortName
    ordered: set[str] = field(default_factory=set)  # places whose entries' order matters
    foreign: list[Foreign] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, owner: str, place: str, text: str) -> None:
        self.entries.setdefault(owner, {}).setdefault(place, []).append(text)

    def facet(self, owner: str, name: str, value: tuple[str, ...]) -> None:
        if value:
            self.facets.setdefault(owner, {})[name] = value


def svc_port_in(text: str | None) -> str | None:
    """The svcPortName a kube-proxy comment names (`default/web:http cluster IP` -> default/web:http)."""
    if not text:
        return None
    m = _SVC_PORT.search(text)
    return m[1] if m else None


def _affinity(seconds: set[str]) -> tuple[str, ...]:
    return tuple(f"ClientIP {s}s" for s in sorted(seconds, key=int))


def ports_by_name(view: NodeView) -> dict[str, ServicePort]:
    return {sp.port_name_string: sp for sp in view.services if sp.cluster_ip}


# --- iptables ------------------------------------------------------------------------------------

def _chain_owners(ports: dict[str, ServicePort]) -> dict[str, str]:
    """Hashed chain name -> svcPortName, recomputed as kube-proxy names them."""
    out: dict[str, str] = {}
    for name, sp in ports.items():
        for fn in (names.service_chain, names.local_chain, names.external_chain, names.firewall_chain):
            out[fn(sp)] = name
        for ep in sp.endpoints:
            out[names.endpoint_chain(sp, ep)] = name
    return out


def _sep_owner(chain: str, rules: list[str], ports: dict[str, ServicePort]) -> str | None:
    """A KUBE-SEP chain without comments (large-cluster mode): the port whose hash of its DNAT
    target gives this name."""
    dest = next((nipt.option(r, "--to-destination") for r in rules if "-j DNAT" in r), None)
    if not dest or ":" not in dest:
        return None
    ip, _, port = dest.rpartition(":")
    ep = Endpoint(ip, int(port)) if port.isdigit() else None
    return next((n for n, sp in ports.items() if ep and names.endpoint_chain(sp, ep) == chain), None)


def iptables_side(tables: nipt.Tables, ports: dict[str, ServicePort], known: set[tuple[str, str]]) -> Side:
    """`known`: (table, chain) pairs the expected side declares (kube-proxy's, whatever their name)."""
    side = Side()
    owners = _chain_owners(ports)
    canaries: list[str] = []
    skipped: list[str] = []

    def kube_proxys(table: str, chain: str) -> bool:
        if (table, chain) in known:
            return True
        if chain in ("KUBE-FIREWALL", "KUBE-MARK-DROP", "KUBE-KUBELET-CANARY"):
            return False  # kubelet's, unless the expected side writes it (kube-proxy keeps a copy)
        return chain in KUBE_PROXY_CHAINS or names.is_service_chain_name(chain) or chain.startswith("KUBE-XLB-")

    for tname, table in tables.tables.items():
        if tname not in ("nat", "filter"):
            mine = [c for c in table.chains if c == CANARY]
            other = [c for c in table.chains if c != CANARY and c not in nipt.BUILTIN_CHAINS.get(tname, ())]
            if mine:
                canaries.append(tname)
            for c in other:
                side.foreign.append(Foreign(f"{tname} {c}", foreign_owner(c), len(table.chains[c])))
            builtin_rules = sum(len(table.chains.get(c, ())) for c in nipt.BUILTIN_CHAINS.get(tname, ()))
            if builtin_rules:
                side.foreign.append(Foreign(f"{tname} built-in chains", "other", builtin_rules, "rules"))
            skipped.append(tname)
            continue
        builtins = nipt.BUILTIN_CHAINS[tname]
        for chain, rules in table.chains.items():
            place = f"{tname} {chain}"
            if chain in builtins:
                theirs = 0
                for rule in rules:
                    target = nipt.jump_target(rule)
                    if target and target not in builtins and kube_proxys(tname, target):
                        side.add(BASE, place, rule)
                    else:
                        theirs += 1
                if theirs:
                    side.foreign.append(Foreign(place, "other", theirs, "rules not jumping to kube-proxy's"))
                continue
            if chain == CANARY:
                canaries.append(tname)
                continue
            if not kube_proxys(tname, chain):
                side.foreign.append(Foreign(place, foreign_owner(chain), len(rules)))
                continue
            owner = owners.get(chain)
            if owner is None and (names.is_service_chain_name(chain) or chain.startswith("KUBE-XLB-")):
                named = [svc_port_in(nipt.comment(r)) for r in rules]
                owner = next((n for n in named if n), None)
                if owner is None and chain.startswith(names.SEP_PREFIX):
                    owner = _sep_owner(chain, rules, ports)
                if owner is None:
                    owner = f"?{chain}"
                    side.labels[owner] = f"(no Service) chain {chain}"
            if owner is not None:  # a per-service chain: all of it is the port's
                side.add(owner, place, CHAIN)
                side.ordered.add(place)
                for rule in rules:
                    side.add(owner, place, rule)
                continue
            side.add(BASE, place, CHAIN)
            if chain not in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL"):
                side.ordered.add(place)
            for rule in rules:
                named = svc_port_in(nipt.comment(rule)) or owners.get(nipt.jump_target(rule) or "")
                side.add(named or BASE, place, rule)
    if canaries:
        side.notes.append(f"{CANARY} ({', '.join(sorted(set(canaries)))}): kube-proxy's canary chain, made "
                          "outside its restore input: not compared")
    if skipped:
        side.notes.append(f"table{'s' if len(skipped) > 1 else ''} {', '.join(skipped)}: kube-proxy writes "
                          "only nat and filter: not compared")
    _iptables_facets(side, tables)
    return side


def _iptables_facets(side: Side, tables: nipt.Tables) -> None:
    nat = tables.tables.get("nat", nipt.Table("nat")).chains
    for owner, places in side.entries.items():
        endpoints, local, probs, seconds, marks, addresses = [], [], [], set(), set(), set()
        for place, entries in places.items():
            table, chain = place.split(" ", 1)
            for rule in entries:
                if rule == CHAIN:
                    continue
                for opt in ("--mark", "--set-xmark"):
                    if (v := nipt.option(rule, opt)) is not None:
                        marks.add(v)
                if (s := nipt.option(rule, "--seconds")) is not None:
                    seconds.add(s)
                target = nipt.jump_target(rule) or ""
                if chain.startswith((names.SVC_PREFIX, names.SVL_PREFIX)) and target.startswith(names.SEP_PREFIX) \
                        and "--rcheck" not in rule:
                    dest = next((nipt.option(r, "--to-destination") for r in nat.get(target, ()) if "-j DNAT" in r), None)
                    (endpoints if chain.startswith(names.SVC_PREFIX) else local).append(dest or f"? ({target} missing)")
                    if chain.startswith(names.SVC_PREFIX):
                        probs.append(nipt.option(rule, "--probability") or "rest")
                if chain in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES") and owner != BASE:
                    addresses.add(_capture(rule, target))
        side.facet(owner, "endpoints", tuple(endpoints))
        side.facet(owner, "local endpoints", tuple(local))
        side.facet(owner, "probabilities", tuple(probs) if len(probs) > 1 else ())
        side.facet(owner, "affinity", _affinity(seconds))
        side.facet(owner, "marks", tuple(sorted(marks)))
        side.facet(owner, "addresses", tuple(sorted(addresses)))


def _capture(rule: str, target: str) -> str:
    """`10.96.0.20:80/tcp`, `nodePort 30080/tcp`, with ` reject`/` drop` for no-endpoint rules."""
    proto = nipt.option(rule, "-p") or "?"
    port = nipt.option(rule, "--dport") or "?"
    dest = nipt.option(rule, "-d")
    text = f"{dest}:{port}/{proto}" if dest and not dest.startswith("127.") else f"nodePort {port}/{proto}"
    return text + (f" {target.lower()}" if target in ("REJECT", "DROP") else "")


# --- nftables ------------------------------------------------------------------------------------

_NFT_CHAIN = re.compile(r"^(service|local|external|firewall|endpoint|affinity)-[A-Z2-7]{8}-(.+)$")
TABLE = "ip kube-proxy"


def _nft_owner(name: str) -> str | None:
    """`service-ULMVA6XW-ns1/svc1/tcp/p80` (or endpoint-…__ip/port) -> `ns1/svc1:p80`."""
    m = _NFT_CHAIN.match(name)
    if not m:
        return None
    parts = m[2].split("__", 1)[0].split("/")
    if len(parts) != 4:
        return None
    ns, svc, _, port = parts
    return f"{ns}/{svc}:{port}" if port else f"{ns}/{svc}"


def _verdict_chain(elem: str) -> str | None:
    m = re.search(r" : (?:goto|jump) (\S+)$", elem)
    return m[1] if m else None


def nft_side(ruleset: nnft.Ruleset, ports: dict[str, ServicePort]) -> Side:
    side = Side()
    for key, table in ruleset.tables.items():
        if key == TABLE:
            continue
        if key == "ip6 kube-proxy":
            side.notes.append("table ip6 kube-proxy: IPv6, which testbed does not render: not compared")
            continue
        kube = [c for c in table.chains if c in KUBE_PROXY_CHAINS or names.is_service_chain_name(c)]
        theirs = sorted({foreign_owner(c) for c in table.chains} - {"other"})
        side.foreign.append(Foreign(f"table {key}", ", ".join(theirs) or "other", len(table.chains), "chains"))
        if kube and table.family == "ip" and table.name in ("nat", "filter"):
            side.notes.append(f"table {key} has KUBE-* chains ({kube[0]}, …): iptables-nft rules, perhaps of "
                              "kube-proxy in iptables mode; compare those with `iptables-save` output")
    table = ruleset.tables.get(TABLE)
    if table is None:
        return side
    expected_names = {}
    for name, sp in ports.items():
        base = names.nft_service_base(sp)
        for prefix in ("service-", "local-", "external-", "firewall-"):
            expected_names[prefix + base] = name
        for ep in sp.endpoints:
            for prefix in ("endpoint-", "affinity-"):
                expected_names[prefix + names.nft_endpoint_base(sp, ep)] = name

    def owner_of(obj: str) -> str:
        if "/" not in obj:
            return BASE
        owner = expected_names.get(obj) or _nft_owner(obj)
        if owner is None:
            owner = f"?{obj}"
            side.labels[owner] = f"(no Service) {obj}"
        return owner

    chain_owner = {name: owner_of(name) for name in table.chains}
    for name, chain in table.chains.items():
        place = f"chain {name}"
        owner = chain_owner[name]
        side.add(owner, place, CHAIN)
        side.ordered.add(place)
        if chain.hook:
            kind, hook, prio, policy = chain.hook
            side.add(owner, place, f"(hook) type {kind} hook {hook} priority {prio}; policy {policy}")
        for rule in chain.rules:
            side.add(owner, place, rule)
    # ClusterIPs -> a port of their Service, for the cluster-ips set (its elements name nothing)
    ip_owner: dict[str, str] = {}
    for name in sorted(ports, reverse=True):
        ip_owner[ports[name].cluster_ip] = name
    for elem in table.sets.get("service-ips", nnft.Set("", "")).elements:
        ip = elem.split(" ", 1)[0]
        target = _verdict_chain(elem)
        if ip not in ip_owner and target in chain_owner:
            ip_owner[ip] = chain_owner[target]
    for name, s in table.sets.items():
        place = f"{s.kind} {name}"
        owner = owner_of(name)
        type_, flags, timeout, comment = s.spec
        spec = f"(definition) type {type_}" + (f"; flags {','.join(flags)}" if flags else "") \
            + (f"; timeout {timeout}s" if timeout is not None else "") + (f'; comment "{comment}"' if comment else "")
        side.add(owner, place, spec)
        if name.startswith("affinity-"):
            continue  # its elements are the clients seen, not rules
        for elem in s.elements:
            target = _verdict_chain(elem)
            by = chain_owner.get(target) if target else None
            m = re.search(r' comment "([^"]*)"', elem)
            by = by or (svc_port_in(m[1]) if m else None)
            if by is None and name == "cluster-ips":
                by = ip_owner.get(elem.split(" ", 1)[0])
            side.add(by or BASE, place, elem)
    _nft_facets(side, table)
    return side


def _nft_facets(side: Side, table: nnft.Table) -> None:
    def dnat(chain: str) -> str:
        rules = table.chains.get(chain, nnft.Chain(chain)).rules
        return next((r.split(" dnat to ", 1)[1].split()[0] for r in rules if " dnat to " in r),
                    f"? ({chain} missing)")

    for owner, places in side.entries.items():
        facets: dict[str, list[str]] = defaultdict(list)
        marks: set[str] = set()
        for place, entries in places.items():
            kind, name = place.split(" ", 1)
            for text in entries:
                marks.update(m for m in re.findall(r"meta mark (?:set meta mark )?[|&^] (0x[0-9a-f]+)", text))
                if kind == "chain" and name.startswith(("service-", "local-")):
                    m = re.search(r"numgen random mod (\d+) vmap \{ (.*) \}", text)
                    if m:
                        items = sorted((int(i), c) for i, c in re.findall(r"(\d+) : goto (\S+?)(?:,|$)", m[2]))
                        key = "endpoints" if name.startswith("service-") else "local endpoints"
                        facets[key] += [dnat(c) for _, c in items]
                        if key == "endpoints" and len(items) > 1:
                            facets["probabilities"] += [f"1/{m[1]}"] * len(items)
                if kind == "set" and name.startswith("affinity-"):
                    t = re.search(r"timeout (\d+)s", text)
                    if t:
                        facets["affinity"].append(f"ClientIP {t[1]}s")
                if kind == "map" and owner != BASE and not text.startswith("(definition)"):
                    facets["addresses"].append(_nft_address(name, text))
        for key in ("endpoints", "local endpoints", "probabilities"):
            side.facet(owner, key, tuple(facets[key]))
        side.facet(owner, "affinity", tuple(sorted(set(facets["affinity"]))))
        side.facet(owner, "marks", tuple(sorted(marks)))
        side.facet(owner, "addresses", tuple(sorted(set(facets["addresses"]))))


def _nft_address(container: str, elem: str) -> str:
    """`10.96.0.20 . tcp . 80 : goto …` -> `10.96.0.20:80/tcp` (`nodePort 30080/tcp` for
    NodePorts), with ` reject`/` drop` for the no-endpoint maps and ` firewall` for firewall-ips."""
    key = nnft.element_key(elem).split(" . ")
    text = f"nodePort {key[1]}/{key[0]}" if len(key) == 2 else f"{key[0]}:{key[2]}/{key[1]}" if len(key) == 3 else elem
    if container.startswith("no-endpoint"):
        text += " drop" if elem.endswith(": drop") else " reject"
    elif container == "firewall-ips":
        text += " firewall"
    return text


# --- IPVS ----------------------------------------------------------------------------------------

_FWD = {"masq": "-m", "route": "-g", "tunnel": "-i"}
_PORT_SETS = {ripvs.NODE_PORT_TCP: "TCP", ripvs.NODE_PORT_LOCAL_TCP: "TCP", ripvs.NODE_PORT_UDP: "UDP",
              ripvs.NODE_PORT_LOCAL_UDP: "UDP"}


class _IpvsIndex:
    """Where an IPVS object belongs: the expected side's Service ports by address, then the node's
    own virtual servers (for a deleted Service's ipset entries)."""

    def __init__(self, ports: dict[str, ServicePort]) -> None:
        self.vip: dict[tuple[str, int, str], str] = {}
        self.node_port: dict[tuple[int, str], str] = {}
        self.endpoint: dict[tuple[str, int, str], str] = {}
        self.health: dict[int, str] = {}
        self.ip: dict[str, str] = {}
        for name in sorted(ports, reverse=True):  # the first port of a Service wins an address
            sp = ports[name]
            for ip in (sp.cluster_ip, *sp.external_ips, *sp.load_balancer_ips):
                self.vip[(ip, sp.port, sp.protocol)] = name
                self.ip[ip] = name
            if sp.node_port:
                self.node_port[(sp.node_port, sp.protocol)] = name
            if sp.health_check_node_port:
                self.health[sp.health_check_node_port] = name
            for ep in sp.endpoints:
                self.endpoint[(ep.ip, ep.port, sp.protocol)] = name

    def server(self, vs: nipvs.VirtualServer) -> str | None:
        if vs.key.startswith("FWM"):
            return None
        return self.vip.get((vs.ip, vs.port, vs.protocol)) or self.node_port.get((vs.port, vs.protocol))


def ipvs_side(state: nipvs.IpvsState, ports: dict[str, ServicePort], known: set[tuple[str, str]],
              parts: set[str] | None = None) -> Side:
    """`parts`: which of ipvsadm, ipset, iptables to take (the node's dump may lack some)."""
    parts = parts if parts is not None else {"ipvsadm", "ipset", "iptables"}
    index = _IpvsIndex(ports)
    side = Side()
    vs_owner: dict[str, str] = {}
    unknown: dict[tuple, list[str]] = defaultdict(list)
    for key, vs in state.virtual_servers.items():
        owner = index.server(vs)
        if owner is None:
            unknown[tuple(sorted(vs.real_servers)) or (key,)].append(key)
        else:
            vs_owner[key] = owner
    for keys in unknown.values():  # a deleted Service's virtual servers: the same real servers
        owner = f"?{keys[0]}"
        side.labels[owner] = f"(no Service) {', '.join(sorted(keys))}"
        vs_owner.update({k: owner for k in keys})
    by_address: dict[tuple[str, int, str], str] = {}
    by_real: dict[tuple[str, int, str], str] = {}
    for key, vs in state.virtual_servers.items():
        if key.startswith("FWM"):
            continue
        by_address[(vs.ip, vs.port, vs.protocol)] = vs_owner[key]
        for rs in vs.real_servers:
            ip, _, port = rs.rpartition(":")
            by_real.setdefault((ip, int(port), vs.protocol), vs_owner[key])
    if "ipvsadm" in parts:
        for key, vs in state.virtual_servers.items():
            place = f"virtual server {key}"
            side.add(vs_owner[key], place, vs.service_text())
            for rs, (fwd, weight) in vs.real_servers.items():
                side.add(vs_owner[key], place, f"-r {rs} {_FWD.get(fwd, fwd)} -w {weight}")
    if "ipset" in parts:
        for name, s in state.ipsets.items():
            if name not in ripvs.IPSET_NAMES:
                side.foreign.append(Foreign(f"ipset {name}", foreign_owner(name), len(s.entries), "entries"))
                continue
            place = f"ipset {name}"
            side.add(BASE, place, f"(type) {s.type}")
            for entry in s.entries:
                side.add(_ipset_owner(name, entry, index, by_address, by_real) or BASE, place, entry)
    if "iptables" in parts and state.iptables is not None:
        glue = iptables_side(state.iptables, ports, known)
        for owner, places in glue.entries.items():
            for place, entries in places.items():
                for text in entries:
                    side.add(owner, place, text)
        side.ordered |= glue.ordered
        side.foreign += glue.foreign
        side.notes += glue.notes
    _ipvs_facets(side, state, vs_owner)
    return side


def _ipset_owner(name: str, entry: str, index: _IpvsIndex, by_address: dict, by_real: dict) -> str | None:
    parts = entry.split(",")
    if name in _PORT_SETS and entry.isdigit():
        key = (int(entry), _PORT_SETS[name])
        return index.node_port.get(key) or next((o for (ip, p, pr), o in by_address.items() if (p, pr) == key), None)
    if name == ripvs.HEALTH_CHECK_NODE_PORT and entry.isdigit():
        return index.health.get(int(entry))
    if name == ripvs.IPVS_IPS:
        return index.ip.get(entry) or next((o for (ip, _, _), o in by_address.items() if ip == entry), None)
    if len(parts) >= 2 and ":" in parts[1]:
        proto, _, port = parts[1].partition(":")
        if not port.isdigit():
            return None
        key = (parts[0], int(port), proto.upper())
        if name == ripvs.LOOP_BACK:
            return index.endpoint.get(key) or by_real.get(key)
        if name in (ripvs.NODE_PORT_SCTP, ripvs.NODE_PORT_LOCAL_SCTP):
            return index.node_port.get((int(port), "SCTP")) or by_address.get(key)
        return index.vip.get(key) or by_address.get(key)
    return None


def _ipvs_facets(side: Side, state: nipvs.IpvsState, vs_owner: dict[str, str]) -> None:
    grouped: dict[str, list[nipvs.VirtualServer]] = defaultdict(list)
    for key, vs in state.virtual_servers.items():
        if f"virtual server {key}" in side.entries.get(vs_owner[key], {}):
            grouped[vs_owner[key]].append(vs)
    for owner, servers in grouped.items():
        side.facet(owner, "addresses", tuple(sorted(vs.key for vs in servers)))
        side.facet(owner, "endpoints", tuple(sorted({rs for vs in servers for rs in vs.real_servers})))
        # kube-proxy gives every real server weight 1; 0 is a terminating one being drained
        side.facet(owner, "weights", tuple(sorted({f"{rs} weight {w}" for vs in servers
                                                   for rs, (_, w) in vs.real_servers.items() if w != 1})))
        side.facet(owner, "scheduler", tuple(sorted({vs.scheduler + (f" ({','.join(vs.flags)})" if vs.flags else "")
                                                     for vs in servers})))
        side.facet(owner, "affinity", _affinity({str(vs.persistence) for vs in servers if vs.persistence is not None}))
