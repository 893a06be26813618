"""One kube-proxy per node: render the mode's rules for a NodeView and apply them as one transaction.

Each proxier keeps what it needs between syncs in the node's record of the lab state (a JSON
dict), as kube-proxy keeps it in memory: the iptables proxier the per-service chains it left (so
stale ones get `-X`) and whether the jumps from the built-in chains are in; the nftables proxier
the table's last state (so later syncs send only the difference). `cleanup` removes the mode's
rules completely, like `kube-proxy --cleanup`, for switching a running lab to another mode.

`sync(..., full=True)` is for a node whose record may not match its kernel (a sync there failed or
was killed): like kube-proxy's full sync it trusts only the kernel, listing what the mode's table
holds so that every stale per-service chain goes, whatever left it.
"""
from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass

from .kernel import iptables as kiptables
from .kernel import nft as knft
from .kernel import wiring
from .kernel.transaction import TransactionError
from .proxy import NodeView
from .render import iptables as riptables
from .render import nftables as rnftables
from .render import ipvs as ripvs
from .render import userspace as rus


@dataclass
class SyncTiming:
    render: float = 0.0
    kernel: float = 0.0
    transactions: int = 0


class IptablesProxier:
    """kube-proxy's iptables mode. The first sync (and one after a failure) is a full sync; later
    ones are partial, as upstream's MinimizeIPTablesRestore: only Services whose chains changed
    (by fingerprint, kept in the node's record) have their KUBE-SVC/SEP/… chains rewritten."""

    mode = "iptables"
    binary = "iptables-restore"

    def render(self, view: NodeView, rec: dict | None = None) -> str:
        return self._render(view, rec or {})

    @staticmethod
    def _render(view: NodeView, rec: dict, prints: dict[str, str] | None = None,
                active_out: set[str] | None = None) -> str:
        """The first sync in full (with the built-in-chain jumps); later ones partial: Services whose
        fingerprint equals the one in `rec` are left out (none without fingerprints: a full sync)."""
        previous = set(rec.get("chains", ()))
        if not rec.get("bootstrapped"):
            return riptables.bootstrap(view, previous_chains=previous, active_out=active_out)
        before = rec.get("fingerprints") or {}
        prints = prints if prints is not None else riptables.service_fingerprints(view)
        unchanged = {k for k, v in prints.items() if before.get(k) == v}
        return riptables.render_partial(view, previous, unchanged, active_out=active_out)

    def sync(self, ns: str, view: NodeView, rec: dict, full: bool = False) -> SyncTiming:
        t0 = time.perf_counter()
        prints = riptables.service_fingerprints(view)
        previous = set(rec.get("chains", ()))
        partial = bool(rec.get("bootstrapped") and rec.get("fingerprints")) and not full
        active: set[str] = set()
        text = self._full_text(ns, view, previous, active) if full else self._render(view, rec, prints, active)
        t1 = time.perf_counter()
        rec["fingerprints"] = None  # until this sync is known to be in: a failure means a full sync next
        try:
            kiptables.restore(ns, text)
        except TransactionError:
            if not partial:
                raise
            # Upstream sets needFullSync after a failed partial restore; here the full one follows at once.
            kiptables.restore(ns, riptables.render(view, previous_chains=previous))
        if view.config.localhost_nodeports and not rec.get("route_localnet"):
            wiring.set_sysctls(ns, {wiring.ROUTE_LOCALNET: "1"})  # as kube-proxy's iptables proxier, at start
            rec["route_localnet"] = True
        t2 = time.perf_counter()
        rec["chains"], rec["bootstrapped"], rec["fingerprints"] = sorted(active), True, prints
        return SyncTiming(t1 - t0, t2 - t1, 1)

    @staticmethod
    def _full_text(ns: str, view: NodeView, previous: set[str], active: set[str]) -> str:
        """Upstream's full sync: every chain written, stale ones among those the kernel has (not
        only those the record knows) deleted; the built-in-chain jumps inserted again, in the same
        transaction, when any is missing (a cleanup or a first sync was cut short)."""
        saved = kiptables.save(ns)
        previous = previous | riptables.nat_chains(saved)
        have = set(riptables.normalize_saved(saved))
        jumps = riptables.jump_rules()
        wanted = riptables.normalize_rendered("".join(f"*{t}\n" + "".join(r + "\n" for r in rules) + "COMMIT\n"
                                                      for t, rules in jumps.items()))
        if all(r in have for r in wanted):
            return riptables.render_partial(view, previous, (), active_out=active)
        text = riptables.bootstrap(view, previous_chains=previous, active_out=active)
        left = _kube_jumps(saved)  # the jumps still there go first, so none is doubled
        out = []
        for line in text.splitlines():
            out.append(line)
            if line.startswith("*"):
                out += left.get(line[1:], [])
        return "\n".join(out) + "\n"

    def cleanup(self, ns: str, rec: dict) -> None:
        """Delete every KUBE-* chain and the jumps to them, in one iptables-restore."""
        saved = kiptables.save(ns)
        lines, table, chains = [], None, {}
        jumps = _kube_jumps(saved)
        for line in saved.splitlines():
            if line.startswith("*"):
                table = line[1:]
                chains[table] = []
                jumps.setdefault(table, [])
            elif line.startswith(":KUBE-"):
                chains[table].append(line[1:].split()[0])
        for t in chains:
            if not chains[t] and not jumps[t]:
                continue
            lines.append(f"*{t}")
            lines += jumps[t]
            lines += [f":{c} - [0:0]" for c in chains[t]]
            lines += [f"-X {c}" for c in chains[t]]
            lines.append("COMMIT")
        if lines:
            kiptables.restore(ns, "\n".join(lines) + "\n")
        if rec.pop("route_localnet", None):  # another mode's node starts as a fresh node would
            wiring.set_sysctls(ns, {wiring.ROUTE_LOCALNET: "0"})
        rec.pop("chains", None)
        rec.pop("bootstrapped", None)
        rec.pop("fingerprints", None)


