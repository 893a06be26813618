"""Apply render()/sync() output with the real `nft -f` in a throwaway netns.

Checks that the kernel accepts kube-proxy-shaped transactions (full sync on a fresh and on an
existing table, partial syncs, same-transaction deletion of stale chains), that what `nft list`
reads back is exactly desired(view) (chains, rule counts, set/map elements incl. comments and
verdicts), and that a partial sync leaves the chains of unchanged Services alone: their rules keep
their kernel handles, while the changed Service's rules get new ones.
"""
import dataclasses
import json
import os
import re
import shutil
import subprocess
import uuid

import pytest

from testbed.kernel import netns
from testbed.kernel import nft as knft
from testbed.kernel.transaction import TransactionError
from testbed.proxy import Endpoint as E
from testbed.proxy import NodeView, ProxyConfig
from testbed.proxy import ServicePort as SP
from testbed.render import names
from testbed.render import nftables as nft

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not (shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")), reason="needs nft"),
]

N = "node-a"
WEB = SP("default", "web", "http", "TCP", 80, "10.96.0.20", endpoints=(
    E("10.244.2.7", 8080, node="node-b"), E("10.244.1.2", 8080, node=N), E("10.244.1.10", 8080, node=N)))
DNS = SP("kube-system", "dns", "dns", "UDP", 53, "10.96.0.10", node_port=30053, session_affinity_timeout=600,
         endpoints=(E("10.244.2.7", 5353, node="node-b"), E("10.244.1.2", 5353, node=N)))
LB = SP("ns2", "lb", "p80", "TCP", 80, "10.96.0.40", node_port=30080, external_ips=("192.168.99.22",),
        load_balancer_ips=("203.0.113.10",), load_balancer_source_ranges=("198.51.100.0/24", "192.168.0.0/24"),
        external_policy_local=True, health_check_node_port=31000,
        endpoints=(E("10.244.1.2", 8080, node=N), E("10.244.2.7", 8080, node="node-b")))
REMOTE_ONLY = SP("ns3", "remote-only", "", "TCP", 80, "10.96.0.50", node_port=30081, external_policy_local=True,
                 endpoints=(E("10.244.2.9", 80, node="node-b"),))
EMPTY = SP("ns6", "empty", "p80", "TCP", 80, "10.96.0.60", node_port=30082, load_balancer_ips=("203.0.113.11",))
ALL = (WEB, DNS, LB, REMOTE_ONLY, EMPTY)


def _view(services, **cfg):
    return NodeView(N, ("192.168.0.10",), config=ProxyConfig(**cfg), services=tuple(services))


@pytest.fixture
def ns():
    name = f"tbtest-nft-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.delete(name)


