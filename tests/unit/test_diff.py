"""`testbed diff` on real node dumps (tests/fixtures/rules, made by installing testbed's rules in
a throwaway namespace and reading them back with iptables-save, nft, ipvsadm-save and ipset;
see the README there): identical nodes, a node that fell behind, a CNI's chains, bad input."""
import json
from pathlib import Path

import pytest

from testbed import cli, diff, errors
from testbed.noderules import nft, nft_json

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "rules"
NOW, BEFORE = str(FIX / "now.yaml"), str(FIX / "before.yaml")

IDENTICAL = {
    "iptables-nft": ["iptables-nft.save"],
    "iptables-legacy": ["iptables-legacy.save"],
    "nft-text": ["nft-ruleset.txt"],
    "nft-json": ["nft-ruleset.json"],
    "ipvs-one-file": ["ipvs-now.txt"],
    "ipvs-with-iptables": ["ipvs-now.txt", "ipvs-now-iptables.save"],
}
BEHIND = {
    "iptables": ["iptables-behind.save"],
    "nft-text": ["nft-behind.txt"],
    "nft-json": ["nft-behind.json"],
    "ipvs-two-files": ["ipvs-behind.ipvsadm", "ipvs-behind.ipset"],
}
PORTS = {"default/shop:http", "default/web:http", "kube-system/kube-dns:dns", "kube-system/kube-dns:dns-tcp"}


def _run(files, topology=NOW, **kw):
    return diff.run(topology, "node-1", [str(FIX / f) for f in files], **kw)


def _groups(report):
    return {g.service or g.label: g for g in report.groups}


@pytest.mark.parametrize("files", IDENTICAL.values(), ids=IDENTICAL.keys())
def test_a_node_that_kept_up_is_the_same(files):
    report = _run(files)
    assert {g.status for g in report.groups} == {"same"}
    assert {g.service for g in report.groups} == PORTS | {None}  # None: kube-proxy's own rules
    assert report.exit_code == 0


@pytest.mark.parametrize("files", BEHIND.values(), ids=BEHIND.keys())
def test_a_node_that_fell_behind(files):
    report = _run(files)
    groups = _groups(report)
    assert groups["default/shop:http"].status == "missing"  # added since
    assert groups["default/shop:http"].facets["endpoints"][0] == ("10.244.1.6:8080", "10.244.2.8:8080")
    # deleted since: its stale chains (or, in IPVS mode, its virtual servers) are extra
    extra = [g for g in report.groups if g.status == "extra"]
    assert len(extra) == 1 and extra[0].facets["endpoints"][1] == ("10.244.2.11:8080",)
    if report.mode != "ipvs":
        assert extra[0].service == "default/legacy"
    else:  # IPVS names nothing: the virtual servers are told by their addresses
        assert extra[0].service is None and "10.96.0.40:80/TCP" in extra[0].label
    web = groups["default/web:http"]
    assert web.status == "different"
    expected, node = web.facets["endpoints"]
    assert expected == ("10.244.1.5:8080", "10.244.2.7:8080")
    assert node == ("10.244.1.5:8080", "10.244.2.6:8080", "10.244.2.9:8080")
    assert groups["kube-system/kube-dns:dns"].status == "same"
    assert report.exit_code == 1


def test_counters_and_handles_are_not_rules(tmp_path):
    """`iptables-save -c` puts [packets:bytes] before every rule; `nft -a` adds `# handle N`."""
    counted = tmp_path / "counted.save"
    counted.write_text("".join(f"[7:420] {line}\n" if line.startswith("-A ") else line + "\n"
                               for line in (FIX / "iptables-legacy.save").read_text().splitlines()))
    handles = tmp_path / "handles.txt"

    def is_rule_or_opener(line):  # where `nft -a` puts a handle: tables, chains, sets, rules
        body = line.strip()
        return line.endswith("{") or (line.startswith("\t\t") and not line.startswith("\t\t\t")
                                      and not body.startswith(("type ", "comment ", "elements ", "flags ", "size ")))

    handles.write_text("".join(f"{line} # handle {n}\n" if is_rule_or_opener(line) else line + "\n"
                               for n, line in enumerate((FIX / "nft-ruleset.txt").read_text().splitlines())))
    for path in (counted, handles):
        assert diff.run(NOW, "node-1", [str(path)]).exit_code == 0


def test_probabilities_follow_the_endpoints():
    web = _groups(_run(BEHIND["iptables"]))["default/web:http"]
    assert web.facets["probabilities"] == (("0.5000000000", "rest"), ("0.3333333333", "0.5000000000", "rest"))
    web = _groups(_run(BEHIND["nft-text"]))["default/web:http"]
    assert web.facets["probabilities"] == (("1/2", "1/2"), ("1/3", "1/3", "1/3"))


