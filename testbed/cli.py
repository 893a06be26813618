"""The `testbed` command. rich lives here only; everything below returns data."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import manifests, model, state
from .errors import TestbedError

console = Console()
err = Console(stderr=True)

MODE_NOTES = {
    "iptables": "kube-proxy's default mode; first-packet cost grows with the number of Services",
    "nftables": "GA in Kubernetes 1.33; kube-proxy's newest mode",
    "ipvs": "deprecated in Kubernetes 1.35; needs a kernel with IPVS (`testbed vm`)",
    "userspace": "removed from kube-proxy in Kubernetes 1.26; kept here to show what it did",
}


def _lab_name(args) -> str:
    if getattr(args, "lab", None):
        return args.lab
    labs = state.list_labs()
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise TestbedError("no lab is running: `testbed up` first")
    raise TestbedError(f"several labs are running ({', '.join(labs)}): pick one with --lab")


class _ProgressView:
    """Turns the library's progress events into a rich progress bar."""

    def __init__(self, progress: Progress):
        self.p = progress
        self.task = None

    def __call__(self, event: str, info: dict) -> None:
        if event == "step":
            if self.task is not None:
                self.p.update(self.task, completed=self.p.tasks[self.task].total)
            self.task = self.p.add_task(info["what"], total=info.get("total") or 1)
        elif event == "advance" and self.task is not None:
            self.p.update(self.task, advance=1, description=info["what"])
        elif event == "notes":
            print_notes(info["topology"], self.p.console)
        elif event == "check":
            if self.task is None or self.p.tasks[self.task].description.startswith("rules"):
                self.task = self.p.add_task("checks", total=None)
            self.p.update(self.task, description=f"[{info['mode']}] {info['behaviour'][:70]}")


def print_notes(topo, out: Console | None = None) -> None:
    """What the file held that the lab does not model, each named once, and what was inferred:
    a heading per kind of note, then its items, wrapped to the terminal with a hanging indent."""
    import textwrap

    out = out or err
    width = max(40, min(out.width, 120))
    prefix = f"{topo.source}: "

    def block(head: str, items: list[str], style: str) -> None:
        if not items:
            return
        out.print(Text(f"{topo.source}: {head}", style=style), soft_wrap=True)
        for item in items:
            item = item[len(prefix):] if item.startswith(prefix) else item
            text = textwrap.fill(item, width, initial_indent="  ", subsequent_indent="      ",
                                 break_on_hyphens=False, break_long_words=True)
            out.print(Text(text), soft_wrap=True)

    block("inferred (pin them in the Lab document for an exact replay):", list(topo.lab.inferred), "cyan")
    block("not modelled (accepted):", topo.summary(), "yellow")
    block("not modelled, and it changes behaviour:", list(topo.effects), "bold yellow")
    block("ignored (not modelled; no effect on Service networking):",
          [f"{kind}: {fields}" for kind, fields in _ignored_by_kind(topo.ignored)], "yellow")


def _ignored_by_kind(ignored) -> list[tuple[str, str]]:
    """`spec.template.spec.containers[].env` and friends, per kind, as `containers[].{env, resources}`."""
    by_kind: dict[str, dict[str, None]] = {}
    for kind, path, _n in ignored:
        path = path.removeprefix("spec.template.spec.").removeprefix("spec.")
        by_kind.setdefault(kind, {})[path] = None
    out = []
    for kind, paths in by_kind.items():
        groups: dict[str, list[str]] = {}
        for path in paths:
            head, dot, leaf = path.rpartition(".")
            groups.setdefault(head if dot else "", []).append(leaf)
        parts = [(f"{head}." if head else "") + (leaves[0] if len(leaves) == 1 else "{" + ", ".join(sorted(leaves)) + "}")
                 for head, leaves in sorted(groups.items())]
        out.append((kind, ", ".join(parts)))
    return out


def _load(args, path: str | None = None):
    """The topology of FILE (or `-`) as `render`/`verify` read it, with --strict and --rebuild-endpoints."""
    return model.load_file(path or args.file or str(model.builtin("default")), strict=getattr(args, "strict", False),
                           rebuild_endpoints=True if getattr(args, "rebuild_endpoints", False) else None)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=err, transient=True)


