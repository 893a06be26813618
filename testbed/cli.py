"""The `testbed` command. rich lives here only; everything below returns data."""
from __future__ import annotations

import argparse
import json
import os
import sys

from rich.console import Console
from rich.text import Text

from . import manifests, model, modes, state
from .errors import TestbedError

console = Console()
err = Console(stderr=True)

def _lab_name(args) -> str:
    if getattr(args, "lab", None):
        return args.lab
    labs = state.list_labs()
    if len(labs) == 1:
        return labs[0]
    if not labs:
        raise TestbedError("no lab is running: `testbed up` first")
    raise TestbedError(f"several labs are running ({', '.join(labs)}): pick one with --lab")


def _notice(event: str, info: dict) -> None:
    """What the library reports about a lab as it opens or syncs it, one line each on stderr."""
    lines = {
        "agent-restarted": f"notice: the lab's agent (pid {info.get('old')}) had died: restarted it "
                           f"(pid {info.get('new')})",
        "agent-down": f"notice: the lab's agent (pid {info.get('old')}) has died: a command run as root "
                      f"restarts it",
        "orphans": f"notice: removed {len(info.get('namespaces', ()))} pod namespaces that an interrupted "
                   f"command left",
    }
    if event in lines:
        err.print(lines[event], markup=False, highlight=False, soft_wrap=True)


def _open(args):
    """The lab a command works on (--lab, or the only one), its agent running again if it died."""
    from .lab import Lab
    return Lab.open(_lab_name(args), progress=_notice)


def print_notes(topo, out: Console | None = None, mode: str | None = None) -> None:
    """What the file held that the lab does not model, each named once, and what was inferred:
    a heading per kind of note, then its items, wrapped to the terminal with a hanging indent.
    With `mode`: also what rendering the nodes' kube-proxy releases in that mode means."""
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

    if mode:
        from .control import version_notes
        block("kube-proxy versions:", version_notes(topo, mode), "bold yellow")
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
    """The topology of FILE (or `-`) as `render`/`verify` read it, with --strict, --rebuild-endpoints
    and (render) --kube-proxy-version."""
    topo = model.load_file(path or args.file or str(model.builtin("default")), strict=getattr(args, "strict", False),
                           rebuild_endpoints=True if getattr(args, "rebuild_endpoints", False) else None)
    version = getattr(args, "kube_proxy_version", None)
    if isinstance(version, str):
        topo = model.with_kube_proxy_version(topo, version)
    return topo


def _progress():
    """Progress on stderr: a rich bar on a terminal, one plain line per step otherwise (CI logs)."""
    from .cli_view import progress
    return progress(err, lambda topo, out: print_notes(topo, out, mode=topo.lab.proxy_mode))


def _summary(lab) -> None:
    from . import get_view
    snap = get_view.Snapshot.of_lab(lab)
    console.print(f"[bold]lab[/] {lab.name}  [bold]mode[/] {lab.saved['mode']} ({modes.get(lab.saved['mode']).upstream})",
                  soft_wrap=True)
    for kinds in (["nodes"], ["clients"], ["pods"], ["services"]):
        text, _ = get_view.render(snap, kinds, "table", None)
        sys.stdout.write("\n" + text)
        sys.stdout.flush()
    _why_not(snap, None)


def _why_not(snap, namespaces) -> None:
    """What kubectl would say in events: why a node's rules are out of date, why a pod is Pending."""
    for name, why in snap.out_of_date.items():
        if why != "syncing":
            err.print(Text(f"{name}: out of date: {why}; its next sync is a full one"), soft_wrap=True)
    for key, why in snap.cluster.pending:
        if namespaces is None or key.split("/", 1)[0] in namespaces:
            err.print(Text(f"pod {key} is Pending: {why}"), soft_wrap=True)


# ----------------------------------------------------------------------------- commands


