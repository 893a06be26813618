"""Inputs that once made a traceback (found by tests/unit/test_fuzz.py): each is now loaded or
refused with a TopologyError that names the file, the document or line, the object and the field.
"""
from __future__ import annotations

import pytest

from testbed import model
from testbed.errors import TopologyError

FILE = "in.yaml"


def refused(text: str) -> TopologyError:
    with pytest.raises(TopologyError) as ei:
        model.load_text(text, file=FILE)
    e = ei.value
    assert e.file == FILE and str(e).startswith(f"{FILE}: "), str(e)
    return e


@pytest.mark.parametrize("text", [
    "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: " + "9" * 5000 + "}]}\n",
    '{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": '
    + "9" * 5000 + "}]}}",
])
def test_an_integer_longer_than_python_reads_is_refused_at_its_line(text):
    e = refused(text)
    assert e.obj and e.obj.startswith("line "), str(e)
    assert "at most 4300 digits" in str(e)


def pod_with_probe_port(port: str) -> str:
    return ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n"
            f"    readinessProbe: {{tcpSocket: {{port: '{port}'}}}}\n")


def service_with_target(target: str) -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {{ports: [{{port: 80, targetPort: '{target}'}}]}}\n"


@pytest.mark.parametrize("text, field", [
    (pod_with_probe_port("²"), "spec.containers[0].readinessProbe.tcpSocket.port"),
    (pod_with_probe_port("١٢"), "spec.containers[0].readinessProbe.tcpSocket.port"),
    (pod_with_probe_port("1" * 5000), "spec.containers[0].readinessProbe.tcpSocket.port"),
    (service_with_target("²"), "spec.ports[0].targetPort"),
])
def test_a_port_of_digits_python_cannot_read_is_refused_at_its_field(text, field):
    e = refused(text)
    assert "(document 1)" in e.obj and e.field == field, str(e)


@pytest.mark.parametrize("cidr", ["255.255.255.248/29", "10.96.0.0/29", "10.96.0.0/32"])
def test_a_service_cidr_without_room_for_the_dns_address_is_refused(cidr):
    e = refused(f"apiVersion: testbed.dev/v1alpha1\nkind: Lab\nspec: {{serviceCIDR: {cidr}}}\n")
    assert e.obj.startswith("Lab testbed") and e.field == "spec.serviceCIDR", str(e)


def test_a_small_service_cidr_is_taken_without_cluster_dns():
    topo = model.load_text("apiVersion: testbed.dev/v1alpha1\nkind: Lab\n"
                           "spec: {serviceCIDR: 10.96.0.0/29, clusterDNS: {enabled: false}}\n", file=FILE)
    assert topo.lab.service_cidr == "10.96.0.0/29"


def kube_proxy_config(conf: str) -> str:
    body = "\n".join("    " + line for line in conf.splitlines())
    return ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kube-proxy, namespace: kube-system}\n"
            f"data:\n  config.conf: |\n{body}\n")


POD_WITH_IP = ("---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c}]}\n"
               "status: {podIP: 10.244.0.5}\n")


@pytest.mark.parametrize("conf, what", [
    ("clusterCIDR: garbage", "clusterCIDR"),
    ("clusterCIDR: 10.244.0.0/33", "clusterCIDR"),
    ("clusterCIDR: [10.244.0.0/16]", "clusterCIDR"),
    ("ipvs: {scheduler: fastest}", "ipvs.scheduler"),
])
def test_kube_proxy_settings_that_kube_proxy_refuses_are_refused(conf, what):
    e = refused(kube_proxy_config(conf) + POD_WITH_IP)
    assert "ConfigMap kube-proxy (document 1)" in e.obj and e.field == "data.config.conf", str(e)
    assert e.problem.startswith(f"{what}: expected"), str(e)


@pytest.mark.parametrize("conf", ["mode: " + "9" * 5000, "a: " + "[" * 2000 + "]" * 2000, "mode: !!bool maybe"])
def test_a_kube_proxy_config_python_cannot_read_is_named_and_not_taken(conf):
    topo = model.load_text(kube_proxy_config(conf) + POD_WITH_IP, file=FILE)
    assert any("data.config.conf" in e and "not valid YAML" in e for e in topo.effects), topo.effects


