"""Every behaviour row of testbed/conformance_rows.py, in every proxy mode, with real packets.

Each result is a cell of the behaviour × mode matrix that the testbed pytest plugin prints at the
end and writes as matrix.json / matrix.md next to the JUnit XML.
"""
import pytest

from testbed.conformance import run_row, skip_reason

from testbed.conformance_rows import TABLES

pytestmark = pytest.mark.kernel

CASES = [(topology, row) for topology, rows in TABLES.items() for row in rows]


@pytest.mark.parametrize("topology,row", CASES, ids=[f"{t.removesuffix('.yaml')}:{r.behaviour[:60]}" for t, r in CASES])
def test_row(topology, row, proxy_mode, conformance_labs, testbed_matrix, request):
    request.node.testbed_behaviour = row.behaviour
    why = skip_reason(row, proxy_mode)  # before building the lab: a per-mode skip or a kernel feature missing
    if why:
        pytest.skip(why)
    lab = conformance_labs(topology.removesuffix(".yaml"), proxy_mode)
    cell = run_row(lab, row, proxy_mode)
    testbed_matrix.record(row.behaviour, proxy_mode, cell, row.short)
    assert cell.status == "pass", cell.reason
