"""The HTML report (`testbed verify --html`, `testbed report`) and the lab graph (`testbed graph`).
The page is checked as a browser shows it: Debian's headless Chromium (installed by ./bootstrap)
loads it, its DOM is read back, and a screenshot is made."""
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from testbed import cli, graph, model, report
from testbed.conformance import Cell, Matrix
from testbed.control import reconcile

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]


def matrix_json() -> dict:
    m = Matrix(["iptables", "nftables"])
    m.put("(lab built)", "iptables", Cell("pass", "2 nodes, 9 pods"), "lab built")
    m.put("(lab built)", "nftables", Cell("pass", "2 nodes, 9 pods"), "lab built")
    m.put("ClusterIP TCP from a pod: DNAT to a backend, source preserved", "iptables",
          Cell("pass", "DNAT 10.96.0.20:80 → 10.244.0.4:9376; p=0.533",
               {"dialled": "10.96.0.20:80", "dnat": "10.244.0.4:9376", "backend": "web-a",
                "source_seen": "10.244.0.2:40000", "p_value": 0.533, "counts": {"web-a": 140, "web-b": 160}}),
          "ClusterIP TCP from a pod")
    m.put("ClusterIP TCP from a pod: DNAT to a backend, source preserved", "nftables",
          Cell("fail", "expected answered, got refused by icmp port-unreachable",
               {"outcome": "refused", "reply": "icmp port-unreachable", "trace": "trace client → 10.96.0.20:80\n"
                                                                               "└── node node-1 <reject>"}))
    m.put("A backend's server dies: what new connections see", "iptables",
          Cell("pass", "recovered 900 ms after web-b's server died",
               {"timeline": [[-0.2, "answered"], [0.1, "refused"], [0.5, "refused"], [1.2, "answered"]],
                "recovery_ms": 900, "victim": "web-b"}), "backend dies")
    m.put("A backend's server dies: what new connections see", "nftables", Cell("skip", "not here <b>"))
    return m.to_json()


def test_page_is_self_contained_and_carries_the_evidence():
    page = report.page(matrix_json(), model.load_file(str(model.builtin("default"))))
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)  # nothing loaded from anywhere
    assert "<script" not in page and "<link" not in page and page.count("<svg") == 3  # the lab, the bars, the timeline
    assert "icmp port-unreachable" in page and "p=0.533" in page and "time to recovery" in page
    assert "└── node node-1 &lt;reject&gt;" in page and "not here &lt;b&gt;" in page  # escaped
    assert 'class="timeline"' in page and 'class="bars"' in page
    assert 'class="service" data-name="web"' in page  # the lab's drawing
    cells = _cells(page)
    assert cells[("ClusterIP TCP from a pod", "nftables")] == "fail"
    assert cells[("backend dies", "iptables")] == "pass" and cells[("backend dies", "nftables")] == "skip"


class _Cells(HTMLParser):
    """The matrix's cells: (row, mode) → status, from the rendered page."""

    def __init__(self):
        super().__init__()
        self.row, self.cells = None, {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-row" in a:
            self.row = a["data-row"]
        if tag == "td" and "data-mode" in a:
            self.cells[(self.row, a["data-mode"])] = a["data-status"]


def _cells(page: str) -> dict:
    p = _Cells()
    p.feed(page)
    return p.cells


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (./bootstrap installs Debian's chromium)")
def test_the_page_in_a_real_browser(tmp_path):
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps({**matrix_json(), "topology": str(model.builtin("default"))}))
    html_path = tmp_path / "report.html"
    assert cli.main(["report", str(path), "-o", str(html_path)]) == 0
    profile = tmp_path / "profile"
    url = html_path.as_uri()
    dom = subprocess.run([CHROMIUM, *HEADLESS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    cells = _cells(dom.stdout)  # what the browser parsed, not the file
    assert cells == {("lab built", "iptables"): "pass", ("lab built", "nftables"): "pass",
                     ("ClusterIP TCP from a pod", "iptables"): "pass", ("ClusterIP TCP from a pod", "nftables"): "fail",
                     ("backend dies", "iptables"): "pass", ("backend dies", "nftables"): "skip"}
    assert "4 passed, 1 failed, 1 skipped" in dom.stdout
    shot = tmp_path / "report.png"
    res = subprocess.run([CHROMIUM, *HEADLESS, f"--user-data-dir={profile}", "--window-size=1200,1400",
                          f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_report_command_refuses_what_is_not_a_matrix(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text('{"rows": 3}')
    assert cli.main(["report", str(bad)]) == 2
    assert "not a verify matrix" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path / "missing.json")]) == 2


# ----------------------------------------------------------------------------- the graph


def ingress_graph() -> graph.Graph:
    cluster, _ = reconcile(model.load_file(str(model.builtin("ingress"))))
    return graph.of_cluster(cluster, live=False)


def test_graph_holds_nodes_pods_services_endpoints_lb_and_ingress():
    g = ingress_graph()
    kinds = {v.kind for v in g.vertices}
    assert kinds == {"client", "lb", "ingress", "node", "pod", "service"}
    shop = next(v for v in g.vertices if v.kind == "service" and v.label == "shop")
    shop_pods = {e.dst for e in g.edges if e.src == shop.id}
    assert len(shop_pods) == 2 and all(v.parent for v in g.vertices if v.id in shop_pods)
    ing = next(v for v in g.vertices if v.kind == "ingress")
    assert {e.dst for e in g.edges if e.src == ing.id} == {"svc_default_shop", "svc_default_api", "svc_default_fallback"}
    assert any(e.src == "lb" and e.label == "172.18.0.200" for e in g.edges)


def test_graph_shows_unready_endpoints():
    cluster, _ = reconcile(model.load_file(str(model.builtin("default"))))
    g = graph.of_cluster(cluster, live=True, out_of_date={"node-2": "failed at line 3"})
    probed = [e for e in g.edges if e.src == "svc_default_probed"]
    assert probed and all(e.state == "unready" for e in probed)  # a readiness probe: unready at first
    assert next(v for v in g.vertices if v.id == "node_node_2").state == "stale"
    svg = graph.to_svg(g)
    assert "(rules out of date)" in svg and svg.count('class="edge unready"') == 2


def test_graph_text_forms():
    g = ingress_graph()
    dot = graph.to_dot(g)
    assert dot.startswith("digraph lab {") and "subgraph cluster_node_node_1" in dot and "svc_default_shop ->" in dot
    mer = graph.to_mermaid(g)
    assert mer.startswith("flowchart LR") and 'subgraph node_node_1["node-1' in mer and "lb ==>|172.18.0.200|" in mer
    svg = graph.to_svg(g)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "<html" in graph.to_html(g)


def test_graph_command_on_a_file(tmp_path, capsys):
    assert cli.main(["graph", str(model.builtin("ingress")), "-o", "dot"]) == 0
    assert "digraph lab" in capsys.readouterr().out
    out = tmp_path / "lab.svg"
    assert cli.main(["graph", str(model.builtin("default")), "--file", str(out)]) == 0
    assert out.read_text().startswith("<svg")
    assert cli.main(["graph", "no-such-lab"]) == 2
    assert "no lab of that name" in capsys.readouterr().err
