"""`testbed trace` as a rich tree: node → hook/base chain → rules (nested under the jumps that led there).

The data comes from testbed.trace (no rich there); this module only draws it.
"""
from __future__ import annotations

from rich.text import Text
from rich.tree import Tree

from .trace import ChainPass, Step, Trace, without_tracing_table

ACTION_STYLE = {"DNAT": "bold magenta", "SNAT": "bold magenta", "MASQUERADE": "bold magenta",
                "REJECT": "bold red", "DROP": "bold red", "MARK": "magenta"}
VERDICT_STYLE = {"accept": "green", "drop": "bold red", "jump": "cyan", "goto": "cyan", "return": "dim",
                 "continue": "dim"}


def _packet_summary(packet: dict[str, str], proto: str) -> str:
    if not packet:
        return ""
    src, dst = packet.get("ip saddr", "?"), packet.get("ip daddr", "?")
    sport, dport = packet.get(f"{proto} sport"), packet.get(f"{proto} dport")
    s = f"{src}{':' + sport if sport else ''} → {dst}{':' + dport if dport else ''}"
    extra = []
    if packet.get("tcp flags"):
        extra.append(packet["tcp flags"])
    for k in ("iif", "oif"):
        if packet.get(k):
            extra.append(f"{k} {packet[k]}")
    if packet.get("meta mark"):
        extra.append(f"mark {packet['meta mark']}")
    return s + (f" ({', '.join(extra)})" if extra else "")


def _rule_text(step: Step) -> Text:
    if step.kind == "policy":
        return Text(f"policy {step.verdict}", style=VERDICT_STYLE.get(step.verdict or "", ""))
    if step.iptables:
        body = step.iptables.removeprefix(f"-A {step.chain} ")
    else:
        body = step.rule or f"rule handle {step.handle}"
    t = Text(body)
    t.highlight_regex(r"--comment (\"[^\"]*\"|\S+)", "yellow")
    t.highlight_regex(r"\bcomment \"[^\"]*\"", "yellow")
    t.highlight_regex(r"-j (DNAT|MASQUERADE|SNAT)\b.*|\b(dnat|snat) to \S+|\bmasquerade\b.*", "bold magenta")
    t.highlight_regex(r"-j (REJECT|DROP)\b.*|\breject\b.*|\bdrop\b", "bold red")
    t.highlight_regex(r"\b(KUBE-[A-Z0-9-]+)", "cyan")
    return t


def _step_label(step: Step, show_chain: bool) -> Text:
    out = Text()
    if show_chain:
        out.append(f"{step.chain}: ", style="bold cyan")
    out.append_text(_rule_text(step))
    if step.kind != "policy" and step.verdict:
        verdict = step.verdict + (f" {step.target}" if step.target else "")
        out.append("  → ", style="dim")
        out.append(verdict, style=VERDICT_STYLE.get(step.verdict, ""))
    action = step.action
    if action and action != "MARK":
        out.append(f"  [{action}]", style=ACTION_STYLE[action])
    return out


def _add_pass(parent: Tree, p: ChainPass, proto: str) -> None:
    label = Text()
    label.append(f"{p.hook or '?'}", style="bold")
    label.append(f" · {p.family} {p.table} {p.chain}", style="bold blue")
    summary = _packet_summary(p.packet, proto)
    if summary:
        label.append(f"  {summary}", style="green")
    branch = parent.add(label)
    stack: list[tuple[str, Tree]] = [(p.chain, branch)]
    last_node: Tree | None = None
    last_target: str | None = None
    for s in p.steps:
        names = [c for c, _ in stack]
        if s.chain == stack[-1][0]:
            pass
        elif s.chain in names:
            while stack[-1][0] != s.chain:
                stack.pop()
        elif last_target == s.chain and last_node is not None:
            stack.append((s.chain, last_node))
        else:  # reached by a path the kernel did not report (e.g. a jump whose rule was not printed)
            stack.append((s.chain, stack[-1][1].add(Text(s.chain, style="bold cyan"))))
        node = stack[-1][1].add(_step_label(s, show_chain=s.kind != "policy"))
        last_node, last_target = node, s.target if s.verdict in ("jump", "goto") else None


def _ending(trace: Trace) -> Text:
    e = trace.ending
    if e.kind in ("received", "answered"):
        return Text(f"→ {e.summary}", style="bold green")
    if e.kind in ("rejected", "dropped"):
        return Text(f"✗ {e.summary}", style="bold red")
    return Text(f"? {e.summary}", style="bold yellow")


def render_tree(trace: Trace) -> Tree:
    head = Text()
    head.append("trace ", style="bold")
    head.append(f"{trace.source} ({trace.client_ip}:{trace.sport})")
    head.append(" → ")
    head.append(f"{trace.target} ({trace.dst_ip}:{trace.dst_port}/{trace.proto})")
    if trace.service:
        head.append(f"  service {trace.service}", style="dim")
    head.append(f"  lab {trace.lab}", style="dim")
    root = Tree(head)
    for nt in trace.nodes:
        nlabel = Text(f"node {nt.node}", style="bold cyan")
        if nt.node == trace.entry_node:
            nlabel.append("  (the packet enters here)", style="dim")
        if not nt.complete:
            nlabel.append("  (trace may be incomplete)", style="yellow")
        nb = root.add(nlabel)
        passes = without_tracing_table(nt.passes)
        if not passes:
            nb.add(Text("no rule of this node's tables saw the packet", style="dim"))
        for p in passes:
            _add_pass(nb, p, trace.proto)
    for nat in trace.nat:
        t = Text()
        t.append(f"conntrack on {nat.node}: ", style="bold")
        t.append(f"{nat.proto} {nat.orig}  reply {nat.reply}  ")
        parts = []
        parts.append(f"DNAT to {nat.dnat_to}" if nat.dnat_to else "no DNAT")
        parts.append(f"SNAT to {nat.snat_to}" if nat.snat_to else "not SNATed")
        t.append("; ".join(parts), style="magenta")
        root.add(t)
    for note in trace.notes:
        root.add(Text(note, style="dim yellow"))
    root.add(_ending(trace))
    return root


def cmd_trace(args) -> int:
    """`testbed trace --from SOURCE --to TARGET [--proto tcp|udp] [--lab LAB]`."""
    from .cli import _lab_name, console
    from .lab import Lab, require_root
    from .trace import run_trace

    require_root()
    lab = Lab(_lab_name(args))
    trace = run_trace(lab, args.source, args.target, proto=getattr(args, "proto", None) or "tcp",
                      timeout=getattr(args, "timeout", None) or 2.0)
    console.print(render_tree(trace))
    return 0
