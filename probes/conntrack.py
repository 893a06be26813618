"""A node's conntrack table as data (conntrack -L inside the node's namespace)."""
from __future__ import annotations

from testbed.kernel.conntrack import Flow, list_flows, parse  # noqa: F401  (re-exported for probe users)


def table(node_ns: str, dst: str | None = None, port: int | None = None, proto: str | None = None) -> list[Flow]:
    """Entries of the namespace's conntrack table, optionally only those for a Service address/port."""
    return [f for f in list_flows(node_ns, proto)
            if (dst is None or f.orig_dst == dst) and (port is None or f.orig_dport == port)]
