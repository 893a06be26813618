"""A failed cell of `testbed verify` carries the trace of one real packet through the node's rules,
and the HTML report shows it."""
from pathlib import Path

import pytest

from testbed import report
from testbed.conformance import Matrix, Row, run_row
from testbed.verify import _with_trace

pytestmark = pytest.mark.kernel

DEFAULT = str(Path(__file__).resolve().parents[2] / "topologies" / "default.yaml")


def test_a_failed_cell_carries_the_packet_trace(lab_factory):
    lab = lab_factory(DEFAULT, mode="iptables")
    # Wrong on purpose: a Service without endpoints is refused, so this row fails.
    row = Row("ClusterIP of a Service without endpoints answers", "pod/client", "tcp", "svc/empty:80", short="wrong")
    cell = _with_trace(lab, row, run_row(lab, row, "iptables"))
    assert cell.status == "fail" and "got refused" in cell.reason, cell.reason
    assert cell.data["outcome"] == "refused" and cell.data["reply"].startswith("icmp")
    trace = cell.data["trace"]
    assert "node node-1" in trace and "KUBE-SERVICES" in trace, trace
    assert "default/empty has no endpoints" in trace and "rejected by" in trace, trace
    m = Matrix(["iptables"])
    m.put(row.behaviour, "iptables", cell, row.short)
    page = report.page(m.to_json())
    assert "one packet through the rules" in page and "default/empty has no endpoints" in page
