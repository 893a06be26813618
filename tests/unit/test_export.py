"""`testbed export`: a lab written as one replayable file, and its redaction (pure; no root)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from testbed import export, model, modes
from testbed.control import reconcile

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = ["topologies/default.yaml", "topologies/service-types.yaml", "topologies/ingress.yaml",
              "tests/fixtures/replay/kind.yaml", "topologies/kube-proxy-releases.yaml"]


def exported(path: str, redact: bool = False):
    cluster, _ = reconcile(model.load_file(ROOT / path))
    docs = export.documents(cluster)
    text = yaml.safe_dump_all(export.redact(docs) if redact else docs, sort_keys=False)
    return cluster, text, reconcile(model.load_text(text, file="export.yaml"))[0]


@pytest.mark.parametrize("path", TOPOLOGIES)
def test_an_export_replays_to_the_same_addresses_and_rules(path):
    cluster, text, again = exported(path)
    assert yaml.safe_load_all(text)  # plain YAML
    assert sorted((p.key, p.node, p.ip) for p in again.pods) == sorted((p.key, p.node, p.ip) for p in cluster.pods)
    assert [(n.name, n.ip, n.pod_cidr) for n in again.nodes] == [(n.name, n.ip, n.pod_cidr) for n in cluster.nodes]
    assert [(s.key, s.cluster_ip, s.node_ports, s.load_balancer_ips) for s in again.services] == \
        [(s.key, s.cluster_ip, s.node_ports, s.load_balancer_ips) for s in cluster.services]
    for mode in modes.NAMES:
        for n in cluster.nodes:
            assert modes.get(mode).render(again.node_view(n.name)) == modes.get(mode).render(cluster.node_view(n.name)), \
                (mode, n.name)


def test_the_lab_document_pins_every_address():
    cluster, text, _ = exported("topologies/default.yaml")
    lab = next(yaml.safe_load_all(text))
    assert lab["kind"] == "Lab"
    spec = lab["spec"]
    assert all(n.get("ip") and n.get("podCIDR") for n in spec["nodes"])
    assert all(c.get("ip") for c in spec["clients"])
    assert spec["clusterDNS"]["ip"] == "10.96.0.10" and spec["serviceCIDR"] and spec["clusterCIDR"]


@pytest.mark.parametrize("path", TOPOLOGIES)
def test_a_redacted_export_keeps_the_rules_and_loses_the_names(path):
    cluster, text, again = exported(path, redact=True)
    plain = yaml.safe_dump_all(export.documents(cluster), sort_keys=False)
    user_names = {p.name for p in cluster.pods if p.namespace not in export.ADDON_NAMESPACES} | {
        s.service.name for s in cluster.services if s.service.namespace not in export.ADDON_NAMESPACES} | {
        n.name for n in cluster.nodes}
    # Kept by design: port names (protocol words), the lab's own client hosts, and new names that happen to
    # equal old ones (node-1 → node-1).
    kept = {sp.name for s in cluster.services for sp in s.service.ports} | {c.name for c in cluster.clients} | {"kubernetes"}
    user_names = {n for n in user_names - kept if not re.fullmatch(r"(node|app|pod)-\d+", n)}
    leaked = {n for n in user_names if re.search(rf"(?<![-A-Za-z0-9]){re.escape(n)}(?![-A-Za-z0-9])", text)}
    assert not leaked, leaked
    assert len(again.pods) == len(cluster.pods) and len(again.services) == len(cluster.services)
    # The same rules but for the names: same addresses, same number of rules on every node, same endpoints.
    for mode in ("iptables", "nftables", "ipvs"):
        for n, m in zip(cluster.nodes, again.nodes, strict=True):
            a, b = modes.get(mode).render(cluster.node_view(n.name)), modes.get(mode).render(again.node_view(m.name))
            assert sorted(re.findall(r"\d+\.\d+\.\d+\.\d+(?::\d+)?", a)) == sorted(re.findall(r"\d+\.\d+\.\d+\.\d+(?::\d+)?", b))
            assert a.count("\n") == b.count("\n"), (mode, n.name)
    assert plain != text


def test_redaction_is_consistent_across_references():
    _, text, again = exported("topologies/service-types.yaml", redact=True)
    docs = list(yaml.safe_load_all(text))
    services = {(d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs if d["kind"] == "Service"}
    for d in docs:
        if d["kind"] == "EndpointSlice":
            assert (d["metadata"]["namespace"], d["metadata"]["labels"]["kubernetes.io/service-name"]) in services
    # every Service with a selector still selects the pods it selected
    for info in again.services:
        if info.service.selector and info.service.namespace not in export.ADDON_NAMESPACES:
            assert any(info.endpoints), info.key