def test_cni_docker_and_kubelet_chains_are_not_kube_proxys_and_no_difference():
    report = _run(IDENTICAL["iptables-nft"])
    assert report.exit_code == 0
    theirs = {f.what: f for f in report.foreign}
    assert theirs["nat FLANNEL-POSTRTG"].owner == "flannel" and theirs["nat FLANNEL-POSTRTG"].count == 5
    assert theirs["filter FLANNEL-FWD"].owner == "flannel"
    assert theirs["nat CNI-HOSTPORT-MASQ"].owner == "CNI plugins"
    assert theirs["nat KUBE-KUBELET-CANARY"].owner == "kubelet"
    assert theirs["nat POSTROUTING"].count == 2  # flannel's and portmap's jumps, beside kube-proxy's
    assert any("KUBE-PROXY-CANARY" in n for n in report.notes)
    text = diff.format_text(report)
    assert "not kube-proxy's (not compared, not a difference):" in text and "FLANNEL-POSTRTG" in text


def test_other_nft_tables_are_set_aside():
    report = _run(IDENTICAL["nft-text"])
    assert report.exit_code == 0
    tables = {f.what: f for f in report.foreign}
    assert set(tables) == {"table ip nat", "table ip filter", "table ip mangle"}
    assert "flannel" in tables["table ip nat"].owner


def test_a_stale_endpoint_chain_without_comments_is_found_by_its_hash(tmp_path):
    """Large-cluster mode writes KUBE-SEP rules without comments: the chain is still web's,
    because its name is the hash of web's port and the endpoint it DNATs to."""
    text = (FIX / "iptables-behind.save").read_text()
    stripped = "\n".join(line.replace(' -m comment --comment default/web:http', "")
                         if line.startswith("-A KUBE-SEP-") else line for line in text.splitlines()) + "\n"
    assert "-m comment --comment default/web:http -j" not in stripped
    (tmp_path / "node.save").write_text(stripped)
    report = diff.run(NOW, "node-1", [str(tmp_path / "node.save")])
    web = _groups(report)["default/web:http"]
    assert web.status == "different"
    assert "10.244.2.9:8080" in web.facets["endpoints"][1]
    assert not [g for g in report.groups if g.service is None and g.label.startswith("(no Service)")]


def test_a_changed_mark_is_a_difference_of_kube_proxys_own_rules(tmp_path):
    node = tmp_path / "node.save"
    node.write_text((FIX / "iptables-nft.save").read_text().replace("0x4000", "0x8000"))
    report = diff.run(NOW, "node-1", [str(node)])
    own = next(g for g in report.groups if g.owner == "")
    assert own.status == "different"
    expected, have = own.facets["marks"]
    assert "0x4000/0x4000" in expected and "0x8000/0x8000" in have


def test_session_affinity_the_node_does_not_have(tmp_path):
    topo = tmp_path / "now.yaml"
    topo.write_text(Path(NOW).read_text().replace("  clusterIP: 10.96.0.20\n",
                                                  "  clusterIP: 10.96.0.20\n  sessionAffinity: ClientIP\n"))
    for files in (IDENTICAL["iptables-nft"], IDENTICAL["nft-json"], IDENTICAL["ipvs-one-file"]):
        web = _groups(diff.run(str(topo), "node-1", [str(FIX / f) for f in files]))["default/web:http"]
        assert web.status == "different"
        assert web.facets["affinity"] == (("ClientIP 10800s",), ())


