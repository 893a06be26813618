"""`testbed graph`: a lab drawn from the model — nodes and their pods, Services and their
endpoints, the cloud load balancer, Ingresses, outside clients — as SVG (laid out here, no
Graphviz needed), Graphviz DOT text, Mermaid text, or an HTML page holding the SVG.

For a running lab every endpoint edge shows its state (ready, serving only, unready); a file is
drawn as the controllers would first make it."""
from __future__ import annotations

import html
from dataclasses import dataclass, field

from .control import ClusterState


@dataclass(frozen=True)
class Vertex:
    id: str
    kind: str  # node | pod | service | lb | ingress | client
    label: str
    detail: str = ""
    parent: str | None = None  # a pod's node
    state: str = "ok"  # ok | unready | terminating | stale (a node whose rules are out of date)


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    state: str = "ready"  # ready | serving | unready | route
    label: str = ""


@dataclass
class Graph:
    title: str
    live: bool
    vertices: list[Vertex] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Vertex]:
        return [v for v in self.vertices if v.kind == kind]


def _id(*parts: str) -> str:
    return "_".join("".join(c if c.isalnum() else "_" for c in p) for p in parts)


def of_cluster(cluster: ClusterState, live: bool, out_of_date: dict | None = None) -> Graph:
    lab = cluster.lab
    g = Graph(f"lab {lab.name} ({lab.proxy_mode})" if live else f"{cluster.topology.source} ({lab.proxy_mode})", live)
    for c in cluster.clients:
        g.vertices.append(Vertex(_id("client", c.name), "client", c.name, c.ip))
    lbs = [s for s in cluster.services if s.load_balancer_ips]
    if lbs:
        g.vertices.append(Vertex("lb", "lb", "cloud load balancer", f"{lab.lb_mode} mode"))
        for c in cluster.clients:
            g.edges.append(Edge(_id("client", c.name), "lb", "route"))
    for ing in cluster.topology.ingresses:
        hosts = ", ".join(dict.fromkeys(r.host for r in ing.rules if r.host)) or "*"
        g.vertices.append(Vertex(_id("ing", ing.key), "ingress", f"ingress {ing.name}", hosts))
    for n in cluster.nodes:
        stale = (out_of_date or {}).get(n.name)
        g.vertices.append(Vertex(_id("node", n.name), "node", n.name, f"{n.ip}  pods {n.pod_cidr}",
                                 state="stale" if stale and stale != "syncing" else "ok"))
    for p in cluster.pods:
        state = "terminating" if p.terminating else "ok" if p.ready else "unready"
        g.vertices.append(Vertex(_id("pod", p.key), "pod", p.name if p.namespace == "default" else p.key, p.ip,
                                 parent=_id("node", p.node), state=state))
    pod_of = {p.ip: _id("pod", p.key) for p in cluster.pods}
    for info in cluster.services:
        s = info.service
        ports = ",".join(f"{sp.port}/{sp.protocol}" for sp in s.ports)
        addr = s.external_name if s.type == "ExternalName" else ("headless" if s.headless else info.cluster_ip)
        name = s.name if s.namespace == "default" else info.key
        sid = _id("svc", info.key)
        g.vertices.append(Vertex(sid, "service", name, f"{s.type} {addr or ''} {ports}".strip()))
        seen: dict[str, str] = {}
        for eps in info.endpoints:
            for e in eps:
                state = "ready" if e.ready else "serving" if e.serving else "unready"
                if e.ip in pod_of and (seen.get(e.ip) != "ready"):
                    seen[e.ip] = state
        for ip, state in seen.items():
            g.edges.append(Edge(sid, pod_of[ip], state))
        if info.load_balancer_ips:
            g.edges.append(Edge("lb", sid, "route", ",".join(info.load_balancer_ips)))
    for ing in cluster.topology.ingresses:
        backends = [p.backend for r in ing.rules for p in r.paths] + ([ing.default_backend] if ing.default_backend else [])
        for svc in dict.fromkeys(b.service for b in backends):
            g.edges.append(Edge(_id("ing", ing.key), _id("svc", f"{ing.namespace}/{svc}"), "route"))
    return g


# ----------------------------------------------------------------------------- text forms

DOT_STYLE = {"ready": "color=darkgreen", "serving": "color=orange,style=dashed", "unready": "color=red,style=dashed",
             "route": "color=gray40"}
SHAPE = {"client": "box,style=rounded", "lb": "hexagon", "ingress": "cds", "service": "ellipse", "pod": "box"}


