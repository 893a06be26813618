"""testbed.bench without root: statistics, the synthetic node view, the last-matched choice
(checked against the rendered iptables order), the result document and its views."""
import io
import json
import math
from types import SimpleNamespace

import pytest

from testbed import bench
from testbed.proxy import Endpoint, NodeView, ServicePort
from testbed.render import iptables as riptables
from testbed.render import nftables as rnftables

# --------------------------------------------------------------------------- statistics

def test_percentile_matches_linear_interpolation():
    xs = list(range(1, 101))  # 1..100
    assert bench.percentile(xs, 0) == 1
    assert bench.percentile(xs, 100) == 100
    assert bench.percentile(xs, 50) == pytest.approx(50.5)
    assert bench.percentile(xs, 1) == pytest.approx(1.99)
    assert bench.percentile(xs, 99) == pytest.approx(99.01)
    assert bench.percentile(reversed(xs), 25) == pytest.approx(25.75)  # order does not matter


def test_percentile_edges():
    assert bench.percentile([7.0], 1) == 7.0
    assert bench.percentile([7.0], 99) == 7.0
    assert bench.percentile([1, 3], 50) == 2
    with pytest.raises(ValueError):
        bench.percentile([], 50)
    with pytest.raises(ValueError):
        bench.percentile([1, 2], 101)


def test_median_and_spread():
    assert bench.median([3, 1, 2]) == 2
    assert bench.median([4, 1, 2, 3]) == 2.5
    with pytest.raises(ValueError):
        bench.median([])
    s = bench.spread([2.0, 1.0, 4.0])
    assert s == {"median": 2.0, "min": 1.0, "max": 4.0, "n": 3, "rel_spread": 1.5}
    assert bench.spread([0.0, 0.0])["rel_spread"] == 0.0


def test_latency_summary():
    s = bench.latency_summary([float(i) for i in range(1, 101)])
    assert (s["p01"], s["p50"], s["p99"], s["n"]) == (pytest.approx(1.99), pytest.approx(50.5), pytest.approx(99.01), 100)
    assert s["mean"] == pytest.approx(50.5)


def test_ratio():
    assert bench.ratio(6, 3) == 2
    assert bench.ratio(None, 3) is None
    assert bench.ratio(1, 0) is None


def test_project_power_law_clamped():
    assert bench.project([], 10) is None
    assert bench.project([(10, 1.0)], 100) == pytest.approx(10.0)  # one point: linear
    assert bench.project([(10, 1.0), (100, 100.0)], 1000) == pytest.approx(10000.0)  # quadratic
    assert bench.project([(10, 1.0), (100, 1.0)], 1000) == pytest.approx(10.0)  # flat → at least linear
    assert bench.project([(10, 1.0), (100, 1e6)], 1000) == pytest.approx(1e9)  # k=6 → at most cubic


# --------------------------------------------------------------------------- synthetic services

def test_synthetic_view_shape():
    v = bench.synthetic_view(250)
    assert len(v.services) == 250
    assert len({s.cluster_ip for s in v.services}) == 250
    assert {s.port for s in v.services} == {bench.SERVICE_PORT}
    assert all(s.protocol == "TCP" and s.namespace == bench.SERVICE_NAMESPACE for s in v.services)
    assert all(tuple((e.ip, e.port) for e in s.endpoints) == bench.BACKENDS for s in v.services)
    assert v.services[0].cluster_ip == bench.SERVICE_BASE
    assert v.services[0].name == "svc-00000" and v.services[-1].name == "svc-00249"
    assert v.config.cluster_cidr == "10.244.0.0/16"  # the client pod is a cluster source: no masquerade
    with pytest.raises(ValueError):
        bench.synthetic_view(0)


def test_synthetic_view_stays_in_service_cidr_at_30000():
    v = bench.synthetic_view(30000)
    import ipaddress

    cidr = ipaddress.ip_network("10.96.0.0/12")
    assert all(ipaddress.ip_address(s.cluster_ip) in cidr for s in (v.services[0], v.services[-1]))
    assert bench.service_name(5, 30000) == "svc-00005"
    assert bench.service_name(5, 1_000_000) == "svc-000005"  # names keep sorting numerically


