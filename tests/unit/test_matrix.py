"""The matrix's machine form: the JSON shape `testbed verify --json` and the pytest plugin write."""
import json

from testbed.conformance import Cell, Matrix, Row
from testbed.pytest_plugin import write_matrix


def sample() -> Matrix:
    m = Matrix(["iptables", "nftables", "ipvs"])
    m.put("ClusterIP from a pod", "iptables", Cell("pass", "DNAT 10.96.0.1:80 → 10.244.0.2:9376"))
    m.put("ClusterIP from a pod", "nftables", Cell("fail", "got dropped"))
    m.put("ClusterIP from a pod", "ipvs", Cell("skip", "no IPVS | here"))
    return m


def test_json_shape():
    data = sample().to_json()
    assert data == {"modes": ["iptables", "nftables", "ipvs"], "rows": [
        {"behaviour": "ClusterIP from a pod", "results": {
            "iptables": {"status": "pass", "reason": "DNAT 10.96.0.1:80 → 10.244.0.2:9376"},
            "nftables": {"status": "fail", "reason": "got dropped"},
            "ipvs": {"status": "skip", "reason": "no IPVS | here"}}}]}
    assert Matrix.from_json(json.loads(json.dumps(data))).to_json() == data


def test_failed_and_counts():
    m = sample()
    assert m.failed
    assert m.counts() == {"pass": 1, "fail": 1, "skip": 1}


def test_markdown_escapes_pipes(tmp_path):
    js, md = write_matrix(sample(), tmp_path)
    text = md.read_text()
    assert "| ClusterIP from a pod | **pass** DNAT" in text
    assert "no IPVS \\| here" in text
    assert "1 passed, 1 failed, 1 skipped" in text
    assert json.loads(js.read_text())["modes"] == ["iptables", "nftables", "ipvs"]


def test_row_expectation_per_mode():
    r = Row("x", "pod/a", "tcp", "svc/b:80", expect={"nftables": "refused", "*": "dropped"})
    assert r.expected("nftables") == "refused"
    assert r.expected("iptables") == "dropped"
    assert Row("y", "pod/a", "tcp", "svc/b:80").expected("ipvs") == "answered"
