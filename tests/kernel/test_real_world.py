"""Published manifest sets brought up with real packets: every Service port a pod can reach answers
from its own backends, NodePorts answer from outside (root; sets read from ../shared/real-world/)."""
from __future__ import annotations

import dataclasses

import pytest

from testbed.conformance import derive_rows, run_row
from testbed.pytest_plugin import wait_ready
from tests.realworld import real_world

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

SETS = ["microservices-demo.yaml", "guestbook-go-rc.yaml", "cassandra-statefulset.yaml", "bookinfo.yaml"]


@pytest.mark.parametrize("name", SETS)
def test_a_published_set_answers_on_every_service(lab_factory, name):
    lab = lab_factory(str(real_world(name)), mode="iptables")
    # The sets' readiness probes wait up to 20 s before their first check, and cassandra's StatefulSet
    # starts its pods one after the other, each once the previous one is ready.
    wait_ready(lab, timeout=150)
    cluster = lab.cluster()
    # One connection per row is enough here (the balance rows have their own suite); NodePorts via the
    # first node; no pod deletion (it changes the lab).
    first = cluster.nodes[0].name
    rows = [dataclasses.replace(r, balance=False) for r in derive_rows(cluster)
            if r.action is None and not (r.target.startswith("nodeport/") and not r.target.endswith(f"@{first}"))]
    assert rows, "no rows derived"
    failed = []
    for row in rows:
        cell = run_row(lab, row, "iptables")
        if cell.status != "pass":
            failed.append(f"{row.behaviour}: {cell.status}: {cell.reason}")
    assert not failed, "\n".join(failed)
    print(f"{name}: {len(rows)} rows passed, {len(cluster.pods)} pods, {len(cluster.services)} services")
