"""Named network namespaces made in-process: unshare + bind mount, as `ip netns add` does, without a fork.

A thread can enter a namespace (setns is per thread) and come back; sockets keep the namespace
they were created in, so netlink and probe sockets are opened inside `entered(name)`.
"""
from __future__ import annotations

import ctypes
import errno
import os
import threading
from contextlib import contextmanager

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_mount_lock = threading.Lock()


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def list_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def _ensure_run_dir() -> None:
    """Make /run/netns a shared bind mount once, exactly as iproute2 does, so mounts propagate."""
    with _mount_lock:
        os.makedirs(NETNS_RUN_DIR, exist_ok=True)
        if _libc.mount(NETNS_RUN_DIR.encode(), NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None) == 0:
            return
        _check(_libc.mount(NETNS_RUN_DIR.encode(), NETNS_RUN_DIR.encode(), b"none", MS_BIND | MS_REC, None), "bind /run/netns")
        _check(_libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None), "make /run/netns shared")


def create(name: str) -> None:
    """Create the named namespace (fails with FileExistsError if it is already there)."""
    _ensure_run_dir()
    target = path(name)
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            _check(_libc.mount(b"/proc/thread-self/ns/net", target.encode(), b"none", MS_BIND, None), f"bind {target}")
        finally:
            setns(own)
    except BaseException:
        try:
            os.unlink(target)
        except OSError:
            pass
        raise
    finally:
        os.close(own)


def delete(name: str) -> bool:
    """Unmount and remove the namespace file; the namespace dies with its last user. Idempotent."""
    target = path(name)
    if not os.path.exists(target):
        return False
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount {target}: {os.strerror(err)}")
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass
    return True


@contextmanager
def entered(name: str):
    """Run the block with this thread inside the named namespace; always come back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path(name), os.O_RDONLY)
        try:
            setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(own)
    finally:
        os.close(own)


def enter_path(path: str) -> None:
    """Move the calling thread (in a single-threaded server: the process) into the network namespace
    at `path` for good. Used by the lab's server processes before they bind anything."""
    fd = os.open(path, os.O_RDONLY)
    try:
        setns(fd)
    finally:
        os.close(fd)


def preexec(name: str):
    """A subprocess preexec_fn that moves the child into the named namespace before exec."""
    target = path(name)

    def _enter() -> None:
        fd = os.open(target, os.O_RDONLY)
        setns(fd)
        os.close(fd)

    return _enter


def write_sysctl(name: str, key: str, value: str) -> None:
    """Write a per-namespace sysctl (net.*) from inside the namespace."""
    with entered(name):
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)