def _kube_jumps(saved: str) -> dict[str, list[str]]:
    """table -> `-D` lines for the jumps from built-in chains to KUBE-* chains in iptables-save output."""
    out: dict[str, list[str]] = {}
    table = ""
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif re.match(r"-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) .*-j KUBE-", line):
            out.setdefault(table, []).append("-D" + line[2:])
    return out


class NftablesProxier:
    mode = "nftables"
    binary = "nft"

    def __init__(self) -> None:
        # ns -> the state this process's last sync left (with its memo). The lab writes it to its
        # state file and may read it back as JSON before the next sync: that JSON is recognised, so
        # a long-lived process (the agent) keeps the fast path across its state reloads.
        self._last: dict[str, rnftables.NftState] = {}

    def render(self, view: NodeView, rec: dict | None = None) -> str:
        rec = rec or {}
        if rec.get("nft"):
            text, _ = rnftables.sync(self._previous("", rec), view)
            return text
        return rnftables.render(view)

    def _previous(self, ns: str, rec: dict) -> rnftables.NftState | None:
        saved = rec.get("nft")
        if not saved:
            return None
        if isinstance(saved, rnftables.NftState):
            return saved
        last = self._last.get(ns)
        if last is not None and last.serialised() == saved:
            return last
        return rnftables.NftState.from_json(saved)

    def sync(self, ns: str, view: NodeView, rec: dict, full: bool = False) -> SyncTiming:
        t0 = time.perf_counter()
        # Full: the previous state is what the kernel's table holds, by name, so the sync is a full
        # one (its base differs) followed by the removal of every per-service chain not wanted.
        previous = _kernel_table(ns) if full else self._previous(ns, rec)
        text, state = rnftables.sync(previous, view)
        t1 = time.perf_counter()
        if text:
            knft.apply(ns, text)
        t2 = time.perf_counter()
        # The state object itself, as kube-proxy keeps it in memory: the lab's state file turns it
        # into JSON when it is written (state.write), a long-lived process never has to.
        rec["nft"] = self._last[ns] = state
        return SyncTiming(t1 - t0, t2 - t1, 1 if text else 0)

    def cleanup(self, ns: str, rec: dict) -> None:
        knft.delete_table(ns)
        rec.pop("nft", None)
        self._last.pop(ns, None)


_NFT_OBJECT = re.compile(r"^\s*(chain|set|map) (\S+) \{", re.M)


def _kernel_table(ns: str) -> rnftables.NftState:
    """The chains and sets `ip kube-proxy` has in the kernel now, by name (empty bodies)."""
    chains, sets = {}, {}
    for kind, name in _NFT_OBJECT.findall(knft.list_table(ns)):
        if kind == "chain":
            chains[name] = ()
        else:
            sets[name] = (kind, "")
    return rnftables.NftState(chains=chains, sets=sets)


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
        from . import state, supervisor

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
        from . import supervisor

        proc = rec.pop("proxy", None)
        if proc:
            supervisor.stop(proc["pid"], proc["start"])
        IptablesProxier().cleanup(ns, rec)
        rec.pop("ports", None)


def _wait_listening(ns: str, ports: list[int], timeout: float = 5.0) -> None:
    """Bounded poll until the reloaded proxy listens on its new TCP ports (SIGHUP has no ack)."""
    import socket

    from .kernel import netns

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


class IpvsProxier:
    """kube-proxy's IPVS mode: virtual servers through netlink, kube-ipvs0, ipsets and iptables glue,
    reconciled by difference against the previous plan. Needs a kernel with IPVS (`testbed vm`)."""

    mode = "ipvs"
    binary = "iptables-restore"

    def render(self, view: NodeView, rec: dict | None = None) -> str:
        return ripvs.render_text(ripvs.plan(view))

    def sync(self, ns: str, view: NodeView, rec: dict, full: bool = False) -> SyncTiming:
        from .kernel import ipvs as kipvs

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
        from .kernel import ipvs as kipvs

        kipvs.cleanup(ns)
        rec.pop("ipvs", None)


PROXIERS = {p.mode: p for p in (IptablesProxier(), NftablesProxier(), UserspaceProxier(), IpvsProxier())}


def for_mode(mode: str):
    from .errors import KernelFeatureError

    try:
        return PROXIERS[mode]
    except KeyError:
        raise KernelFeatureError(f"proxy mode {mode!r} is not implemented yet; implemented: {', '.join(PROXIERS)}") from None
