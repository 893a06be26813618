"""`testbed export` of a running lab, replayed: the same addresses and the same rules on every node,
with real kernels (root)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.kernel import iptables as kiptables
from testbed.kernel import wiring

pytestmark = [pytest.mark.kernel, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def rules(lab) -> dict[str, list[str]]:
    out = {}
    for n in lab.cluster().nodes:
        text = kiptables.save(wiring.host_ns(lab.name, n.name))
        out[n.name] = sorted(re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines()
                             if line and not line.startswith("#"))
    return out


def test_export_then_up_gives_the_same_lab(lab_factory, tmp_path):
    lab = lab_factory(str(ROOT / "topologies" / "default.yaml"), mode="iptables", ready=True)
    before, pods = rules(lab), sorted((p.key, p.ip) for p in lab.cluster().pods)
    path = tmp_path / "lab.yaml"
    res = cli("export", lab.name, "-o", str(path))
    assert res.returncode == 0, res.stderr
    lab.down()
    again = lab_factory(str(path), mode="iptables", ready=True)
    assert sorted((p.key, p.ip) for p in again.cluster().pods) == pods
    assert rules(again) == before


def test_a_redacted_export_comes_up_and_answers(lab_factory, tmp_path):
    from testbed.conformance import derive_rows, run_row

    lab = lab_factory(str(ROOT / "topologies" / "seed-a-service.yaml"), mode="iptables")
    path = tmp_path / "redacted.yaml"
    res = cli("export", lab.name, "--redact", "-o", str(path))
    assert res.returncode == 0, res.stderr
    assert "a-service" not in path.read_text()
    again = lab_factory(str(path), mode="iptables")
    cluster = again.cluster()
    rows = [r for r in derive_rows(cluster) if r.action is None]
    assert rows
    for row in rows:
        cell = run_row(again, row, "iptables")
        assert cell.status == "pass", (row.behaviour, cell.reason)