def test_a_service_cidr_object_that_is_not_a_cidr_is_refused_at_its_field():
    e = refused("apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: x}\n"
                "spec: {cidrs: ['fd00::/108', garbage]}\n---\napiVersion: v1\nkind: Service\n"
                "metadata: {name: s}\nspec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}\n")
    assert "ServiceCIDR x (document 1)" in e.obj and e.field == "spec.cidrs[1]", str(e)


LAB = "apiVersion: testbed.dev/v1alpha1\nkind: Lab\nmetadata: {name: l}\n"


@pytest.mark.parametrize("text, obj, field", [
    # A cross-object check in model.validate
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n---\n" + LAB + "spec: {nodes: [{name: a}, {name: a}]}\n",
     "Lab l (document 2)", "spec.nodes"),
    # An allocation in control.reconcile: no /28 left in a /28 for the second node
    (LAB + "spec: {clusterCIDR: 10.244.0.0/28, nodeCIDRMaskSize: 28}\n", "Lab l (document 1)", "spec.clusterCIDR"),
    # A Service of the file whose allocation fails names its document too
    (LAB + "spec: {serviceCIDR: 10.96.0.0/28}\n" + "".join(
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{ports: [{{port: 80}}]}}\n" for i in range(6)),
     "(document ", "spec.clusterIP"),
])
def test_lab_and_allocation_errors_name_the_document(text, obj, field):
    from testbed.control import reconcile

    with pytest.raises(TopologyError) as ei:
        reconcile(model.load_text(text, file=FILE))
    e = ei.value
    assert obj in e.obj and e.field == field, str(e)


