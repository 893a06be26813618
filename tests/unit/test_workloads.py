"""Workload controllers, namespaces and EndpointSlices as Kubernetes' controllers and kube-proxy see
them (testbed.workloads, testbed.control): pure, no root."""
from __future__ import annotations

import textwrap

from testbed import dns, model
from testbed.control import Allocations, reconcile
from testbed.render import iptables as ipt

LAB = """\
apiVersion: testbed.dev/v1alpha1
kind: Lab
metadata: {name: w}
spec:
  nodes:
  - name: cp
    labels: {node-role.kubernetes.io/control-plane: ""}
    taints: [{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}]
  - {name: n1, labels: {disk: ssd}}
  - {name: n2}
"""


def topo(*docs: str) -> model.Topology:
    return model.load_text("---\n".join([LAB, *map(textwrap.dedent, docs)]), file="w.yaml")


def cluster_of(*docs: str, alloc: Allocations | None = None):
    return reconcile(topo(*docs), alloc)


def pods_of(cluster, owner_kind: str | None = None):
    return sorted((p for p in cluster.pods if owner_kind is None or p.owner_kind == owner_kind), key=lambda p: p.name)


def template(labels: str = "{app: a}", spec: str = "containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]") -> str:
    return f"template: {{metadata: {{labels: {labels}}}, spec: {{{spec}}}}}"


def test_replicaset_and_replication_controller_pods():
    cluster, _ = cluster_of(f"""\
        apiVersion: apps/v1
        kind: ReplicaSet
        metadata: {{name: rs}}
        spec: {{replicas: 2, selector: {{matchLabels: {{app: a}}}}, {template()}}}
        """, f"""\
        apiVersion: v1
        kind: ReplicationController
        metadata: {{name: rc}}
        spec: {{replicas: 3, {template("{app: b}")}}}
        """)
    rs, rc = pods_of(cluster, "ReplicaSet"), pods_of(cluster, "ReplicationController")
    assert len(rs) == 2 and all(p.name.startswith("rs-") and len(p.name) == len("rs-") + 5 for p in rs)
    assert len(rc) == 3 and all(p.owner == "default/rc" and dict(p.labels) == {"app": "b"} for p in rc)
    assert not any(p.node == "cp" for p in rs + rc)  # the control plane's taint keeps them off


def test_statefulset_ordinals_hostnames_and_dns_under_its_headless_service():
    cluster, _ = cluster_of(f"""\
        apiVersion: apps/v1
        kind: StatefulSet
        metadata: {{name: db}}
        spec: {{serviceName: db, replicas: 3, selector: {{matchLabels: {{app: db}}}}, {template("{app: db}")}}}
        """, """\
        apiVersion: v1
        kind: Service
        metadata: {name: db}
        spec: {clusterIP: None, selector: {app: db}, ports: [{name: http, port: 8080}]}
        """)
    pods = pods_of(cluster, "StatefulSet")
    assert [p.name for p in pods] == ["db-0", "db-1", "db-2"]
    assert [dict(p.labels)["statefulset.kubernetes.io/pod-name"] for p in pods] == ["db-0", "db-1", "db-2"]
    zone = dns.records(cluster)
    for p in pods:
        (rec,) = zone.resolve(f"{p.name}.db.default.svc.cluster.local", "A").answer
        assert rec.data == (p.ip,)
    srv = {r.data[3] for r in zone.resolve("_http._tcp.db.default.svc.cluster.local", "SRV").answer}
    assert srv == {f"db-{i}.db.default.svc.cluster.local" for i in range(3)}


