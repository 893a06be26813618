"""kube-proxy's nftables mode: the `ip kube-proxy` table, one `nft -f` transaction per node per sync.

The proxier keeps the table's last state (so later syncs send only the difference); a full sync
takes the previous state from the kernel's table instead.
"""
from __future__ import annotations

import re
import time

from ..kernel import nft as knft
from ..proxy import NodeView
from ..render import nftables as rnftables
from . import ProxyMode, SyncTiming, binary_missing


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


def fast_install(ns: str, view: NodeView, rec: dict) -> None:
    """The benchmark's install of a first sync's table into a fresh node, and the record after it."""
    text, state = rnftables.sync(None, view)
    lines = text.splitlines()
    # Several transactions at line boundaries: every line only refers to objects made by
    # earlier lines, and the kernel's per-transaction bookkeeping is quadratic in its size.
    step = 20000
    for i in range(0, len(lines), step):
        knft.apply(ns, "\n".join(lines[i:i + step]) + "\n")
    rec["nft"] = state


MODE = ProxyMode(
    name="nftables",
    upstream="GA in Kubernetes 1.33; kube-proxy's newest mode",
    proxier=NftablesProxier(),
    missing=binary_missing(knft._binary),
    node_rules=knft.list_table,
    tool="nft -f",
    fast_install=fast_install,
)
