"""Running a reproduction: for each mode, one lab with the bug's conditions and one with the fix,
the same trigger and measurement in both, always torn down; the verdict compares the two.

IPVS runs inside `testbed vm` when this kernel has none (one guest boot per `run`, as `verify`).
"""
from __future__ import annotations

import copy
import os
import tempfile
import time
from dataclasses import dataclass, field

from .. import model
from ..errors import TestbedError
from . import catalogue as cat
from .catalogue import BUG, FIX, Measurement, Repro


@dataclass
class Context:
    """What a reproduction's `measure` gets: the running lab in one mode and variant."""
    lab: object  # testbed.lab.Lab
    mode: str
    variant: str  # bug | fix

    def cluster(self):
        from ..lab import Lab
        return Lab(self.lab.name).cluster()

    def source(self, spec: str):
        """(namespace, ip) of pod/NAME, node/NAME, client/NAME or backend/SVC (a pod behind SVC)."""
        from ..conformance import _resolve_source
        s = _resolve_source(self.lab.name, self.cluster(), spec)
        return s.ns, s.ip

    def node_ns(self, node: str) -> str:
        from ..kernel import wiring
        return wiring.host_ns(self.lab.name, node)

    def target(self):
        """The Service the reproduction acts on (labelled testbed.dev/repro: target)."""
        found = [s for s in self.cluster().services if dict(s.service.labels).get(cat.TARGET) == "target"]
        if not found:
            raise LookupError("no Service labelled testbed.dev/repro: target")
        return found[0]

    def client(self):
        """(namespace, ip) of the reproduction's client pod."""
        return self.source(f"pod/{cat.CLIENT}")

    def client_node(self) -> str:
        return next(p.node for p in self.cluster().pods if p.name == cat.CLIENT)

    def target_port(self, proto: str):
        """(index, port number) of the target's first port of `proto`."""
        ports = self.target().service.ports
        i = next(i for i, p in enumerate(ports) if p.protocol.lower() == proto.lower())
        return i, ports[i].port

    def backends(self, i: int = 0):
        """The target's ready endpoints of port i, by pod: {pod name: (pod, endpoint)}."""
        info = self.target()
        by_ip = {p.ip: p for p in self.cluster().pods}
        return {by_ip[e.ip].name: (by_ip[e.ip], e) for e in info.endpoints[i] if e.ready and e.ip in by_ip}

    def apply(self, docs: list[dict]):
        """`testbed apply` of these manifests on the running lab (a trigger's change); its SyncReport."""
        path = _write(docs)
        try:
            return self.lab.apply(path)
        finally:
            os.unlink(path)

    def flows_to(self, node: str, ip: str, proto: str) -> int:
        """Conntrack entries on `node` whose replies come from `ip` (flows DNATed to it)."""
        from probes import conntrack
        return sum(f.reply_src == ip for f in conntrack.table(self.node_ns(node), proto=proto))


@dataclass
class ModeResult:
    mode: str
    verdict: str
    reason: str = ""  # why skipped / not reproduced / error, when known
    bug: Measurement | None = None
    fix: Measurement | None = None
    seconds: float = 0.0
    where: str = ""  # "testbed vm, kernel 6.1.0-57-cloud-amd64" when not on this kernel

    def to_json(self) -> dict:
        def m(x: Measurement | None):
            return None if x is None else {"symptom": x.symptom, "summary": x.summary, "figures": dict(x.figures)}
        return {"verdict": self.verdict, "reason": self.reason, "bug": m(self.bug), "fix": m(self.fix),
                "seconds": round(self.seconds, 1), **({"where": self.where} if self.where else {})}

    @classmethod
    def from_json(cls, mode: str, d: dict) -> "ModeResult":
        def m(x):
            return None if x is None else Measurement(x["symptom"], x["summary"], x.get("figures") or {})
        return cls(mode, d["verdict"], d.get("reason", ""), m(d.get("bug")), m(d.get("fix")), d.get("seconds", 0.0),
                   d.get("where", ""))


@dataclass
class Result:
    repro: Repro
    modes: dict[str, ModeResult] = field(default_factory=dict)

    def to_json(self) -> dict:
        r = self.repro
        return {"name": r.name, "title": r.title, "upstream": list(r.upstream), "bug": r.bug.label,
                "fix": r.fixed.label, "results": {m: res.to_json() for m, res in self.modes.items()}}


def kernel_release() -> str:
    return os.uname().release


def missing_feature(repro: Repro, mode: str) -> str | None:
    """What this machine lacks for `repro` in `mode` and how to get it, or None."""
    from .. import modes
    if mode == "ipvs":
        reason = modes.missing("ipvs")
        if reason:
            return reason
    if "conntrack" in repro.needs:
        from ..kernel import conntrack
        try:
            conntrack._binary()
        except Exception as e:  # noqa: BLE001 - its message says what to install
            return str(e)
    from ..conformance import FEATURES
    for need in repro.needs:
        if need in FEATURES and not FEATURES[need][0]():
            return FEATURES[need][1]
    return None


def _lab_name(mode: str, variant: str) -> str:
    # ≤16 characters, unique per process: runs of two `repro run` never collide.
    return f"r{os.getpid() % 10000}-{mode[:3]}-{variant}"[:16]


