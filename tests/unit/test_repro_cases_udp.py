"""The UDP reproductions' pure parts (no root): what udp-scaled-to-zero scales, its two variants
(two kube-proxy releases, nothing else), and the reconciler switch each variant renders with."""
from __future__ import annotations

from testbed import model, versions
from testbed.control import reconcile
from testbed.repro import by_name
from testbed.repro import catalogue as cat
from testbed.repro.cases.udp_scaled_to_zero import scaled_to_zero

ZERO = by_name("udp-scaled-to-zero")


def _deployment(name, labels, replicas=2):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c"}]}}}}


def test_scaled_to_zero_takes_the_workloads_and_bare_pods_behind_the_selector_only():
    statsd, other = _deployment("statsd", {"app": "statsd"}), _deployment("web", {"app": "web"})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "statsd", "x": "y"}}}
    stranger = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q", "labels": {"app": "web"}}}
    scaled, pods = scaled_to_zero([statsd, other, pod, stranger], {"app": "statsd"})
    assert [d["metadata"]["name"] for d in scaled] == ["statsd"] and scaled[0]["spec"]["replicas"] == 0
    assert statsd["spec"]["replicas"] == 2  # the lab's stored manifests are not changed in place
    assert pods == [pod]
    assert scaled_to_zero([statsd, pod], {}) == ([], [])  # no selector selects nothing


def test_the_variants_differ_only_in_the_kube_proxy_release():
    bug, fix = ZERO.variant_documents(cat.BUG), ZERO.variant_documents(cat.FIX)
    versions_of = [cat.lab_doc(d)["spec"].pop("kubeProxy") for d in (bug, fix)]
    assert versions_of == [{"version": "1.35"}, {"version": "1.31"}]
    assert bug == fix


def test_the_bug_renders_with_the_reconciler_that_skips_empty_services_and_the_fix_without():
    for variant, skips in ((cat.BUG, True), (cat.FIX, False)):
        cluster, _ = reconcile(model.parse_documents(ZERO.variant_documents(variant), "repro"))
        view = cluster.node_view("node-1")
        assert view.config.switch(versions.CONNTRACK_SKIPS_EMPTY) is skips
        (svc,) = [s for s in cluster.services if s.service.name == "statsd"]
        assert svc.service.ports[0].protocol == "UDP" and len(svc.endpoints[0]) == 1


BEFORE = by_name("udp-before-the-service")


def test_udp_before_the_service_starts_without_the_service_it_applies_later():
    shown = BEFORE.documents()
    (svc,) = cat.target_services(shown)
    assert svc["spec"]["clusterIP"] == "10.96.0.53"  # pinned: the client sends to it before it exists
    for variant, cleanup in ((cat.BUG, False), (cat.FIX, True)):
        docs = BEFORE.variant_documents(variant)
        assert cat.target_services(docs) == []
        assert cat.lab_doc(docs)["spec"]["conntrackCleanup"] is cleanup
        topo = model.parse_documents(docs, "repro")
        assert [s.name for s in topo.services] == [] and {p.name for p in topo.pods} == {cat.CLIENT}
    # The pinned address is inside the lab's service range, so the Service applied later is valid.
    topo = model.parse_documents(shown, "repro")
    assert [s.cluster_ip for s in topo.services] == ["10.96.0.53"]
