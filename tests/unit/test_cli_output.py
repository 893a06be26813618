"""What a user sees (issue 21): kubectl-style `get`, the compact matrix, progress, --help, --version.
No root: the cluster state comes from reconciling a topology file, as `render` does."""
import io
import json

import pytest
import yaml
from rich.console import Console

from testbed import cli, get_view, model
from testbed.cli_view import PlainView, columns, human_duration, print_matrix
from testbed.conformance import Cell, Matrix
from testbed.conformance_rows import TABLES
from testbed.control import reconcile

NOW = 1_700_000_000.0


def snapshot(name="default", **kw) -> get_view.Snapshot:
    cluster, _ = reconcile(model.load_file(str(model.builtin(name))))
    return get_view.Snapshot(cluster, created=NOW - 300, now=NOW, **kw)


def render(snap, kinds, output="table", namespaces=None, **kw) -> str:
    return get_view.render(snap, kinds, output, namespaces, **kw)[0]


# ----------------------------------------------------------------------------- columns


def test_columns_align_as_kubectl_and_never_cut():
    long = "a-service-with-a-very-long-name-that-goes-on-and-on"
    text = columns(["NAME", "IP"], [[long, "10.111.222.233"], ["x", "1.2.3.4"]])
    lines = text.splitlines()
    assert lines[0] == "NAME" + " " * (len(long) + 3 - 4) + "IP"
    assert lines[1] == f"{long}   10.111.222.233"  # three spaces of padding, kubectl's tabwriter
    assert lines[2].startswith("x ") and lines[2].endswith("1.2.3.4")
    assert columns(["A", "B"], [["1", "2"]], no_headers=True) == "1" + " " * 5 + "2\n"  # minimum width 6


