"""kube-proxy's ipsets inside a namespace: one `ipset restore` per sync, read back with `ipset save`.

Upstream runs one `ipset create … -exist` per set and one `ipset add … -exist` / `ipset del` per
changed entry (syncIPSetEntries); here the same commands go through a single `ipset restore`
(ipset is per network namespace, so the child enters it before exec). The restore input is not a
transaction: a failing line leaves the lines before it applied, as upstream's one-by-one calls would.
"""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable

from ..errors import KernelFeatureError
from ..render.ipvs import HASH_IP_PORT_NET, IPSET_NAMES, IpsetChange, IpsetSpec, ipset_changes
from . import netns


def _binary() -> str:
    path = shutil.which("ipset") or shutil.which("ipset", path="/usr/sbin:/sbin")
    if not path:
        raise KernelFeatureError("ipset is not installed: install Debian's ipset package (apt-get install ipset)")
    return path


def _run(ns: str, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([_binary(), *args], input=stdin, text=True, capture_output=True,
                          preexec_fn=netns.preexec(ns), timeout=120, check=False)


def restore_text(changes: Iterable[IpsetChange], destroy: Iterable[str] = ()) -> str:
    """`ipset restore` input: create -exist + flush + add for new sets, add/del for changed ones,
    then destroy. Empty input: ""."""
    lines: list[str] = []
    for ch in changes:
        spec = ch.spec
        if ch.create:
            lines.append(f"create {spec.name} {spec.type} {spec.create_options} -exist")
            lines.append(f"flush {spec.name}")
        # syncIPSetEntries' order: legacy entries out first, then the new ones in.
        lines += [f"del {spec.name} {e} -exist" for e in ch.delete]
        lines += [f"add {spec.name} {e} -exist" for e in ch.add]
    lines += [f"destroy {name}" for name in destroy]
    return "\n".join(lines) + ("\n" if lines else "")


def restore(ns: str, text: str) -> None:
    """Run `ipset restore` with `text` in the namespace. Empty text is a no-op."""
    if not text.strip():
        return
    proc = _run(ns, ["restore"], text)
    if proc.returncode != 0:
        raise RuntimeError(f"ipset restore in {ns} failed: {proc.stderr.strip()}")


def list_sets(ns: str) -> dict[str, IpsetSpec]:
    """Every set in the namespace (`ipset save`): name -> IpsetSpec(name, type, "", sorted entries).

    The kernel keeps no kube-proxy comment, so `comment` is empty. Entries are in kube-proxy's
    `Entry.String()` form, which is how ipset prints them, except that ipset prints the /32 net of
    a hash:ip,port,net entry bare: it is given back with its /32 (cidr.String() upstream).
    """
    proc = _run(ns, ["save"])
    if proc.returncode != 0:
        raise RuntimeError(f"ipset save in {ns} failed: {proc.stderr.strip()}")
    types: dict[str, str] = {}
    entries: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "create":
            types[parts[1]] = parts[2]
            entries[parts[1]] = []
        elif len(parts) >= 3 and parts[0] == "add":
            entries.setdefault(parts[1], []).append(parts[2])
    for name, type_ in types.items():
        if type_ == HASH_IP_PORT_NET:
            entries[name] = [e if "/" in e.rsplit(",", 1)[-1] else e + "/32" for e in entries.get(name, ())]
    return {name: IpsetSpec(name, types[name], "", tuple(sorted(entries.get(name, ())))) for name in types}


def apply(ns: str, sets: Iterable[IpsetSpec], previous: Iterable[IpsetSpec] | None = None, *,
          destroy_stale: bool = True) -> None:
    """Make the namespace's sets hold exactly `sets`, by difference from `previous`.

    previous=None reads the live sets first (a restarted kube-proxy). A live set of the wrong
    type is destroyed and re-created (fails while iptables still references it). Sets only in
    `previous` are destroyed when `destroy_stale` (call it after the iptables rules using them
    are gone; kube-proxy itself only destroys its sets in --cleanup).
    """
    sets = tuple(sets)
    if previous is None:
        live = list_sets(ns)
        wanted = {s.name for s in sets}
        previous = tuple(s for name, s in live.items() if name in wanted)
        wrong_type = [s.name for s in sets if s.name in live and live[s.name].type != s.type]
        if wrong_type:
            restore(ns, "".join(f"destroy {name}\n" for name in wrong_type))
            previous = tuple(s for s in previous if s.name not in wrong_type)
    changes, stale = ipset_changes(tuple(previous), sets)
    restore(ns, restore_text(changes, stale if destroy_stale else ()))


def destroy(ns: str, names: Iterable[str] = IPSET_NAMES) -> list[str]:
    """Destroy those of `names` that exist (default: all of kube-proxy's IPVS-mode sets).
    Returns the names destroyed. Fails if iptables still references one of them."""
    live = list_sets(ns)
    gone = [name for name in names if name in live]
    restore(ns, "".join(f"destroy {name}\n" for name in gone))
    return gone