def test_an_alias_bomb_is_refused_without_walking_every_value():
    """Nine aliases of nine aliases …: 9^9 (387 million) values once expanded, a few lines of text."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    e = refused("\n".join(lines) + "\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert e.obj == "document 1" and "repeat more than 1,000,000 values" in e.problem, str(e)


def test_a_large_document_without_aliases_is_read():
    """Only what aliases repeat counts: 1,100,000 values that are all written out are no alias bomb."""
    text = '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": [%s]}}' % (
        ",".join(["1"] * 1_100_000))
    topo = model.load_text(text, file=FILE)
    assert dict(topo.not_modelled)["ConfigMap"] == 1


@pytest.mark.parametrize("meta, field", [
    ('{name: "web\\n"}', "metadata.name"),
    ('{name: web, namespace: "default\\n"}', "metadata.namespace"),
    ('{name: web, labels: {"app\\n": x}}', "metadata.labels.'app\\n'"),
    ('{name: web, labels: {app: "x\\n"}}', "metadata.labels.app"),
])
def test_a_name_or_label_with_a_trailing_newline_is_refused(meta, field):
    """`$` matched before a final newline: "web\\n" passed as a DNS label and split the rendered
    iptables rule that names it over two lines."""
    e = refused(f"apiVersion: v1\nkind: Service\nmetadata: {meta}\nspec: {{ports: [{{port: 80}}]}}\n")
    assert e.field == field, str(e)


@pytest.mark.parametrize("text", [
    "apiVersion: testbed.dev/v1alpha1\nkind: Lab\nspec: {clusterCIDR: 10.244.0.0/30}\n",
    kube_proxy_config("clusterCIDR: 10.244.0.0/30") + POD_WITH_IP,
])
def test_a_cluster_cidr_smaller_than_a_node_mask_is_refused(text):
    e = refused(text)
    assert e.field == "spec.nodeCIDRMaskSize" and "/30" in e.problem, str(e)


def test_a_dumped_api_server_service_at_0_0_0_0_is_refused_at_its_cluster_ip():
    e = refused("apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes}\n"
                "spec: {clusterIP: 0.0.0.0, ports: [{port: 443}]}\n")
    assert "Service default/kubernetes (document 1)" in e.obj and e.field == "spec.clusterIP", str(e)


@pytest.mark.parametrize("doc, field", [
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: NODE, containers: [{name: c}]}\n", "spec.nodeName"),
    ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e, labels: {kubernetes.io/service-name: s}}\n"
     "addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], nodeName: NODE}]\n", "endpoints[0].nodeName"),
    ("apiVersion: v1\nkind: Endpoints\nmetadata: {name: e}\nsubsets: [{addresses: [{ip: 10.0.0.1, nodeName: NODE}]}]\n",
     "subsets[0].addresses[0].nodeName"),
])
@pytest.mark.parametrize("node", ['"a\\n"', "a" * 300, "Node_1"])
def test_a_node_name_that_the_api_server_refuses_is_refused(doc, field, node):
    """A dump's nodes are inferred from the names its objects use: a 300-character or multi-line one
    was a node of the lab."""
    e = refused(doc.replace("NODE", node))
    assert e.field == field and "a node name" in e.problem, str(e)


LONG = "A" * 20_000


@pytest.mark.parametrize("text", [
    f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i}}\nspec: {{rules: [{{host: {LONG}}}]}}\n",
    "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec: {rules: [{http: {paths: "
    f"[{{path: {LONG}, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}]}}}}]}}\n",
    f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i, annotations: {{a: [{LONG}]}}}}\n",
])
def test_a_very_long_value_is_cut_short_in_the_error(text):
    e = refused(text)
    assert len(str(e)) < 500 and " characters)" in str(e), str(e)[:300]


@pytest.mark.parametrize("pool", ["100.0.0.0/10", "100.0.0.0-100.128.0.0"])
def test_a_load_balancer_pool_of_millions_of_addresses_is_refused(pool):
    """A /10 pool took minutes and gigabytes to allocate from; a /1 would not finish."""
    e = refused("apiVersion: testbed.dev/v1alpha1\nkind: Lab\n"
                f"spec: {{nodeNetwork: 100.0.0.0/8, loadBalancer: {{pool: {pool}}}}}\n")
    assert e.field == "spec.loadBalancer.pool" and "at most 65,536 addresses" in e.problem, str(e)


def test_a_load_balancer_pool_of_a_slash_16_is_taken():
    topo = model.load_text("apiVersion: testbed.dev/v1alpha1\nkind: Lab\n"
                           "spec: {nodeNetwork: 100.0.0.0/8, loadBalancer: {pool: 100.1.0.0/16}}\n", file=FILE)
    assert topo.lab.lb_pool == ("100.1.0.0", "100.1.255.255")


def test_a_very_long_unknown_field_is_cut_short_in_the_error_and_the_notes():
    import json

    key = "b" * 20_000
    lab = {"apiVersion": "testbed.dev/v1alpha1", "kind": "Lab", "spec": {key: 1}}
    e = refused(json.dumps(lab))
    assert len(str(e)) < 500 and e.field.startswith("spec.'bbb"), str(e)[:300]
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}], key: 1}}
    topo = model.load_text(json.dumps(svc), file=FILE)
    assert topo.effects and all(len(line) < 500 for line in topo.effects + topo.warnings), topo.effects


def test_a_yaml_error_quoting_a_very_long_tag_is_cut_short():
    e = refused("!!" + "0" * 20_000 + " x\n")
    assert e.obj == "line 1, column 1" and len(str(e)) < 500, str(e)[:300]


def test_a_null_load_balancer_source_range_is_refused_at_its_index():
    e = refused("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                "spec: {type: LoadBalancer, ports: [{port: 80}], loadBalancerSourceRanges: [null]}\n")
    assert e.field == "spec.loadBalancerSourceRanges[0]" and e.problem == "is required", str(e)


@pytest.mark.parametrize("text, line", [
    ("!!int", 1), ("!!float", 1), ("a: !!bool maybe", 1), ("a: !!int 0x", 1), ("a: [!!int 1:2:x]", 1),
])
def test_a_scalar_yaml_cannot_construct_is_refused_at_its_line(text, line):
    """PyYAML's constructors raised IndexError, KeyError, AttributeError or ValueError for these."""
    e = refused(text)
    assert e.obj.startswith(f"line {line}, column ") and "expected a !!" in e.problem, str(e)


def test_timestamps_stay_strings_whatever_they_hold():
    """Kubernetes reads YAML through JSON, where a timestamp is a string: `2001-13-45` is not refused
    by the YAML layer (the document then lacks a kind, which is what is named)."""
    for text in ("a: 2001-13-45", "a:\n  b: !!timestamp x"):
        e = refused(text)
        assert e.field == "kind", str(e)


def test_render_into_a_closed_pipe_prints_no_traceback():
    """`testbed render | head`: the reader goes away before render has written everything."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "render", str(model.builtin("default"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child has written anything
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()[-2000:]
    assert proc.returncode == 141
