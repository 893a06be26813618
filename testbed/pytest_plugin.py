"""pytest plugin (entry point `testbed`): labs as fixtures, probes, a proxy-mode parameter, markers,
and the behaviour × mode matrix.

In any test suite (the plugin loads itself once testbed is installed):

    def test_x(lab_factory, proxy_mode, probes):
        lab = lab_factory("topologies/default.yaml", mode=proxy_mode)          # from a file
        lab2 = lab_factory(objects=[{"apiVersion": "v1", "kind": "Pod", ...}])  # from Python objects
        h = probes.handshake.handshake(...)

Labs are removed after the test, also when it fails or is interrupted. `proxy_mode` runs a test
once per mode; modes this kernel or build cannot offer are skipped with the reason. Markers:
`kernel` / `root` (needs root and namespaces), `kernel_feature("ipvs")` (needs that kernel
feature), `vm` (only inside testbed's kernel runner). Tests that record a matrix cell
(`testbed_matrix.record(behaviour, mode, cell)`) appear in the matrix printed at the end and
written as JSON and Markdown next to the JUnit XML (or under results/).
"""
from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path

import pytest

MATRIX_KEY = pytest.StashKey["object"]()
KERNEL_FEATURES = {
    "netns": ("/proc/self/ns/net", "network namespaces (CONFIG_NET_NS)"),
    "conntrack": ("/proc/sys/net/netfilter/nf_conntrack_max", "conntrack (CONFIG_NF_CONNTRACK)"),
    "bridge-nf": ("/proc/sys/net/bridge", "br_netfilter (CONFIG_BRIDGE_NETFILTER)"),
}


def pytest_addoption(parser):
    group = parser.getgroup("testbed")
    group.addoption("--testbed-modes", default=None,
                    help="comma-separated proxy modes for the proxy_mode parameter (default: every mode)")
    group.addoption("--testbed-matrix", default=None, metavar="DIR",
                    help="where matrix.json and matrix.md go (default: beside --junitxml, else results/)")


def pytest_configure(config):
    for line in (
        "kernel: needs root and real network namespaces (skips with a reason otherwise)",
        "root: needs root (skips with a reason otherwise)",
        "kernel_feature(name): needs a kernel feature (ipvs, conntrack, bridge-nf, netns); skips with a reason",
        "vm: runs only inside testbed's kernel runner (TESTBED_IN_VM=1)",
        "repro: a reproduction of `testbed repro` (bug and fix side by side); -m repro selects them",
    ):
        config.addinivalue_line("markers", line)
    from testbed.conformance import Matrix
    config.stash[MATRIX_KEY] = _Recorder(Matrix([]))