@pytest.mark.parametrize("n", [1, 2, 10, 100, 1001])
def test_last_matched_is_the_last_kube_services_rule(n):
    v = bench.synthetic_view(n)
    text = riptables.render(v)
    order = bench.iptables_order(text)
    assert len(order) == n  # one ClusterIP rule per Service in nat KUBE-SERVICES
    last = bench.last_matched(v, text)
    assert (last.cluster_ip, last.port) == order[-1]
    # The cheap ordering the benchmark uses agrees with the rendered rules, rule by rule.
    assert [(s.cluster_ip, s.port) for s in bench.iptables_sorted(v)] == order
    assert bench.iptables_sorted(v)[-1] == last
    assert last.name == bench.service_name(n - 1, n)


def test_last_matched_follows_render_order_not_creation_order():
    eps = (Endpoint("10.244.0.3", 9376, node="node"),)
    svcs = tuple(ServicePort("bench", name, "", "TCP", 80, f"10.96.1.{i + 1}", endpoints=eps)
                 for i, name in enumerate(["svc-9", "svc-10", "a", "svc-1"]))
    v = NodeView("node", ("172.18.0.2",), services=svcs)
    text = riptables.render(v)
    assert bench.last_matched(v, text).name == "svc-9"  # string order: svc-1 < svc-10 < svc-9
    assert bench.iptables_sorted(v)[-1].name == "svc-9"
    assert [ip for ip, _ in bench.iptables_order(text)] == ["10.96.1.3", "10.96.1.4", "10.96.1.2", "10.96.1.1"]


def test_iptables_order_reads_only_nat_cluster_ip_rules():
    lines = [
        "*filter", "-A KUBE-SERVICES -m comment --comment \"x has no endpoints\" -m tcp -p tcp -d 10.96.0.9 --dport 80 -j REJECT",
        "COMMIT", "*nat",
        "-A KUBE-SERVICES -m comment --comment \"a cluster IP\" -m tcp -p tcp -d 10.96.0.1/32 --dport 443 -j KUBE-SVC-AAAA",
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
        "-A KUBE-SERVICES -m tcp -p tcp -d 10.96.0.2 --dport 80 -j KUBE-SVL-BBBB", "COMMIT", ""]
    text = "\n".join(lines)
    assert bench.iptables_order(text) == [("10.96.0.1", 443), ("10.96.0.2", 80)]
    with pytest.raises(ValueError):
        bench.last_matched(bench.synthetic_view(1), "*nat\nCOMMIT\n")


def test_nftables_renders_every_synthetic_service_into_the_map():
    v = bench.synthetic_view(50)
    text = rnftables.render(v)
    target = bench.last_matched(v)
    assert f"add element ip kube-proxy service-ips {{ {target.cluster_ip} . tcp . 80 : goto service-" in text
    assert text.count("add element ip kube-proxy service-ips {") == 50


def test_changed_view_touches_one_service():
    v = bench.synthetic_view(20)
    dropped = bench.changed_view(v, 10, drop=True)
    assert len(dropped.services[10].endpoints) == len(bench.BACKENDS) - 1
    assert [s for i, s in enumerate(dropped.services) if i != 10] == [s for i, s in enumerate(v.services) if i != 10]
    assert bench.changed_view(dropped, 10, drop=False) == v
    # iptables sees one Service's chains change, nftables sends only that Service.
    before = set(riptables.active_chains(v))
    after = set(riptables.active_chains(dropped))
    assert len(before - after) == 1 and not after - before
    _, state = rnftables.sync(None, v)
    text, _ = rnftables.sync(state, dropped)
    assert "svc-00010" in text and "svc-00011" not in text


# --------------------------------------------------------------------------- plan and document

def _args(**kw):
    return SimpleNamespace(**kw)


def test_make_plan_defaults_and_quick():
    full = bench.make_plan(_args())
    assert full.sizes == bench.SIZES_FULL and full.pods == bench.PODS_FULL and full.modes == bench.MODES
    assert full.control and full.vm_control and full.vm_sizes == bench.SIZES_FULL
    quick = bench.make_plan(_args(quick=True))
    assert quick.sizes == bench.SIZES_QUICK and quick.pods == bench.PODS_QUICK
    assert max(quick.vm_sizes) <= 1000 and not quick.vm_control
    assert quick.connections < full.connections
    p = bench.make_plan(_args(modes="nftables, iptables", sizes="50,10,50", pods=["3", "2"], connections=7))
    assert p.modes == ("nftables", "iptables") and p.sizes == (10, 50) and p.pods == (2, 3) and p.connections == 7
    with pytest.raises(ValueError):
        bench.make_plan(_args(modes="iptables,bpf"))
    with pytest.raises(ValueError):
        bench.make_plan(_args(sizes="0"))


