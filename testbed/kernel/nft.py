"""`nft` inside a namespace: one `nft -f -` transaction per node per sync, as knftables runs it.

The whole input is one atomic transaction: if any line fails (say a chain still referenced), nothing
in it is applied and the error (TransactionError) shows the offending lines.
"""
from __future__ import annotations

import shutil
import subprocess

from ..errors import KernelFeatureError
from . import netns
from .transaction import TransactionError

FAMILY = "ip"
TABLE = "kube-proxy"


def _binary() -> str:
    path = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if not path:
        raise KernelFeatureError("nft is not installed: install Debian's nftables package (apt-get install nftables)")
    return path


def _run(ns: str, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([_binary(), *args], input=stdin, text=True, capture_output=True,
                          preexec_fn=netns.preexec(ns), timeout=120, check=False)


def _absent(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode != 0 and "No such file or directory" in proc.stderr


def apply(ns: str, text: str) -> None:
    """Run `text` as one `nft -f -` transaction in the namespace. Empty text is a no-op."""
    if not text.strip():
        return
    proc = _run(ns, ["-f", "-"], text)
    if proc.returncode != 0:
        raise TransactionError("nft", ns, proc.stderr, text)


def list_table(ns: str, *, handles: bool = False) -> str:
    """`nft [--handle] list table ip kube-proxy`, or "" when the table does not exist."""
    proc = _run(ns, [*(["--handle"] if handles else []), "list", "table", FAMILY, TABLE])
    if _absent(proc):
        return ""
    if proc.returncode != 0:
        raise RuntimeError(f"nft list table in {ns} failed: {proc.stderr.strip()}")
    return proc.stdout


def delete_table(ns: str) -> bool:
    """Delete `ip kube-proxy` (upstream's CleanupLeftovers). Idempotent: False if it was not there."""
    proc = _run(ns, ["delete", "table", FAMILY, TABLE])
    if _absent(proc):
        return False
    if proc.returncode != 0:
        raise RuntimeError(f"nft delete table in {ns} failed: {proc.stderr.strip()}")
    return True
