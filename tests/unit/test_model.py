"""testbed.model: every bad input is a TopologyError naming the file, the object and the field.

No root, no kernel: topologies are small YAML strings loaded with model.load_text(text, file=...).
"""
from __future__ import annotations

import textwrap

import pytest

from testbed import model
from testbed.control import reconcile
from testbed.errors import TopologyError

FILE = "x.yaml"


def load(text: str) -> model.Topology:
    return model.load_text(textwrap.dedent(text), file=FILE)


def bad(text: str) -> TopologyError:
    with pytest.raises(TopologyError) as ei:
        load(text)
    return ei.value


def assert_names(e: TopologyError, obj: str, field: str) -> None:
    """The error carries file, object and field, and the message says all three."""
    msg = str(e)
    assert e.file == FILE, msg
    assert e.obj is not None and obj in e.obj, msg
    assert e.field == field, msg
    assert FILE in msg, msg
    assert obj in msg, msg
    assert field in msg, msg
    assert e.problem and e.problem in msg


def service(name: str = "x", extra: str = "", ports: str = "[{port: 80}]") -> str:
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}}}
        spec:
          ports: {ports}
        """) + textwrap.indent(textwrap.dedent(extra), "  ")


def deployment(selector: str, labels: str = "{app: a}", name: str = "d", replicas: int = 1) -> str:
    return textwrap.dedent(f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: {name}}}
        spec:
          replicas: {replicas}
          selector: {selector}
          template:
            metadata: {{labels: {labels}}}
            spec: {{containers: [{{name: c, ports: [{{containerPort: 9376}}]}}]}}
        """)


# ----------------------------------------------------------------------------- bad inputs


def test_a_kind_that_is_not_modelled_is_accepted_and_summarised():
    topo = load("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n")
    assert topo.not_modelled == (("ConfigMap", 1),)
    assert topo.summary() == ["1 ConfigMap"]


def test_strict_refuses_a_kind_that_is_not_modelled():
    with pytest.raises(TopologyError) as ei:
        model.load_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n", file=FILE, strict=True)
    assert_names(ei.value, "ConfigMap cm", "kind")
    assert "--strict" in ei.value.problem


def test_a_misspelt_kind_is_refused_with_the_kind_it_resembles():
    e = bad("apiVersion: v1\nkind: Servce\nmetadata: {name: s}\n")
    assert_names(e, "Servce s", "kind")
    assert "Service" in e.problem


def test_known_kind_with_wrong_api_version():
    e = bad("apiVersion: v1\nkind: Deployment\nmetadata: {name: d}\n")
    assert_names(e, "Deployment d", "apiVersion")
    assert "apps/v1" in e.problem


def test_a_removed_api_version_says_which_to_use():
    e = bad("apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: d}\n")
    assert_names(e, "Deployment d", "apiVersion")
    assert "apps/v1" in e.problem and "1.16" in e.problem


def test_selector_unknown_operator():
    e = bad(deployment("{matchExpressions: [{key: app, operator: Foo, values: [a]}]}"))
    assert_names(e, "Deployment d", "spec.selector.matchExpressions[0].operator")
    assert "Foo" in e.problem


def test_selector_in_without_values():
    e = bad(deployment("{matchExpressions: [{key: app, operator: In}]}"))
    assert_names(e, "Deployment d", "spec.selector.matchExpressions[0].values")


def test_selector_exists_with_values():
    e = bad(deployment("{matchExpressions: [{key: app, operator: Exists, values: [a]}]}"))
    assert_names(e, "Deployment d", "spec.selector.matchExpressions[0].values")


def test_deployment_selector_not_matching_template():
    e = bad(deployment("{matchLabels: {app: b}}", labels="{app: a}"))
    assert_names(e, "Deployment d", "spec.selector")


def test_deployment_empty_selector():
    e = bad(deployment("{}"))
    assert_names(e, "Deployment d", "spec.selector")


def test_duplicate_service_names():
    e = bad(service("x") + "---\n" + service("x", ports="[{port: 81}]"))
    assert_names(e, "Service x", "metadata.name")
    assert "default/x" in e.problem


def test_same_name_in_other_namespace_is_fine():
    topo = load(service("x") + "---\n" + service("x").replace("{name: x}", "{name: x, namespace: other}"))
    assert sorted(s.key for s in topo.services) == ["default/x", "other/x"]


def test_port_out_of_range():
    e = bad(service("x", ports="[{port: 70000}]"))
    assert_names(e, "Service x", "spec.ports[0].port")
    assert "70000" in e.problem


