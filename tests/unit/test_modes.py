"""The proxy-mode registry: every mode one module with one ProxyMode, one check of what it needs."""
from __future__ import annotations

import subprocess
import sys

import pytest

from testbed import modes
from testbed import errors
from testbed.errors import KernelFeatureError
from testbed.modes import ProxyMode


@pytest.mark.parametrize("name", modes.NAMES)
def test_each_mode_is_one_module_with_its_contract(name):
    mode = modes.get(name)
    assert isinstance(mode, ProxyMode) and mode.name == name
    assert mode.upstream and mode.tool
    for method in ("render", "sync", "cleanup"):
        assert callable(getattr(mode.proxier, method)), (name, method)
    assert callable(mode.missing) and callable(mode.node_rules)
    reason = mode.missing()
    assert reason is None or (isinstance(reason, str) and reason)


def test_the_benchmark_draws_the_modes_that_have_a_fast_install():
    assert modes.benchmarked() == ("iptables", "nftables", "ipvs")
    assert modes.get("userspace").fast_install is None


def test_an_unknown_mode_is_refused_with_the_list():
    with pytest.raises(KernelFeatureError, match="implemented: iptables, nftables, ipvs, userspace"):
        modes.get("ebpf")
    assert "unknown proxy mode 'ebpf'" in modes.missing("ebpf")
    with pytest.raises(errors.TestbedError, match="unknown proxy mode"):
        modes.require("ebpf")


def test_a_missing_binary_says_what_to_install():
    def find():
        raise KernelFeatureError("nft is not installed: install Debian's nftables package (apt-get install nftables)")

    assert modes.binary_missing(find)() == "nft is not installed: install Debian's nftables package (apt-get install nftables)"
    assert modes.binary_missing(lambda: "/usr/sbin/nft")() is None


def test_ipvs_missing_says_how_to_get_it(monkeypatch):
    from testbed.modes import ipvs

    ipvs.missing.cache_clear()
    monkeypatch.setattr("os.path.exists", lambda p: False)
    monkeypatch.setattr("testbed.kernel.ipvs._open_ipvs",
                        lambda: (_ for _ in ()).throw(KernelFeatureError("no family")))
    try:
        reason = ipvs.missing()
    finally:
        ipvs.missing.cache_clear()
    assert "CONFIG_IP_VS" in reason and "testbed vm" in reason and "Vagrant" in reason


def test_the_model_reads_the_registry_without_loading_any_mode():
    """spec.proxyMode is checked against NAMES; no renderer or kernel code comes with it."""
    code = ("import sys, testbed.model; "
            "print(sorted(m for m in sys.modules if m.startswith(('testbed.modes.', 'testbed.render', 'testbed.kernel'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_render_first_and_later_sync():
    from testbed import model
    from testbed.control import reconcile

    cluster, _ = reconcile(model.load_file(model.builtin("default")))
    view = cluster.node_view(cluster.nodes[0].name)
    first = modes.get("iptables").render(view)
    later = modes.get("iptables").render(view, first=False)
    jump = "-I PREROUTING 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
    assert jump in first.splitlines() and jump not in later.splitlines()