def kernel_missing() -> str | None:
    """Why kernel tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables): run the suite with sudo"
    if not os.path.exists("/proc/self/ns/net"):
        return "the kernel has no network namespaces (CONFIG_NET_NS)"
    return None


def feature_missing(name: str) -> str | None:
    if name == "ipvs":  # the proxy mode's own check
        from testbed import modes

        return modes.missing("ipvs")
    path, what = KERNEL_FEATURES.get(name, (None, name))
    if path is None:
        return f"unknown kernel feature {name!r}"
    return None if os.path.exists(path) else f"this kernel lacks {what}"


def pytest_runtest_setup(item):
    if item.get_closest_marker("kernel") or item.get_closest_marker("root"):
        reason = kernel_missing()
        if reason:
            pytest.skip(reason)
    for m in item.iter_markers("kernel_feature"):
        reason = feature_missing(m.args[0])
        if reason:
            pytest.skip(reason)
    if item.get_closest_marker("vm") and os.environ.get("TESTBED_IN_VM") != "1":
        pytest.skip("runs only inside testbed's kernel runner (`testbed vm -- pytest …`)")


# ----------------------------------------------------------------------------- proxy modes


def mode_unavailable(mode: str) -> str | None:
    """Why `mode` cannot run on this kernel / build, or None."""
    from testbed import modes

    return modes.missing(mode)


def pytest_generate_tests(metafunc):
    if "proxy_mode" in metafunc.fixturenames:
        from testbed import modes

        opt = metafunc.config.getoption("--testbed-modes")
        wanted = [m.strip() for m in opt.split(",")] if opt else list(modes.NAMES)
        metafunc.parametrize("proxy_mode", wanted, indirect=True)


@pytest.fixture
def proxy_mode(request):
    """Overridden by the parametrisation above; skips modes this kernel or build lacks."""
    mode = request.param
    reason = mode_unavailable(mode)
    if reason:
        pytest.skip(f"{mode}: {reason}")
    return mode


# ----------------------------------------------------------------------------- labs and probes


def _write_objects(objects: list[dict]) -> str:
    import yaml

    fd, path = tempfile.mkstemp(prefix="testbed-lab-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump_all(objects, f, sort_keys=False)
    return path


def wait_ready(lab, timeout: float = 15.0) -> None:
    """Until every pod is ready. Pods with a readiness probe start unready, as in Kubernetes, and
    turning ready re-syncs every node: a test that edits a node's rules by hand waits for this
    first, or that sync would undo its edit."""
    from testbed.lab import Lab

    Lab(lab.name).wait_ready(timeout)


@pytest.fixture
def lab_factory():
    """Build labs from a topology file or from manifests as Python dicts; all removed after the test.
    `ready=True`: return once every pod is ready (see wait_ready)."""
    from testbed.lab import Lab

    made: list[Lab] = []
    temps: list[str] = []

    def make(path: str | None = None, mode: str | None = None, name: str | None = None,
             objects: list[dict] | None = None, ready: bool = False) -> Lab:
        if objects is not None:
            path = _write_objects(objects)
            temps.append(path)
        lab_name = name or f"t{uuid.uuid4().hex[:8]}"
        try:
            lab = Lab.up(path, name=lab_name, mode=mode)
        except BaseException:
            Lab(lab_name).down()  # `up` rolls back; this covers an interrupt mid-rollback
            raise
        made.append(lab)
        if ready:
            wait_ready(lab)
        return lab

    try:
        yield make
    finally:
        for lab in made:
            lab.down()
        for p in temps:
            os.unlink(p)


@pytest.fixture
def probes():
    """The probes package: probes.handshake, probes.connect, probes.affinity, probes.failover, …"""
    import probes as pkg
    import probes.affinity  # noqa: F401
    import probes.connect  # noqa: F401
    import probes.conntrack  # noqa: F401
    import probes.failover  # noqa: F401
    import probes.handshake  # noqa: F401

    return pkg


# ----------------------------------------------------------------------------- the matrix


class _Recorder:
    def __init__(self, matrix):
        self.matrix = matrix

    def record(self, behaviour: str, mode: str, cell, short: str = "") -> None:
        if mode not in self.matrix.modes:
            self.matrix.modes.append(mode)
        self.matrix.put(behaviour, mode, cell, short)


@pytest.fixture(scope="session")
def testbed_matrix(pytestconfig):
    """Record cells: `testbed_matrix.record(behaviour, mode, Cell(status, reason))`."""
    return pytestconfig.stash[MATRIX_KEY]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    params = getattr(getattr(item, "callspec", None), "params", {})
    # A test is a matrix cell if it names its behaviour, or is parametrised with a conformance Row.
    behaviour = getattr(item, "testbed_behaviour", None) or getattr(params.get("row"), "behaviour", None)
    short = getattr(params.get("row"), "short", "") or ""
    mode = params.get("proxy_mode")
    if behaviour is None or mode is None:
        return
    from testbed.conformance import Cell

    rec = item.config.stash[MATRIX_KEY]
    if report.skipped and report.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        rec.record(behaviour, mode, Cell("skip", reason.removeprefix("Skipped: ")), short)
    elif report.failed and report.when in ("setup", "call"):
        existing = rec.matrix.rows.get(behaviour, {}).get(mode)
        if existing is None or existing.status != "fail":
            msg = str(report.longrepr).strip().splitlines()[-1] if report.longrepr else "failed"
            rec.record(behaviour, mode, Cell("fail", msg[:300]), short)


def matrix_dir(config) -> Path:
    opt = config.getoption("--testbed-matrix")
    if opt:
        return Path(opt)
    xml = getattr(config.option, "xmlpath", None)
    if xml:
        return Path(xml).resolve().parent
    return Path(str(config.rootpath)) / "results"


def write_matrix(matrix, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    js, md = directory / "matrix.json", directory / "matrix.md"
    js.write_text(json.dumps(matrix.to_json(), indent=2) + "\n")
    md.write_text("# behaviour × proxy mode\n\n" + matrix.to_markdown())
    return js, md


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rec = config.stash.get(MATRIX_KEY, None)
    if rec is None or not rec.matrix.rows:
        return
    from rich.console import Console

    from testbed.cli import print_matrix

    # The compact matrix at the terminal's width (80 in a CI log), evidence only where a cell did not pass.
    tw = terminalreporter._tw
    print_matrix(rec.matrix, Console(file=tw._file, width=tw.fullwidth, force_terminal=tw.hasmarkup))
    js, md = write_matrix(rec.matrix, matrix_dir(config))
    terminalreporter.write_line(f"testbed matrix: {js} and {md}")