def test_json_output_and_exit_status(capsys):
    rc = cli.main(["diff", NOW, "--node", "node-1", "--rules", str(FIX / "nft-behind.json"), "-o", "json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["exit_code"] == 1
    assert out["summary"] == {"missing": 1, "extra": 1, "different": 1, "same": 3}
    web = next(s for s in out["services"] if s["service"] == "default/web:http")
    assert web["facets"]["endpoints"]["node"] == ["10.244.1.5:8080", "10.244.2.6:8080", "10.244.2.9:8080"]
    assert cli.main(["diff", NOW, "--node", "node-1", "--rules", str(FIX / "nft-ruleset.json")]) == 0


@pytest.mark.parametrize("files", [*IDENTICAL.values(), *BEHIND.values()])
def test_text_output_fits_80_columns(files, capsys):
    argv = ["diff", NOW, "--node", "node-1", "-v"]
    for f in files:
        argv += ["--rules", str(FIX / f)]
    cli.main(argv)
    out = capsys.readouterr().out
    assert out.startswith("node node-1, ")
    assert max(len(line) for line in out.splitlines()) <= 80


def test_the_behind_report_reads_well(capsys):
    cli.main(["diff", NOW, "--node", "node-1", "--rules", str(FIX / "iptables-behind.save")])
    out = capsys.readouterr().out
    assert "node node-1, iptables mode: 1 missing, 1 extra, 1 different, 3 same" in out
    assert "missing    default/shop:http" in out and "extra      default/legacy" in out
    assert "different  default/web:http" in out
    assert "node     10.244.1.5:8080, 10.244.2.6:8080, 10.244.2.9:8080" in out


BAD = {
    "not-rules": ("hello world\n", "line 1: not iptables-save, nft list ruleset"),
    "empty": ("\n\n", "empty: expected iptables-save"),
    "a-topology": (Path(NOW).read_text(), "line 3: not iptables-save"),
    "bad-iptables-line": ("*nat\n:KUBE-SERVICES - [0:0]\nbogus line\nCOMMIT\n", "line 3: expected a rule"),
    "rule-before-table": ("# x\n-A KUBE-SERVICES -j ACCEPT\n", "line 2: an iptables rule or chain before any `*table`"),
    "unbalanced-quote": ('*nat\n-A X -m comment --comment "open\nCOMMIT\n', "line 2: No closing quotation"),
    "truncated-nft": ("table ip kube-proxy {\n\tchain services {\n\t\tjump x\n",
                      "line 1: `table ip kube-proxy {` is never closed"),
    "truncated-json": ('{"nftables": [{"table": {"family": "ip", "name": "kube-proxy"', "not valid JSON"),
    "json-no-list": ('{"nftables": 3}', 'expected `nft -j list ruleset` output'),
    "ipvsadm-names": ("-A -t kubernetes.default:https -s rr\n", "expected a numeric IP:PORT (output of `ipvsadm-save -n`)"),
    "ipset-orphan": ("add KUBE-CLUSTER-IP 10.96.0.1,tcp:443\n", "entry of set KUBE-CLUSTER-IP, which has no `create`"),
}


@pytest.mark.parametrize("text,message", BAD.values(), ids=BAD.keys())
def test_bad_input_is_a_clear_error_and_exit_2(text, message, tmp_path, capsys):
    path = tmp_path / "node.rules"
    path.write_text(text)
    rc = cli.main(["diff", NOW, "--node", "node-1", "--rules", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    assert f"{path}: " in err and message in err.replace("\n", " ")


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    ipt = str(FIX / "iptables-nft.save")
    cases = [
        (["--rules", str(tmp_path / "missing.save")], "cannot read: No such file or directory"),
        (["--rules", ipt, "--mode", "nftables"], "holds iptables mode's rules; nftables mode's are read from"),
        (["--rules", ipt, "--rules", str(FIX / "nft-ruleset.txt")], "an nftables ruleset together with"),
        (["--rules", str(FIX / "ipvs-now-iptables.save")], "IPVS mode's iptables rules (chain KUBE-IPVS-FILTER)"),
    ]
    for extra, message in cases:
        assert cli.main(["diff", NOW, "--node", "node-1", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err.replace("\n", " ") and "Traceback" not in err
    assert cli.main(["diff", NOW, "--node", "node-9", "--rules", ipt]) == 2
    assert "no node named 'node-9' (nodes: node-1, node-2)" in capsys.readouterr().err


def test_ipvs_parts_not_given_are_not_compared():
    report = _run(["ipvs-behind.ipvsadm"])
    assert any(n.startswith("ipsets (no `ipset save` output given)") for n in report.notes)
    assert not any(place.startswith("ipset ") for g in report.groups for place, _ in g.only_expected)
    assert _groups(report)["default/web:http"].status == "different"


# --- the readers' normal forms --------------------------------------------------------------------

@pytest.mark.parametrize("written,listed", [
    ("mark set mark or 0x00004000", "meta mark set meta mark | 0x00004000"),
    ("mark and 0x00004000 == 0 return", "meta mark & 0x00004000 == 0x00000000 return"),
    ("ip daddr { 10.96.0.0/12 } drop", "ip daddr 10.96.0.0/12 drop"),
    ("ip saddr != { 198.51.100.0/24 , 172.18.0.100/32 } drop", "ip saddr != { 172.18.0.100, 198.51.100.0/24 } drop"),
    ("numgen random mod 2 vmap { 0 : goto a , 1 : goto b }", "numgen random mod 2 vmap { 0 : goto a, 1 : goto b }"),
    ("ip daddr @cluster-ips reject", "ip daddr @cluster-ips counter packets 3 bytes 180 reject with icmp port-unreachable"),
])
def test_nft_canonical_form_of_written_and_listed_rules(written, listed):
    assert nft.canonical(written) == nft.canonical(listed)


def test_nft_listing_priorities_and_timeouts():
    text = """table ip t {
	set s {
		type ipv4_addr
		size 65535
		flags dynamic,timeout
		timeout 3h
	}

	chain c {
		type filter hook prerouting priority dstnat - 10; policy accept;
		ip saddr @s accept # handle 4
	}
}
"""
    table = nft.parse_listing(text).tables["ip t"]
    assert table.chains["c"].hook == ("filter", "prerouting", -110, "accept")
    assert table.chains["c"].rules == ["ip saddr @s accept"]
    assert table.sets["s"].spec == ("ipv4_addr", ("timeout",), 10800, None)


def test_nft_json_rules_print_as_the_listing_does():
    rule = [{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 16384]}, "right": 0}}, {"return": None}]
    assert nft_json.rule_text(rule) == nft.canonical("meta mark & 0x00004000 == 0x00000000 return")
    dnat = [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
            {"dnat": {"addr": "10.244.1.5", "port": 8080}}]
    assert nft_json.rule_text(dnat) == "meta l4proto tcp dnat to 10.244.1.5:8080"


def test_topology_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 99999}]}\n")
    with pytest.raises(errors.TestbedError, match="bad.yaml"):
        diff.run(str(bad), "node-1", [str(FIX / "iptables-nft.save")])
