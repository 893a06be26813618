"""testbed.healthserver's pure part: what kube-proxy's service health server answers on each
node's healthCheckNodePort (pkg/proxy/healthcheck/service_health.go). No root, no sockets."""
from __future__ import annotations

import json

from testbed import healthserver
from testbed.lab import Lab
from tests.unit.test_control import lab, load, pod, service
from testbed.control import reconcile

LB = "  type: LoadBalancer\n  externalTrafficPolicy: Local\n"
TWO_PORTS = "[{name: a, port: 80, targetPort: 9376}, {name: b, port: 81, targetPort: 9376}]"


def split(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, body = raw.split(b"\r\n\r\n", 1)
    status, *fields = head.decode().split("\r\n")
    return status, dict(f.split(": ", 1) for f in fields), body


def test_local_ready_endpoints_per_node_and_health_port():
    topo = load(lab(), pod("a", node="n1"), pod("b", node="n1"), service(ports=TWO_PORTS, extra=LB),
                service("plain", ports="[{port: 80, targetPort: 9376}]"))
    cluster, _ = reconcile(topo)
    (port,) = {s.health_check_node_port for s in cluster.services if s.health_check_node_port}
    # Two pods on n1, each an endpoint of both ports: counted once per pod. The plain Service has
    # no health port; n2 has no local endpoint.
    assert healthserver.local_endpoints(cluster) == {("n1", port): ("default/web", 2), ("n2", port): ("default/web", 0)}


def test_unready_and_terminating_endpoints_are_not_counted():
    topo = load(lab(), pod("a", node="n1"), pod("b", node="n2"), service(extra=LB))
    cluster, alloc = reconcile(topo)
    Lab._terminate(alloc, [p for p in cluster.pods if p.name == "a"], None)
    cluster, _ = reconcile(topo, alloc)
    counts = {node: n for (node, _), (_, n) in healthserver.local_endpoints(cluster).items()}
    assert counts == {"n1": 0, "n2": 1}  # n1's only endpoint is terminating: 503 there


def test_response_is_200_with_local_endpoints_and_503_without():
    status, fields, body = split(healthserver.response("shop/web", 3))
    assert status == "HTTP/1.1 200 OK"
    assert fields["Content-Type"] == "application/json"
    assert fields["Content-Length"] == str(len(body))
    assert json.loads(body) == {"service": {"namespace": "shop", "name": "web"}, "localEndpoints": 3,
                                "serviceProxyHealthy": True}
    status, _, body = split(healthserver.response("shop/web", 0))
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert json.loads(body)["localEndpoints"] == 0


def test_http_frames_any_status_and_body():
    status, fields, body = split(healthserver.http(404, "text/plain", b"404 page not found\n"))
    assert status == "HTTP/1.1 404 Not Found"
    assert fields == {"Content-Type": "text/plain", "X-Content-Type-Options": "nosniff",
                      "Content-Length": "19", "Connection": "close"}
    assert body == b"404 page not found\n"
