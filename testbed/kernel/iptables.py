"""iptables-restore / iptables-save inside a namespace: one transaction per node per sync."""
from __future__ import annotations

import shutil
import subprocess

from ..errors import KernelFeatureError
from . import netns
from .transaction import TransactionError


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not path:
        raise KernelFeatureError(f"{name} is not installed: install Debian's iptables package (apt-get install iptables)")
    return path


def restore(ns: str, text: str) -> None:
    """Apply restore input with --noflush (only the chains it declares are replaced). A refused
    table raises TransactionError, which shows the line the tool named."""
    proc = subprocess.run([_binary("iptables-restore"), "--noflush"], input=text, text=True,
                          capture_output=True, preexec_fn=netns.preexec(ns))
    if proc.returncode != 0:
        raise TransactionError("iptables-restore", ns, proc.stderr, text)


def save(ns: str, table: str | None = None) -> str:
    argv = [_binary("iptables-save")] + (["-t", table] if table else [])
    proc = subprocess.run(argv, text=True, capture_output=True, preexec_fn=netns.preexec(ns))
    if proc.returncode != 0:
        raise RuntimeError(f"iptables-save in {ns} failed: {proc.stderr.strip()}")
    return proc.stdout