def _write(docs: list[dict]) -> str:
    import yaml
    fd, path = tempfile.mkstemp(prefix="testbed-repro-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
    return path


def run_variant(repro: Repro, mode: str, variant: str, base: list[dict] | None = None,
                progress=lambda e, i: None) -> Measurement:
    """Build the variant's lab in `mode`, wait until every pod is ready, measure, tear down."""
    from ..lab import Lab

    docs = repro.variant_documents(variant, base)
    path = _write(docs)
    name = _lab_name(mode, variant)
    try:
        progress("check", {"behaviour": f"{repro.name}: {variant} ({repro.variant(variant).label})", "mode": mode})
        try:
            lab = Lab.up(path, name=name, mode=mode)
        except BaseException:
            Lab(name).down()
            raise
        try:
            Lab(lab.name).wait_ready(timeout=30)
            return repro.measure(Context(lab, mode, variant))
        finally:
            lab.down()
    finally:
        os.unlink(path)


def run_mode(repro: Repro, mode: str, base: list[dict] | None = None, progress=lambda e, i: None) -> ModeResult:
    reason = repro.applies(mode)
    if reason:
        return ModeResult(mode, cat.SKIPPED, reason)
    missing = missing_feature(repro, mode)
    if missing:
        return ModeResult(mode, cat.SKIPPED, missing)
    started = time.monotonic()
    out = {}
    for variant in (BUG, FIX):
        try:
            out[variant] = run_variant(repro, mode, variant, base, progress)
        except TestbedError as e:
            return ModeResult(mode, cat.ERROR, f"{variant} run: {e}", out.get(BUG), None, time.monotonic() - started)
        except Exception as e:  # noqa: BLE001 - one mode's failure is its cell, with the reason
            return ModeResult(mode, cat.ERROR, f"{variant} run: {type(e).__name__}: {e}", out.get(BUG), None,
                              time.monotonic() - started)
    v = cat.verdict(out[BUG], out[FIX])
    why = repro.absent_reason(mode, kernel_release()) if v == cat.NOT_REPRODUCED else ""
    return ModeResult(mode, v, why, out[BUG], out[FIX], time.monotonic() - started)


def run_in_vm(repro: Repro, mode: str, user_file: str | None, progress=lambda e, i: None) -> ModeResult | None:
    """The mode's runs inside `testbed vm` (its kernel has IPVS); None when the runner is not installed."""
    from .. import vm
    from ..verify import guest_json

    if os.environ.get("TESTBED_IN_VM") == "1" or vm.available() is not None:
        return None
    progress("check", {"behaviour": f"{repro.name}: booting a guest kernel with IPVS (testbed vm)", "mode": mode})
    argv = [vm.guest_python(), "-m", "testbed.cli", "repro", "run", repro.name, "--mode", mode, "--json", "-"]
    if user_file:
        argv += ["--with", os.path.abspath(user_file)]
    data, why = guest_json(argv, progress)
    if data is None:  # a failed boot is an error cell with the reason
        return ModeResult(mode, cat.ERROR, why)
    r = ModeResult.from_json(mode, data["repros"][0]["results"][mode])
    r.where = f"testbed vm, kernel {data.get('kernel', '?')}"
    return r


def run(repro: Repro, modes: list[str], user_file: str | None = None, progress=lambda e, i: None) -> Result:
    base = None
    if user_file:
        base = adopt(repro, user_file)
    result = Result(repro)
    for mode in modes:
        if mode == "ipvs" and not repro.applies(mode) and missing_feature(repro, "ipvs"):
            res = run_in_vm(repro, mode, user_file, progress)
            if res is not None:
                result.modes[mode] = res
                continue
        result.modes[mode] = run_mode(repro, mode, base, progress)
    return result


def adopt(repro: Repro, path: str) -> list[dict]:
    """The user's documents in place of the built-in manifests, checked before anything is built."""
    from ..lab import _read_docs
    if repro.adopt is None:
        raise TestbedError(f"{repro.name} cannot take a user's files: {repro.with_files or 'its topology is fixed'}")
    docs, src = _read_docs(path)
    model.parse_documents(docs, src)  # a bad file fails here, with file, document and field
    adopted = repro.adopt([copy.deepcopy(d.data) for d in docs], src)
    model.parse_documents(adopted, src)  # and so does what the reproduction made of it
    return adopted


def to_json(results: list[Result]) -> dict:
    return {"kernel": kernel_release(), "repros": [r.to_json() for r in results]}


def to_markdown(results: list[Result]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")
    lines = [f"Kernel {kernel_release()}.", "",
             "| reproduction | upstream | mode | with the bug | with the fix | verdict |", "|---|---|---|---|---|---|"]
    for r in results:
        for mode, m in r.modes.items():
            bug = m.bug.summary if m.bug else "-"
            fix = m.fix.summary if m.fix else "-"
            verdict = m.verdict + (f": {m.reason}" if m.reason else "") + (f" (in {m.where})" if m.where else "")
            lines.append(f"| {esc(r.repro.name)} | {esc(', '.join(r.repro.upstream))} | {mode} | {esc(bug)} | "
                         f"{esc(fix)} | {esc(verdict)} |")
    return "\n".join(lines) + "\n"
