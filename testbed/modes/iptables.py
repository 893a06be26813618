"""kube-proxy's iptables mode: KUBE-* chains written by iptables-restore, one transaction per node per sync.

The proxier keeps in the node's record the per-service chains it left (so stale ones get `-X`),
whether the jumps from the built-in chains are in, and each Service's fingerprint (for partial
syncs). `sync(..., full=True)` is for a node whose record may not match its kernel (a sync there
failed or was killed): like kube-proxy's full sync it trusts only the kernel, listing what the
table holds so that every stale per-service chain goes, whatever left it.
"""
from __future__ import annotations

import re
import subprocess
import time

from ..kernel import iptables as kiptables
from ..kernel import netns, wiring
from ..kernel.transaction import TransactionError
from ..proxy import NodeView
from ..render import iptables as riptables
from . import ProxyMode, SyncTiming, binary_missing


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


def fast_install(ns: str, view: NodeView, rec: dict) -> None:
    """The benchmark's install of a first sync's rules into a fresh node, and the record after it."""
    active: set[str] = set()
    text = riptables.bootstrap(view, active_out=active)  # what the proxier's first sync writes
    # Without --noflush: the node is fresh (its tables hold nothing else), so flushing the two
    # tables first leaves exactly the state --noflush would; iptables-nft is ~10× faster so.
    proc = subprocess.run([kiptables._binary("iptables-restore")], input=text, text=True, capture_output=True,
                          preexec_fn=netns.preexec(ns), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"iptables-restore in {ns} failed: {proc.stderr.strip()}")
    rec["chains"], rec["bootstrapped"] = sorted(active), True
    rec["fingerprints"] = riptables.service_fingerprints(view)  # so the next sync is partial, as the proxier's


MODE = ProxyMode(
    name="iptables",
    upstream="kube-proxy's default mode; first-packet cost grows with the number of Services",
    proxier=IptablesProxier(),
    missing=binary_missing(lambda: kiptables._binary("iptables-restore")),
    node_rules=kiptables.save,
    tool="iptables-restore --noflush",
    fast_install=fast_install,
)