def _summary(lab, report=None) -> None:
    cluster = lab.cluster()
    console.print(f"[bold]lab[/] {lab.name}  [bold]mode[/] {lab.saved['mode']} ({MODE_NOTES[lab.saved['mode']]})")
    _print_nodes(cluster)
    _print_pods(cluster)
    _print_services(cluster)
    if report:
        console.print(f"rules: {report.transactions} iptables-restore transactions (one per node); "
                      f"change → rules applied in {report.seconds_to_rules * 1000:.1f} ms "
                      f"(render {report.render_seconds * 1000:.1f} ms, kernel {report.apply_seconds * 1000:.1f} ms); "
                      f"total {report.seconds_total * 1000:.1f} ms")


def _print_nodes(cluster) -> None:
    t = Table(title="nodes", title_justify="left")
    for c in ("NAME", "ROLE", "IP", "POD CIDR", "PODS"):
        t.add_column(c)
    for n in cluster.nodes:
        t.add_row(n.name, "node", n.ip, n.pod_cidr, str(sum(p.node == n.name for p in cluster.pods)))
    for c in cluster.clients:
        t.add_row(c.name, "client (outside the cluster)", c.ip, "-", "-")
    console.print(t)


def _print_pods(cluster, pods_state: dict | None = None) -> None:
    t = Table(title="pods", title_justify="left")
    for c in ("NAMESPACE", "NAME", "NODE", "IP", "PORTS", "OWNER", "READY", "STATUS", "RESTARTS"):
        t.add_column(c)
    for p in cluster.pods:
        status = "Terminating" if p.terminating else "Running"
        restarts = str((pods_state or {}).get(p.key, {}).get("restarts", 0))
        t.add_row(p.namespace, p.name, p.node, p.ip, ",".join(f"{c.port}/{c.protocol}" for c in p.ports),
                  p.owner or "-", "yes" if p.ready else "no", status, restarts)
    console.print(t)


def _ports(info) -> str:
    out = []
    for sp, np_ in zip(info.service.ports, info.node_ports):
        out.append(f"{sp.port}{':' + str(np_) if np_ else ''}/{sp.protocol}")
    return ",".join(out)


def _external(info) -> str:
    s = info.service
    if s.type == "ExternalName":
        return s.external_name or ""
    ips = list(info.load_balancer_ips) + list(s.external_ips)
    if s.type == "LoadBalancer" and not info.load_balancer_ips:
        return "<pending>"
    return ",".join(ips) or "<none>"


def _print_services(cluster) -> None:
    t = Table(title="services", title_justify="left")
    for c in ("NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "ENDPOINTS"):
        t.add_column(c)
    for info in cluster.services:
        eps = sorted({e.address for eps in info.endpoints for e in eps if e.ready})
        t.add_row(info.service.namespace, info.service.name, info.service.type, info.cluster_ip or "None",
                  _external(info), _ports(info), ", ".join(eps) or "[red]<none>[/]")
    console.print(t)


def _service_json(info) -> dict:
    s = info.service
    return {"namespace": s.namespace, "name": s.name, "type": s.type, "clusterIP": info.cluster_ip,
            "externalIPs": list(s.external_ips), "healthCheckNodePort": info.health_check_node_port,
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in info.load_balancer_ips]}},
            "ports": [{"name": sp.name, "protocol": sp.protocol, "port": sp.port,
                       "targetPort": sp.target_port if sp.target_port is not None else sp.port, "nodePort": np_}
                      for sp, np_ in zip(s.ports, info.node_ports)]}


