"""The traffic-policy and source-range reproductions (no root): both variants' documents parse and
render, differ as each reproduction says, and `adopt` picks the right Service of a real-world file
or says what the file lacks."""
from __future__ import annotations

import pytest

from testbed import model
from testbed.control import reconcile
from testbed import errors
from testbed import modes
from testbed.repro import by_name
from testbed.repro import catalogue as cat
from tests.realworld import real_world


def _cluster(docs: list[dict]):
    cluster, _ = reconcile(model.parse_documents(docs, "repro"))
    return cluster


def _rendered(docs: list[dict], mode: str) -> dict[str, str]:
    cluster = _cluster(docs)
    return {n.name: modes.get(mode).render(cluster.node_view(n.name)) for n in cluster.nodes}


def _target(docs: list[dict]) -> dict:
    (svc,) = cat.target_services(docs)
    return svc


# --- etp-cluster-source-lost ------------------------------------------------------------------

ETP = by_name("etp-cluster-source-lost")


def test_etp_variants_differ_only_in_the_targets_traffic_policy():
    bug, fix = ETP.variant_documents(cat.BUG), ETP.variant_documents(cat.FIX)
    assert _target(bug)["spec"]["externalTrafficPolicy"] == "Cluster"
    assert _target(fix)["spec"]["externalTrafficPolicy"] == "Local"
    for d in fix:
        d.get("spec", {}).pop("externalTrafficPolicy", None)
    for d in bug:
        d.get("spec", {}).pop("externalTrafficPolicy", None)
    assert bug == fix
    cluster = _cluster(fix)
    assert [c.name for c in cluster.clients] == ["outside"]
    (svc,) = [s for s in cluster.services if s.service.name == "web"]
    assert svc.service.type == "NodePort" and svc.node_ports[0]
    assert {e.ip for e in svc.endpoints[0]} == {p.ip for p in cluster.pods if p.node == "node-2" and p.name == "web-backend"}


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_etp_local_renders_no_masquerade_and_a_drop_on_the_node_without_the_endpoint(mode):
    bug = _rendered(ETP.variant_documents(cat.BUG), mode)
    fix = _rendered(ETP.variant_documents(cat.FIX), mode)
    assert bug != fix
    masq = {"iptables": '-j KUBE-MARK-MASQ', "nftables": "jump mark-for-masquerade"}
    if mode == "iptables":  # Cluster: every external packet is marked; Local: only the node's own
        assert "default/web:http has no local endpoints" in fix["node-1"]
        assert "has no local endpoints" not in bug["node-1"] + bug["node-2"] + fix["node-2"]
    if mode == "nftables":
        assert ': drop }' in fix["node-1"] and ': drop }' not in bug["node-1"] + fix["node-2"]
        assert 'comment "masquerade local traffic"' in fix["node-2"]
    if mode in masq:
        ext = {"iptables": "-A KUBE-EXT-", "nftables": "add rule ip kube-proxy external-"}[mode]
        unconditional = [line for line in bug["node-2"].splitlines() if line.startswith(ext) and line.endswith(masq[mode])]
        assert unconditional and not [line for line in fix["node-2"].splitlines() if line in unconditional]
    if mode == "ipvs":  # Local: the NodePort is in the set that RETURNs before KUBE-MARK-MASQ
        add = "ipset add KUBE-NODE-PORT-LOCAL-TCP "
        assert add in fix["node-1"] and add in fix["node-2"] and add not in bug["node-2"]
        assert "--match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN" in fix["node-2"]


def test_etp_userspace_is_not_in_with_the_conformance_reason():
    from testbed.conformance import NO_POLICIES_IN_USERSPACE
    assert ETP.applies("userspace") == NO_POLICIES_IN_USERSPACE
    assert ETP.expected("userspace", "6.1.0") == cat.SKIPPED
    assert all(ETP.applies(m) is None for m in ("iptables", "nftables", "ipvs"))


