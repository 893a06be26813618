"""Whatever `kubectl apply -f` takes is read (testbed.manifests + testbed.model), and what is not is
refused with the file, the document (inside a List too), the object and the field. No root."""
from __future__ import annotations

import io
import json
import textwrap

import pytest

from testbed import model
from testbed.control import reconcile
from testbed.errors import TopologyError

SVC = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}


def svc(name: str, **spec) -> dict:
    return {**SVC, "metadata": {"name": name}, "spec": {"ports": [{"port": 80}], **spec}}


def load(text: str, file: str = "in.yaml", **kw) -> model.Topology:
    return model.load_text(textwrap.dedent(text), file=file, **kw)


def refused(text: str, **kw) -> TopologyError:
    with pytest.raises(TopologyError) as ei:
        load(text, **kw)
    return ei.value


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize("text", [
    json.dumps(svc("a")),  # one object
    json.dumps(svc("a")) + "\n" + json.dumps(svc("b")),  # a stream, as `kubectl get -o json` of several
    json.dumps([svc("a"), svc("b")]),  # an array
    json.dumps({"apiVersion": "v1", "kind": "List", "items": [svc("a"), svc("b")]}),
], ids=["object", "stream", "array", "list"])
def test_json_in_every_shape_kubectl_reads(text):
    names = {s.name for s in model.load_text(text, file="x.json").services}
    assert "a" in names


def test_a_typed_list_fills_in_its_items_kind_and_api_version():
    topo = load("""\
        apiVersion: v1
        kind: ServiceList
        items:
        - metadata: {name: a}
          spec: {ports: [{port: 80}]}
        """)
    assert [s.name for s in topo.services] == ["a"]


def test_helm_template_output_with_source_comments_and_empty_documents():
    topo = load("""\
        ---
        # Source: web/templates/serviceaccount.yaml
        apiVersion: v1
        kind: ServiceAccount
        metadata: {name: web}
        ---
        # Source: web/templates/empty.yaml
        ---
        # Source: web/templates/service.yaml
        apiVersion: v1
        kind: Service
        metadata: {name: web, labels: {helm.sh/chart: web-0.1.0, app.kubernetes.io/managed-by: Helm}}
        spec: {type: ClusterIP, ports: [{port: 80, targetPort: http, protocol: TCP, name: http}], selector: {app: web}}
        """)
    assert [s.name for s in topo.services] == ["web"] and topo.summary() == ["1 ServiceAccount"]


def test_standard_input(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(json.dumps(svc("from-stdin")).encode())))
    topo = model.load_file("-")
    assert topo.source == "<stdin>" and [s.name for s in topo.services] == ["from-stdin"]


def test_a_byte_order_mark_is_fine(tmp_path):
    p = tmp_path / "bom.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(svc("a")).encode())
    assert [s.name for s in model.load_file(p).services] == ["a"]


# ----------------------------------------------------------------------------- refused, with where


def test_an_empty_file_is_refused_as_kubectl_does(tmp_path):
    for body in ("", "# only a comment\n", "---\n---\n"):
        p = tmp_path / "empty.yaml"
        p.write_text(body)
        with pytest.raises(TopologyError) as ei:
            model.load_file(p)
        assert ei.value.file == str(p) and "no objects" in ei.value.problem


