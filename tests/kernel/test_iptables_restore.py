"""Apply render()/bootstrap() output with the real iptables-restore in a throwaway netns.

Checks that the kernel accepts kube-proxy-shaped restore input, that what iptables-save reads back
contains every rendered rule (after normalisation), that the first-sync jumps land in the order
jump_rules() promises, and that a later sync deletes a removed service's chains with -X.
"""
import os
import shutil
import subprocess
import uuid

import pytest

from testbed.kernel import netns
from testbed.proxy import Endpoint, NodeView, ProxyConfig, ServicePort
from testbed.render import iptables as ipt

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("iptables-restore"), reason="needs iptables-restore"),
]

NODE = "node-a"


def _services():
    return (
        ServicePort("default", "web", "http", "TCP", 80, "10.96.0.20", endpoints=(
            Endpoint("10.244.1.2", 8080, node=NODE), Endpoint("10.244.2.7", 8080, node="node-b"),
            Endpoint("10.244.1.10", 8080, node=NODE))),
        ServicePort("default", "np", "", "UDP", 53, "10.96.0.30", node_port=30053, session_affinity_timeout=600,
                    endpoints=(Endpoint("10.244.2.7", 5353, node="node-b"), Endpoint("10.244.1.2", 5353, node=NODE))),
        ServicePort("ns2", "lb", "p80", "TCP", 80, "10.96.0.40", node_port=30080, external_ips=("192.168.99.22",),
                    load_balancer_ips=("203.0.113.10",), load_balancer_source_ranges=("198.51.100.0/24", "192.168.0.0/24"),
                    external_policy_local=True, health_check_node_port=31000,
                    endpoints=(Endpoint("10.244.1.2", 8080, node=NODE), Endpoint("10.244.2.7", 8080, node="node-b"))),
        ServicePort("ns3", "remote-only", "", "TCP", 80, "10.96.0.50", node_port=30081, external_policy_local=True,
                    endpoints=(Endpoint("10.244.2.9", 80, node="node-b"),)),
        ServicePort("ns6", "empty", "p80", "TCP", 80, "10.96.0.60", node_port=30082, load_balancer_ips=("203.0.113.11",)),
    )


def _view(services):
    return NodeView(NODE, ("192.168.0.10",), config=ProxyConfig(), services=tuple(services))


def _run(ns, argv, stdin=None):
    r = subprocess.run(argv, input=stdin, text=True, capture_output=True, preexec_fn=netns.preexec(ns),
                       timeout=60, check=False)
    assert r.returncode == 0, f"{argv[0]} failed: {r.stderr}\n--- input ---\n{stdin}"
    return r.stdout


def _saved_builtin_rules(saved):
    """Normalised -A lines of built-in chains, per table, in saved order."""
    out = {}
    for line in ipt.normalize_saved(saved):
        if " -A " not in line:
            continue
        table, _, chain = line.split(" ", 3)[:3]
        if chain in ("INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"):
            out.setdefault(table, []).append(line)
    return out


@pytest.fixture
def ns():
    name = f"tbtest-render-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.delete(name)


def test_bootstrap_then_resync_removing_a_service(ns):
    view = _view(_services())
    boot = ipt.bootstrap(view)
    _run(ns, ["iptables-restore", "--noflush"], boot)
    saved = _run(ns, ["iptables-save"])

    missing = [line for line in ipt.normalize_rendered(boot) if line not in set(ipt.normalize_saved(saved))]
    assert not missing, "\n".join(missing)
    want_jumps = {t: ipt.normalize_rendered(f"*{t}\n" + "\n".join(rules) + "\n") for t, rules in ipt.jump_rules().items()}
    assert _saved_builtin_rules(saved) == want_jumps
    assert {c for c in ipt.nat_chains(saved) if c.startswith("KUBE-") and "-" in c[5:]} >= ipt.active_chains(view)

    # Second sync: the LB service is gone; its SVC/SVL/EXT/FW/SEP chains must be deleted.
    removed = ipt.active_chains(_view([s for s in _services() if s.name == "lb"]))
    assert any(c.startswith("KUBE-FW-") for c in removed) and any(c.startswith("KUBE-SVL-") for c in removed)
    view2 = _view([s for s in _services() if s.name != "lb"])
    text2 = ipt.render(view2, previous_chains=ipt.nat_chains(saved))
    assert {line[3:] for line in text2.splitlines() if line.startswith("-X ")} == removed
    _run(ns, ["iptables-restore", "--noflush"], text2)
    saved2 = _run(ns, ["iptables-save"])

    left = ipt.nat_chains(saved2)
    assert not removed & left
    assert {c for c in left if c.startswith(("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"))} == \
        ipt.active_chains(view2)
    norm2 = set(ipt.normalize_saved(saved2))
    missing = [line for line in ipt.normalize_rendered(text2) if line not in norm2]
    assert not missing, "\n".join(missing)
    assert not any("ns2/lb" in line for line in norm2)
    # The jumps stay exactly as bootstrap left them (render never touches built-in chains).
    assert _saved_builtin_rules(saved2) == want_jumps
    # The filter-table leftovers of the removed service (health check, firewall) went with the flush.
    assert "31000" not in saved2 and "203.0.113.10" not in saved2


def _handles(ns):
    """{nat chain: [rule handles]} as iptables-nft keeps them (nft -a list table ip nat)."""
    import re

    out, chain = {}, None
    for line in _run(ns, ["nft", "-a", "list", "table", "ip", "nat"]).splitlines():
        s = line.strip()
        if m := re.match(r"chain (\S+) \{", s):
            chain = m.group(1)
            out[chain] = []
        elif chain and (m := re.search(r"# handle (\d+)$", s)) and not s.startswith("chain "):
            out[chain].append(int(m.group(1)))
    return out


@pytest.mark.skipif(not shutil.which("nft"), reason="needs nft to read rule handles")
def test_partial_sync_through_the_proxier_rewrites_only_the_changed_service(ns):
    """The proxier's second sync is partial (MinimizeIPTablesRestore): the changed Service's chains
    are rewritten (new handles), every other Service's chains keep their rule handles, and the
    result reads back like a full sync of the new view."""
    from testbed.modes.iptables import IptablesProxier

    p, rec = IptablesProxier(), {}
    view = _view(_services())
    p.sync(ns, view, rec)
    before = _handles(ns)
    web = _services()[0]
    changed = _view([ServicePort(**{**web.__dict__, "endpoints": web.endpoints[:2]})] + list(_services()[1:]))
    p.sync(ns, changed, rec)
    after = _handles(ns)
    web_chains = ipt.active_chains(_view([web]))
    others = (ipt.active_chains(view) - web_chains) & set(after)
    assert others and all(after[c] == before[c] for c in others), "an unchanged Service's chains were rewritten"
    svc = next(c for c in web_chains if c.startswith("KUBE-SVC-"))
    assert after[svc] != before[svc]
    saved = set(ipt.normalize_saved(_run(ns, ["iptables-save"])))
    missing = [line for line in ipt.normalize_rendered(ipt.render(changed)) if line not in saved]
    assert not missing, "\n".join(missing)
    assert {c for c in ipt.nat_chains(_run(ns, ["iptables-save"]))
            if c.startswith(("KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SVL-"))} == ipt.active_chains(changed)