def test_ordered_ready_makes_the_next_ordinal_once_the_previous_is_ready():
    containers = "containers: [{name: c, ports: [{containerPort: 80}], readinessProbe: {tcpSocket: {port: 80}}}]"
    doc = f"""\
        apiVersion: apps/v1
        kind: StatefulSet
        metadata: {{name: db}}
        spec:
          serviceName: db
          replicas: 3
          selector: {{matchLabels: {{app: db}}}}
          {template("{app: db}", containers)}
        """
    cluster, alloc = cluster_of(doc)
    assert [p.name for p in pods_of(cluster, "StatefulSet")] == ["db-0"]
    alloc.pods["default/db-0"]["ready"] = True  # what the prober records
    cluster, alloc = cluster_of(doc, alloc=alloc)
    assert [p.name for p in pods_of(cluster, "StatefulSet")] == ["db-0", "db-1"]
    parallel = doc.replace("serviceName: db", "serviceName: db\n          podManagementPolicy: Parallel")
    cluster, _ = cluster_of(parallel)
    assert [p.name for p in pods_of(cluster, "StatefulSet")] == ["db-0", "db-1", "db-2"]


def test_a_deleted_stateful_pod_comes_back_with_its_name_once_the_old_one_is_gone():
    doc = f"""\
        apiVersion: apps/v1
        kind: StatefulSet
        metadata: {{name: db}}
        spec: {{replicas: 2, selector: {{matchLabels: {{app: db}}}}, {template("{app: db}")}}}
        """
    cluster, alloc = cluster_of(doc)
    old_ip = next(p.ip for p in cluster.pods if p.name == "db-1")
    alloc.pods["default/db-1"].update(terminating=1e12, snapshot={"labels": [], "ports": [], "owner": "default/db"})
    cluster, alloc = cluster_of(doc, alloc=alloc)
    db1 = [p for p in cluster.pods if p.name == "db-1"]
    assert len(db1) == 1 and db1[0].terminating  # no replacement while the old pod terminates
    alloc.pods.pop("default/db-1")
    cluster, _ = cluster_of(doc, alloc=alloc)
    (new,) = [p for p in cluster.pods if p.name == "db-1"]
    assert not new.terminating and new.ip != old_ip


def test_daemonset_one_pod_per_eligible_node():
    ds = f"""\
        apiVersion: apps/v1
        kind: DaemonSet
        metadata: {{name: agent}}
        spec: {{selector: {{matchLabels: {{app: agent}}}}, {template("{app: agent}")}}}
        """
    cluster, _ = cluster_of(ds)
    assert sorted(p.node for p in pods_of(cluster, "DaemonSet")) == ["n1", "n2"]  # not on the tainted control plane
    tolerating = ds.replace("containers: [", "tolerations: [{key: node-role.kubernetes.io/control-plane, "
                                             "operator: Exists, effect: NoSchedule}], containers: [")
    cluster, _ = cluster_of(tolerating)
    assert sorted(p.node for p in pods_of(cluster, "DaemonSet")) == ["cp", "n1", "n2"]
    selected = ds.replace("containers: [", "nodeSelector: {disk: ssd}, containers: [")
    cluster, _ = cluster_of(selected)
    assert [p.node for p in pods_of(cluster, "DaemonSet")] == ["n1"]