def _json(ns):
    proc = subprocess.run(["nft", "-j", "list", "table", "ip", "kube-proxy"], text=True, capture_output=True,
                          preexec_fn=netns.preexec(ns), timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return [next(iter(o.items())) for o in json.loads(proc.stdout)["nftables"]]


def _key(v):
    if isinstance(v, dict) and "concat" in v:
        return " . ".join(str(x) for x in v["concat"])
    return str(v)


def _element(e):
    """nft's JSON element -> our element string (`KEY [comment "C"] [: VERDICT]`)."""
    key, verdict = (e[0], e[1]) if isinstance(e, list) else (e, None)
    comment = None
    if isinstance(key, dict) and "elem" in key:
        comment = key["elem"].get("comment")
        key = key["elem"]["val"]
    out = _key(key)
    if comment is not None:
        out += f' comment "{comment}"'
    if verdict is not None:
        (kind, arg), = verdict.items()
        out += f" : {kind} {arg['target']}" if arg else f" : {kind}"
    return out


def kernel_state(ns):
    """{chain: number of rules}, {set/map name: kind}, {set/map: frozenset(elements)} as listed."""
    chains, sets, elements = {}, {}, {}
    for kind, obj in _json(ns):
        if kind == "chain":
            chains[obj["name"]] = 0
        elif kind == "rule":
            chains[obj["chain"]] += 1
        elif kind in ("set", "map"):
            sets[obj["name"]] = kind
            elements[obj["name"]] = frozenset(_element(e) for e in obj.get("elem", ()))
    return chains, sets, elements


def assert_matches(ns, view):
    want = nft.desired(view)
    chains, sets, elements = kernel_state(ns)
    assert chains == {name: len(rules) for name, rules in want.chains.items()}
    assert sets == {name: kind for name, (kind, _) in want.sets.items()}
    for name, elems in want.elements.items():
        assert elements[name] == elems, name


def handles(ns):
    """{chain: [rule handles in order]} from `nft --handle list table`."""
    out, chain = {}, None
    for line in knft.list_table(ns, handles=True).splitlines():
        s = line.strip()
        if m := re.match(r"chain (\S+) \{ # handle \d+$", s):
            chain = m.group(1)
            out[chain] = []
        elif s == "}":
            chain = None
        elif chain and not s.startswith(("type ", "comment ")) and (m := re.search(r" # handle (\d+)$", s)):
            out[chain].append(int(m.group(1)))
    return out


def test_full_sync_fresh_and_existing_table(ns):
    view = _view(ALL)
    assert knft.list_table(ns) == ""
    knft.apply(ns, nft.render(view))
    assert_matches(ns, view)
    listing = knft.list_table(ns)
    assert 'comment "rules for kube-proxy"' in listing
    assert f"chain service-{names.nft_service_base(WEB)} {{" in listing
    assert "numgen random mod 3 vmap" in listing
    assert 'comment "ns6/empty:p80" : goto reject-chain' in listing
    assert 'comment "ns3/remote-only" : drop' in listing
    assert "timeout 10m" in listing  # the DNS affinity sets
    # A second full sync over the existing table (kube-proxy restart): same result, no error.
    knft.apply(ns, nft.render(view))
    assert_matches(ns, view)


def test_partial_sync_touches_only_the_changed_service(ns):
    before = _view(ALL)
    text, state = nft.sync(None, before)
    knft.apply(ns, text)
    h1 = handles(ns)

    web2 = dataclasses.replace(WEB, endpoints=WEB.endpoints[1:])  # 10.244.2.7 removed
    after = _view([web2, DNS, LB, REMOTE_ONLY, EMPTY])
    text, state2 = nft.sync(nft.NftState.from_json(state.to_json()), after)
    for other in ("kube-system/dns", "ns2/lb", "ns3/remote-only"):
        assert not any(name in text for name in state.services[other])
    knft.apply(ns, text)
    assert_matches(ns, after)
    h2 = handles(ns)

    web_chains = set(state.services["default/web"])
    stale = web_chains - set(state2.services["default/web"])
    assert stale == {"endpoint-" + names.nft_endpoint_base(WEB, WEB.endpoints[0])}
    assert not stale & set(h2)
    for chain, hs in h1.items():
        if chain in web_chains or not nft.is_service_chain_name(chain):
            continue
        assert h2[chain] == hs, f"{chain} was rewritten"
    svc = "service-" + names.nft_service_base(WEB)
    assert not set(h2[svc]) & set(h1[svc]), "the changed service chain keeps old rules"
    assert "numgen random mod 2 vmap" in knft.list_table(ns)

    # No change: nothing to apply, nothing moves.
    assert nft.sync(state2, after) == ("", state2)
    knft.apply(ns, "")
    assert handles(ns) == h2


def test_partial_sync_removing_a_service(ns):
    before = _view(ALL)
    text, state = nft.sync(None, before)
    knft.apply(ns, text)
    h1 = handles(ns)

    after = _view([WEB, DNS, REMOTE_ONLY, EMPTY])  # ns2/lb gone: firewall, external, local chains
    text, state2 = nft.sync(state, after)
    knft.apply(ns, text)
    assert_matches(ns, after)
    gone = set(state.services["ns2/lb"])
    assert any(c.startswith("firewall-") for c in gone) and any(c.startswith("local-") for c in gone)
    chains, _, elements = kernel_state(ns)
    assert not gone & set(chains)
    assert not any("203.0.113.10" in e or "192.168.99.22" in e for es in elements.values() for e in es)
    h2 = handles(ns)
    assert {c: h for c, h in h1.items() if c not in gone} == h2

    # Removing the affinity service deletes its affinity sets too.
    text, _ = nft.sync(state2, _view([WEB, REMOTE_ONLY, EMPTY]))
    knft.apply(ns, text)
    _, sets, _ = kernel_state(ns)
    assert not any(s.startswith("affinity-") for s in sets)


def test_transactions_the_kernel_must_accept(ns):
    """Config changes (full sync + cleanup), match-all NodePorts, a key claimed by two Services,
    a Service gaining and losing all endpoints; then the table goes away idempotently."""
    state = None
    shared = dataclasses.replace(REMOTE_ONLY, port=80, external_ips=("192.168.99.22",))  # LB's external IP:port too
    steps = [
        _view(ALL),
        _view(ALL, service_cidrs=("10.96.0.0/16", "10.100.0.0/16")),
        _view([WEB, DNS, EMPTY], nodeport_addresses=("0.0.0.0/0",)),
        _view([WEB, LB, shared]),
        _view([WEB, LB, dataclasses.replace(EMPTY, endpoints=(E("10.244.1.7", 80, node=N),))]),
        _view([WEB, LB, EMPTY], masquerade_all=True),
        _view([]),
        _view(ALL),
    ]
    for view in steps:
        text, state = nft.sync(state, view)
        knft.apply(ns, text)
        assert_matches(ns, view)
    assert knft.delete_table(ns) is True
    assert knft.delete_table(ns) is False
    assert knft.list_table(ns) == ""


# A table shaped like kube-proxy's: a verdict map, a service chain balancing to two endpoint
# chains through an anonymous vmap, an external chain jumping to the service chain.
REFS = """\
add table ip kube-proxy
add chain ip kube-proxy services { type nat hook prerouting priority -100 ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add chain ip kube-proxy svc
add chain ip kube-proxy ep1
add chain ip kube-proxy ep2
add chain ip kube-proxy ext
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add element ip kube-proxy service-ips { 10.96.0.1 . tcp . 80 : goto svc }
add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto ext }
add rule ip kube-proxy ext jump svc
add rule ip kube-proxy svc numgen random mod 2 vmap { 0 : goto ep1 , 1 : goto ep2 }
add rule ip kube-proxy ep1 meta l4proto tcp dnat to 10.244.1.2:80
add rule ip kube-proxy ep2 meta l4proto tcp dnat to 10.244.1.3:80
"""
_T = "ip kube-proxy"
# Each way kube-proxy's rules refer to a chain, dropped in the transaction that deletes the chain
# (as sync() writes it); kernels before 6.2 are said to refuse some (kube-proxy waits a sync).
SAME_TRANSACTION = {
    "endpoint chain left by the anonymous vmap of a rewritten service chain": [
        f"flush chain {_T} svc", f"add rule {_T} svc numgen random mod 1 vmap {{ 0 : goto ep2 }}",
        f"flush chain {_T} ep1", f"delete chain {_T} ep1"],
    "chains of a deleted Service, referenced by map elements and a jump": [
        *(f"flush chain {_T} {c}" for c in ("svc", "ep1", "ep2", "ext")),
        f"delete element {_T} service-ips {{ 10.96.0.1 . tcp . 80 }}",
        f"delete element {_T} service-ips {{ 192.168.99.22 . tcp . 80 }}",
        *(f"delete chain {_T} {c}" for c in ("svc", "ep1", "ep2", "ext"))],
    "chain whose map element another Service takes over": [
        f"flush chain {_T} ext", f"delete element {_T} service-ips {{ 192.168.99.22 . tcp . 80 }}",
        f"add element {_T} service-ips {{ 192.168.99.22 . tcp . 80 : goto svc }}", f"delete chain {_T} ext"],
}


def test_the_kernel_deletes_chains_unreferenced_in_the_same_transaction(ns):
    """What testbed relies on by not deferring `delete chain` (kernel 6.1 runs this in testbed vm)."""
    seen = []
    for case, lines in SAME_TRANSACTION.items():
        knft.delete_table(ns)
        knft.apply(ns, REFS)
        knft.apply(ns, "\n".join(lines) + "\n")
        listing = knft.list_table(ns)
        for chain in {ln.rsplit(" ", 1)[1] for ln in lines if ln.startswith("delete chain")}:
            assert f"chain {chain} {{" not in listing, (case, listing)
        seen += ["accepted:", f"  {case}"]
    # The control: a chain still referenced is refused, so the cases above prove the check ran.
    knft.delete_table(ns)
    knft.apply(ns, REFS)
    # (the error is wrapped to the terminal: the kernel's words may span two lines)
    with pytest.raises(TransactionError, match=r"Device or\s+resource busy") as refused:
        knft.apply(ns, f"flush chain {_T} ep1\ndelete chain {_T} ep1\n")
    seen += ["refused, a chain still referenced:", "  " + " ".join(str(refused.value).split()[:12])]
    print(f"kernel {os.uname().release} ({os.uname().version}):\n  " + "\n  ".join(seen))