def test_etp_adopts_the_nodeport_service_of_guestbook():
    import yaml
    path = real_world("guestbook.yaml")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    adopted = ETP.adopt(docs, "f.yaml")
    target = _target(adopted)
    assert target["metadata"]["name"] == "frontend" and target["spec"]["type"] == "NodePort"
    assert any(c.get("name") == "outside" for c in cat.lab_doc(adopted)["spec"]["clients"])
    for variant, policy in ((cat.BUG, "Cluster"), (cat.FIX, "Local")):
        docs_v = ETP.variant_documents(variant, adopted)
        assert _target(docs_v)["spec"]["externalTrafficPolicy"] == policy
        assert _rendered(docs_v, "iptables")


def test_etp_adopts_the_load_balancer_of_microservices_demo():
    import yaml
    path = real_world("microservices-demo.yaml")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    assert _target(ETP.adopt(docs, "f.yaml"))["metadata"]["name"] == "frontend-external"


def test_etp_adopt_refuses_a_file_without_an_external_service():
    docs = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "in"},
             "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}]
    with pytest.raises(errors.TopologyError, match="NodePort or LoadBalancer"):
        ETP.adopt(docs, "f.yaml")


# --- ipvs-lb-source-ranges-from-node ----------------------------------------------------------

LB_RANGES = by_name("ipvs-lb-source-ranges-from-node")


def test_ipvs_out_filter_is_the_only_difference_between_1_28_and_1_29():
    bug = _rendered(LB_RANGES.variant_documents(cat.BUG), "ipvs")
    fix = _rendered(LB_RANGES.variant_documents(cat.FIX), "ipvs")
    for node in bug:
        assert "KUBE-IPVS-OUT-FILTER" not in bug[node]
        # Node traffic is sourced from the LB IP (bound to kube-ipvs0): the filter drops it by that source.
        assert "-A KUBE-IPVS-OUT-FILTER -s 172.18.0.200 -m ipvs --vaddr 172.18.0.200 --vproto tcp --vport 80 -j DROP" \
            in fix[node]
        assert [line for line in fix[node].splitlines() if "KUBE-IPVS-OUT-FILTER" not in line] == bug[node].splitlines()


def test_ipvs_lb_ranges_allow_only_the_labs_client():
    cluster = _cluster(LB_RANGES.variant_documents(cat.FIX))
    (client,) = cluster.clients
    (svc,) = [s for s in cluster.services if s.service.name == "lb"]
    assert svc.service.load_balancer_source_ranges == (f"{client.ip}/32",)


# --- hairpin-mode-none ------------------------------------------------------------------------

HAIRPIN = by_name("hairpin-mode-none")


def test_hairpin_variants_differ_only_in_kubelets_hairpin_mode_and_render_the_same_rules():
    bug, fix = HAIRPIN.variant_documents(cat.BUG), HAIRPIN.variant_documents(cat.FIX)
    assert [model.parse_documents(d, "repro").lab.hairpin_mode for d in (bug, fix)] == ["none", "hairpin-veth"]
    for mode in ("iptables", "nftables", "ipvs"):  # kube-proxy's rules are the same: the bug is the node's bridge
        assert _rendered(bug, mode) == _rendered(fix, mode)
    (svc,) = [s for s in _cluster(fix).services if s.service.name == "web"]
    assert len(svc.endpoints[0]) == 1  # one replica: the DNAT can only pick the sender


def test_hairpin_adopts_a_users_tcp_service(tmp_path):
    path = real_world("guestbook.yaml")
    from testbed.repro import runner
    adopted = runner.adopt(HAIRPIN, str(path))
    (target,) = cat.target_services(adopted)
    topo = model.parse_documents(HAIRPIN.variant_documents(cat.BUG, adopted), "repro")
    assert topo.lab.hairpin_mode == "none"
    cluster, _ = reconcile(topo)
    (svc,) = [s for s in cluster.services if s.service.name == target["metadata"]["name"]]
    assert len(svc.endpoints[0]) == 1  # the user's workload cut to one replica
