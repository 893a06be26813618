"""`testbed bench` output: rich tables on the terminal and PNG plots (matplotlib, Agg backend).

`cmd_bench(args)` runs testbed.bench.run, prints the tables, writes the JSON and draws:
  dataplane.png     first-packet p50 (band p01–p99) against the number of Services, per mode (log x)
  controlplane.png  full sync and one-Service change against the number of Services, per mode,
                    and the share of rendering in render + kernel tool
  build.png         ms per pod against pods, testbed's netlink and `ip` commands, and teardown
"""
from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import bench

COLORS = {"iptables": "tab:red", "nftables": "tab:blue", "ipvs": "tab:green"}
PLOTS = ("dataplane.png", "controlplane.png", "build.png")


def _ms(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _s(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"


def _spread_ms(d: dict | None) -> str:
    if not d:
        return "—"
    return f"{d['median']:.3f} [{d['min']:.3f}–{d['max']:.3f}]"


def _spread_s(d: dict | None) -> str:
    if not d:
        return "—"
    if d["n"] == 1:
        return _s(d["median"])
    return f"{_s(d['median'])} [{_s(d['min'])}–{_s(d['max'])}]"


def data_plane_table(doc: dict) -> Table:
    t = Table(title="Data plane: connection setup (first packet) to the last-matched ClusterIP, ms — "
                    "median of rounds \\[min–max]")
    for col in ("mode", "Services", "p01", "p50", "p99", "p50 vs smallest", "connections"):
        t.add_column(col, justify="right" if col not in ("mode",) else "left")
    for mode, md in doc["modes"].items():
        if md.get("not_measured"):
            t.add_row(mode, "", f"[yellow]not measured: {md['not_measured']}[/]", "", "", "", "")
            continue
        base = None
        for e in md["sizes"]:
            dp = e.get("data_plane") or {}
            if dp.get("not_measured"):
                t.add_row(mode, f"{e['services']:,}", f"[yellow]{dp['not_measured']}[/]", "", "", "", "")
                continue
            p50 = dp["p50"]["median"]
            base = base or p50
            where = " (vm)" if (md.get("where") or {}).get("vm") else ""
            failed = f" ({dp['failed']} failed)" if dp.get("failed") else ""
            t.add_row(mode + where, f"{e['services']:,}", _spread_ms(dp["p01"]), _spread_ms(dp["p50"]), _spread_ms(dp["p99"]),
                      f"{p50 / base:.2f}×", f"{dp['connections']:,}{failed}")
    return t


def control_plane_table(doc: dict) -> Table:
    t = Table(title="Control plane: sync time — median \\[min–max] of samples ×n; render vs kernel tool (medians)")
    for col in ("mode", "Services", "full sync", "render", "kernel tool", "render on top", "one-Service change", "render",
                "kernel tool"):
        t.add_column(col, justify="left" if col == "mode" else "right")
    for mode, md in doc["modes"].items():
        if md.get("not_measured"):
            t.add_row(mode, "", f"[yellow]not measured: {md['not_measured']}[/]", *[""] * 6)
            continue
        for e in md["sizes"]:
            cells = []
            for kind in ("full_sync", "one_change"):
                s = e.get(kind) or {}
                if s.get("not_measured"):
                    cells += [f"[yellow]{s['not_measured']}[/]", "", ""] + ([""] if kind == "full_sync" else [])
                    continue
                cells += [_spread_s(s["total_s"]) + (f" ×{s['total_s']['n']}" if s["total_s"]["n"] > 1 else ""),
                          _s(s["render_s"]["median"]), _s(s["kernel_s"]["median"])]
                if kind == "full_sync":
                    r = s.get("render_over_kernel")
                    cells.append("—" if r is None else f"+{r:.0%}")
            t.add_row(mode, f"{e['services']:,}", *cells)
    return t


def build_table(doc: dict) -> Table:
    t = Table(title="Lab build: one node, N pods — median \\[min–max] of runs; ip = the same topology by `ip` commands")
    for col in ("pods", "testbed ms/pod", "pods/s", "up", "down", "ip ms/pod", "ip down", "ip/testbed up", "ip/testbed down"):
        t.add_column(col, justify="right")
    b = doc.get("build")
    if not b:
        return t
    if b.get("not_measured"):
        t.add_row(f"[yellow]not measured: {b['not_measured']}[/]", *[""] * 8)
        return t
    for e in b["sizes"]:
        tb, ip = e["testbed"], e["ip"]
        t.add_row(f"{e['pods']:,}", _spread_ms(tb["ms_per_pod"]), f"{tb['pods_per_s']['median']:.0f}", _spread_s(tb["up_s"]),
                  _spread_s(tb["down_s"]), _ms(ip["ms_per_pod"]["median"], 2), _s(ip["down_s"]["median"]),
                  f"{e['ratio_up']:.1f}×", f"{e['ratio_down']:.1f}×")
    return t


def _programming_rows(doc: dict):
    """(mode, change, runs, traffic p50, traffic max, rules p50, resolution) per measured change."""
    for mode, pd in (doc.get("programming") or {}).items():
        if pd.get("not_measured"):
            yield mode, f"not measured: {pd['not_measured']}", "", "", "", "", ""
            continue
        vm = " (vm)" if mode == "ipvs" and (doc["modes"].get("ipvs") or {}).get("where", {}).get("vm") else ""
        for r in pd["summary"]:
            runs = str(r["n"]) + (f" ({r['missed']} not seen)" if r["missed"] else "")
            yield (mode + vm, r["change"], runs, _ms(r["observed_p50_ms"], 0), _ms(r["observed_max_ms"], 0),
                   _ms(r["rules_p50_ms"], 0), f"±{r['resolution_ms']:.0f}")


def programming_table(doc: dict) -> Table:
    t = Table(title="Network programming latency (default lab): change → traffic shows it, and change → rules on "
                    "every node (kube-proxy's metric), ms, medians of runs")
    for col in ("mode", "change", "runs", "traffic", "traffic max", "rules", "± (probe)"):
        t.add_column(col, justify="left" if col in ("mode", "change") else "right")
    for row in _programming_rows(doc):
        t.add_row(*row)
    return t


def targets_table(doc: dict) -> Table:
    t = Table(title="Targets (issue #8)")
    t.add_column("target")
    t.add_column("this run", justify="right")
    t.add_column("", justify="center")
    for row in doc["summary"]["targets"]:
        mark = {True: "[green]met[/]", False: "[red]NOT met[/]", None: "[yellow]not measured[/]"}[row["met"]]
        t.add_row(row["target"], row["value"], mark)
    return t


def machine_line(doc: dict) -> str:
    m = doc["machine"]
    tools = ", ".join(m.get("tools", {}).values())
    return (f"{m['cpu']} × {m['nproc']} cores, {m.get('memory_gib')} GiB, kernel {m['kernel']}, Python {m['python']}; "
            f"{tools}. Took {doc.get('seconds', 0):.0f} s.")


def print_report(doc: dict, console: Console | None = None) -> None:
    console = console or Console()
    console.print(machine_line(doc))
    if doc.get("modes"):
        console.print(data_plane_table(doc))
        console.print(control_plane_table(doc))
    if doc.get("programming"):
        console.print(programming_table(doc))
    if doc.get("build") is not None:
        console.print(build_table(doc))
    console.print(targets_table(doc))
    r = doc["summary"]["ratios"]
    if "iptables_p50_1000_to_30000" in r:
        console.print(f"iptables p50 from 1,000 to 30,000 Services: {r['iptables_p50_1000_to_30000']:.1f}× "
                      f"(Kubernetes blog 2025: about 18×)")
    left = doc.get("left_behind", {}).get("namespaces")
    if left:
        console.print(f"[red]namespaces left behind: {', '.join(left)}[/]")


# --------------------------------------------------------------------------- plots


def plot(doc: dict, outdir: str | Path) -> list[Path]:
    """Draw the three PNGs into `outdir`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    title_machine = f"{doc['machine']['nproc']} cores, kernel {doc['machine']['kernel']}"
    paths = []

    # Data plane.
    fig, ax = plt.subplots(figsize=(10.5, 5), dpi=110)
    for mode, md in doc["modes"].items():
        pts = [(e["services"], e["data_plane"]) for e in md.get("sizes", ()) if "p50" in (e.get("data_plane") or {})]
        if not pts:
            continue
        xs = [n for n, _ in pts]
        label = mode + (" (in testbed vm, emulated)" if (md.get("where") or {}).get("vm") else "")
        color = COLORS.get(mode)
        ax.plot(xs, [d["p50"]["median"] for _, d in pts], "o-", color=color, label=f"{label} p50")
        ax.fill_between(xs, [d["p01"]["median"] for _, d in pts], [d["p99"]["median"] for _, d in pts], color=color, alpha=0.15,
                        label=f"{mode} p01–p99")
        ax.errorbar(xs, [d["p50"]["median"] for _, d in pts],
                    yerr=[[d["p50"]["median"] - d["p50"]["min"] for _, d in pts],
                          [d["p50"]["max"] - d["p50"]["median"] for _, d in pts]],
                    fmt="none", ecolor=color, capsize=3, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Services")
    ax.set_ylabel("connection setup, ms (log)")
    ax.set_title(f"First-packet latency to the last-matched ClusterIP ({title_machine})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    paths.append(out / "dataplane.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    # Control plane.
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), dpi=100)
    for mode, md in doc["modes"].items():
        color = COLORS.get(mode)
        vm = " (vm)" if (md.get("where") or {}).get("vm") else ""
        for ax, kind, title in ((axes[0], "full_sync", "full sync"), (axes[1], "one_change", "one-Service change")):
            pts = [(e["services"], e[kind]) for e in md.get("sizes", ()) if "total_s" in (e.get(kind) or {})]
            if not pts:
                continue
            xs = [n for n, _ in pts]
            med = [s["total_s"]["median"] for _, s in pts]
            ax.errorbar(xs, med, yerr=[[m - s["total_s"]["min"] for m, (_, s) in zip(med, pts, strict=True)],
                                        [s["total_s"]["max"] - m for m, (_, s) in zip(med, pts, strict=True)]],
                        fmt="o-", color=color, capsize=3, label=f"{mode}{vm} total")
            ax.plot(xs, [s["kernel_s"]["median"] for _, s in pts], "x--", color=color, alpha=0.6, label=f"{mode}{vm} kernel tool")
            ax.set_title(title)
        pts = [(e["services"], e["full_sync"]) for e in md.get("sizes", ()) if "total_s" in (e.get("full_sync") or {})]
        if pts:
            axes[2].plot([n for n, _ in pts], [100 * (s["render_share"] or 0) for _, s in pts], "o-", color=color,
                         label=f"{mode}{vm}")
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Services")
        ax.set_ylabel("seconds (log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[2].set_xscale("log")
    axes[2].set_xlabel("Services")
    axes[2].set_ylabel("% of render + kernel tool")
    axes[2].set_title("full sync: share spent rendering")
    axes[2].set_ylim(0, 100)
    axes[2].grid(True, which="both", alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.suptitle(f"kube-proxy sync time ({title_machine})", fontsize=10)
    fig.tight_layout()
    paths.append(out / "controlplane.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    # Build.
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100)
    b = doc.get("build") or {}
    sizes = b.get("sizes") or []
    if sizes:
        xs = [e["pods"] for e in sizes]
        for side, color, label in (("testbed", "tab:blue", "testbed (netlink)"), ("ip", "tab:gray", "ip commands")):
            med = [e[side]["ms_per_pod"]["median"] for e in sizes]
            axes[0].errorbar(xs, med, yerr=[[m - e[side]["ms_per_pod"]["min"] for m, e in zip(med, sizes, strict=True)],
                                            [e[side]["ms_per_pod"]["max"] - m for m, e in zip(med, sizes, strict=True)]],
                             fmt="o-", color=color, capsize=3, label=label)
            axes[1].plot(xs, [e[side]["down_s"]["median"] for e in sizes], "o-", color=color, label=f"{label}: teardown")
        axes[1].plot(xs, [e["kernel_destroy_s"]["median"] for e in sizes], "x--", color="tab:blue", alpha=0.6,
                     label="testbed: until the kernel freed them (≤; stalls end at 2 s)")
        axes[0].axhline(bench.TARGET_MS_PER_POD, color="tab:green", ls=":", label=f"target ≤ {bench.TARGET_MS_PER_POD:g} ms/pod")
    axes[0].set_title("build: ms per pod")
    axes[0].set_ylabel("ms per pod")
    axes[1].set_title("teardown")
    axes[1].set_ylabel("seconds")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("pods on one node")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Lab build ({title_machine})", fontsize=10)
    fig.tight_layout()
    paths.append(out / "build.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- command


def cmd_bench(args) -> int:
    """`testbed bench`: run, print, write JSON, draw plots. Exit 0 when it ran (targets are reported,
    not enforced); 1 on an error."""
    console = Console(stderr=False)
    if not console.is_terminal:  # a file or pipe: wide enough for the tables, no wrapping
        console = Console(stderr=False, width=170)
    err = Console(stderr=True)
    json_path = getattr(args, "json", None) or "results/bench.json"
    plots_dir = getattr(args, "plots", None)
    plots_dir = "docs" if plots_dir is None else plots_dir
    try:
        def checkpoint(partial: dict) -> None:  # a crash later keeps what was measured
            if json_path != "-":
                bench.write_json(dict(partial, partial=True), json_path)

        doc = bench.run(args, progress=lambda m: err.log(m), checkpoint=checkpoint)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/] (namespaces and processes removed)")
        return 130
    except Exception as e:  # noqa: BLE001 - one line for the user, exit 1
        err.print(f"[red]error:[/] {e}")
        return 1
    if json_path == "-":
        bench.write_json(doc, "-")
    else:
        print_report(doc, console)
        bench.write_json(doc, json_path)
        console.print(f"JSON: {json_path}")
    if plots_dir and plots_dir.lower() != "none":
        try:
            paths = plot(doc, plots_dir)
            (err if json_path == "-" else console).print("plots: " + ", ".join(str(p) for p in paths))
        except ImportError:
            err.print("[yellow]no plots: matplotlib is not installed (pip install 'testbed[bench]')[/]")
    return 0


if __name__ == "__main__":
    sys.exit(bench.main())


# --------------------------------------------------------------------------- markdown (docs/benchmarks.md)


def markdown_tables(doc: dict) -> str:
    """The run's figures as Markdown tables (what docs/benchmarks.md quotes)."""
    out = []
    out.append("| mode | Services | p01 ms | p50 ms [min–max of rounds] | p99 ms | p50 vs smallest |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for mode, md in doc["modes"].items():
        if md.get("not_measured"):
            out.append(f"| {mode} | | not measured: {md['not_measured']} | | | |")
            continue
        base = None
        vm = " (vm)" if (md.get("where") or {}).get("vm") else ""
        for e in md["sizes"]:
            dp = e.get("data_plane") or {}
            if "p50" not in dp:
                out.append(f"| {mode}{vm} | {e['services']:,} | {dp.get('not_measured', 'not measured')} | | | |")
                continue
            base = base or dp["p50"]["median"]
            out.append(f"| {mode}{vm} | {e['services']:,} | {dp['p01']['median']:.3f} | {dp['p50']['median']:.3f} "
                       f"[{dp['p50']['min']:.3f}–{dp['p50']['max']:.3f}] | {dp['p99']['median']:.3f} | "
                       f"{dp['p50']['median'] / base:.2f}× |")
    out.append("")
    out.append("| mode | Services | full sync [min–max] ×n | render | kernel tool | render on top "
               "| one-Service change [min–max] ×n | render | kernel tool |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, md in doc["modes"].items():
        if md.get("not_measured"):
            continue
        vm = " (vm)" if (md.get("where") or {}).get("vm") else ""
        for e in md["sizes"]:
            cells = []
            for kind in ("full_sync", "one_change"):
                s = e.get(kind) or {}
                if "total_s" not in s:
                    cells += [s.get("not_measured", "not measured"), "", ""] + ([""] if kind == "full_sync" else [])
                    continue
                t = s["total_s"]
                rng = f" [{_s(t['min'])}–{_s(t['max'])}] ×{t['n']}" if t["n"] > 1 else " ×1"
                cells += [_s(t["median"]) + rng, _s(s["render_s"]["median"]), _s(s["kernel_s"]["median"])]
                if kind == "full_sync":
                    r = s.get("render_over_kernel")
                    cells.append("—" if r is None else f"+{r:.0%}")
            out.append(f"| {mode}{vm} | {e['services']:,} | " + " | ".join(cells) + " |")
    b = doc.get("build")
    if b and not b.get("not_measured"):
        out.append("")
        out.append("| pods | testbed ms/pod [min–max] | pods/s | up | down (unmount) | kernel frees them "
                   "| ip ms/pod | ip up | ip down | ip/testbed up | ip/testbed down |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for e in b["sizes"]:
            tb, ip = e["testbed"], e["ip"]
            out.append(f"| {e['pods']:,} | {tb['ms_per_pod']['median']:.2f} "
                       f"[{tb['ms_per_pod']['min']:.2f}–{tb['ms_per_pod']['max']:.2f}] | "
                       f"{tb['pods_per_s']['median']:.0f} | {_s(tb['up_s']['median'])} | {_s(tb['down_s']['median'])} | "
                       f"{_s(e['kernel_destroy_s']['median'])} | {ip['ms_per_pod']['median']:.2f} | {_s(ip['up_s']['median'])} | "
                       f"{_s(ip['down_s']['median'])} | {e['ratio_up']:.1f}× | {e['ratio_down']:.1f}× |")
    if doc.get("programming"):
        out.append("")
        out.append("| mode | change | runs | change → traffic ms | max | change → rules ms | ± ms |")
        out.append("|---|---|---:|---:|---:|---:|---:|")
        out += ["| " + " | ".join(row) + " |" for row in _programming_rows(doc)]
    out.append("")
    out.append("| target | this run | |")
    out.append("|---|---:|---|")
    for row in doc["summary"]["targets"]:
        met = {True: "met", False: "**not met**", None: "not measured"}[row["met"]]
        out.append(f"| {row['target']} | {row['value']} | {met} |")
    return "\n".join(out) + "\n"
