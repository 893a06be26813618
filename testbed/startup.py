"""The start-up contract of the lab's server processes (netexec, dns_server, ingress_proxy,
userspace_proxy), in one place.

`--netns PATH` is entered with setns(CLONE_NEWNET) before anything is bound. Once every socket is
bound (TCP ones listening), one byte b"R" is written to `--ready-fd` (an inherited pipe) and that
fd is closed, so the parent waits without polling; if start-up fails, the fd is closed unwritten
and the parent sees EOF. Imports nothing heavy: these processes start in tens of milliseconds.
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