def test_parse_list():
    assert bench.parse_list(None) == []
    assert bench.parse_list("a, b,,c") == ["a", "b", "c"]
    assert bench.parse_list(["a,b", "c"]) == ["a", "b", "c"]


def test_sync_summary():
    samples = [bench.Timing(0.1, 0.4, 0.55), bench.Timing(0.3, 0.6, 0.95), bench.Timing(0.2, 0.5, 0.75)]
    s = bench.sync_summary(samples, None)
    assert s["total_s"]["median"] == 0.75 and s["total_s"]["n"] == 3
    assert s["render_over_kernel"] == pytest.approx(0.2 / 0.5)
    assert s["render_share"] == pytest.approx(0.2 / 0.7)
    assert s["samples"][0] == {"render_s": 0.1, "kernel_s": 0.4, "total_s": 0.55}
    assert bench.sync_summary([], "not run: projected 900 s") == {"not_measured": "not run: projected 900 s"}
    assert bench.sync_summary([], None) == {"not_measured": "not run"}


def _dp(p50):
    rounds = [bench.latency_summary([p50 * f for f in (0.5, 0.9, 1.0, 1.1, 3.0)]) for _ in range(3)]
    out = {k: bench.spread([r[k] for r in rounds]) for k in ("p01", "p50", "p99")}
    out.update(rounds=rounds, failed=0, connections=15, pooled=rounds[0], unit="ms")
    return out


def _sync(total):
    return bench.sync_summary([bench.Timing(total * 0.1, total * 0.85, total)], None)


def fake_doc():
    """A result document shaped exactly as bench.run() makes one, from made-up figures."""
    sizes = (100, 1000, 30000)
    modes = {
        "iptables": {"mode": "iptables", "tool": "iptables-restore --noflush", "sizes": [
            {"services": n, "target": {}, "data_plane": _dp(0.02 * n ** 0.5), "full_sync": _sync(0.001 * n),
             "one_change": _sync(0.001 * n)} for n in sizes]},
        "nftables": {"mode": "nftables", "tool": "nft -f", "sizes": [
            {"services": n, "target": {}, "data_plane": _dp(0.015), "full_sync": _sync(0.0008 * n),
             "one_change": _sync(0.05)} for n in sizes]},
        "ipvs": {"mode": "ipvs", "not_measured": "testbed vm cannot run here: missing qemu"},
    }
    modes["iptables"]["sizes"][-1]["full_sync"] = bench.sync_summary([], "not run: projected 2781 s")
    build = {"sizes": [], "waited_s": 0.0}
    for n in (10, 1000):
        side = bench._build_side([(0.002 * n, 0.0005 * n), (0.0022 * n, 0.0006 * n)], n)
        ip = bench._build_side([(0.02 * n, 0.002 * n)], n)
        build["sizes"].append({"pods": n, "testbed": side, "ip": ip, "kernel_destroy_s": bench.spread([0.1]),
                               "ratio_up": ip["up_s"]["median"] / side["up_s"]["median"],
                               "ratio_down": ip["down_s"]["median"] / side["down_s"]["median"]})
    doc = {"schema": bench.SCHEMA, "started": 0.0, "machine": {"nproc": 2, "cpu": "test cpu", "kernel": "6.x", "memory_gib": 1,
                                                                 "python": "3.11", "tools": {}, "in_vm": False},
           "plan": bench.make_plan(_args()).to_json(), "modes": modes, "build": build, "published": bench.PUBLISHED,
           "seconds": 1.0, "run": "tbbenchtest", "left_behind": {"namespaces": []}}
    doc["summary"] = bench.summarize(doc)
    return doc


