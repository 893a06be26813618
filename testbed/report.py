"""`testbed verify --html` and `testbed report`: the behaviour × mode matrix as one self-contained
HTML page (inline CSS and SVG; nothing loaded from anywhere): a mark per cell, linked to that
cell's evidence — what the backend saw (DNAT, source), the reply and its type, the balance with
its p-value, a failover timeline as a small chart, for a failed cell the trace of one packet
through the rules — and the lab's drawing (testbed.graph)."""
from __future__ import annotations

import html
import time

from . import graph
from .control import reconcile

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #0f172a; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.sub { color: #475569; margin-bottom: 16px; }
table.matrix { border-collapse: collapse; }
.matrix th, .matrix td { border: 1px solid #cbd5e1; padding: 4px 10px; text-align: left; }
.matrix th { background: #f1f5f9; } .matrix td.n { color: #64748b; text-align: right; }
td.cell { text-align: center; font-weight: 600; }
td.cell a { color: inherit; text-decoration: none; display: block; }
.pass { background: #dcfce7; color: #166534; } .fail { background: #fee2e2; color: #991b1b; }
.skip { background: #fef9c3; color: #854d0e; } .none { color: #94a3b8; }
.row { border: 1px solid #e2e8f0; border-radius: 8px; padding: 8px 14px; margin: 10px 0; }
.row h3 { font-size: 14px; margin: 4px 0 8px; }
.ev { margin: 6px 0 10px; padding: 6px 10px; border-left: 4px solid #cbd5e1; }
.ev.pass { border-color: #16a34a; background: #f0fdf4; color: inherit; }
.ev.fail { border-color: #dc2626; background: #fef2f2; color: inherit; }
.ev.skip { border-color: #ca8a04; background: #fefce8; color: inherit; }
.ev .mode { font-weight: 700; } dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; margin: 6px 0; }
dt { color: #475569; } dd { margin: 0; font-family: ui-monospace, monospace; }
pre { background: #0f172a; color: #e2e8f0; padding: 10px; border-radius: 6px; overflow-x: auto; font-size: 12px; }
.drawing { overflow-x: auto; border: 1px solid #e2e8f0; border-radius: 8px; padding: 8px; }
"""
OUTCOME = {"answered": "#16a34a", "refused": "#dc2626", "timeout": "#f59e0b", "unreachable": "#7c3aed",
           "error": "#64748b"}


def _x(s) -> str:
    return html.escape(str(s), quote=True)


def _anchor(i: int, mode: str) -> str:
    return f"r{i}-{mode}"


def page(data: dict, topology=None) -> str:
    """The page for a matrix as `Matrix.to_json` (plus `topology`, the file verified) wrote it;
    `topology` (a loaded model.Topology) is drawn when given."""
    modes, rows = list(data["modes"]), data["rows"]
    counts = {s: sum(c["status"] == s for r in rows for c in r["results"].values()) for s in ("pass", "fail", "skip")}
    source = data.get("topology") or (topology.source if topology else "")
    out = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>testbed verify: {counts['pass']} passed, {counts['fail']} failed</title>",
           f"<style>{CSS}</style></head><body>",
           "<h1>testbed verify: behaviour × proxy mode</h1>",
           f'<div class="sub" id="summary">{counts["pass"]} passed, {counts["fail"]} failed, {counts["skip"]} skipped'
           + (f" · {_x(source)}" if source else "") + f" · {time.strftime('%Y-%m-%d %H:%M')}</div>",
           '<table class="matrix" id="matrix"><thead><tr><th>#</th><th>behaviour</th>'
           + "".join(f"<th>{_x(m)}</th>" for m in modes) + "</tr></thead><tbody>"]
    for i, r in enumerate(rows, 1):
        short = r.get("short") or r["behaviour"].split(": ", 1)[0]
        cells = []
        for m in modes:
            c = r["results"].get(m)
            if c is None:
                cells.append('<td class="cell none">-</td>')
            else:
                cells.append(f'<td class="cell {c["status"]}" data-mode="{_x(m)}" data-status="{c["status"]}" '
                             f'title="{_x(c.get("reason", ""))}"><a href="#{_anchor(i, m)}">{c["status"]}</a></td>')
        out.append(f'<tr data-row="{_x(short)}"><td class="n">{i}</td><td title="{_x(r["behaviour"])}">{_x(short)}</td>'
                   + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    if topology is not None:
        cluster, _ = reconcile(topology)
        out.append("<h2>the lab</h2>")
        out.append(f'<div class="drawing">{graph.to_svg(graph.of_cluster(cluster, live=False))}</div>')
    out.append("<h2>evidence</h2>")
    for i, r in enumerate(rows, 1):
        out.append(f'<div class="row"><h3>{i}. {_x(r["behaviour"])}</h3>')
        for m in modes:
            c = r["results"].get(m)
            if c is not None:
                out.append(_evidence(i, m, c))
        out.append("</div>")
    out.append("</body></html>\n")
    return "\n".join(out)


def _evidence(i: int, mode: str, c: dict) -> str:
    d = c.get("data") or {}
    parts = [f'<div class="ev {c["status"]}" id="{_anchor(i, mode)}"><span class="mode">{_x(mode)}</span> '
             f'<b>{c["status"]}</b> — {_x(c.get("reason") or "")}']
    facts = []
    if d.get("dialled"):
        facts.append(("dialled", d["dialled"]))
    if d.get("dnat"):
        facts.append(("backend saw (DNAT)", f"{d['dnat']} ({d.get('backend') or '?'})"))
    if d.get("source_seen"):
        facts.append(("source the backend saw", d["source_seen"]))
    if d.get("outcome"):
        facts.append(("outcome", d["outcome"] + (f" (reply: {d['reply']})" if d.get("reply") else "")
                      + (f" after {d['ms']} ms" if d.get("ms") is not None else "")))
    if d.get("p_value") is not None:
        facts.append(("balance", f"p={d['p_value']:.3f} (chi-square, 300 connections)"))
    if d.get("recovery_ms") is not None:
        facts.append(("time to recovery", f"{d['recovery_ms']} ms after {d.get('victim', 'the backend')}'s server died"))
    if facts:
        parts.append("<dl>" + "".join(f"<dt>{_x(k)}</dt><dd>{_x(v)}</dd>" for k, v in facts) + "</dl>")
    if d.get("counts"):
        parts.append(_bars(d["counts"]))
    if d.get("timeline"):
        parts.append(_timeline(d["timeline"]))
    if d.get("trace"):
        parts.append(f"<details open><summary>one packet through the rules (testbed trace)</summary>"
                     f"<pre>{_x(d['trace'])}</pre></details>")
    parts.append("</div>")
    return "".join(parts)


def _bars(counts: dict) -> str:
    """Connections per backend, as a small bar chart."""
    top = max(counts.values()) or 1
    h = 18 * len(counts) + 4
    rows = []
    for j, (name, n) in enumerate(sorted(counts.items())):
        w = 260 * n / top
        rows.append(f'<text x="0" y="{j * 18 + 13}" font-size="11">{_x(name)}</text>'
                    f'<rect x="230" y="{j * 18 + 3}" width="{w:.1f}" height="12" fill="#38bdf8"/>'
                    f'<text x="{236 + w:.1f}" y="{j * 18 + 13}" font-size="11">{n}</text>')
    return (f'<svg class="bars" width="540" height="{h}" font-family="sans-serif" role="img" '
            f'aria-label="connections per backend">{"".join(rows)}</svg>')


def _timeline(samples: list) -> str:
    """New connections over time around the change (t=0: the backend's server dies): a dot per
    connection, its colour the outcome."""
    t0 = min(s[0] for s in samples)
    t1 = max(s[0] for s in samples)
    span = (t1 - t0) or 1.0
    width, height = 560, 84

    def x(t: float) -> float:
        return 10 + (width - 20) * (t - t0) / span

    lanes = {k: 22 + 9 * j for j, k in enumerate(OUTCOME)}  # a lane per outcome, under the labels
    dots = "".join(f'<circle cx="{x(t):.1f}" cy="{lanes.get(o, lanes["error"])}" r="2.2" fill="{OUTCOME.get(o, "#64748b")}"/>'
                   for t, o in samples)
    legend = "".join(f'<text x="{10 + 95 * j}" y="{height - 2}" font-size="10" fill="{c}">● {k}</text>'
                     for j, (k, c) in enumerate(OUTCOME.items()))
    return (f'<svg class="timeline" width="{width}" height="{height}" font-family="sans-serif" role="img" '
            f'aria-label="failover timeline">'
            f'<line x1="{x(0):.1f}" y1="4" x2="{x(0):.1f}" y2="{height - 14}" stroke="#0f172a" stroke-dasharray="3,3"/>'
            f'<text x="{x(0) + 4:.1f}" y="10" font-size="10">server dies (t=0)</text>'
            f'<text x="{width - 60}" y="10" font-size="10">{t1:+.1f} s</text>{dots}{legend}</svg>')
