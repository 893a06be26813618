"""kube-proxy's IPVS mode (deprecated upstream in 1.35): virtual servers through netlink, kube-ipvs0,
ipsets and iptables glue, reconciled by difference against the previous plan. Needs a kernel with
IPVS: this machine's has none, so it runs in `testbed vm`'s guest."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time

from ..kernel import iptables as kiptables
from ..proxy import NodeView
from ..render import ipvs as ripvs
from . import ProxyMode, SyncTiming

NO_IPVS = ("this kernel has no IPVS (CONFIG_IP_VS), so proxy mode ipvs cannot run here: run it in a guest "
           "kernel that has it, `testbed vm -- testbed up --mode ipvs` (`testbed verify` and the test suite "
           "do so themselves), or in the Vagrant VM (see the README)")


class IpvsProxier:
    """kube-proxy's IPVS mode: virtual servers through netlink, kube-ipvs0, ipsets and iptables glue,
    reconciled by difference against the previous plan. Needs a kernel with IPVS (`testbed vm`)."""

    mode = "ipvs"
    binary = "iptables-restore"

    def render(self, view: NodeView, rec: dict | None = None) -> str:
        return ripvs.render_text(ripvs.plan(view))

    def sync(self, ns: str, view: NodeView, rec: dict, full: bool = False) -> SyncTiming:
        from ..kernel import ipvs as kipvs

        t0 = time.perf_counter()
        plan = ripvs.plan(view)
        # previous=None makes kipvs.apply read the live state first (kube-proxy after a restart).
        previous = ripvs.IpvsPlan.from_json(rec["ipvs"]) if rec.get("ipvs") and not full else None
        t1 = time.perf_counter()
        kipvs.apply(ns, previous, plan)
        t2 = time.perf_counter()
        rec["ipvs"] = plan.to_json()
        return SyncTiming(t1 - t0, t2 - t1, 1)

    def cleanup(self, ns: str, rec: dict) -> None:
        from ..kernel import ipvs as kipvs

        kipvs.cleanup(ns)
        rec.pop("ipvs", None)


@functools.cache
def missing() -> str | None:
    """IPVS is here when /proc/net/ip_vs is, or when its netlink family opens (which autoloads
    ip_vs on a modular kernel). Asked once per process."""
    if os.path.exists("/proc/net/ip_vs"):
        return None
    from ..errors import KernelFeatureError
    from ..kernel import ipvs as kipvs

    try:
        kipvs._open_ipvs().close()
    except KernelFeatureError:
        return NO_IPVS
    return None


def node_rules(ns: str) -> str:
    """The node's virtual servers (`ipvsadm-save -n` form) and then its iptables glue."""
    from ..kernel import ipvs as kipvs

    return kipvs.save_text(kipvs.read(ns)) + kiptables.save(ns)


def fast_install(ns: str, view: NodeView, rec: dict) -> None:
    """IPVS mode's kernel state from the same plan, with the batch tools instead of one netlink
    request per object: ipset restore, `ip -batch` for kube-ipvs0's addresses, `ipvsadm -R` for the
    virtual and real servers, one iptables-restore for the glue and its jumps."""
    from ..kernel import ipset as kipset
    from ..kernel import ipvs as kipvs
    from ..kernel import netns

    plan = ripvs.plan(view)
    kipvs.require(ns)  # loads ip_vs, so its sysctls exist
    for key, value in plan.sysctls:
        netns.write_sysctl(ns, key, value)
    kipset.apply(ns, plan.ipsets, None, destroy_stale=False)
    batch = [f"link add {plan.dummy} type dummy"] + [f"address add {a}/32 dev {plan.dummy}" for a in plan.addresses]
    for argv, text in ((["ip", "-batch", "-"], "\n".join(batch) + "\n"),
                       ([shutil.which("ipvsadm") or "/usr/sbin/ipvsadm", "-R"], ripvs.ipvsadm_save(plan.virtual_servers))):
        proc = subprocess.run(argv, input=text, text=True, capture_output=True, preexec_fn=netns.preexec(ns),
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} in {ns} failed: {proc.stderr.strip()[:500]}")
    kiptables.restore(ns, kipvs._restore_text(plan, kipvs._jumps_text(ns, plan)))
    rec["ipvs"] = plan.to_json()  # what IpvsProxier keeps


MODE = ProxyMode(
    name="ipvs",
    upstream="deprecated in Kubernetes 1.35; needs a kernel with IPVS (`testbed vm`)",
    proxier=IpvsProxier(),
    missing=missing,
    node_rules=node_rules,
    tool="IPVS netlink + ipset + iptables-restore",
    fast_install=fast_install,
)