def test_summary_ratios_and_targets():
    doc = fake_doc()
    r = doc["summary"]["ratios"]
    assert r["data_plane_p50_growth"]["iptables"]["ratio"] == pytest.approx(math.sqrt(300))
    assert r["data_plane_p50_growth"]["nftables"]["ratio"] == pytest.approx(1.0)
    assert r["iptables_p50_1000_to_30000"] == pytest.approx(math.sqrt(30))
    assert r["full_sync_growth"]["iptables"] == {"from": 100, "to": 1000, "ratio": pytest.approx(10.0)}
    targets = {t["target"]: t for t in doc["summary"]["targets"]}
    assert all(set(t) == {"target", "met", "value"} for t in targets.values())
    by_start = {k.split(" (")[0]: v for k, v in targets.items()}
    assert by_start["data plane: iptables first-packet p50 grows"]["met"] is True
    assert by_start["data plane: nftables first-packet p50 flat"]["met"] is True
    assert by_start["data plane: ipvs first-packet p50 flat with Services"]["met"] is None
    assert "qemu" in by_start["data plane: ipvs first-packet p50 flat with Services"]["value"]
    assert any(k.startswith("data plane: nftables p99 < iptables p01 at 30,000") for k in targets)
    render = [t for k, t in targets.items() if k.startswith("sync: iptables full-sync rendering")]
    assert render and render[0]["met"] is True and "1,000 Services" in next(k for k in targets if k.startswith("sync: iptables"))
    nft_change = next(t for k, t in targets.items() if k.startswith("sync: nftables one-Service change"))
    assert nft_change["met"] is True
    up = next(t for k, t in targets.items() if k.startswith("build: 1,000 pods up"))
    assert up["met"] is True and up["value"] == "2.10 s"
    down = next(t for k, t in targets.items() if k.startswith("build: 1,000 pods down"))
    assert down["met"] is True
    per_pod = next(t for k, t in targets.items() if k.startswith("build: ≤ 3 ms per pod at 1,000"))
    assert per_pod["met"] is True


def test_json_shape_round_trips(tmp_path):
    doc = fake_doc()
    path = tmp_path / "out" / "bench.json"
    bench.write_json(doc, str(path))
    back = json.loads(path.read_text())
    assert set(back) >= {"schema", "machine", "plan", "modes", "build", "published", "summary", "seconds", "run", "left_behind"}
    ipt = back["modes"]["iptables"]["sizes"][0]
    assert set(ipt) >= {"services", "data_plane", "full_sync", "one_change"}
    assert set(ipt["data_plane"]) >= {"p01", "p50", "p99", "rounds", "connections", "failed", "unit"}
    assert set(ipt["data_plane"]["p50"]) == {"median", "min", "max", "n", "rel_spread"}
    assert set(ipt["full_sync"]) >= {"total_s", "render_s", "kernel_s", "render_share", "render_over_kernel", "samples"}
    assert back["modes"]["ipvs"]["not_measured"]
    assert set(back["build"]["sizes"][0]) >= {"pods", "testbed", "ip", "ratio_up", "ratio_down", "kernel_destroy_s"}
    assert set(back["build"]["sizes"][0]["testbed"]) == {"up_s", "down_s", "ms_per_pod", "pods_per_s"}


def test_report_prints_every_table():
    from rich.console import Console

    from testbed import bench_view

    buf = io.StringIO()
    bench_view.print_report(fake_doc(), Console(file=buf, width=200))
    out = buf.getvalue()
    for text in ("Data plane", "Control plane", "Lab build", "Targets", "not measured", "met",
                 "not run: projected 2781 s", "30,000", "[min–max]"):
        assert text in out


def test_plots_are_png(tmp_path):
    pytest.importorskip("matplotlib")
    from testbed import bench_view

    paths = bench_view.plot(fake_doc(), tmp_path)
    assert [p.name for p in paths] == list(bench_view.PLOTS)
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_programming_latency_rows_in_the_report():
    from testbed import bench_view

    doc = {"modes": {}, "summary": {"targets": []}, "programming": {
        "iptables": {"summary": [{"mode": "iptables", "change": "pod-ready", "n": 3, "missed": 1, "observed_p50_ms": 31.4,
                                  "observed_max_ms": 40.0, "rules_p50_ms": 120.2, "resolution_ms": 2.0}]},
        "ipvs": {"mode": "ipvs", "not_measured": "this kernel has no IPVS"}}}
    md = bench_view.markdown_tables(doc)
    assert "| iptables | pod-ready | 3 (1 not seen) | 31 | 40 | 120 | ±2 |" in md
    assert "| ipvs | not measured: this kernel has no IPVS |" in md
    assert bench_view.programming_table(doc).row_count == 2
