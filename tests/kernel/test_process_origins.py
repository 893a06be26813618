"""Every process a lab starts imports pyroute2, scapy and yaml from the project's own environment
(the one running these tests), never from packages installed elsewhere on the machine.

One userspace-mode lab with an Ingress runs every kind of process testbed starts: netexec in the
pods, the DNS server, the ingress proxy, the userspace proxy and the agent. Each writes its
origin report (testbed/startup.py) into a directory given by TESTBED_ORIGINS_DIR. The guest of
`testbed vm` is checked the same way in tests/kernel/test_vm.py.
"""
from __future__ import annotations

import json
import sys

import pytest

from probes.poll import wait_until
from testbed import startup

pytestmark = pytest.mark.kernel

EXPECTED = {"testbed.netexec", "testbed.dns_server", "testbed.ingress_proxy", "testbed.userspace_proxy",
            "testbed.agent"}

OBJECTS = [
    {"apiVersion": "testbed.dev/v1alpha1", "kind": "Lab", "metadata": {"name": "origins"},
     "spec": {"nodes": [{"name": "node-1"}]}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
     "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
     "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "site"},
     "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}},
]


def module_of(report: dict) -> str | None:
    """`testbed.X` for a process started as `python -m testbed.X …`."""
    argv = report["argv"]
    return next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-m"), None)


def reports(directory) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def test_every_lab_process_imports_from_the_project_environment(lab_factory, tmp_path, monkeypatch):
    # The runner's own origins must be inside its environment too, or the check proves nothing.
    assert startup.outside(startup.origins(), sys.prefix) == []
    where = tmp_path / "origins"
    monkeypatch.setenv(startup.ORIGINS_ENV, str(where))  # inherited by every process the lab starts
    lab_factory(objects=OBJECTS, mode="userspace")

    def seen():
        return EXPECTED <= {module_of(r) for r in reports(where)}

    wait_until(seen, timeout=30, message=f"origin reports of {sorted(EXPECTED)} in {where}")
    got = reports(where)
    for r in got:
        assert startup.outside(r, sys.prefix) == [], (module_of(r), r)
    kinds = sorted({module_of(r) for r in got})
    print(f"{len(got)} processes, all from {sys.prefix}: {', '.join(kinds)}")