def cmd_up(args) -> int:
    from .lab import Lab
    with _progress() as view:
        lab = Lab.up(args.file, name=args.name, mode=args.mode, progress=view, strict=args.strict,
                     rebuild_endpoints=True if args.rebuild_endpoints else None)
    report_sync = lab.saved["syncs"][-1] if lab.saved.get("syncs") else None
    _summary(lab)
    if report_sync:
        pods = lab.cluster().pods
        console.print(f"built and synced in {report_sync['total_ms']:.0f} ms "
                      f"(rules applied {report_sync['to_rules_ms']:.0f} ms after the start of the sync); "
                      f"try `testbed get pods`, `testbed exec {pods[0].name if pods else 'node/NAME'} -- ip addr`, "
                      f"`testbed down {lab.name}`")
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
    from . import get_view
    kinds: list[str] = []
    for word in args.what.lower().split(","):
        kind = get_view.kind_of(word)
        kinds += list(get_view.ALL) if kind == "all" else [kind]
    lab = _open(args)
    snap = get_view.Snapshot.of_lab(lab)
    # As kubectl: one namespace (-n, default "default"), or every namespace with -A.
    namespaces = None if args.all_namespaces else {args.namespace}
    text, n = get_view.render(snap, kinds, args.output, namespaces, args.no_headers, set(args.names) or None)
    if args.names and n < len(args.names):
        raise TestbedError(f"{kinds[0]} {', '.join(args.names)} not found in "
                           f"{'any namespace' if namespaces is None else 'namespace ' + args.namespace}")
    sys.stdout.write(text)
    if not n and args.output in ("table", "wide"):
        where = "" if namespaces is None or not set(kinds) & get_view.NAMESPACED else f" in {args.namespace} namespace"
        err.print(f"No resources found{where}.")
    if args.output in ("table", "wide"):
        _why_not(snap, namespaces)
        if kinds == ["endpoints"]:
            _print_programming_latency(lab.saved, err)
    return 0


def _print_programming_latency(saved: dict, out: Console | None = None) -> None:
    """kube-proxy's metric from the sync log, and what traffic saw (`testbed latency`), per mode."""
    from . import latency
    from .cli_view import columns

    out = out or console

    def say(text: str) -> None:
        out.print(Text(text), soft_wrap=True, end="")

    syncs = saved.get("syncs", [])
    if syncs:
        say("\nnetwork programming latency: change → rules on every node (kube-proxy's\n"
            "network_programming_duration), from the lab's last syncs:\n")
        say(columns(["MODE", "CHANGE", "SYNCS", "MEDIAN", "MAX"],
                    [[r["mode"], r["trigger"], str(r["n"]), f"{r['p50_ms']:.0f} ms", f"{r['max_ms']:.0f} ms"]
                     for r in latency.sync_summary(syncs)]))
        last = syncs[-1]
        import textwrap
        say(textwrap.fill(f"last sync ({last.get('trigger') or '?'}): change → rules applied {last['to_rules_ms']} ms; "
                          f"{last['transactions']} transactions; added {', '.join(last['added']) or '-'}; "
                          f"removed {', '.join(last['removed']) or '-'}", max(40, out.width),
                          subsequent_indent="  ", break_on_hyphens=False) + "\n")
    rows = latency.summary(saved.get("latency", []))
    if not rows:
        say("change → traffic not measured yet: `testbed latency` measures it on this lab\n")
        return
    say("\nchange → traffic shows it (medians; `testbed latency`: a new connection every 2 ms\n"
        "from a pod); RULES = change → rules on every node in the same runs:\n")

    def ms(v) -> str:
        return "-" if v is None else f"{v:.0f} ms"

    say(columns(["MODE", "CHANGE", "RUNS", "TRAFFIC", "MAX", "RULES", "±"],
                [[r["mode"], r["change"], f"{r['n']}" + (f" ({r['missed']} not seen)" if r["missed"] else ""),
                  ms(r["observed_p50_ms"]), ms(r["observed_max_ms"]), ms(r["rules_p50_ms"]),
                  f"±{r['resolution_ms']:.0f} ms"] for r in rows]))


def cmd_latency(args) -> int:
    from . import latency
    from .lab import Lab, require_root

    require_root()
    lab = _open(args)
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
    from .lab import require_root, target_namespace
    require_root()
    cmd = list(args.command)
    while cmd and cmd[0] == "--lab" and len(cmd) > 1:  # `exec POD --lab L -- CMD`: REMAINDER took it
        args.lab, cmd = cmd[1], cmd[2:]
    lab = _open(args)  # before setns: a restarted agent must run in the host's namespaces
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

    from .kernel import wiring

    cluster = lab.cluster()
    pod = next((p for p in cluster.pods if wiring.netns_of(lab.name, p) == ns and not p.host_network), None)
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
    from .lab import require_root
    require_root()
    lab = _open(args)
    if args.node not in lab.saved["nodes"]:
        raise TestbedError(f"no node {args.node!r} in lab {lab.name} (nodes: {', '.join(lab.saved['nodes'])})")
    ns = lab.saved["nodes"][args.node]["ns"]
    text = modes.get(lab.saved["mode"]).node_rules(ns)
    if args.raw or not sys.stdout.isatty():
        sys.stdout.write(text)
    else:
        console.print(_highlight_rules(text))
    return 0


