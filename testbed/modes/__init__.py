"""Proxy modes: what each of kube-proxy's modes is, needs, renders, syncs and shows.

One module per mode (testbed/modes/<name>.py) defines its `MODE`, a ProxyMode: its status upstream,
the one check of what this machine must have for it (and, when something is missing, what and how
to get it), its proxier (render, sync, cleanup), what `testbed rules` prints for a node, and how the
benchmark installs its rules fast. NAMES is the registry, in the matrix's column order: adding a
mode is one module and one name here (docs/architecture.md).

Importing this package is cheap (the model checks spec.proxyMode against NAMES); a mode's module,
with its renderer and kernel code, is imported the first time the mode is asked for.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from ..proxy import NodeView

NAMES = ("iptables", "nftables", "ipvs", "userspace")


@dataclass
class SyncTiming:
    render: float = 0.0
    kernel: float = 0.0
    transactions: int = 0


class Proxier(Protocol):
    """One kube-proxy's rules for a node. What it keeps between syncs lives in the node's record
    `rec` (a dict the lab stores), as kube-proxy keeps it in memory."""

    binary: str

    def render(self, view: NodeView, rec: dict | None = None) -> str:
        """The text the next sync would apply (the first sync's when `rec` is empty)."""

    def sync(self, ns: str, view: NodeView, rec: dict, full: bool = False) -> SyncTiming:
        """Apply `view` to the node namespace `ns` in one transaction; `full` trusts only the kernel."""

    def cleanup(self, ns: str, rec: dict) -> None:
        """Remove every rule of the mode, like `kube-proxy --cleanup`."""


@dataclass(frozen=True)
class ProxyMode:
    name: str
    upstream: str  # its status in kube-proxy, one line (`testbed get` shows it)
    proxier: Proxier
    missing: Callable[[], str | None]  # what this machine lacks for the mode and how to get it; None: it runs
    node_rules: Callable[[str], str]  # what `testbed rules` prints for a node namespace
    tool: str  # what its sync drives in the kernel (the benchmark's label)
    # The benchmark's way to put a full sync's state into a fresh node without timing it
    # (fast_install(ns, view, rec)); None: the mode is not in the benchmark's curves.
    fast_install: Callable[[str, NodeView, dict], None] | None = None

    def render(self, view: NodeView, first: bool = True) -> str:
        """The rules text a node's sync applies: its first sync when `first` (with iptables' jumps)."""
        return self.proxier.render(view, None if first else {"bootstrapped": True})


_LOADED: dict[str, ProxyMode] = {}


def get(name: str) -> ProxyMode:
    """The mode called `name`; an unknown name is a KernelFeatureError that lists the modes."""
    mode = _LOADED.get(name)
    if mode is None:
        if name not in NAMES:
            from ..errors import KernelFeatureError

            raise KernelFeatureError(f"proxy mode {name!r} is not implemented; implemented: {', '.join(NAMES)}")
        mode = _LOADED[name] = importlib.import_module(f"{__name__}.{name}").MODE
    return mode


def missing(name: str) -> str | None:
    """Why `name` cannot run on this machine (and how to get what it needs), or None."""
    if name not in NAMES:
        return f"unknown proxy mode {name!r} (modes: {', '.join(NAMES)})"
    return get(name).missing()


def require(name: str) -> None:
    """Raise KernelFeatureError saying what is missing, before anything is built."""
    reason = missing(name)
    if reason:
        from ..errors import KernelFeatureError

        raise KernelFeatureError(reason)


def benchmarked() -> tuple[str, ...]:
    """The modes the benchmark draws curves for (those with a fast install)."""
    return tuple(n for n in NAMES if get(n).fast_install is not None)


def binary_missing(find: Callable[..., str]) -> Callable[[], str | None]:
    """A `missing` check from a kernel module's binary finder (which raises KernelFeatureError)."""
    from ..errors import KernelFeatureError

    def check() -> str | None:
        try:
            find()
        except KernelFeatureError as e:
            return str(e)
        return None

    return check
