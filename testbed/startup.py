"""The start-up contract of the lab's server processes (netexec, dns_server, ingress_proxy,
userspace_proxy), in one place.

`--netns PATH` is entered with setns(CLONE_NEWNET) before anything is bound. Once every socket is
bound (TCP ones listening), one byte b"R" is written to `--ready-fd` (an inherited pipe) and that
fd is closed, so the parent waits without polling; if start-up fails, the fd is closed unwritten
and the parent sees EOF. Imports nothing heavy: these processes start in tens of milliseconds.

The origin report: with TESTBED_ORIGINS_DIR=DIR in its environment, every process that imports
the testbed package (the pod servers, the agent, the DNS server, the ingress and userspace
proxies, the CLI, a `testbed vm` guest's command) writes DIR/<pid>.json: its sys.prefix and the
files it would import pyroute2, scapy and yaml from (found, not imported). Tests use it to prove
that nothing comes from outside the project's environment; unset, it costs one environ look-up.
"""
from __future__ import annotations

import os


def enter_netns(path: str | None) -> None:
    """Enter the network namespace at `path` (a /run/netns/NAME file); nothing when None."""
    if path:
        from testbed.kernel.netns import enter_path  # only when asked: start-up stays light

        enter_path(path)


class ReadyFd:
    """`with ReadyFd(fd) as ready: …bind…; ready.signal()` — the fd is closed on every path."""

    def __init__(self, fd: int | None):
        self.fd = fd

    def signal(self) -> None:
        """Tell the parent we are serving (a parent that stopped listening does not stop us)."""
        if self.fd is None:
            return
        try:
            os.write(self.fd, b"R")
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    def __enter__(self) -> ReadyFd:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


ORIGINS_ENV = "TESTBED_ORIGINS_DIR"
ORIGIN_MODULES = ("pyroute2", "scapy", "yaml")


def origins(modules: tuple[str, ...] = ORIGIN_MODULES) -> dict:
    """This process's interpreter, sys.prefix and, per module, the real path of the file it is
    (or would be) imported from; None for a module this environment does not have."""
    import importlib.util
    import sys

    found: dict[str, str | None] = {}
    for name in modules:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path is None:
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                spec = None
            path = spec.origin if spec is not None else None
        found[name] = os.path.realpath(path) if path else None
    return {"pid": os.getpid(), "argv": list(sys.orig_argv), "executable": sys.executable,
            "prefix": os.path.realpath(sys.prefix), "modules": found}


def report_origins() -> None:
    """Write origins() to $TESTBED_ORIGINS_DIR/<pid>.json when that is set (see the module doc)."""
    directory = os.environ.get(ORIGINS_ENV)
    if not directory:
        return
    import json

    path = os.path.join(directory, f"{os.getpid()}.json")
    try:
        os.makedirs(directory, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(origins(), f)
        os.replace(path + ".tmp", path)  # a reader never sees half a report
    except OSError:
        pass  # a report is evidence for a test, never a reason for a server not to start


def outside(report: dict, prefix: str) -> list[str]:
    """What in an origins() report lies outside the environment at `prefix` (a sys.prefix)."""
    root = os.path.realpath(prefix)

    def inside(path: str | None) -> bool:
        return path is not None and (path == root or path.startswith(root + os.sep))

    out = [] if report.get("prefix") == root else [f"sys.prefix {report.get('prefix')}"]
    for name, path in sorted(report.get("modules", {}).items()):
        if not inside(path):
            out.append(f"{name} from {path}" if path else f"{name} not found")
    return out
