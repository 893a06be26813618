"""`testbed diff` against node dumps made live: testbed's rendered rules installed in a throwaway
namespace (beside a CNI's, kubelet's and Docker's chains) and read back with the node's tools.

- Every shipped topology, in every format: a node whose kube-proxy installed exactly the rendered
  rules is the same (exit 0). This is what proves the readers' normal forms: whatever the kernel
  and the tools do to the rules on the way back, nothing reads as a difference.
- The committed fixtures (tests/fixtures/rules) are what these tools print: a dump made now gives
  the same report as the fixture it stands for.
- IPVS needs a kernel with IPVS (`testbed vm`, the Vagrant VM); elsewhere those tests skip.
"""
import shutil
from pathlib import Path

import pytest

from testbed import diff, model
from testbed.control import reconcile
from tests.fixtures.rules import make_dumps as dumps

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not (shutil.which("nft") and shutil.which("iptables-nft-save")
                            and shutil.which("iptables-legacy-save")),
                       reason="needs nft and both iptables backends (Debian's nftables and iptables packages)"),
]

ROOT = Path(__file__).resolve().parent.parent.parent
TOPOLOGIES = sorted((ROOT / "topologies").glob("*.yaml"))
FORMATS = {
    "iptables-nft": lambda t, n: dumps.iptables_dump(t, "nft", node=n),
    "iptables-legacy": lambda t, n: dumps.iptables_dump(t, "legacy", node=n),
    "nft-text": lambda t, n: dumps.nft_dump(t, node=n),
    "nft-json": lambda t, n: dumps.nft_dump(t, as_json=True, node=n),
}


def _first_node(topology: Path) -> str:
    cluster, _ = reconcile(model.load_file(topology))
    return cluster.nodes[0].name


def _diff(topology, node, texts, tmp_path):
    paths = []
    for i, text in enumerate(texts):
        p = tmp_path / f"dump-{i}"
        p.write_text(text)
        paths.append(str(p))
    return diff.run(str(topology), node, paths)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("topology", TOPOLOGIES, ids=[t.stem for t in TOPOLOGIES])
def test_installed_rules_read_back_as_the_same(topology, fmt, tmp_path):
    node = _first_node(topology)
    report = _diff(topology, node, [FORMATS[fmt](topology, node)], tmp_path)
    wrong = [g for g in report.groups if g.status != "same"]
    assert not wrong, diff.format_text(report, verbose=True)
    assert len(report.groups) > 2 and report.exit_code == 0


def _comparable(report):
    out = report.to_json()
    out.pop("rules")
    return out


@pytest.mark.parametrize("name", dumps.FILES)
def test_the_committed_fixtures_are_what_the_tools_print(name, tmp_path):
    topology = dumps.NOW if "behind" not in name else dumps.BEFORE
    live = _diff(dumps.NOW, dumps.NODE, [dumps.FILES[name]()], tmp_path)
    committed = diff.run(str(dumps.NOW), dumps.NODE, [str(dumps.HERE / name)])
    assert _comparable(live) == _comparable(committed)
    assert live.exit_code == (1 if topology == dumps.BEFORE else 0)


@pytest.mark.kernel_feature("ipvs")
def test_ipvs_dumps_read_back(tmp_path):
    vs, sets, glue = dumps.ipvs_dumps(dumps.NOW)
    report = _diff(dumps.NOW, dumps.NODE, [vs + sets, glue], tmp_path)
    assert report.exit_code == 0, diff.format_text(report, verbose=True)
    vs, sets, _ = dumps.ipvs_dumps(dumps.BEFORE)
    report = _diff(dumps.NOW, dumps.NODE, [vs, sets], tmp_path)
    web = next(g for g in report.groups if g.service == "default/web:http")
    assert web.status == "different"
    assert web.facets["endpoints"][1] == ("10.244.1.5:8080", "10.244.2.6:8080", "10.244.2.9:8080")
    assert [g.status for g in report.groups].count("missing") == 1
