"""Plain Kubernetes manifests for the built-in reproductions (what `repro show` prints)."""
from __future__ import annotations


def lab(name: str = "repro", nodes: int = 2, **spec) -> dict:
    return {"apiVersion": "testbed.dev/v1alpha1", "kind": "Lab", "metadata": {"name": name},
            "spec": {"nodes": [{"name": f"node-{i}"} for i in range(1, nodes + 1)], **spec}}


def pod(name: str, node: str = "node-1", labels: dict | None = None, ports: list[dict] | None = None,
        host_network: bool = False) -> dict:
    container = {"name": "netexec", **({"ports": ports} if ports else {})}
    spec = {"nodeName": node, "containers": [container], **({"hostNetwork": True} if host_network else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **({"labels": labels} if labels else {})},
            "spec": spec}


def deployment(name: str, replicas: int = 2, ports: list[dict] | None = None, readiness: dict | None = None,
               grace: int = 0) -> dict:
    container = {"name": "netexec", "ports": ports or [{"name": "http", "containerPort": 9376}]}
    if readiness:
        container["readinessProbe"] = readiness
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"terminationGracePeriodSeconds": grace, "containers": [container]}}}}


def service(name: str, ports: list[dict], selector: dict | None = None, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector if selector is not None else {"app": name}, "ports": ports, **spec}}


# A readiness probe that notices a dead server within about a second, as upstream's e2e tests use.
FAST_READINESS = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}
