"""The repro catalogue without root: every reproduction's documents load in both variants and differ,
verdicts, a user's files adopted or refused with the reason, and what `list`, `show` and the verdict
table print (80 columns)."""
import copy
import io
import json
import subprocess
import sys

import pytest
import yaml
from rich.console import Console

from testbed import model, modes, repro
from testbed import errors
from testbed.repro import catalogue as cat
from testbed.repro import runner
from testbed.repro_view import print_list, print_results, print_show
from tests.realworld import real_world

REPROS = repro.all_repros()


def _parse(docs):
    return model.parse_documents(docs, "<repro>")


@pytest.mark.parametrize("r", REPROS, ids=[r.name for r in REPROS])
def test_both_variants_load_and_differ(r):
    bug, fix = r.variant_documents(cat.BUG), r.variant_documents(cat.FIX)
    assert bug != fix, "the bug's run and the fix's run must differ"
    def has_target(docs):
        return any(s.labels and dict(s.labels).get(cat.TARGET) == "target" for s in _parse(docs).services)
    # A reproduction whose trigger applies the target later (udp-before-the-service) shows it in documents();
    # one whose trigger is no Service's (cve-2020-8558-localnet: the node's 127.0.0.1) has no Service at all.
    serviceless = not _parse(r.documents()).services
    for docs in (bug, fix):
        assert has_target(docs) or has_target(r.documents()) or serviceless or r.name.startswith("nft-"), \
            "a target Service"
    assert r.documents() == r.documents(), "documents() is pure"
    assert r.variant_documents(cat.BUG) == bug, "a variant never changes the built-in documents"


@pytest.mark.parametrize("r", REPROS, ids=[r.name for r in REPROS])
def test_catalogue_entry_is_complete(r):
    assert r.name and r.title and r.upstream and r.mechanism and r.triggered and r.measured and r.fix
    assert set(r.modes) <= set(modes.NAMES) and r.modes
    assert set(r.not_in) <= set(modes.NAMES) and not set(r.not_in) & set(r.modes)
    for m in modes.NAMES:  # every mode is either run or says why not
        assert (r.applies(m) is None) == (m in r.modes)
    assert bool(r.adopt) == bool(r.with_files)


def test_names_are_unique_and_found():
    names = [r.name for r in REPROS]
    assert len(names) == len(set(names))
    assert repro.by_name(names[0]).name == names[0]
    with pytest.raises(errors.TestbedError, match="no reproduction named 'nope'.*repro list"):
        repro.by_name("nope")


M = cat.Measurement


@pytest.mark.parametrize("bug,fix,want", [
    (M(True, "x"), M(False, "y"), cat.REPRODUCED),
    (M(False, "x"), M(False, "y"), cat.NOT_REPRODUCED),
    (M(True, "x"), M(True, "y"), cat.FIX_FAILS),
    (None, M(False, "y"), cat.ERROR),
])
def test_verdict(bug, fix, want):
    assert cat.verdict(bug, fix) == want


def test_expected_follows_absent_and_modes():
    r = repro.by_name("dead-backend-no-probe")
    assert r.expected("iptables", "6.18.0") == cat.REPRODUCED
    assert r.expected("userspace", "6.18.0") == cat.NOT_REPRODUCED  # the proxy retries
    s = repro.by_name("stale-udp-clusterip")
    assert s.expected("userspace", "6.18.0") == cat.SKIPPED


def test_adopt_picks_the_users_udp_service(tmp_path):
    path = real_world("guestbook.yaml")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    r = repro.by_name("dead-backend-no-probe")
    adopted = runner.adopt(r, str(path))
    targets = [d for d in adopted if d.get("kind") == "Service" and
               (d["metadata"].get("labels") or {}).get(cat.TARGET) == "target"]
    assert len(targets) == 1 and targets[0]["metadata"]["name"] in {d["metadata"]["name"] for d in docs
                                                                    if d.get("kind") == "Service"}
    assert sum(d.get("kind") == "Lab" for d in adopted) == 1
    assert any(d.get("kind") == "Pod" and d["metadata"]["name"] == cat.CLIENT for d in adopted)
    for variant in cat.VARIANTS:  # both runs load from the user's documents
        topo = _parse(r.variant_documents(variant, adopted))
        assert any(dict(s.labels).get(cat.TARGET) == "target" for s in topo.services)


def test_adopt_refuses_a_file_without_what_the_bug_needs(tmp_path):
    f = tmp_path / "tcp-only.yaml"
    f.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                 "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
    with pytest.raises(errors.TopologyError, match="expected a UDP Service with a selector"):
        runner.adopt(repro.by_name("stale-udp-clusterip"), str(f))
    with pytest.raises(errors.TestbedError, match="cannot take a user's files"):
        runner.adopt(repro.by_name("nft-etp-local-lb-from-node"), str(f))


def test_adopt_of_a_bad_file_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: Web_Bad}\nspec: {ports: [{port: 80}]}\n")
    with pytest.raises(errors.TopologyError) as e:
        runner.adopt(repro.by_name("stale-udp-clusterip"), str(f))
    assert str(f) in str(e.value)