def to_dot(g: Graph) -> str:
    out = [f'digraph lab {{\n  label="{g.title}";\n  rankdir=LR;\n  node [fontname="sans-serif",fontsize=10];']
    for v in g.vertices:
        if v.kind in ("client", "lb", "ingress", "service"):
            out.append(f'  {v.id} [shape={SHAPE[v.kind]},label="{_dq(v.label)}\\n{_dq(v.detail)}"];')
    for node in g.of_kind("node"):
        out.append(f'  subgraph cluster_{node.id} {{\n    label="{_dq(node.label)} {_dq(node.detail)}";'
                   + ("\n    color=red;" if node.state == "stale" else ""))
        for v in g.vertices:
            if v.parent == node.id:
                style = "" if v.state == "ok" else ",style=dashed,color=red"
                out.append(f'    {v.id} [shape=box{style},label="{_dq(v.label)}\\n{_dq(v.detail)}"];')
        out.append("  }")
    for e in g.edges:
        label = f',label="{_dq(e.label)}"' if e.label else ""
        out.append(f"  {e.src} -> {e.dst} [{DOT_STYLE[e.state]}{label}];")
    return "\n".join(out) + "\n}\n"


def _dq(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def to_mermaid(g: Graph) -> str:
    out = ["flowchart LR"]
    shape = {"client": ("([", "])"), "lb": ("{{", "}}"), "ingress": ("[/", "/]"), "service": ("((", "))")}
    for v in g.vertices:
        if v.kind in shape:
            a, b = shape[v.kind]
            out.append(f'  {v.id}{a}"{_mq(v.label)}<br/>{_mq(v.detail)}"{b}')
    for node in g.of_kind("node"):
        out.append(f'  subgraph {node.id}["{_mq(node.label)} {_mq(node.detail)}"]')
        for v in g.vertices:
            if v.parent == node.id:
                out.append(f'    {v.id}["{_mq(v.label)}<br/>{_mq(v.detail)}"]')
        out.append("  end")
    arrow = {"ready": "-->", "serving": "-.->", "unready": "-.-x", "route": "==>"}
    for e in g.edges:
        label = f"|{_mq(e.label)}|" if e.label else ""
        out.append(f"  {e.src} {arrow[e.state]}{label} {e.dst}")
    return "\n".join(out) + "\n"


def _mq(s: str) -> str:
    return s.replace('"', "#quot;")


# ----------------------------------------------------------------------------- SVG

FILL = {"client": "#eef2ff", "lb": "#fef3c7", "ingress": "#fce7f3", "service": "#e0f2fe", "pod": "#ecfdf5",
        "node": "#f8fafc"}
STROKE = {"ready": "#15803d", "serving": "#d97706", "unready": "#dc2626", "route": "#64748b"}
POD_STATE = {"ok": "#ecfdf5", "unready": "#fee2e2", "terminating": "#fef3c7"}
W_SIDE, W_SVC, W_NODE, GAP = 190, 230, 260, 90
ROW, POD_H, HEAD = 46, 30, 40


def to_svg(g: Graph) -> str:
    """Clients, the load balancer and Ingresses on the left, Services in the middle, nodes with
    their pods on the right; an edge per endpoint, coloured by its state."""
    side = g.of_kind("client") + g.of_kind("lb") + g.of_kind("ingress")
    services = g.of_kind("service")
    nodes = g.of_kind("node")
    w_side, w_svc = _fit(side, W_SIDE), _fit(services, W_SVC)
    w_node = _fit([v for v in g.vertices if v.kind in ("pod", "node")], W_NODE, 24)
    x_side, x_svc = 20, 20 + w_side + GAP
    x_node = x_svc + w_svc + GAP
    pos: dict[str, tuple[float, float, float, float]] = {}  # id → x, y, w, h
    y = 50
    for v in side:
        pos[v.id] = (x_side, y, w_side, ROW - 8)
        y += ROW + 10
    y = 50
    for v in services:
        pos[v.id] = (x_svc, y, w_svc, ROW - 8)
        y += ROW
    y = 50
    node_boxes = []
    for n in nodes:
        pods = [v for v in g.vertices if v.parent == n.id]
        h = HEAD + len(pods) * (POD_H + 6) + 6
        node_boxes.append((n, (x_node, y, w_node, h)))
        for i, p in enumerate(pods):
            pos[p.id] = (x_node + 12, y + HEAD + i * (POD_H + 6), w_node - 24, POD_H)
        y += h + 20
    height = max([50] + [b[1] + b[3] for b in pos.values()] + [b[1] + b[3] for _, b in node_boxes]) + 60
    width = x_node + w_node + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           '<defs>' + "".join(
               f'<marker id="arrow-{k}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
               f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>'
               for k, c in STROKE.items()) + '</defs>',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="20" y="26" font-size="15" font-weight="bold">{_x(g.title)}</text>']
    for n, (x, y, w, h) in node_boxes:
        stroke = "#dc2626" if n.state == "stale" else "#94a3b8"
        out.append(f'<g class="node" data-name="{_x(n.label)}"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" '
                   f'fill="{FILL["node"]}" stroke="{stroke}" stroke-width="1.5"/>'
                   f'<text x="{x + 10}" y="{y + 17}" font-weight="bold">node {_x(n.label)}'
                   + (' (rules out of date)' if n.state == "stale" else "") + '</text>'
                   f'<text x="{x + 10}" y="{y + 32}" fill="#475569" font-size="11">{_x(n.detail)}</text></g>')
    for e in g.edges:
        if e.src not in pos or e.dst not in pos:
            continue
        sx, sy, sw, sh = pos[e.src]
        dx, dy, dw, dh = pos[e.dst]
        dash = ' stroke-dasharray="5,4"' if e.state in ("serving", "unready") else ""
        if dx > sx + sw:  # to the next column: from the right side to the left side
            x1, y1, x2, y2 = sx + sw, sy + sh / 2, dx, dy + dh / 2
            mid = (x1 + x2) / 2
            d = f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"
        else:  # within a column (a client to the load balancer): straight down
            x1, y1, x2, y2 = sx + sw / 2, sy + sh, dx + dw / 2, dy
            mid = x1 + 40
            d = f"M{x1},{y1} L{x2},{y2}"
        out.append(f'<path class="edge {e.state}" d="{d}" fill="none" '
                   f'stroke="{STROKE[e.state]}" stroke-width="1.4"{dash} marker-end="url(#arrow-{e.state})"/>')
        if e.label:
            out.append(f'<text x="{mid}" y="{(y1 + y2) / 2 - 4}" font-size="10" fill="#475569" '
                       f'text-anchor="middle">{_x(e.label)}</text>')
    for v in g.vertices:
        if v.id not in pos:
            continue
        x, y, w, h = pos[v.id]
        fill = POD_STATE.get(v.state, FILL["pod"]) if v.kind == "pod" else FILL[v.kind]
        rx = h / 2 if v.kind == "service" else 6
        stroke = "#dc2626" if v.state in ("unready", "terminating") else "#64748b"
        state = f" ({v.state})" if v.state in ("unready", "terminating") else ""
        out.append(f'<g class="{v.kind}" data-name="{_x(v.label)}"><rect x="{x}" y="{y}" width="{w}" height="{h}" '
                   f'rx="{rx}" fill="{fill}" stroke="{stroke}"/>'
                   f'<text x="{x + 10}" y="{y + (13 if v.kind == "pod" else 16)}" font-weight="bold">'
                   f'{_x(v.label + state)}</text>'
                   f'<text x="{x + 10}" y="{y + (25 if v.kind == "pod" else 31)}" font-size="10.5" '
                   f'fill="#475569">{_x(v.detail)}</text></g>')
    legend_y = height - 24
    lx = 20
    for state, text in (("ready", "ready endpoint"), ("serving", "serving, terminating"),
                        ("unready", "unready endpoint"), ("route", "traffic path")):
        dash = ' stroke-dasharray="5,4"' if state in ("serving", "unready") else ""
        out.append(f'<line x1="{lx}" y1="{legend_y}" x2="{lx + 30}" y2="{legend_y}" stroke="{STROKE[state]}" '
                   f'stroke-width="2"{dash}/><text x="{lx + 36}" y="{legend_y + 4}" font-size="11">{text}</text>')
        lx += 170
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _fit(vertices: list[Vertex], least: int, inset: int = 0) -> int:
    """A column wide enough for its longest label (bold 12 px ≈ 7.5 px a character)."""
    longest = max([0] + [max((len(v.label) + (14 if v.state != "ok" else 0)) * 7.6, len(v.detail) * 6.2)
                         for v in vertices])
    return int(max(least, longest + 24 + inset))


def _x(s: str) -> str:
    return html.escape(s, quote=True)


def to_html(g: Graph) -> str:
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_x(g.title)}</title></head>'
            f'<body style="margin:16px">{to_svg(g)}</body></html>\n')