@pytest.mark.parametrize("seconds, shown", [(0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"), (125, "2m5s"),
                                            (600, "10m"), (3 * 3600, "3h"), (3 * 3600 + 60, "3h1m"),
                                            (30 * 3600, "30h"), (50 * 3600, "2d2h"), (10 * 86400, "10d"),
                                            (800 * 86400, "2y70d")])
def test_age_is_kubectls_human_duration(seconds, shown):
    assert human_duration(seconds) == shown


# ----------------------------------------------------------------------------- get


def test_get_services_shows_every_cluster_ip_whole_within_80_columns():
    snap = snapshot()
    text = render(snap, ["services"], namespaces={"default"})
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    for info in snap.cluster.services:
        if info.service.namespace == "default":
            row = next(line.split() for line in lines if line.split()[0] == info.service.name)
            assert row[2] == info.cluster_ip and row[-1] == "5m"
    assert all(len(line) <= 80 for line in lines), text
    assert "30080" in text and "…" not in text


def test_get_pods_columns_wide_and_all_namespaces():
    snap = snapshot()
    plain = render(snap, ["pods"], namespaces={"default"}).splitlines()
    assert plain[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert all(len(line) <= 80 for line in plain)
    assert not any("coredns" in line for line in plain)  # kube-system is not the default namespace
    every = render(snap, ["pods"]).splitlines()
    assert every[0].startswith("NAMESPACE ") and any(line.startswith("kube-system ") for line in every)
    wide = render(snap, ["pods"], "wide", {"default"}).splitlines()
    assert wide[0].split()[5:7] == ["IP", "NODE"]
    client = next(p for p in snap.cluster.pods if p.name == "client")
    row = next(line.split() for line in wide if line.startswith("client "))
    assert row[:3] == ["client", "1/1", "Running"] and row[5:7] == [client.ip, client.node]
    probed = next(line.split() for line in plain if line.startswith("probed-"))
    assert probed[1:3] == ["0/1", "Running"]  # a readiness probe: unready until it passes


def test_pending_pods_show_as_pending(tmp_path):
    path = tmp_path / "pending.yaml"
    path.write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nowhere"},
         "spec": {"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}}]))
    cluster, _ = reconcile(model.load_file(str(path)))
    snap = get_view.Snapshot(cluster, created=NOW, now=NOW)
    row = next(line.split() for line in render(snap, ["pods"], namespaces={"default"}).splitlines()
               if line.startswith("nowhere"))
    assert row[1:3] == ["0/1", "Pending"]
    doc = json.loads(render(snap, ["pods"], "json", {"default"}))
    pending = next(i for i in doc["items"] if i["metadata"]["name"] == "nowhere")
    assert pending["status"]["phase"] == "Pending"
    assert pending["status"]["conditions"][0]["reason"] == "Unschedulable"


def test_nodes_rules_column_and_condition():
    snap = snapshot(out_of_date={"node-2": "failed at line 12 of the transaction"})
    lines = render(snap, ["nodes"]).splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "RULES"]
    assert lines[1].split()[-1] == "UpToDate" and lines[2].split()[-1] == "OutOfDate"
    wide = render(snap, ["nodes"], "wide").splitlines()
    assert wide[0].split()[-3:] == ["INTERNAL-IP", "POD-CIDR", "PODS"]
    doc = json.loads(render(snap, ["nodes"], "json"))
    cond = {i["metadata"]["name"]: next(c for c in i["status"]["conditions"] if c["type"] == "KubeProxyRulesUpToDate")
            for i in doc["items"]}
    assert cond["node-1"]["status"] == "True"
    assert cond["node-2"]["status"] == "False" and "line 12" in cond["node-2"]["message"]


def test_get_json_is_a_kubectl_list_of_whole_objects():
    snap = snapshot("service-types")
    doc = json.loads(render(snap, ["services"], "json", {"default"}))
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "List") and list(doc) == ["apiVersion", "items", "kind", "metadata"]
    lb = next(i for i in doc["items"] if i["metadata"]["name"] == "lb")
    assert (lb["apiVersion"], lb["kind"]) == ("v1", "Service")
    assert lb["metadata"]["namespace"] == "default" and lb["metadata"]["creationTimestamp"].endswith("Z")
    assert lb["spec"]["type"] == "LoadBalancer" and lb["spec"]["clusterIP"]
    assert lb["status"]["loadBalancer"]["ingress"][0]["ip"] == "172.18.0.200"
    pods = json.loads(render(snap, ["pods"], "json", {"default"}))["items"]
    web = next(p for p in pods if p["metadata"]["name"].startswith("web-"))
    assert web["status"]["podIP"] and web["status"]["hostIP"] and web["spec"]["nodeName"]
    assert web["status"]["containerStatuses"][0]["restartCount"] == 0
    assert web["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    slices = yaml.safe_load(render(snap, ["endpointslices"], "yaml", {"default"}))["items"]
    assert all(s["kind"] == "EndpointSlice" and s["apiVersion"] == "discovery.k8s.io/v1" for s in slices)
    eps = json.loads(render(snap, ["endpoints"], "json", {"default"}))["items"]
    nr = next(e for e in eps if e["metadata"]["name"] == "nr")
    assert "addresses" not in nr["subsets"][0] and nr["subsets"][0]["notReadyAddresses"]


def test_get_output_loads_back_into_a_lab(tmp_path):
    """`get all,endpointslices,nodes -A -o yaml` is a dump: replayed, the same addresses."""
    snap = snapshot()
    kinds = [*get_view.ALL, "endpointslices", "nodes"]
    path = tmp_path / "dump.yaml"
    path.write_text(render(snap, kinds, "yaml"))
    again, _ = reconcile(model.load_file(str(path)))
    assert {s.key: s.cluster_ip for s in again.services} == {s.key: s.cluster_ip for s in snap.cluster.services}
    assert {p.key: p.ip for p in again.pods} == {p.key: p.ip for p in snap.cluster.pods}
    assert {n.name: n.ip for n in again.nodes} == {n.name: n.ip for n in snap.cluster.nodes}


def test_get_all_names_and_headers():
    snap = snapshot()
    text = render(snap, list(get_view.ALL), namespaces={"default"})
    assert "pod/client " in text and "service/web " in text and "deployment.apps/web " in text
    assert "\n\nNAME " in text  # a blank line, then the next kind's header, as kubectl
    names = render(snap, ["pods", "services"], "name", {"default"}).split()
    assert "service/web" in names and all(n.startswith(("pod/", "service/")) for n in names)
    bare = render(snap, ["services"], namespaces={"default"}, no_headers=True)
    assert "CLUSTER-IP" not in bare and bare.split()[0] == "empty"
    one = json.loads(render(snap, ["services"], "json", {"default"}, only={"web"}))
    assert one["kind"] == "Service" and one["metadata"]["name"] == "web"


def test_endpoints_list_three_then_more_as_kubectl():
    snap = snapshot()
    row = next(line for line in render(snap, ["endpoints"], namespaces={"default"}).splitlines()
               if line.startswith("web "))
    assert row.count(":9376") == 3 and "+ 1 more..." in row
    wide = next(line for line in render(snap, ["endpoints"], "wide", {"default"}).splitlines()
                if line.startswith("web "))
    assert wide.count(":9376") == 4


def test_kinds_and_short_names():
    assert get_view.kind_of("svc") == "services" and get_view.kind_of("po") == "pods"
    assert get_view.kind_of("deploy") == "deployments" and get_view.kind_of("ep") == "endpoints"
    with pytest.raises(Exception, match="unknown kind 'servces'"):
        get_view.kind_of("servces")


# ----------------------------------------------------------------------------- the matrix


def matrix() -> Matrix:
    m = Matrix(["iptables", "nftables", "ipvs", "userspace"])
    for row in TABLES["default.yaml"]:
        for mode in m.modes:
            cell = Cell("pass", "DNAT 10.96.0.1:80 → 10.244.0.2:9376; source seen 10.244.0.5 (preserved); "
                                "300 over 4 backends, p=0.533")
            if mode == "ipvs":
                cell = Cell("skip", "this kernel has no IPVS (CONFIG_IP_VS): run in `testbed vm`")
            elif mode in row.skip:
                cell = Cell("skip", row.skip[mode])
            if mode == "nftables" and row.short == "ClusterIP UDP from a pod":
                cell = Cell("fail", "expected answered, got dropped (backend -, saw - → -)")
            m.put(row.behaviour, mode, cell, row.short)
    return m


def shown(m: Matrix, verbose=False) -> str:
    out = Console(file=io.StringIO(), width=80)
    print_matrix(m, out, verbose)
    return out.file.getvalue()


def test_matrix_fits_80_columns_with_evidence_only_for_what_did_not_pass():
    m = matrix()
    text = shown(m)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    rows = len(TABLES["default.yaml"])
    assert len(lines) < rows + 14, text  # a mark per cell, not a paragraph; a shared skip reason said once
    schedulers = [i for i, r in enumerate(TABLES["default.yaml"], 1) if r.check == "scheduler"]
    assert f"iptables: rows {schedulers[0]}–{schedulers[-1]} skipped: IPVS mode's schedulers" in text
    assert text.count("IPVS mode's schedulers") == 3  # once per mode that skips them
    assert all(len(r.short) <= 28 for t in TABLES.values() for r in t)
    row = next(line for line in lines if "ClusterIP UDP from a pod" in line and "FAIL" in line)
    assert row.split()[-4:] == ["pass", "FAIL", "skip", "pass"]
    assert text.count("this kernel has no IPVS") == 1  # a whole column skipped: said once
    assert "expected answered, got dropped" in text
    assert "ClusterIP UDP from a pod: DNAT to a backend" in text  # the full behaviour with the evidence
    assert "p=0.533" not in text
    every = shown(m, verbose=True)
    statics = sum(len(r.skip.keys() - {"ipvs"}) for r in TABLES["default.yaml"])
    assert every.count("p=0.533") == 3 * rows - 1 - statics  # every passed cell
    assert all(len(line) <= 80 for line in every.splitlines())


def test_matrix_json_keeps_full_evidence_and_short_names():
    m = matrix()
    m.put("x", "iptables", Cell("pass", "ok", {"p_value": 0.5, "timeline": [[0.0, "answered"]]}))
    data = m.to_json()
    row = data["rows"][0]
    assert row["short"] == "ClusterIP TCP from a pod" and "source preserved" in row["behaviour"]
    assert "p=0.533" in row["results"]["iptables"]["reason"]
    back = Matrix.from_json(json.loads(json.dumps(data)))
    assert back.shorts == m.shorts and back.rows["x"]["iptables"].data["p_value"] == 0.5
    assert "**pass** DNAT" in m.to_markdown()


# ----------------------------------------------------------------------------- progress, help, version


def test_plain_progress_is_one_line_per_step():
    out = io.StringIO()
    view = PlainView(out, lambda topo, console: None)
    view("step", {"what": "pods", "total": 300, "mode": "iptables"})
    for i in range(300):
        view("advance", {"what": f"pod default/p{i}", "mode": "iptables"})
    view("check", {"behaviour": "ClusterIP TCP from a pod: DNAT…", "short": "ClusterIP TCP from a pod",
                   "mode": "nftables", "n": 2, "total": 12})
    view("guest", {"what": "ipvs: 3/12 NodePort via node-1"})  # verify inside `testbed vm`, relayed
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\x1b" not in out.getvalue()
    assert lines[2].endswith("[testbed vm] ipvs: 3/12 NodePort via node-1")
    assert lines[0].endswith("iptables: pods (300)")
    assert lines[1].endswith("nftables: 2/12 ClusterIP TCP from a pod")


def test_every_command_help_has_an_example(capsys):
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in commands:
        with pytest.raises(SystemExit):
            cli.main([name, "--help"])
        text = capsys.readouterr().out
        assert "examples:\n  testbed " in text, name
        assert name in cli.EXAMPLES


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("testbed ")


def test_rich_progress_keeps_one_bar_for_the_step_and_one_for_the_checks():
    from rich.progress import Progress

    from testbed.cli_view import RichView

    out = Console(file=io.StringIO(), force_terminal=True, width=80)
    with Progress(console=out, transient=True) as p:
        view = RichView(p, lambda topo, console: None)
        for mode in ("iptables", "nftables"):
            for step in ("fabric", "pods", "rules"):
                view("step", {"what": step, "total": 2, "mode": mode})
                view("advance", {"what": f"{step} [1]", "mode": mode})
                assert len(p.tasks) <= 2
            for n in (1, 2, 3):
                view("check", {"behaviour": "b", "short": f"row [x{n}]", "mode": mode, "n": n, "total": 3})
                assert len(p.tasks) == 1
                assert p.tasks[0].description == f"{mode}: row \\[x{n}]"  # escaped: not rich markup


def test_the_vm_guests_progress_lines_are_relayed(monkeypatch):
    from testbed import verify

    seen = []
    sink = verify.guest_stderr(lambda event, info: seen.append((event, info["what"])))
    sink.write(b"[   0.1s] ipvs: fabric (3)\n behaviour \xc3\x97 proxy mode\n[  12.0s] ipvs: 3/12 NodePort")
    sink.write(b" via node-1\n")
    assert seen == [("guest", "ipvs: fabric (3)"), ("guest", "ipvs: 3/12 NodePort via node-1")]
    assert sink.lines[1].strip() == "behaviour × proxy mode"  # kept for the error message
    monkeypatch.setenv("TESTBED_IN_VM", "1")  # the guest's stderr is a serial tty: plain lines there
    from testbed.cli_view import progress
    with progress(Console(file=io.StringIO(), force_terminal=True), lambda t, c: None) as view:
        assert isinstance(view, PlainView)