def _console():
    buf = io.StringIO()
    return Console(file=buf, width=80, force_terminal=False, color_system=None), buf


def test_list_and_show_fit_80_columns():
    out, buf = _console()
    print_list(REPROS, out, "table")
    for r in REPROS:
        print_show(r, out)
    text = buf.getvalue()
    assert all(r.name in text for r in REPROS)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80


def test_list_as_json_and_names():
    out, buf = _console()
    print_list(REPROS, out, "json")
    data = json.loads(buf.getvalue())
    assert [d["name"] for d in data] == [r.name for r in REPROS] and all(d["upstream"] for d in data)


def test_verdict_table_fits_80_columns_and_says_what_was_expected():
    r = repro.by_name("dead-backend-no-probe")
    res = runner.Result(r, {
        "iptables": runner.ModeResult("iptables", cat.REPRODUCED, "", M(True, "26/50 new connections failed " * 3),
                                      M(False, "0/50 new connections failed"), 6.4),
        "userspace": runner.ModeResult("userspace", cat.REPRODUCED, "", M(True, "3/50"), M(False, "0/50"), 7.0),
    })
    out, buf = _console()
    good = print_results([res], out)
    text = buf.getvalue()
    assert not good, "userspace is expected not to reproduce (the proxy retries)"
    assert "reproduced!" in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert "26/50 new connections failed" in text
    md = runner.to_markdown([res])
    assert md.count("| dead-backend-no-probe |") == 2
    back = runner.ModeResult.from_json("iptables", res.modes["iptables"].to_json())
    assert back.verdict == cat.REPRODUCED and back.bug.summary.startswith("26/50")


def test_a_guest_cell_says_where_it_ran_not_why():
    r = repro.by_name("udp-before-the-service")
    cell = runner.ModeResult("ipvs", cat.REPRODUCED, "", M(True, "5/5 lost"), M(False, "0/5 lost"), 38.0,
                             where="testbed vm, kernel 6.1.0-57-cloud-amd64")
    out, buf = _console()
    assert print_results([runner.Result(r, {"ipvs": cell})], out)
    text = buf.getvalue()
    assert "ipvs: reproduced (38 s, in testbed vm, kernel 6.1.0-57-cloud-amd64)" in text and "why:" not in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert runner.ModeResult.from_json("ipvs", cell.to_json()).where == cell.where
    assert "reproduced (in testbed vm, kernel 6.1.0-57-cloud-amd64)" in runner.to_markdown([runner.Result(r, {"ipvs": cell})])


def test_cli_list_show_and_run_without_root_or_names():
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "testbed.cli", "repro", *args], capture_output=True, text=True,
                              env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
    listed = cli("list", "-o", "name")
    assert listed.returncode == 0 and listed.stdout.split() == [r.name for r in REPROS]
    shown = cli("show", "stale-udp-clusterip")
    assert shown.returncode == 0 and "conntrackCleanup: false" in shown.stdout and "kind: Lab" in shown.stdout
    unknown = cli("show", "nope")
    assert unknown.returncode == 2 and "no reproduction named 'nope'" in unknown.stderr and "Traceback" not in unknown.stderr
    neither = cli("run")
    assert neither.returncode == 2 and "--all" in neither.stderr
    both = cli("run", "stale-udp-clusterip", "--with", "/nonexistent.yaml")
    assert both.returncode == 2 and "/nonexistent.yaml" in both.stderr and "Traceback" not in both.stderr


def test_labels_with_brackets_are_printed_as_written():
    r = repro.by_name("invalid-conntrack-reset")
    cell = runner.ModeResult("iptables", cat.REPRODUCED, "", M(True, "reset"), M(False, "answered"), 2.0)
    out, buf = _console()
    print_results([runner.Result(r, {"iptables": cell})], out)
    assert "bug (spec.kubeProxy.unfixed: [invalid-drop]): reset" in buf.getvalue()


def test_the_probe_fix_reaches_every_pod_behind_the_target_and_nothing_else():
    from testbed.repro.cases import dead_backend_no_probe as dead
    from testbed.repro import objects as o

    docs = dead.documents() + [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "web-ds"},
         "spec": {"selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 9376}]}]}}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-bare", "labels": {"app": "web"}},
         "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]}},
    ]
    fixed = dead._with_probe(copy.deepcopy(docs))
    probes = {d["metadata"]["name"]: [c.get("readinessProbe") for c in
                                      ((d["spec"].get("template") or {}).get("spec") or d["spec"]).get("containers", [])]
              for d in fixed if d.get("kind") in ("Deployment", "DaemonSet", "Pod")}
    assert probes["web"][0]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert probes["web-ds"][0]["httpGet"]["port"] == "http"
    assert probes["web-bare"][0] == {**o.FAST_READINESS, "httpGet": {"path": "/readyz", "port": 8080}}
    assert probes[cat.CLIENT] == [None]  # the client is not behind the target
    _parse(fixed)  # what the fixed run loads