def test_binary_data_is_refused_without_a_traceback(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(TopologyError) as ei:
        model.load_file(p)
    assert ei.value.file == str(p) and "binary" in ei.value.problem


def test_deep_nesting_is_refused_without_a_traceback():
    for text in ("a: " + "[" * 5000 + "]" * 5000, "{" * 3000 + "}" * 3000,
                 "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}], x: "
                 + "[" * 150 + "]" * 150 + "}"):
        e = refused(text)
        assert "nest" in e.problem and e.file == "in.yaml", e


def test_a_document_without_api_version_is_reported_against_api_version():
    e = refused("kind: Service\nmetadata: {name: a}\n")
    assert e.field == "apiVersion" and "Service a (document 1)" in e.obj


def test_a_document_without_kind_is_reported_against_kind():
    e = refused("apiVersion: v1\nmetadata: {name: a}\n")
    assert e.field == "kind" and "document 1" in e.obj


def test_an_error_inside_a_list_names_the_document_and_the_item():
    e = refused("""\
        apiVersion: v1
        kind: Service
        metadata: {name: first}
        spec: {ports: [{port: 80}]}
        ---
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: Service, metadata: {name: a}, spec: {ports: [{port: 80}]}}
        - {apiVersion: v1, kind: Service, metadata: {name: b}, spec: {ports: [{port: 99999}]}}
        """)
    assert e.obj == "Service b (document 2, items[1])" and e.field == "spec.ports[0].port"


def test_a_list_item_and_a_document_with_the_same_name_are_a_duplicate():
    e = refused("""\
        apiVersion: v1
        kind: Service
        metadata: {name: a}
        spec: {ports: [{port: 80}]}
        ---
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: Service, metadata: {name: a}, spec: {ports: [{port: 81}]}}
        """)
    assert e.field == "metadata.name" and "document 1" in e.problem and "items[0]" in e.obj


def test_list_items_are_validated_against_the_files_own_lab():
    """MicroK8s' Service CIDR, minikube's one node: a dump with its Lab document in front loads."""
    topo = load("""\
        apiVersion: testbed.dev/v1alpha1
        kind: Lab
        metadata: {name: mk}
        spec:
          serviceCIDR: 10.152.183.0/24
          nodes: [{name: minikube}]
        ---
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Service
          metadata: {name: kubernetes}
          spec: {clusterIP: 10.152.183.1, ports: [{name: https, port: 443}]}
        - apiVersion: v1
          kind: Pod
          metadata: {name: p}
          spec: {nodeName: minikube, containers: [{name: c}]}
        """)
    assert topo.services[0].cluster_ip == "10.152.183.1" and topo.pods[0].node_name == "minikube"


def test_strict_refuses_an_unknown_field_and_a_behaviour_it_does_not_model():
    e = refused("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}], selectr: {a: b}}\n",
                strict=True)
    assert e.field == "spec.selectr" and "--strict" in e.problem
    e = refused("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: x, "
                "startupProbe: {tcpSocket: {port: 80}}}]}\n", strict=True)
    assert e.field.endswith("startupProbe")


def test_kinds_and_custom_resources_are_summarised_once():
    topo = load("""\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: a}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: b}
        ---
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata: {name: widgets.example.com}
        ---
        apiVersion: example.com/v1
        kind: Widget
        metadata: {name: w}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: r}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny}
        """)
    (line,) = topo.summary()
    assert line.startswith("2 ConfigMap, 1 CustomResourceDefinition, 1 NetworkPolicy, 2 custom resources (")
    assert "1 HTTPRoute" in line and "1 Widget" in line
    effects = "\n".join(topo.effects)
    assert "NetworkPolicy" in effects and "not filtered" in effects
    assert "HTTPRoute" in effects and "Gateway API" in effects


def test_a_64_character_pod_name_is_fine_253_is_the_limit():
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}}}\nspec: {{containers: [{{name: c}}]}}\n"
    assert load(pod.format("a" * 64)).pods[0].name == "a" * 64
    assert load(pod.format("a" * 253)).pods[0].name == "a" * 253
    e = refused(pod.format("a" * 254))
    assert e.field == "metadata.name" and "253" in e.problem


def test_a_service_may_not_take_the_cluster_dns_address():
    e = refused("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}\n")
    assert e.field == "spec.clusterIP" and "kube-dns" in e.problem
    # and an allocated ClusterIP never lands on it
    many = "---\n".join(f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{ports: [{{port: 80}}]}}\n"
                        for i in range(300))
    cluster, _ = reconcile(model.load_text(many, file="m.yaml"))
    assert [s.key for s in cluster.services if s.cluster_ip == "10.96.0.10"] == ["kube-system/kube-dns"]


def test_ipv6_only_and_dual_stack_services():
    topo = load("""\
        apiVersion: v1
        kind: Service
        metadata: {name: six}
        spec: {ipFamilies: [IPv6], ports: [{port: 80}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: both}
        spec: {ipFamilyPolicy: PreferDualStack, ipFamilies: [IPv4, IPv6], clusterIPs: [10.96.5.5, "fd00::5"], ports: [{port: 80}]}
        """)
    assert [s.name for s in topo.services] == ["both"] and topo.services[0].cluster_ip == "10.96.5.5"
    effects = "\n".join(topo.effects)
    assert "Service six" in effects and "left out" in effects and "Service both" in effects


def test_grpc_probes_are_taken_and_named():
    topo = load("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: p}
        spec:
          containers:
          - name: c
            ports: [{containerPort: 9555}]
            readinessProbe: {grpc: {port: 9555}, periodSeconds: 5}
        """)
    (probe,) = topo.pods[0].probes
    assert (probe.action, probe.port, probe.period) == ("grpc", 9555, 5)
    assert any("grpc" in e and "TCP connection" in e for e in topo.effects)


def test_load_balancer_class_and_node_port_allocation_are_honoured():
    topo = load("""\
        apiVersion: v1
        kind: Service
        metadata: {name: other-controller}
        spec: {type: LoadBalancer, loadBalancerClass: example.com/lb, ports: [{port: 80}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: no-node-ports}
        spec: {type: LoadBalancer, allocateLoadBalancerNodePorts: false, ports: [{port: 80}]}
        """)
    cluster, _ = reconcile(topo)
    by = {s.service.name: s for s in cluster.services}
    assert by["other-controller"].load_balancer_ips == ()  # pending: not the simulated cloud's class
    assert by["other-controller"].node_ports[0] is not None
    assert by["no-node-ports"].node_ports == (None,) and by["no-node-ports"].load_balancer_ips


def test_endpoint_slices_that_are_not_ipv4_are_named_and_left_out():
    topo = load("""\
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-6, labels: {kubernetes.io/service-name: web}}
        addressType: IPv6
        endpoints: [{addresses: ["fd00::1"]}]
        ports: [{port: 80}]
        """)
    assert topo.slices == () and any("IPv6 EndpointSlice" in e for e in topo.effects)