def _endpoints_json(info) -> dict:
    s = info.service
    return {"namespace": s.namespace, "service": s.name, "ports": [
        {"name": sp.name, "protocol": sp.protocol, "endpoints": [
            {"ip": e.ip, "port": e.port, "nodeName": e.node,
             "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating}} for e in eps]}
        for sp, eps in zip(s.ports, info.endpoints)]}


# ----------------------------------------------------------------------------- commands


def cmd_up(args) -> int:
    from .lab import Lab
    with _progress() as p:
        lab = Lab.up(args.file, name=args.name, mode=args.mode, progress=_ProgressView(p), strict=args.strict,
                     rebuild_endpoints=True if args.rebuild_endpoints else None)
    report_sync = lab.saved["syncs"][-1] if lab.saved.get("syncs") else None
    _summary(lab)
    if report_sync:
        console.print(f"built and synced in {report_sync['total_ms']:.0f} ms (rules applied {report_sync['to_rules_ms']:.0f} ms after the start of the sync); "
                      f"try `testbed get pods`, `testbed exec {lab.cluster().pods[0].name if lab.cluster().pods else 'node/NAME'} -- ip addr`, `testbed down {lab.name}`")
    return 0


def cmd_down(args) -> int:
    from .lab import Lab, down_all, require_root
    require_root()
    if args.all:
        labs = down_all()
        console.print(f"removed labs: {', '.join(labs) or 'none'}")
        return 0
    name = args.lab or _lab_name(args)
    res = Lab(name).down()
    console.print(f"lab {name}: removed {res['namespaces']} namespaces, stopped {res['processes']} processes")
    return 0


def cmd_get(args) -> int:
    from .lab import Lab
    lab = Lab(_lab_name(args))
    cluster = lab.cluster()
    what = args.what
    if args.output == "json":
        if what == "nodes":
            data = [{"name": n.name, "ip": n.ip, "podCIDR": n.pod_cidr, "role": "node"} for n in cluster.nodes] + \
                   [{"name": c.name, "ip": c.ip, "role": "client"} for c in cluster.clients]
        elif what == "pods":
            data = [{"namespace": p.namespace, "name": p.name, "node": p.node, "ip": p.ip, "owner": p.owner,
                     "labels": dict(p.labels), "ready": p.ready, "terminating": p.terminating,
                     "restarts": lab.saved.get("pods", {}).get(p.key, {}).get("restarts", 0)} for p in cluster.pods]
        elif what == "services":
            data = [_service_json(i) for i in cluster.services]
        else:
            data = [_endpoints_json(i) for i in cluster.services]
        print(json.dumps(data, indent=2))
        return 0
    if what == "nodes":
        _print_nodes(cluster)
    elif what == "pods":
        _print_pods(cluster, lab.saved.get("pods"))
    elif what == "services":
        _print_services(cluster)
    else:
        t = Table(title="endpoints", title_justify="left")
        for c in ("SERVICE", "PORT", "ENDPOINT", "NODE", "READY", "SERVING", "TERMINATING"):
            t.add_column(c)
        for info in cluster.services:
            for sp, eps in zip(info.service.ports, info.endpoints):
                for e in eps or []:
                    t.add_row(info.key, f"{sp.name or sp.port}/{sp.protocol}", e.address, e.node or "-",
                              str(e.ready).lower(), str(e.serving).lower(), str(e.terminating).lower())
                if not eps:
                    t.add_row(info.key, f"{sp.name or sp.port}/{sp.protocol}", "[red]<none>[/]", "", "", "", "")
        console.print(t)
        _print_programming_latency(lab.saved)
    return 0


def _print_programming_latency(saved: dict) -> None:
    """kube-proxy's metric from the sync log, and what traffic saw (`testbed latency`), per mode."""
    from . import latency

    syncs = saved.get("syncs", [])
    if syncs:
        t = Table(title="network programming latency: change → rules on every node (kube-proxy's "
                        "network_programming_duration), from the lab's last syncs", title_justify="left")
        for c in ("MODE", "CHANGE", "SYNCS", "MEDIAN", "MAX"):
            t.add_column(c, justify="right" if c in ("SYNCS", "MEDIAN", "MAX") else "left", no_wrap=c == "MODE")
        for r in latency.sync_summary(syncs):
            t.add_row(r["mode"], r["trigger"], str(r["n"]), f"{r['p50_ms']:.0f} ms", f"{r['max_ms']:.0f} ms")
        console.print(t)
        last = syncs[-1]
        console.print(f"last sync ({last.get('trigger') or '?'}): change → rules applied {last['to_rules_ms']} ms; "
                      f"{last['transactions']} transactions; added {last['added'] or '-'}; removed {last['removed'] or '-'}")
    rows = latency.summary(saved.get("latency", []))
    if not rows:
        console.print("[dim]change → traffic not measured yet: `testbed latency` measures it on this lab[/]")
        return
    t = Table(title="change → traffic shows it (medians; testbed latency: a new connection every 2 ms from a pod), "
                    "RULES = change → rules on every node in the same runs", title_justify="left")
    for c in ("MODE", "CHANGE", "RUNS", "TRAFFIC", "MAX", "RULES", "±"):
        t.add_column(c, justify="left" if c in ("MODE", "CHANGE") else "right", no_wrap=c in ("MODE", "CHANGE"))
    for r in rows:
        ms = lambda v: "-" if v is None else f"{v:.0f} ms"  # noqa: E731
        runs = f"{r['n']}" + (f" ({r['missed']} not seen)" if r["missed"] else "")
        t.add_row(r["mode"], r["change"], runs, ms(r["observed_p50_ms"]), ms(r["observed_max_ms"]),
                  ms(r["rules_p50_ms"]), f"±{r['resolution_ms']:.0f} ms")
    console.print(t)


def cmd_latency(args) -> int:
    from . import latency
    from .lab import Lab, require_root

    require_root()
    lab = Lab(_lab_name(args))
    console.print(f"lab [bold]{lab.name}[/] ({lab.saved['mode']} mode): "
                  f"{args.repeat} × {', '.join(args.change or latency.CHANGES)}")
    with console.status("measuring") as status:
        results = latency.measure(lab, args.service, tuple(args.change or latency.CHANGES), args.repeat,
                                  progress=lambda msg: (status.update(msg), console.print(f"  {msg}")))
    if not results:
        return 1
    _print_programming_latency(Lab(lab.name).saved)
    return 0


def cmd_exec(args) -> int:
    from .kernel import netns
    from .lab import Lab, require_root, target_namespace
    require_root()
    cmd = list(args.command)
    while cmd and cmd[0] == "--lab" and len(cmd) > 1:  # `exec POD --lab L -- CMD`: REMAINDER took it
        args.lab, cmd = cmd[1], cmd[2:]
    lab = Lab(_lab_name(args))
    ns = target_namespace(lab.name, lab.cluster(), args.target)
    cmd = cmd[1:] if cmd and cmd[0] == "--" else cmd
    if not cmd:
        raise TestbedError("expected a command after --, e.g. testbed exec POD -- ip addr")
    fd = os.open(netns.path(ns), os.O_RDONLY)
    netns.setns(fd)
    os.close(fd)
    _pod_resolv_conf(lab, ns)
    try:
        os.execvp(cmd[0], cmd)
    except FileNotFoundError:
        raise TestbedError(f"command not found: {cmd[0]}") from None


def _pod_resolv_conf(lab, ns: str) -> None:
    """A pod sees Kubernetes' resolv.conf (search path, ndots:5, the cluster DNS): in a private
    mount namespace, the lab's file for the pod's namespace is bind-mounted over /etc/resolv.conf,
    as `ip netns exec` does with /etc/netns/NAME/. The host's file is never touched."""
    import ctypes

    cluster = lab.cluster()
    pod = next((p for p in cluster.pods if f"{lab.name}-{p.namespace}.{p.name}" == ns), None)
    conf = state.lab_dir(lab.name) / "resolv" / f"{pod.namespace}.conf" if pod else None
    if conf is None or not conf.exists():
        return
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNS, MS_REC, MS_PRIVATE, MS_BIND = 0x00020000, 0x4000, 1 << 18, 0x1000
    if libc.unshare(CLONE_NEWNS) != 0 or libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return
    libc.mount(str(conf).encode(), b"/etc/resolv.conf", None, MS_BIND, None)


def _highlight_rules(text: str) -> Text:
    out = Text()
    for line in text.splitlines(keepends=True):
        if line.startswith("*") or line.startswith("COMMIT"):
            out.append(line, style="bold magenta")
        elif line.startswith(":"):
            out.append(line, style="cyan")
        elif line.startswith("#"):
            out.append(line, style="dim")
        else:
            t = Text(line)
            t.highlight_regex(r"KUBE-[A-Z0-9-]+", "bold cyan")
            t.highlight_regex(r"\b(chain|map|set|table) \S+", "bold cyan")
            t.highlight_regex(r"\b(dnat to|masquerade|reject|drop|goto|jump|vmap)\b", "bold red")
            t.highlight_regex(r"\b\d+\.\d+\.\d+\.\d+(/\d+)?(:\d+)?\b", "green")
            t.highlight_regex(r"--comment (\"[^\"]*\"|\S+)", "yellow")
            t.highlight_regex(r"-j (DNAT|MASQUERADE|REJECT|DROP|ACCEPT|RETURN)", "bold red")
            out.append_text(t)
    return out


def cmd_rules(args) -> int:
    from .kernel import iptables as kipt
    from .kernel import nft as knft
    from .lab import Lab, require_root
    require_root()
    lab = Lab(_lab_name(args))
    if args.node not in lab.saved["nodes"]:
        raise TestbedError(f"no node {args.node!r} in lab {lab.name} (nodes: {', '.join(lab.saved['nodes'])})")
    ns = lab.saved["nodes"][args.node]["ns"]
    text = knft.list_table(ns) if lab.saved["mode"] == "nftables" else kipt.save(ns)
    if args.raw or not sys.stdout.isatty():
        sys.stdout.write(text)
    else:
        console.print(_highlight_rules(text))
    return 0


def cmd_render(args) -> int:
    from .control import reconcile
    from .lab import render_for_mode
    topo = _load(args)
    mode = args.mode or topo.lab.proxy_mode
    print_notes(topo)
    cluster, _ = reconcile(topo)
    nodes = [args.node] if args.node else [n.name for n in cluster.nodes]
    for n in nodes:
        try:
            cluster.node(n)
        except KeyError as e:
            raise TestbedError(str(e.args[0])) from None
        text = render_for_mode(mode, cluster.node_view(n), first=args.bootstrap or mode != "iptables")
        if len(nodes) > 1:
            sys.stdout.write(f"# node {n}\n")
        sys.stdout.write(text)
    return 0


def cmd_apply(args) -> int:
    from .lab import Lab
    lab = Lab(_lab_name(args))
    if not args.file and not args.mode:
        raise TestbedError("expected -f FILE and/or --mode MODE")
    if args.mode and args.mode != lab.saved["mode"]:
        old = lab.saved["mode"]
        report = lab.switch_mode(args.mode)
        console.print(f"switched {lab.name} from {old} to {args.mode}: {old} rules removed from every node")
        _report(report)
    if args.file:
        _report(lab.apply(args.file))
    return 0


def cmd_delete(args) -> int:
    from .lab import Lab
    lab = Lab(_lab_name(args))
    ns, _, name = args.name.rpartition("/")
    report = lab.delete(args.kind, name, ns or args.namespace, grace=args.grace_period)
    _report(report)
    return 0


def _report(report) -> None:
    if report.added_pods:
        console.print(f"[green]added[/] {', '.join(report.added_pods)}")
    if report.removed_pods:
        console.print(f"[red]removed[/] {', '.join(report.removed_pods)}")
    console.print(f"rules: {report.transactions} transactions (at most one per node: {', '.join(report.nodes_synced)}); "
                  f"change → rules applied in [bold]{report.seconds_to_rules * 1000:.1f} ms[/] "
                  f"(render {report.render_seconds * 1000:.1f} ms, kernel {report.apply_seconds * 1000:.1f} ms); "
                  f"done in {report.seconds_total * 1000:.1f} ms")


def cmd_pod(args) -> int:
    from .lab import Lab
    lab = Lab(_lab_name(args))
    console.print(lab.stage(args.name, args.action))
    return 0


def cmd_list(args) -> int:
    t = Table(title="labs", title_justify="left")
    for c in ("NAME", "MODE", "SOURCE", "PODS", "AGE"):
        t.add_column(c)
    for name in state.list_labs():
        s = state.read(name) or {}
        t.add_row(name, s.get("mode", "?"), s.get("source", "?"), str(len(s.get("pods", {}))),
                  f"{time.time() - s.get('created', time.time()):.0f}s")
    console.print(t)
    return 0


def print_matrix(matrix, out: Console | None = None) -> None:
    t = Table(title="behaviour × proxy mode", title_justify="left", show_lines=True)
    t.add_column("behaviour")
    for m in matrix.modes:
        t.add_column(m)
    style = {"pass": "green", "fail": "bold red", "skip": "yellow"}
    for behaviour, row in matrix.rows.items():
        cells = []
        for m in matrix.modes:
            c = row.get(m)
            cells.append(Text("-") if c is None else Text(f"{c.status}\n{c.reason}", style=style[c.status]))
        t.add_row(behaviour, *cells)
    (out or console).print(t)


def cmd_verify(args) -> int:
    from .lab import require_root
    from .verify import verify
    require_root()
    modes = args.mode or list(model.PROXY_MODES)
    for m in modes:
        if m not in model.PROXY_MODES:
            raise TestbedError(f"--mode: expected one of {', '.join(model.PROXY_MODES)}, got {m!r}")
    path = args.file
    if path == "-":  # every mode builds from it (and the IPVS column inside the guest): keep a copy
        import tempfile
        text, _ = manifests.read_source("-")
        fd, path = tempfile.mkstemp(prefix="testbed-stdin-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
    try:
        if path:
            _load(args, path)  # a bad file fails before anything is built
        options = {"strict": args.strict, "rebuild_endpoints": True if args.rebuild_endpoints else None}
        with _progress() as p:
            matrix = verify(path, modes, progress=_ProgressView(p), options=options)
    finally:
        if path and path != args.file:
            os.unlink(path)
    human = err if args.json == "-" else console  # keep stdout pure JSON for machines
    print_matrix(matrix, human)
    if args.json:
        data = json.dumps(matrix.to_json(), indent=2)
        if args.json == "-":
            print(data)
        else:
            with open(args.json, "w") as f:
                f.write(data + "\n")
    n = matrix.counts()
    human.print(f"{n['pass']} passed, {n['fail']} failed, {n['skip']} skipped")
    return 1 if matrix.failed else 0


FILE_HELP = ("what kubectl apply -f takes: a Lab document plus Kubernetes manifests, helm template or kubectl "
             "kustomize output, a `kubectl get -o yaml` dump (YAML or JSON; - for standard input)")


def _input_options(p) -> None:
    p.add_argument("--strict", action="store_true",
                   help="refuse kinds and fields testbed does not model (default: accept and name them once)")
    p.add_argument("--rebuild-endpoints", action="store_true",
                   help="a dump's EndpointSlices are rebuilt from its pods (default: used as dumped)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="testbed", description="Kubernetes Service networking from real kernel objects.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("up", help="build a lab (the default lab when no FILE is given) and leave it running")
    p.add_argument("file", nargs="?", help=FILE_HELP)
    _input_options(p)
    p.add_argument("--mode", choices=model.PROXY_MODES, help="proxy mode (default: the Lab's spec.proxyMode)")
    p.add_argument("--name", help="lab name (default: the Lab's metadata.name)")
    p.set_defaults(fn=cmd_up)

    p = sub.add_parser("down", help="remove everything a lab made (idempotent; works after a crash)")
    p.add_argument("lab", nargs="?")
    p.add_argument("--all", action="store_true", help="every lab on this machine")
    p.set_defaults(fn=cmd_down)

    p = sub.add_parser("get", help="show nodes, pods, services or endpoints")
    p.add_argument("what", choices=("nodes", "pods", "services", "endpoints", "node", "pod", "service", "svc", "ep"))
    p.add_argument("--lab")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(fn=cmd_get)

    p = sub.add_parser("exec", help="run a command inside a pod's (or node/NAME, client/NAME) namespace")
    p.add_argument("target", help="POD, NAMESPACE/POD, node/NAME or client/NAME")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.add_argument("--lab")
    p.set_defaults(fn=cmd_exec)

    p = sub.add_parser("rules", help="the rules installed on a node now (iptables-save or nft list, highlighted)")
    p.add_argument("node")
    p.add_argument("--lab")
    p.add_argument("--raw", action="store_true", help="plain text, no highlighting")
    p.set_defaults(fn=cmd_rules)

    p = sub.add_parser("render", help="print the rules `up` would install on a node (no root, no kernel)")
    p.add_argument("file", nargs="?", help=FILE_HELP)
    _input_options(p)
    p.add_argument("--mode", choices=model.PROXY_MODES)
    p.add_argument("--node", help="node name (default: every node)")
    p.add_argument("--bootstrap", action="store_true",
                   help="include the jumps from the built-in chains, as the first sync installs them")
    p.set_defaults(fn=cmd_render)

    p = sub.add_parser("apply", help="change a running lab from a file (scale, add or edit objects)")
    p.add_argument("-f", "--file", help="manifests (YAML or JSON, as kubectl apply -f takes them; - for standard input)")
    p.add_argument("--mode", choices=model.PROXY_MODES, help="switch the running lab to this proxy mode")
    p.add_argument("--lab")
    p.set_defaults(fn=cmd_apply)

    p = sub.add_parser("delete", help="delete a pod (a Deployment's pod comes back with a new name and IP) or another object")
    p.add_argument("kind", help="pod | service | deployment | replicaset | statefulset | daemonset | job | "
                                "replicationcontroller | endpointslice (kubectl's short names too)")
    p.add_argument("name", help="NAME or NAMESPACE/NAME")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--grace-period", type=int, default=None,
                   help="seconds a deleted pod stays terminating (default: its terminationGracePeriodSeconds; 0: at once)")
    p.add_argument("--lab")
    p.set_defaults(fn=cmd_delete)

    p = sub.add_parser("pod", help="stage a failure: stop, hang, resume, unready, ready or start a pod's server")
    p.add_argument("action", choices=("stop", "hang", "resume", "unready", "ready", "start"))
    p.add_argument("name", help="POD or NAMESPACE/POD")
    p.add_argument("--lab")
    p.set_defaults(fn=cmd_pod)

    p = sub.add_parser("latency", help="measure network programming latency on a running lab: change → rules, change → traffic")
    p.add_argument("--service", help="NAME or NAMESPACE/NAME (default: the first with two ready endpoints)")
    p.add_argument("--change", action="append", choices=("pod-unready", "pod-ready", "pod-deleted", "service-edited"),
                   help="repeatable (default: all); pod-deleted replaces one Deployment pod")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--lab")
    p.set_defaults(fn=cmd_latency)

    p = sub.add_parser("trace", help="send one packet and show the rules it went through (kernel nftrace)")
    p.add_argument("--from", dest="source", required=True, help="POD, NAMESPACE/POD, node/NAME or client/NAME")
    p.add_argument("--to", dest="target", required=True, help="svc/NAME[:PORT], nodeport/NAME@NODE[:PORT] or IP:PORT")
    p.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    p.add_argument("--lab")
    p.set_defaults(fn=lambda args: __import__("testbed.trace_view", fromlist=["cmd_trace"]).cmd_trace(args))

    p = sub.add_parser("vm", help="run a command in a guest kernel that has IPVS, dummy and netem (qemu)")
    p.add_argument("--timeout", type=float, default=600, help="seconds, boot included")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(fn=lambda args: __import__("testbed.vm", fromlist=["cmd_vm"]).cmd_vm(args))

    p = sub.add_parser("bench", help="measure first-packet latency and sync time against the number of Services, and lab build speed")
    from . import bench as _bench
    _bench.add_arguments(p)
    p.set_defaults(fn=lambda args: __import__("testbed.bench_view", fromlist=["cmd_bench"]).cmd_bench(args))

    p = sub.add_parser("list", help="labs running on this machine")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("verify", help="build the lab in each proxy mode and check Service behaviour with real traffic")
    p.add_argument("file", nargs="?", help=FILE_HELP)
    _input_options(p)
    p.add_argument("--mode", action="append", help="restrict to this mode (repeatable)")
    p.add_argument("--json", metavar="PATH", help="write the matrix as JSON ('-' for standard output)")
    p.set_defaults(fn=cmd_verify)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "what", None) in ("node", "pod", "service", "svc", "ep"):
        args.what = {"node": "nodes", "pod": "pods", "service": "services", "svc": "services", "ep": "endpoints"}[args.what]
    try:
        return args.fn(args)
    except TestbedError as e:
        # Not rich markup and not wrapped: paths and field names must come out verbatim.
        err.print(Text("error: ", style="bold red") + Text(str(e)), soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        return 130
    except BrokenPipeError:
        # The reader went away (`testbed render | head`): no traceback, as other Unix tools. Standard
        # output goes to /dev/null so that Python's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
