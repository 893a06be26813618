"""kube-proxy's original userspace mode (removed upstream in 1.26): a proxy process per node and
iptables REDIRECT/DNAT of Service traffic to its ports."""
from __future__ import annotations

import os
import signal
import time

from ..kernel import iptables as kiptables
from ..proxy import NodeView
from ..render import userspace as rus
from . import ProxyMode, SyncTiming
from .iptables import MODE as IPTABLES
from .iptables import IptablesProxier


class UserspaceProxier:
    """kube-proxy's original mode (removed upstream in 1.26): a proxy process per node, iptables
    REDIRECT/DNAT of Service traffic to its ports. The process reloads its table on SIGHUP."""

    mode = "userspace"
    binary = "iptables-restore"

    def render(self, view: NodeView, rec: dict | None = None) -> str:
        rec = rec or {}
        plan = rus.plan(view, rec.get("ports"))
        return rus.iptables_restore(plan, view.node_ips[0], jumps=not rec.get("bootstrapped"))

    def sync(self, ns: str, view: NodeView, rec: dict, full: bool = False) -> SyncTiming:
        from .. import state, supervisor

        t0 = time.perf_counter()
        plan = rus.plan(view, rec.get("ports"))
        text = rus.iptables_restore(plan, view.node_ips[0], jumps=not rec.get("bootstrapped"))
        t1 = time.perf_counter()
        # The proxy listens on new ports before any rule redirects traffic to them.
        table = state.lab_dir(rec["lab"]) / "userspace" / f"{view.node_name}.json"
        table.parent.mkdir(parents=True, exist_ok=True)
        state.replace_file(table, plan.to_json())
        proc = rec.get("proxy")
        if proc and supervisor.alive(proc["pid"], proc["start"]):
            os.kill(proc["pid"], signal.SIGHUP)
            new = [s for s in plan.services if s.proxy_port not in set((rec.get("ports") or {}).values())]
            _wait_listening(ns, [s.proxy_port for s in new if s.protocol == "TCP"])
        else:
            rec["proxy"] = supervisor.start_userspace_proxy(rec["lab"], view.node_name, str(table))
        kiptables.restore(ns, text)
        t2 = time.perf_counter()
        rec["ports"], rec["bootstrapped"] = plan.ports, True
        return SyncTiming(t1 - t0, t2 - t1, 1)

    def cleanup(self, ns: str, rec: dict) -> None:
        from .. import supervisor

        proc = rec.pop("proxy", None)
        if proc:
            supervisor.stop(proc["pid"], proc["start"])
        IptablesProxier().cleanup(ns, rec)
        rec.pop("ports", None)


def _wait_listening(ns: str, ports: list[int], timeout: float = 5.0) -> None:
    """Bounded poll until the reloaded proxy listens on its new TCP ports (SIGHUP has no ack)."""
    import socket

    from ..kernel import netns

    deadline = time.monotonic() + timeout
    for port in ports:
        while time.monotonic() < deadline:
            with netns.entered(ns):
                sock = socket.socket()
            sock.settimeout(0.2)
            try:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            finally:
                sock.close()
            time.sleep(0.005)


MODE = ProxyMode(
    name="userspace",
    upstream="removed from kube-proxy in Kubernetes 1.26; kept here to show what it did",
    proxier=UserspaceProxier(),
    missing=IPTABLES.missing,  # its rules are iptables mode's tools' input
    node_rules=IPTABLES.node_rules,
    tool="iptables-restore --noflush + a proxy process",
)