def test_a_pod_no_node_can_take_is_pending():
    cluster, _ = cluster_of("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: picky}
        spec: {nodeSelector: {gpu: "true"}, containers: [{name: c}]}
        """)
    assert not any(p.name == "picky" for p in cluster.pods)
    ((key, why),) = cluster.pending
    assert key == "default/picky" and "nodeSelector" in why


def test_job_pods_carry_the_job_name_labels():
    cluster, _ = cluster_of(f"""\
        apiVersion: batch/v1
        kind: Job
        metadata: {{name: migrate}}
        spec: {{parallelism: 2, completions: 5, {template("{app: m}", "restartPolicy: Never, containers: [{name: c}]")}}}
        """)
    jobs = pods_of(cluster, "Job")
    assert len(jobs) == 2 and all(dict(p.labels)["batch.kubernetes.io/job-name"] == "migrate" for p in jobs)


def test_a_dumps_pods_are_adopted_by_their_workloads_not_made_twice():
    rs = f"""\
        apiVersion: apps/v1
        kind: ReplicaSet
        metadata:
          name: web-abc12
          ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: web, controller: true, uid: u1}}]
        spec: {{replicas: 2, selector: {{matchLabels: {{app: a, pod-template-hash: abc12}}}},
                {template("{app: a, pod-template-hash: abc12}")}}}
        """
    dep = f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: web}}
        spec: {{replicas: 2, selector: {{matchLabels: {{app: a}}}}, {template()}}}
        """
    pod = """\
        apiVersion: v1
        kind: Pod
        metadata:
          name: web-abc12-xyz9q
          labels: {app: a, pod-template-hash: abc12}
          ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-abc12, controller: true, uid: u2}]
        spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]}
        status: {podIP: 10.244.1.77}
        """
    cluster, _ = cluster_of(dep, rs, pod)
    web = [p for p in cluster.pods if dict(p.labels).get("app") == "a"]
    assert len(web) == 2  # the dumped pod and one more from its ReplicaSet; the Deployment makes none itself
    assert "web-abc12-xyz9q" in {p.name for p in web}
    assert next(p for p in web if p.name == "web-abc12-xyz9q").ip == "10.244.1.77"
    assert all(p.owner == "default/web" and p.owner_kind in ("Deployment", "ReplicaSet") for p in web)
    # Without its ReplicaSet in the file, the Deployment adopts the pod by its pod-template-hash.
    cluster, _ = cluster_of(dep, pod)
    assert len([p for p in cluster.pods if dict(p.labels).get("app") == "a"]) == 2