def test_container_port_out_of_range():
    e = bad("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec: {containers: [{name: c, ports: [{containerPort: 70000}]}]}
        """)
    assert_names(e, "Pod p", "spec.containers[0].ports[0].containerPort")


def test_service_cidr_overlaps_cluster_cidr():
    e = bad("""\
        apiVersion: testbed.dev/v1alpha1
        kind: Lab
        metadata: {name: l}
        spec:
          clusterCIDR: 10.0.0.0/8
          serviceCIDR: 10.96.0.0/12
        """)
    assert_names(e, "Lab l", "spec.serviceCIDR")
    assert "spec.clusterCIDR" in e.problem


def test_node_port_outside_range():
    e = bad(service("x", extra="type: NodePort\n", ports="[{port: 80, nodePort: 29999}]"))
    assert_names(e, "Service default/x", "spec.ports[0].nodePort")
    assert "30000-32767" in e.problem


def test_node_port_outside_custom_range():
    e = bad(textwrap.dedent("""\
        apiVersion: testbed.dev/v1alpha1
        kind: Lab
        metadata: {name: l}
        spec: {serviceNodePortRange: 31000-31010}
        ---
        """) + service("x", extra="type: NodePort\n", ports="[{port: 80, nodePort: 31011}]"))
    assert_names(e, "Service default/x", "spec.ports[0].nodePort")


def test_node_port_already_allocated():
    e = bad(service("x", extra="type: NodePort\n", ports="[{port: 80, nodePort: 30080}]") + "---\n"
            + service("y", extra="type: NodePort\n", ports="[{port: 81, nodePort: 30080}]"))
    assert_names(e, "Service default/y", "spec.ports[0].nodePort")
    assert "default/x" in e.problem


def test_same_node_port_other_protocol_is_fine():
    topo = load(service("x", extra="type: NodePort\n", ports="[{port: 80, nodePort: 30080}]") + "---\n"
                + service("y", extra="type: NodePort\n", ports="[{port: 81, nodePort: 30080, protocol: UDP}]"))
    assert len(topo.services) == 2


def test_cluster_ip_outside_service_cidr():
    e = bad(LAB_TWO_NODES.replace("spec: {", "spec: {serviceCIDR: 10.96.0.0/12, ") + service("x", extra="clusterIP: 10.0.0.5\n"))
    assert_names(e, "Service default/x", "spec.clusterIP")
    assert "10.96.0.0/12" in e.problem


@pytest.mark.parametrize("ip, where", [("10.244.3.7", "cluster CIDR (a pod's address)"),
                                       ("10.96.0.7", "Service CIDR (a ClusterIP)")])
def test_external_ip_inside_the_cluster_or_service_cidr_is_refused(ip, where):
    e = bad(service("x", extra=f"externalIPs: [192.0.2.1, {ip}]\n"))
    assert_names(e, "Service default/x", "spec.externalIPs[1]")
    assert ip in e.problem, where


def test_external_ip_outside_both_cidrs_is_kept():
    (svc,) = load(service("x", extra="externalIPs: [192.0.2.1, 10.243.255.255]\n")).services
    assert svc.external_ips == ("192.0.2.1", "10.243.255.255")


def test_cluster_ip_already_allocated():
    e = bad(service("x", extra="clusterIP: 10.96.0.50\n") + "---\n" + service("y", extra="clusterIP: 10.96.0.50\n"))
    assert_names(e, "Service default/y", "spec.clusterIP")


def test_service_name_too_long():
    name = "a" * 64
    e = bad(service(name))
    assert_names(e, f"Service {name}", "metadata.name")
    assert "63" in e.problem


def test_service_name_of_63_is_fine():
    assert load(service("a" * 63)).services[0].name == "a" * 63


def test_lab_name_too_long():
    name = "a" * 17
    e = bad(f"apiVersion: testbed.dev/v1alpha1\nkind: Lab\nmetadata: {{name: {name}}}\n")
    assert_names(e, f"Lab {name}", "metadata.name")
    assert "16" in e.problem


def test_lab_name_of_16_is_fine():
    topo = load("apiVersion: testbed.dev/v1alpha1\nkind: Lab\nmetadata: {name: abcdefghijklmnop}\n")
    assert topo.lab.name == "abcdefghijklmnop"


def test_invalid_yaml():
    with pytest.raises(TopologyError) as ei:
        model.load_text("apiVersion: v1\nkind: Service\nmetadata: {name: x\n  spec: [\n", file=FILE)
    e = ei.value
    msg = str(e)
    # A YAML syntax error has no object or field yet: it names the file and the line instead.
    assert e.file == FILE and msg.startswith(FILE)
    assert e.obj and e.obj.startswith("line ")
    assert "YAML" in e.problem


def test_document_that_is_not_a_mapping():
    e = bad("- just\n- a list\n")
    assert e.file == FILE and "document 1" in str(e)


LAB_TWO_NODES = textwrap.dedent("""\
    apiVersion: testbed.dev/v1alpha1
    kind: Lab
    metadata: {name: l}
    spec: {nodes: [{name: node-1}, {name: node-2}]}
    ---
    """)


def test_pod_on_unknown_node():
    e = bad(LAB_TWO_NODES + textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          nodeName: node-9
          containers: [{name: c}]
        """))
    assert_names(e, "Pod default/p", "spec.nodeName")
    assert "node-9" in e.problem and "node-1" in e.problem