def cmd_render(args) -> int:
    from .control import reconcile
    topo = _load(args)
    mode = args.mode or topo.lab.proxy_mode
    print_notes(topo, mode=mode)
    cluster, _ = reconcile(topo)
    nodes = [args.node] if args.node else [n.name for n in cluster.nodes]
    for n in nodes:
        try:
            cluster.node(n)
        except KeyError as e:
            raise TestbedError(str(e.args[0])) from None
        text = modes.get(mode).render(cluster.node_view(n), first=args.bootstrap or mode != "iptables")
        if len(nodes) > 1:
            sys.stdout.write(f"# node {n}\n")
        sys.stdout.write(text)
    return 0


def cmd_diff(args) -> int:
    from . import diff
    report = diff.run(args.file or str(model.builtin("default")), args.node, args.rules, args.mode,
                      kube_proxy_version=args.kube_proxy_version)
    if args.output == "json":
        print(json.dumps(report.to_json(), indent=2))
    else:
        sys.stdout.write(diff.format_text(report, verbose=args.verbose))
    return report.exit_code


def cmd_apply(args) -> int:
    lab = _open(args)
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
    lab = _open(args)
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
    lab = _open(args)
    console.print(lab.stage(args.name, args.action))
    return 0


def cmd_export(args) -> int:
    import yaml

    from . import export
    from .lab import Lab

    lab = Lab(args.lab or _lab_name(args))
    docs = export.documents(lab.cluster())
    if args.redact:
        docs = export.redact(docs)
    head = (f"# testbed export of lab {lab.name} ({lab.saved['mode']} mode){', redacted' if args.redact else ''}: "
            f"`testbed up FILE` rebuilds it with the same addresses and rules\n")
    text = head + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=120)
    if args.output and args.output != "-":
        with open(args.output, "w") as f:
            f.write(text)
        err.print(f"wrote {len(docs)} objects to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_list(args) -> int:
    from .cli_view import age, columns
    labs = [(name, state.read(name) or {}) for name in state.list_labs()]
    if args.output == "name":
        sys.stdout.write("".join(f"{name}\n" for name, _ in labs))
    elif args.output == "json":
        print(json.dumps([{"name": name, "mode": s.get("mode"), "source": s.get("source"), "pods": len(s.get("pods", {})),
                           "created": s.get("created")} for name, s in labs], indent=2))
    elif labs:
        sys.stdout.write(columns(["NAME", "MODE", "SOURCE", "PODS", "AGE"],
                                 [[name, s.get("mode", "?"), s.get("source", "?"), str(len(s.get("pods", {}))),
                                   age(s.get("created"))] for name, s in labs], args.no_headers))
    else:
        err.print("No labs found (`testbed up` makes one).")
    return 0


def print_matrix(matrix, out: Console | None = None, verbose: bool = False) -> None:
    from .cli_view import print_matrix as view
    view(matrix, out or console, verbose)


def _version(text: str):
    try:
        return model.versions.parse(text, "kube-proxy version")
    except ValueError as e:
        raise TestbedError(f"--kube-proxy-version: {e}") from None


def cmd_verify(args) -> int:
    from .lab import require_root
    from .verify import verify
    require_root()
    wanted = args.mode or list(modes.NAMES)
    for m in wanted:
        if m not in modes.NAMES:
            raise TestbedError(f"--mode: expected one of {', '.join(modes.NAMES)}, got {m!r}")
    path = args.file
    topology = None
    if path == "-":  # every mode builds from it (and the IPVS column inside the guest): keep a copy
        import tempfile
        text, _ = manifests.read_source("-")
        fd, path = tempfile.mkstemp(prefix="testbed-stdin-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
    try:
        topology = _load(args, path) if path else _load(args)  # a bad file fails before anything is built
        options = {"strict": args.strict, "rebuild_endpoints": True if args.rebuild_endpoints else None}
        releases = [model.versions.text(_version(v)) for v in args.kube_proxy_version or []]
        with _progress() as view:
            matrix = verify(path, wanted, progress=view, options=options,
                            kube_proxy_versions=list(dict.fromkeys(releases)) or None)
    finally:
        if path and path != args.file:
            os.unlink(path)
    human = err if args.json == "-" else console  # keep stdout pure JSON for machines
    print_matrix(matrix, human, args.verbose)
    data = matrix.to_json()
    data["topology"] = os.path.abspath(args.file) if args.file and args.file != "-" else \
        (None if args.file else str(model.builtin("default")))
    write_json(data, args.json)
    if args.html:
        from . import report
        _write(args.html, report.page(data, topology))
        human.print(f"report: {args.html}")
    n = matrix.counts()
    human.print(f"{n['pass']} passed, {n['fail']} failed, {n['skip']} skipped")
    return 1 if matrix.failed else 0


VERSION_HELP = ("render as this kube-proxy release does, on every node (default: the Lab's spec.kubeProxy.version, "
                "a dump's nodes' own, else the newest testbed knows)")


def write_json(data, where: str | None) -> None:
    """`--json PATH`: indented JSON to the file, or to standard output for '-' (nothing without one)."""
    if where == "-":
        print(json.dumps(data, indent=2))
    elif where:
        _write(where, json.dumps(data, indent=2) + "\n")


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise TestbedError(f"{path}: cannot write: {e.strerror}") from None


def cmd_report(args) -> int:
    """An HTML page from a matrix `verify --json` saved."""
    from . import report
    try:
        with open(args.matrix) as f:
            data = json.load(f)
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "modes" not in data:
            raise ValueError("expected an object with modes and rows, as `testbed verify --json` writes")
    except OSError as e:
        raise TestbedError(f"{args.matrix}: {e.strerror}") from None
    except ValueError as e:
        raise TestbedError(f"{args.matrix}: not a verify matrix: {e}") from None
    source = args.topology or data.get("topology")
    topology = None
    if source and (args.topology or os.path.exists(source)):
        topology = _load(args, source)
    out = args.output or os.path.splitext(args.matrix)[0] + ".html"
    _write(out, report.page(data, topology))
    err.print(f"wrote {out}")
    return 0


def cmd_graph(args) -> int:
    """The lab's graph: a running lab by name (ready state included), else a file, else the default lab."""
    from . import graph
    from .control import reconcile
    target = args.target
    running = state.list_labs()
    if target in running or (target is None and len(running) == 1 and not args.file_only):
        from .lab import Lab
        lab = Lab(target or running[0])
        g = graph.of_cluster(lab.cluster(), live=True, out_of_date=lab.out_of_date())
    else:
        if target and not os.path.exists(target) and target != "-" and "/" not in target and not target.endswith(
                (".yaml", ".yml", ".json")):
            raise TestbedError(f"{target}: no lab of that name is running (labs: {', '.join(running) or 'none'}) "
                               f"and no such file")
        topo = _load(args, target)
        cluster, _ = reconcile(topo)
        g = graph.of_cluster(cluster, live=False)
    text = {"svg": graph.to_svg, "dot": graph.to_dot, "mermaid": graph.to_mermaid, "html": graph.to_html}[args.output](g)
    if args.file:
        _write(args.file, text)
        err.print(f"wrote {args.file}")
    else:
        sys.stdout.write(text)
    return 0


FILE_HELP = ("what kubectl apply -f takes: a Lab document plus Kubernetes manifests, helm template or kubectl "
             "kustomize output, a `kubectl get -o yaml` dump (YAML or JSON; - for standard input)")


def _input_options(p) -> None:
    p.add_argument("--strict", action="store_true",
                   help="refuse kinds and fields testbed does not model (default: accept and name them once)")
    p.add_argument("--rebuild-endpoints", action="store_true",
                   help="a dump's EndpointSlices are rebuilt from its pods (default: used as dumped)")


EXAMPLES = {
    "testbed": ["testbed up", "testbed get pods -o wide", "testbed verify --mode iptables --html report.html",
                "testbed down"],
    "up": ["testbed up", "testbed up topologies/service-types.yaml --mode nftables --name demo",
           "kubectl get nodes,svc,endpointslices,pods -A -o yaml | testbed up -"],
    "down": ["testbed down demo"],
    "get": ["testbed get pods", "testbed get svc -A -o wide", "testbed get all -n kube-system",
            "testbed get endpointslices -o yaml > slices.yaml", "testbed get pods,services -o name",
            "testbed get nodes --no-headers"],
    "exec": ["testbed exec client -- curl -s web/hostname", "testbed exec node/node-1 -- ip route"],
    "rules": ["testbed rules node-1", "testbed rules node-2 --raw | grep KUBE-SVC"],
    "render": ["testbed render --node node-1", "testbed render topologies/ingress.yaml --mode nftables"],
    "diff": ["testbed diff dump.yaml --node node-1 --rules node-1.iptables-save"],
    "apply": ["testbed apply -f scale.yaml", "testbed apply --mode nftables"],
    "delete": ["testbed delete pod web-npscc294fs-9862n", "testbed delete svc web --lab demo"],
    "pod": ["testbed pod unready web-npscc294fs-9862n", "testbed pod stop default/web-npscc294fs-9862n"],
    "latency": ["testbed latency --service web --change pod-unready --repeat 3"],
    "trace": ["testbed trace --from client --to svc/web:80",
              "testbed trace --from client/outside --to nodeport/web-nodeport@node-1:80"],
    "vm": ["testbed vm -- cat /proc/net/ip_vs"],
    "bench": ["testbed bench --quick"],
    "export": ["testbed export demo --redact -o repro.yaml"],
    "list": ["testbed list", "testbed list -o name"],
    "verify": ["testbed verify", "testbed verify topologies/service-types.yaml --mode iptables -v",
               "testbed verify --json matrix.json --html report.html"],
    "report": ["testbed report matrix.json -o report.html"],
    "repro": ["testbed repro list", "testbed repro show stale-udp-clusterip",
              "testbed repro run stale-udp-clusterip --mode iptables --mode nftables",
              "testbed repro run --all --json results/repro.json --markdown results/repro.md",
              "testbed repro run dead-backend-no-probe --with my-app.yaml"],
    "graph": ["testbed graph demo > demo.svg", "testbed graph topologies/ingress.yaml -o mermaid",
              "testbed graph -o dot > lab.dot"],
}


def _examples(name: str) -> str:
    return "examples:\n" + "".join(f"  {e}\n" for e in EXAMPLES.get(name, ()))


def _command(sub, name: str, help: str):
    """A subcommand whose --help ends with examples."""
    return sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".", epilog=_examples(name),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("testbed")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="testbed", description="Kubernetes Service networking from real kernel objects.",
                                 epilog=_examples("testbed"), formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"testbed {_version()}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = _command(sub, "up", help="build a lab (the default lab when no FILE is given) and leave it running")
    p.add_argument("file", nargs="?", help=FILE_HELP)
    _input_options(p)
    p.add_argument("--mode", choices=modes.NAMES, help="proxy mode (default: the Lab's spec.proxyMode)")
    p.add_argument("--name", help="lab name (default: the Lab's metadata.name)")
    p.set_defaults(fn=cmd_up)

    p = _command(sub, "down", help="remove everything a lab made (idempotent; works after a crash)")
    p.add_argument("lab", nargs="?")
    p.add_argument("--all", action="store_true", help="every lab on this machine")
    p.set_defaults(fn=cmd_down)

    p = _command(sub, "get", help="show pods, services, endpoints, nodes, workloads … as kubectl prints them")
    p.add_argument("what", metavar="KIND[,KIND...]",
                   help="pods, services, endpoints, endpointslices, nodes, deployments, replicasets, statefulsets, "
                        "daemonsets, jobs, replicationcontrollers, ingresses, clients, all (kubectl's short names too)")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these objects")
    p.add_argument("-n", "--namespace", default="default", help="the namespace to show (default: default, as kubectl)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.add_argument("--lab")
    p.add_argument("-o", "--output", choices=("table", "wide", "json", "yaml", "name"), default="table",
                   help="wide: more columns; json, yaml: a List of Kubernetes objects; name: KIND/NAME")
    p.add_argument("--no-headers", action="store_true", help="no header line (tables)")
    p.set_defaults(fn=cmd_get)

    p = _command(sub, "exec", help="run a command inside a pod's (or node/NAME, client/NAME) namespace")
    p.add_argument("target", help="POD, NAMESPACE/POD, node/NAME or client/NAME")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.add_argument("--lab")
    p.set_defaults(fn=cmd_exec)

    p = _command(sub, "rules", help="the rules installed on a node now (iptables-save or nft list, highlighted)")
    p.add_argument("node")
    p.add_argument("--lab")
    p.add_argument("--raw", action="store_true", help="plain text, no highlighting")
    p.set_defaults(fn=cmd_rules)

    p = _command(sub, "render", help="print the rules `up` would install on a node (no root, no kernel)")
    p.add_argument("file", nargs="?", help=FILE_HELP)
    _input_options(p)
    p.add_argument("--mode", choices=modes.NAMES)
    p.add_argument("--node", help="node name (default: every node)")
    p.add_argument("--bootstrap", action="store_true",
                   help="include the jumps from the built-in chains, as the first sync installs them")
    p.add_argument("--kube-proxy-version", metavar="X.Y", help=VERSION_HELP)
    p.set_defaults(fn=cmd_render)

    p = _command(sub, "diff", help="compare a real node's rules with what kube-proxy should have installed there "
                                    "(exit 0 same, 1 differences, 2 error)")
    p.add_argument("file", nargs="?", help="topology or dump file, as `render` takes it (default: the default lab)")
    p.add_argument("--node", required=True, help="the node the rules were dumped on")
    p.add_argument("--rules", action="append", required=True, metavar="FILE",
                   help="the node's iptables-save, nft list ruleset, nft -j list ruleset, or ipvsadm-save -n "
                        "and ipset save output (repeatable: IPVS mode's parts may come in separate files)")
    p.add_argument("--mode", choices=("iptables", "nftables", "ipvs"), help="proxy mode (default: from the rules' format)")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.add_argument("-v", "--verbose", action="store_true", help="list every rule that differs")
    p.add_argument("--kube-proxy-version", metavar="X.Y", help=VERSION_HELP)
    p.set_defaults(fn=cmd_diff)

    p = _command(sub, "apply", help="change a running lab from a file (scale, add or edit objects)")
    p.add_argument("-f", "--file", help="manifests (YAML or JSON, as kubectl apply -f takes them; - for standard input)")
    p.add_argument("--mode", choices=modes.NAMES, help="switch the running lab to this proxy mode")
    p.add_argument("--lab")
    p.set_defaults(fn=cmd_apply)

    p = _command(sub, "delete", help="delete a pod (a Deployment's pod comes back with a new name and IP) or another object")
    p.add_argument("kind", help="pod | service | deployment | replicaset | statefulset | daemonset | job | "
                                "replicationcontroller | endpointslice (kubectl's short names too)")
    p.add_argument("name", help="NAME or NAMESPACE/NAME")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--grace-period", type=int, default=None,
                   help="seconds a deleted pod stays terminating (default: its terminationGracePeriodSeconds; 0: at once)")
    p.add_argument("--lab")
    p.set_defaults(fn=cmd_delete)

    p = _command(sub, "pod", help="stage a failure: stop, hang, resume, unready, ready or start a pod's server")
    p.add_argument("action", choices=("stop", "hang", "resume", "unready", "ready", "start"))
    p.add_argument("name", help="POD or NAMESPACE/POD")
    p.add_argument("--lab")
    p.set_defaults(fn=cmd_pod)

    p = _command(sub, "latency", help="measure network programming latency on a running lab: change → rules, change → traffic")
    p.add_argument("--service", help="NAME or NAMESPACE/NAME (default: the first with two ready endpoints)")
    p.add_argument("--change", action="append", choices=("pod-unready", "pod-ready", "pod-deleted", "service-edited"),
                   help="repeatable (default: all); pod-deleted replaces one Deployment pod")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--lab")
    p.set_defaults(fn=cmd_latency)

    p = _command(sub, "trace", help="send one packet and show the rules it went through (kernel nftrace)")
    p.add_argument("--from", dest="source", required=True, help="POD, NAMESPACE/POD, node/NAME or client/NAME")
    p.add_argument("--to", dest="target", required=True, help="svc/NAME[:PORT], nodeport/NAME@NODE[:PORT] or IP:PORT")
    p.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    p.add_argument("--lab")
    p.set_defaults(fn=lambda args: __import__("testbed.trace_view", fromlist=["cmd_trace"]).cmd_trace(args))

    p = _command(sub, "vm", help="run a command in a guest kernel that has IPVS, dummy and netem (qemu)")
    p.add_argument("--timeout", type=float, default=600, help="seconds, boot included")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(fn=lambda args: __import__("testbed.vm", fromlist=["cmd_vm"]).cmd_vm(args))

    p = _command(sub, "bench",
                 help="measure first-packet latency and sync time against the number of Services, and lab build speed")
    from . import bench as _bench
    _bench.add_arguments(p)
    p.set_defaults(fn=lambda args: __import__("testbed.bench_view", fromlist=["cmd_bench"]).cmd_bench(args))

    p = _command(sub, "export", help="write a running lab as one replayable file (a pinned Lab document and the objects)")
    p.add_argument("lab", nargs="?")
    p.add_argument("-o", "--output", metavar="FILE", help="write there instead of standard output")
    p.add_argument("--redact", action="store_true",
                   help="rename namespaces, names, labels, hosts consistently (for a public bug report); addresses stay")
    p.set_defaults(fn=cmd_export)

    p = _command(sub, "list", help="labs running on this machine")
    p.add_argument("-o", "--output", choices=("table", "json", "name"), default="table")
    p.add_argument("--no-headers", action="store_true", help="no header line")
    p.set_defaults(fn=cmd_list)

    p = _command(sub, "verify", help="build the lab in each proxy mode and check Service behaviour with real traffic")
    p.add_argument("file", nargs="?", help=FILE_HELP)
    _input_options(p)
    p.add_argument("--mode", action="append", help="restrict to this mode (repeatable)")
    p.add_argument("--json", metavar="PATH", help="write the matrix as JSON ('-' for standard output)")
    p.add_argument("--kube-proxy-version", metavar="X.Y", action="append",
                   help=VERSION_HELP + "; twice or more: each mode once per version, side by side")
    p.add_argument("--html", metavar="PATH", help="write a self-contained HTML report: the matrix, every cell's "
                                                  "evidence, the lab's drawing")
    p.add_argument("-v", "--verbose", action="store_true", help="the evidence of every cell, not only of those "
                                                                 "that failed or skipped")
    p.set_defaults(fn=cmd_verify)

    p = _command(sub, "report", help="an HTML report from a matrix `verify --json` wrote")
    p.add_argument("matrix", metavar="MATRIX.json")
    p.add_argument("-o", "--output", metavar="PATH", help="default: MATRIX.html beside it")
    p.add_argument("--topology", metavar="FILE", help="draw this file (default: the one the matrix was verified on)")
    p.set_defaults(fn=cmd_report, strict=False, rebuild_endpoints=False)

    p = _command(sub, "repro", help="a catalogue of real Service-networking bugs, each run with the bug and with its fix")
    p.add_argument("action", choices=("list", "show", "run"))
    p.add_argument("names", nargs="*", metavar="NAME", help="reproductions (`testbed repro list`)")
    p.add_argument("--all", action="store_true", help="run: every reproduction")
    p.add_argument("--mode", action="append", help="run: only this proxy mode (repeatable; default: every mode)")
    p.add_argument("--with", dest="with_file", metavar="FILE",
                   help="run: your manifests in place of the built-in ones, where the bug allows it")
    p.add_argument("--json", metavar="PATH", help="run: write the verdicts as JSON ('-' for standard output)")
    p.add_argument("--markdown", metavar="PATH", help="run: write the verdict table as Markdown")
    p.add_argument("-o", "--output", choices=("table", "json", "name"), default="table",
                   help="list, show: the catalogue as JSON, or names only")
    p.add_argument("-v", "--verbose", action="store_true", help="run: also the skipped cells and why")
    p.set_defaults(fn=lambda args: __import__("testbed.repro_view", fromlist=["cmd_repro"]).cmd_repro(args, console, err))

    p = _command(sub, "graph", help="draw a lab: nodes, pods, Services and their endpoints, load balancer, Ingress")
    p.add_argument("target", nargs="?", metavar="LAB|FILE",
                   help="a running lab (ready state shown) or a topology file (default: the running lab, else the "
                        "default topology)")
    _input_options(p)
    p.add_argument("-o", "--output", choices=("svg", "dot", "mermaid", "html"), default="svg",
                   help="SVG (default), Graphviz DOT text, Mermaid text, or an HTML page holding the SVG")
    p.add_argument("--file", metavar="PATH", help="write there instead of standard output")
    p.set_defaults(fn=cmd_graph, file_only=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        # `testbed … | head` closed the pipe: stop quietly, and keep Python's exit-time flush quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