def test_selectors_see_only_their_own_namespace():
    cluster, _ = cluster_of("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: web-a, namespace: team-a, labels: {app: web}}
        spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web-b, namespace: team-b, labels: {app: web}}
        spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: team-a}
        spec: {selector: {app: web}, ports: [{port: 80}]}
        """)
    (svc,) = [s for s in cluster.services if s.key == "team-a/web"]
    web_a = next(p for p in cluster.pods if p.name == "web-a")
    assert [e.ip for e in svc.endpoints[0]] == [web_a.ip]


def test_one_endpoint_in_two_slices_is_one_endpoint():
    """While slices rebalance an endpoint can be in two of them: kube-proxy keys endpoints by ip:port."""
    slice_ = """\
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {{name: {name}, labels: {{kubernetes.io/service-name: manual}}}}
        addressType: IPv4
        endpoints: [{eps}]
        ports: [{{port: 8080}}]
        """
    cluster, _ = cluster_of("""\
        apiVersion: v1
        kind: Service
        metadata: {name: manual}
        spec: {ports: [{port: 80, targetPort: 8080}]}
        """, slice_.format(name="manual-1", eps="{addresses: [10.1.0.1]}, {addresses: [10.1.0.2]}"),
        slice_.format(name="manual-2", eps="{addresses: [10.1.0.2]}"))
    (svc,) = [s for s in cluster.services if s.key == "default/manual"]
    assert sorted(e.ip for e in svc.endpoints[0]) == ["10.1.0.1", "10.1.0.2"]
    rules = ipt.render(cluster.node_view("n1"))
    assert rules.count("--probability 0.5000000000") == 1 and "0.3333333333" not in rules


def test_v1_endpoints_of_a_selectorless_service_are_mirrored():
    cluster, _ = cluster_of("""\
        apiVersion: v1
        kind: Service
        metadata: {name: legacy}
        spec: {ports: [{name: http, port: 80, targetPort: 9000}]}
        ---
        apiVersion: v1
        kind: Endpoints
        metadata: {name: legacy}
        subsets:
        - addresses: [{ip: 10.1.0.5}, {ip: 10.1.0.6, nodeName: n2}]
          notReadyAddresses: [{ip: 10.1.0.7}]
          ports: [{name: http, port: 9000}]
        """)
    (svc,) = [s for s in cluster.services if s.key == "default/legacy"]
    assert sorted((e.ip, e.port, e.ready, e.node) for e in svc.endpoints[0]) == [
        ("10.1.0.5", 9000, True, None), ("10.1.0.6", 9000, True, "n2"), ("10.1.0.7", 9000, False, None)]


def test_namespace_objects_load():
    topo_ = topo("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}}\n")
    assert topo_.namespaces == ("shop",) and topo_.not_modelled == ()


def test_publish_not_ready_addresses_keeps_a_terminating_pod_ready_as_upstream():
    """EndpointSlice controller: ready = publishNotReadyAddresses || (serving && !terminating)."""
    doc = """\
        apiVersion: v1
        kind: Pod
        metadata: {{name: p, labels: {{app: p}}}}
        spec: {{containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: s}}
        spec: {{selector: {{app: p}}, publishNotReadyAddresses: {pnr}, ports: [{{port: 80}}]}}
        """
    for pnr, want in (("true", True), ("false", False)):
        cluster, alloc = cluster_of(doc.format(pnr=pnr))
        alloc.pods["default/p"].update(terminating=1e12, snapshot={"labels": [["app", "p"]], "ports": [[80, "TCP", ""]]},
                                       ready=True)
        cluster, _ = cluster_of(doc.format(pnr=pnr), alloc=alloc)
        (e,) = next(s for s in cluster.services if s.key == "default/s").endpoints[0]
        assert (e.ready, e.serving, e.terminating) == (want, True, True), pnr


def test_host_network_pods_take_their_nodes_address_and_ports():
    ds = f"""\
        apiVersion: apps/v1
        kind: DaemonSet
        metadata: {{name: exporter}}
        spec: {{selector: {{matchLabels: {{app: exp}}}},
                {template("{app: exp}", "hostNetwork: true, containers: [{name: c, ports: [{containerPort: 9100}]}]")}}}
        """
    clash = """\
        apiVersion: v1
        kind: Pod
        metadata: {name: clash}
        spec: {hostNetwork: true, nodeName: n1, containers: [{name: c, ports: [{containerPort: 9100}]}]}
        """
    svc = """\
        apiVersion: v1
        kind: Service
        metadata: {name: exporter}
        spec: {selector: {app: exp}, ports: [{port: 9100}]}
        """
    cluster, _ = cluster_of(ds, clash, svc)
    nodes = {n.name: n.ip for n in cluster.nodes}
    pods = pods_of(cluster, "DaemonSet")
    assert all(p.ip == nodes[p.node] and p.host_network for p in pods)
    # one port on one node: the pod placed first takes it, the other is Pending, as the scheduler decides
    on_n1 = [p.name for p in cluster.pods if p.host_network and p.node == "n1"]
    assert len(on_n1) == 1 and len(cluster.pending) == 1 and "ports" in cluster.pending[0][1]
    assert {p.node for p in pods} | ({"n1"} if on_n1 == ["clash"] else set()) == {"n1", "n2"}
    (info,) = [s for s in cluster.services if s.key == "default/exporter"]
    assert {e.ip for e in info.endpoints[0]} <= set(nodes.values()) and info.endpoints[0]


def test_rows_derived_for_a_users_own_file_follow_affinity_and_traffic_policies():
    from pathlib import Path

    from testbed.conformance import derive_rows

    topo_ = model.load_file(Path(__file__).resolve().parents[2] / "topologies" / "service-types.yaml")
    cluster, _ = reconcile(topo_)
    rows = derive_rows(cluster)
    by_svc: dict[str, list] = {}
    for r in rows:
        by_svc.setdefault(r.target.split("/", 1)[1].split(":")[0], []).append(r)
    sticky = [s.service.name for s in cluster.services if s.service.session_affinity_timeout]
    assert sticky and all(any(r.check == "affinity" for r in by_svc[n]) for n in sticky)
    for info in cluster.services:
        s = info.service
        if not s.external_policy_local or not any(info.node_ports):
            continue
        nodes_with = {e.node for eps in info.endpoints for e in eps if e.ready}
        via = {r.target.rsplit("@", 1)[1] for r in by_svc.get(s.name, []) if r.target.startswith("nodeport/")}
        assert via == nodes_with, (s.key, via, nodes_with)
        assert all(r.source_expected("iptables") == "client" and r.skip.get("userspace")
                   for r in by_svc[s.name] if r.target.startswith("nodeport/"))
