"""What kube-proxy serves about itself on every node, as a user of a real cluster scrapes it (pure).

- `:10256/healthz` and `/livez` (kube-proxy's ProxierHealthServer, --healthz-bind-address): 200 with
  `{"lastUpdated": …, "currentTime": …, "nodeEligible": true}`, or 503 when an update has been waiting
  longer than the health timeout (twice the sync period: 60 s by default) — here, a node whose rules
  transaction failed and that no sync has repaired since.
- `:10249/proxyMode` (the mode's name), `/metrics` (Prometheus text: kubeproxy_sync_proxy_rules_duration_seconds,
  kubeproxy_network_programming_duration_seconds, kubeproxy_sync_proxy_rules_last_timestamp_seconds) and
  `/healthz` (--metrics-bind-address), from the lab's sync log.

The agent serves them (testbed.healthserver) in every node's namespace.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

HEALTHZ_PORT = 10256
METRICS_PORT = 10249
HEALTH_TIMEOUT = 60.0  # kube-proxy: 2 × --iptables-sync-period (30 s)

# kube-proxy's buckets (pkg/proxy/metrics/metrics.go).
SYNC_BUCKETS = tuple(0.001 * 2 ** i for i in range(15))  # ExponentialBuckets(0.001, 2, 15)
PROGRAMMING_BUCKETS = ((0.25, 0.5) + tuple(float(i) for i in range(1, 60)) + tuple(60.0 + 5 * i for i in range(12))
                       + tuple(120.0 + 30 * i for i in range(7)))


@dataclass(frozen=True)
class NodeStatus:
    """One node's kube-proxy as the lab state has it."""

    node: str
    mode: str
    last_synced: float | None  # wall time of the last sync that reached this node
    out_of_date_since: float | None  # a failed transaction not repaired since (None: up to date)
    sync_seconds: tuple[float, ...] = ()  # this node's rule syncs
    programming_seconds: tuple[float, ...] = ()  # change → rules on every node


def node_status(saved: dict, node: str) -> NodeStatus:
    rec = saved.get("nodes", {}).get(node, {})
    mark = rec.get("out_of_date") or {}
    syncs = saved.get("syncs", [])
    mine = [s for s in syncs if node in (s.get("nodes_ms") or {})]
    return NodeStatus(node, saved.get("mode", "iptables"), mine[-1]["at"] if mine else saved.get("created"),
                      mark.get("since") if mark.get("reason") != "syncing" else None,
                      tuple(s["nodes_ms"][node] / 1000 for s in mine),
                      tuple(s["to_rules_ms"] / 1000 for s in syncs if s.get("to_rules_ms") is not None))


def _go_time(t: float) -> str:
    """Go's time.Time String(): `2006-01-02 15:04:05.999999999 +0000 UTC`."""
    whole = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
    return f"{whole}.{int((t % 1) * 1e9):09d} +0000 UTC"


def healthz(status: NodeStatus, now: float, path: str = "/healthz") -> tuple[int, str, bytes]:
    """(HTTP status, content type, body) of kube-proxy's /healthz and /livez."""
    healthy = status.out_of_date_since is None or now - status.out_of_date_since < HEALTH_TIMEOUT
    last = status.last_synced or now
    body = {"lastUpdated": _go_time(last), "currentTime": _go_time(now)}
    if path == "/healthz":
        body["nodeEligible"] = True
    return (200 if healthy else 503), "application/json", json.dumps(body).encode()


def _histogram(name: str, help_text: str, values, buckets) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for b in buckets:
        out.append(f'{name}_bucket{{le="{b:g}"}} {sum(1 for v in values if v <= b)}')
    out.append(f'{name}_bucket{{le="+Inf"}} {len(values)}')
    out.append(f"{name}_sum {sum(values):.9g}")
    out.append(f"{name}_count {len(values)}")
    return out


def metrics(status: NodeStatus) -> bytes:
    """kube-proxy's /metrics, the families a user scrapes for sync health (Prometheus text format)."""
    lines = _histogram("kubeproxy_sync_proxy_rules_duration_seconds",
                       "[ALPHA] SyncProxyRules latency in seconds", status.sync_seconds, SYNC_BUCKETS)
    lines += _histogram("kubeproxy_network_programming_duration_seconds",
                        "[ALPHA] In Cluster Network Programming Latency in seconds", status.programming_seconds,
                        PROGRAMMING_BUCKETS)
    lines += ["# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds [ALPHA] The last time proxy rules were "
              "successfully synced", "# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge",
              f"kubeproxy_sync_proxy_rules_last_timestamp_seconds {status.last_synced or 0:.9g}"]
    return ("\n".join(lines) + "\n").encode()


def metrics_server(status: NodeStatus, now: float, path: str) -> tuple[int, str, bytes]:
    """kube-proxy's --metrics-bind-address server."""
    if path == "/proxyMode":
        return 200, "text/plain; charset=utf-8", status.mode.encode()
    if path == "/metrics":
        return 200, "text/plain; version=0.0.4; charset=utf-8", metrics(status)
    if path in ("/healthz", "/livez"):
        return 200, "text/plain; charset=utf-8", b"ok"
    return 404, "text/plain; charset=utf-8", b"404 page not found\n"


def answer(port: int, status: NodeStatus, now: float, path: str) -> tuple[int, str, bytes]:
    if port == HEALTHZ_PORT:
        if path in ("/healthz", "/livez"):
            return healthz(status, now, path)
        return 404, "text/plain; charset=utf-8", b"404 page not found\n"
    return metrics_server(status, now, path)