def test_deployment_on_unknown_node():
    text = deployment("{matchLabels: {app: a}}").replace("spec: {containers:", "spec: {nodeName: nope, containers:")
    e = bad(LAB_TWO_NODES + text)
    assert_names(e, "Deployment default/d", "spec.template.spec.nodeName")


def test_without_a_lab_document_the_nodes_pods_name_are_the_lab_nodes():
    topo = load("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          nodeName: minikube
          containers: [{name: c}]
        """)
    assert [n.name for n in topo.lab.nodes] == ["minikube"]
    assert any("minikube" in line for line in topo.lab.inferred)


def test_endpointslice_for_service_with_selector_is_used_beside_the_controllers():
    topo = load(service("x", extra="selector: {app: a}\n") + textwrap.dedent("""\
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: x-1
          labels: {kubernetes.io/service-name: x}
        addressType: IPv4
        endpoints: [{addresses: [10.1.2.3]}]
        ports: [{port: 80}]
        """))
    cluster, _ = reconcile(topo)
    (info,) = [s for s in cluster.services if s.key == "default/x"]
    assert [e.ip for e in info.endpoints[0]] == ["10.1.2.3"]  # kube-proxy reads every slice of the Service


def test_endpointslice_without_service_name_label_is_named_as_unused():
    topo = load("""\
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: s}
        addressType: IPv4
        endpoints: []
        ports: []
        """)
    assert topo.slices == ()
    assert any("EndpointSlice s" in e and "kubernetes.io/service-name" in e for e in topo.effects), topo.effects


def test_pinned_node_ip_outside_node_network():
    e = bad("""\
        apiVersion: testbed.dev/v1alpha1
        kind: Lab
        metadata: {name: l}
        spec:
          nodeNetwork: 172.18.0.0/24
          nodes: [{name: a, ip: 10.0.0.5}]
        """)
    assert_names(e, "Lab l", "spec.nodes[0].ip")


def test_pinned_node_ips_without_a_node_network_infer_it():
    topo = load("""\
        apiVersion: testbed.dev/v1alpha1
        kind: Lab
        metadata: {name: l}
        spec:
          nodes: [{name: a, ip: 10.0.0.5}]
        """)
    assert topo.lab.node_network == "10.0.0.0/24"


def test_multi_port_service_needs_names():
    e = bad(service("x", ports="[{port: 80}, {port: 81}]"))
    assert_names(e, "Service x", "spec.ports[0].name")


# ----------------------------------------------------------------------------- accepted inputs


def test_selector_matching_nothing_is_fine():
    topo = load(service("x", extra="selector: {app: nothing}\n"))
    assert topo.services[0].selector == (("app", "nothing"),)
    cluster, _ = reconcile(topo)
    (info,) = [s for s in cluster.services if s.key == "default/x"]
    assert info.cluster_ip
    assert info.endpoints == ((),)


def test_unmodelled_field_warned_once():
    two = deployment("{matchLabels: {app: a}}", name="a") + "---\n" + deployment("{matchLabels: {app: a}}", name="b")
    topo = load(two.replace("{name: c, ports", "{name: c, startupProbe: {tcpSocket: {port: 80}}, ports"))
    hits = [w for w in topo.effects if "startupProbe" in w]
    assert len(hits) == 1 and "(+1 more)" in hits[0], topo.effects
    assert FILE in hits[0] and "readiness probes run from the start" in hits[0]


def test_traffic_distribution_and_hints_are_modelled():
    topo = load(service("x", extra="trafficDistribution: PreferClose\n"))
    assert topo.services[0].traffic_distribution == "PreferClose" and topo.effects == ()
    with pytest.raises(TopologyError, match="spec.trafficDistribution: expected one of PreferClose"):
        load(service("x", extra="trafficDistribution: Nearby\n"))


def test_a_field_not_in_kubernetes_schema_is_named_as_unknown():
    topo = load(service("x", extra="selectr: {app: a}\n"))
    (hit,) = [w for w in topo.effects if "spec.selectr" in w]
    assert "unknown field" in hit and "Service x" in hit


def test_a_known_field_without_effect_is_listed_once_per_kind_and_path():
    two = deployment("{matchLabels: {app: a}}", name="a") + "---\n" + deployment("{matchLabels: {app: a}}", name="b")
    topo = load(two.replace("{name: c, ports", "{name: c, env: [{name: A, value: b}], ports"))
    (hit,) = [w for w in topo.warnings if "env" in w]
    assert hit.endswith("spec.template.spec.containers[0].env") and "(+1 more)" in hit, topo.warnings


def test_unmodelled_field_warned_once_when_merged_over_a_base():
    base = load(service("x", extra="selectr: bar\n"))
    topo = model.load_text(service("y"), file=FILE, base=base)
    assert len([w for w in topo.effects if "spec.selectr" in w]) == 1, topo.effects


def test_unmodelled_fields_in_a_list_warned_once():
    text = textwrap.dedent("""\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Service
          metadata: {name: x}
          spec: {ports: [{port: 80}], foo: 1}
        """)
    topo = model.load_text(text, file=FILE)
    assert [s.key for s in topo.services] == ["default/x"]
    (hit,) = [w for w in topo.effects if "spec.foo" in w]
    assert "document 1, items[0]" in hit, hit


def test_known_fields_are_not_warned():
    topo = load(service("x", extra="selector: {app: a}\ntype: ClusterIP\nsessionAffinity: None\n"))
    assert topo.warnings == ()


def test_selector_expressions_match():
    sel = model.Selector(expressions=(("app", "In", ("a", "b")), ("tier", "NotIn", ("db",)),
                                      ("env", "Exists", ()), ("old", "DoesNotExist", ())))
    assert sel.matches({"app": "a", "tier": "web", "env": "x"})
    assert not sel.matches({"app": "c", "env": "x"})
    assert not sel.matches({"app": "a", "tier": "db", "env": "x"})
    assert not sel.matches({"app": "a"})
    assert not sel.matches({"app": "a", "env": "x", "old": "1"})


def test_defaults_without_a_lab_document():
    topo = load(service("x"))
    assert topo.lab == model.LabSpec()
    assert [n.name for n in topo.lab.nodes] == ["node-1", "node-2"]
    assert topo.source == FILE


# ----------------------------------------------------------------------------- shipped topologies


@pytest.mark.parametrize("name", ["default", "single-node", "seed-a-service"])
def test_shipped_topology_loads(name):
    path = model.TOPOLOGY_DIR / f"{name}.yaml"
    if not path.exists():
        pytest.skip(f"{path} is not there yet")
    topo = model.load_file(path)
    assert topo.source == str(path)
    cluster, _ = reconcile(topo)
    assert cluster.nodes
    for info in cluster.services:
        if info.proxied:
            assert info.cluster_ip


def test_every_topology_in_the_directory_loads():
    files = sorted(model.TOPOLOGY_DIR.glob("*.yaml"))
    assert files, f"no topologies in {model.TOPOLOGY_DIR}"
    for f in files:
        reconcile(model.load_file(f))


def test_missing_file():
    with pytest.raises(TopologyError) as ei:
        model.load_file("/nonexistent/topology.yaml")
    assert ei.value.file == "/nonexistent/topology.yaml"


# ----------------------------------------------------------------------------- wrongly typed values
# A wrongly typed value must be a TopologyError naming the field, never a Python exception and
# never silently coerced into something else.


@pytest.mark.parametrize("value", ["[9376]", "{port: 9376}"])
def test_target_port_of_wrong_type_is_a_topology_error(value):
    e = bad(service("x", ports=f"[{{port: 80, targetPort: {value}}}]"))
    assert_names(e, "Service x", "spec.ports[0].targetPort")


@pytest.mark.parametrize("value", ["true", "80.5"])
def test_target_port_is_not_coerced(value):
    e = bad(service("x", ports=f"[{{port: 80, targetPort: {value}}}]"))
    assert_names(e, "Service x", "spec.ports[0].targetPort")


def test_kind_that_is_not_a_string():
    e = bad("apiVersion: v1\nkind: [Pod]\nmetadata: {name: p}\n")
    assert e.file == FILE and e.field == "kind", str(e)


def test_endpointslice_address_must_be_a_string():
    e = bad("""\
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: s, labels: {kubernetes.io/service-name: x}}
        addressType: IPv4
        endpoints: [{addresses: [5]}]
        ports: [{port: 80}]
        """)
    assert_names(e, "EndpointSlice s", "endpoints[0].addresses[0]")
