"""`testbed bench` end to end at toy size: it completes, writes the JSON keys and the PNGs, and
leaves no namespace, process or state directory behind. Nothing here checks a timing."""
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from testbed import bench, state
from testbed.kernel import netns

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not (shutil.which("iptables-restore") or shutil.which("iptables-restore", path="/usr/sbin:/sbin")),
                       reason="needs iptables-restore"),
    pytest.mark.skipif(not (shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")), reason="needs nft"),
]


def _args(tmp_path, **kw):
    base = {"quick": True, "modes": "iptables,nftables,ipvs", "sizes": "10,50", "pods": "3,5", "connections": 30,
            "rounds": 2, "warmup": 5, "repeat": 2, "build_repeat": 1, "no_vm": True, "no_build": False,
            "no_latency": True,
            "json": str(tmp_path / "bench.json"), "plots": str(tmp_path / "plots")}
    base.update(kw)
    return SimpleNamespace(**base)


def _processes_mentioning(text):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append((int(pid), cmd))
    return found


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    from testbed import bench_view

    args = _args(tmp)
    rc = bench_view.cmd_bench(args)
    assert rc == 0
    return tmp, json.loads((tmp / "bench.json").read_text())


def test_json_has_every_part(result):
    _, doc = result
    assert set(doc) >= {"schema", "machine", "plan", "modes", "build", "summary", "run", "left_behind"}
    assert doc["machine"]["nproc"] and doc["machine"]["kernel"]
    for mode in ("iptables", "nftables"):
        sizes = doc["modes"][mode]["sizes"]
        assert [e["services"] for e in sizes] == [10, 50]
        for e in sizes:
            dp = e["data_plane"]
            assert dp["failed"] == 0, dp
            assert dp["connections"] == 60
            assert 0 < dp["p01"]["median"] <= dp["p50"]["median"] <= dp["p99"]["median"]
            assert e["target"]["service"] == f"bench/{bench.service_name(e['services'] - 1, e['services'])}"
            for kind in ("full_sync", "one_change"):
                assert e[kind]["total_s"]["n"] >= 1, e[kind]
                assert e[kind]["kernel_s"]["median"] > 0
    ipvs = doc["modes"]["ipvs"]
    # This kernel either has IPVS (inside `testbed vm`: measured here) or says why not; never made up.
    assert ipvs.get("not_measured") or [e["services"] for e in ipvs["sizes"]] == [10, 50]
    assert [e["pods"] for e in doc["build"]["sizes"]] == [3, 5]
    assert all(e["testbed"]["ms_per_pod"]["median"] > 0 and e["ip"]["ms_per_pod"]["median"] > 0 for e in doc["build"]["sizes"])
    assert doc["summary"]["targets"]


def test_a_failing_sync_is_reported_not_fatal(tmp_path, monkeypatch):
    """A kernel tool that fails (say nft -f timing out at 30,000 Services) becomes `not_measured`
    with the reason; the rules are then installed another way and the data plane still measured."""
    from testbed.modes import nftables as proxier

    real = proxier.NftablesProxier.sync

    def failing(self, ns, view, rec):
        if not rec.get("nft"):
            raise RuntimeError("nft -f timed out after 120 seconds")
        return real(self, ns, view, rec)

    monkeypatch.setattr(proxier.NftablesProxier, "sync", failing)
    doc = bench.run(_args(tmp_path, modes="nftables", sizes="10", no_build=True, repeat=1))
    e = doc["modes"]["nftables"]["sizes"][0]
    assert e["full_sync"] == {"not_measured": "failed: nft -f timed out after 120 seconds"}
    assert e["data_plane"]["failed"] == 0 and e["data_plane"]["p50"]["median"] > 0
    assert e["one_change"]["total_s"]["n"] >= 1  # later syncs (with a previous state) still work
    assert doc["left_behind"]["namespaces"] == []


def test_plots_written(result):
    tmp, _ = result
    from testbed import bench_view

    for name in bench_view.PLOTS:
        assert (tmp / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_nothing_left_behind(result):
    _, doc = result
    run = doc["run"]
    assert run.startswith("tbbench")
    assert doc["left_behind"]["namespaces"] == []
    assert [n for n in netns.list_names() if n.startswith(run)] == []
    assert _processes_mentioning(f"/run/netns/{run}") == []
    assert not state.lab_dir(run).exists()


class Boom(Exception):
    pass


def test_interrupted_run_cleans_up(tmp_path, monkeypatch):
    """An unexpected failure in the middle (here: in the data-plane probe) still removes the node,
    its pods and their netexec processes."""
    seen = {}

    def boom(node, target, plan):
        seen["ns"] = [node.ns, *node.pod_namespaces]
        seen["run"] = node.ns.split("-")[0]
        assert all(netns.exists(n) for n in seen["ns"])
        raise Boom("probe failed")

    monkeypatch.setattr(bench, "data_plane", boom)
    with pytest.raises(Boom, match="probe failed"):
        bench.run(_args(tmp_path, modes="nftables", sizes="10", no_build=True))
    assert seen and not any(netns.exists(n) for n in seen["ns"])
    assert _processes_mentioning(f"/run/netns/{seen['run']}") == []
    assert not state.lab_dir(seen["run"]).exists()


def test_programming_latency_part(tmp_path):
    """The latency part builds a default lab per mode, measures every change, and removes the lab."""
    doc = bench.run(_args(tmp_path, modes="iptables", sizes="10", no_build=True, no_control=True, no_latency=False,
                          latency_repeat=1))
    rows = {r["change"]: r for r in doc["programming"]["iptables"]["summary"]}
    assert set(rows) == {"pod-unready", "pod-ready", "pod-deleted", "service-edited"}
    assert all(r["n"] == 1 and r["observed_p50_ms"] is not None for r in rows.values()), rows
    assert set(doc["programming"]) == {"iptables", "userspace"}  # userspace: measured here even if not a bench mode
    assert doc["left_behind"]["namespaces"] == [] and not state.read(doc["run"] + "p")


def test_modes_none_is_the_build_alone(tmp_path):
    """`--modes none` (benchmarks/build.py): no Service part and no programming-latency lab either."""
    doc = bench.run(_args(tmp_path, modes="none", pods="2", build_repeat=1, no_latency=False, latency_repeat=1))
    assert doc["modes"] == {} and "programming" not in doc
    assert doc["build"]["sizes"][0]["pods"] == 2
