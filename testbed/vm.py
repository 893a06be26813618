"""`testbed vm -- CMD…`: run a command inside a stock Debian kernel that has IPVS, dummy, netem and SCTP.

The host kernel here has no modules (no IPVS, no dummy link, no netem). Debian's cloud kernel has
them all, and boots under qemu's software emulation (TCG; KVM does not work here) in a few seconds:

    host                                          guest (linux-image-cloud-amd64 under qemu TCG)
    virtiofsd -o source=/ (read-only in guest) -> /  = overlay(lower: host /, upper: tmpfs)
    tmpdir/job.sh  (argv, cwd, env)            -> /run/testbed/job.sh, run by the host's /bin/sh
    tmpdir/out, err  <- serial ttyS1, ttyS2    <- the command's stdout and stderr (streamed)
    tmpdir/status    <- serial ttyS3           <- "start", "exit N" (or "init-failed WHY")
    tmpdir/console   <- serial ttyS0           <- kernel and init messages, for error reports

Guest writes land in the tmpfs upper layer and vanish at power-off; /run, /tmp, /dev/shm and the
`ip netns` directory /run/netns are the guest's own. The directories under the host's /tmp that
the command needs (its working directory, the command itself, this interpreter's environment,
the testbed package, PATH and PYTHONPATH entries: CI runners put checkouts and virtualenvs there)
are brought in as writable overlays of the host's (listed in tmpdir/shares, mounted by stage 1).
The guest has no network card (`-nic none`).

The initramfs (a static busybox, the virtio/virtiofs/overlay modules and the two init stages) is
built from local files only and cached under /var/cache/testbed/, keyed by the kernel version and
a hash of everything in it.

Environment knobs: TESTBED_VM_KERNEL (a cloud kernel version), TESTBED_VM_CPUS (2),
TESTBED_VM_MEMORY (MiB, 1024), TESTBED_VM_CACHE (/var/cache/testbed), TESTBED_VM_DEBUG=1 (print the
guest console, with init-stage timestamps, after the run).
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import lzma
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import TestbedError

PACKAGES = ("qemu-system-x86", "linux-image-cloud-amd64", "busybox-static")
INSTALL_HINT = "apt-get install -y --no-install-recommends " + " ".join(PACKAGES)

QEMU = "qemu-system-x86_64"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
BOOT_DIR = Path("/boot")
MODULES_DIR = Path("/lib/modules")
CACHE_DIR = Path(os.environ.get("TESTBED_VM_CACHE", "/var/cache/testbed"))
MEMORY_MB = int(os.environ.get("TESTBED_VM_MEMORY", "1024"))
CPUS = int(os.environ.get("TESTBED_VM_CPUS", "2"))
TAG = "testbedroot"  # virtiofs tag of the host's /
GUEST_HOSTNAME = "testbed-vm"
EXIT_CWD = 125  # the job could not enter its working directory in the guest
VM_ERROR_EXIT = 125  # `testbed vm` exit code when the runner itself fails (like `env`, `docker run`)
SHADOWED = ("/run", "/var/run", "/proc", "/sys", "/dev")  # fresh in the guest: the host's content is not there
# /tmp is fresh in the guest too, but the directories under it that the command needs are brought
# in (writable overlays of the host's), since checkouts, CI clones and virtualenvs often live there.
SHARED_TMP = "/tmp"
INITRAMFS_FORMAT = 2  # bump when the initramfs layout changes

# In the initramfs: enough to mount the host's / over virtiofs and stack the overlay.
BOOT_MODULES = ("virtio_pci", "virtiofs", "overlay")

# Loaded by the guest's second stage before the command starts (from the host's
# /lib/modules/<guest kernel>, with their dependencies and softdeps, level by level in parallel):
# what kube-proxy's iptables, nftables and IPVS modes, `ip`, `tc` and the lab need. Anything else
# still autoloads (the guest init is a real switch_root, so request_module finds /sbin/modprobe).
GUEST_MODULES = (
    # links, bridging, delay/loss
    "dummy", "veth", "bridge", "br_netfilter", "sch_netem",
    # IPVS and its schedulers
    "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_lblc", "ip_vs_lblcr", "ip_vs_dh",
    "ip_vs_sh", "ip_vs_sed", "ip_vs_nq", "ip_vs_mh", "xt_ipvs",
    # conntrack, NAT, nf_tables and the glue iptables-nft uses for xt matches
    "nf_conntrack", "nf_conntrack_netlink", "nf_nat", "nf_tables", "nft_compat", "nft_chain_nat",
    # iptables (legacy tables) and the xt matches/targets kube-proxy's rules use
    "iptable_nat", "iptable_filter", "xt_comment", "xt_mark", "xt_conntrack", "xt_statistic", "xt_addrtype",
    "xt_nat", "xt_MASQUERADE", "xt_tcpudp", "xt_multiport", "xt_set", "xt_physdev", "xt_recent", "xt_sctp",
    # SCTP sockets for pods' SCTP ports and the probes (libcrc32c comes as its dependency)
    "sctp",
    # ipset (every ip_set_* hash/bitmap/list type the kernel has is added by guest_modules())
    "ip_set",
)
GUEST_MODULE_PREFIXES = ("ip_set_",)


class VMError(TestbedError):
    """The guest could not run the command: not installed, failed boot, timeout."""


# --------------------------------------------------------------------------- what is installed


@dataclasses.dataclass(frozen=True)
class Kernel:
    version: str
    image: Path

    @property
    def modules(self) -> Path:
        return MODULES_DIR / self.version


def find_kernels(boot: Path | None = None) -> list[Kernel]:
    """Debian cloud kernels in /boot, newest first (by version)."""
    boot = BOOT_DIR if boot is None else boot
    found = []
    for image in boot.glob("vmlinuz-*-cloud-amd64"):
        found.append(Kernel(image.name.removeprefix("vmlinuz-"), image))
    return sorted(found, key=lambda k: _version_key(k.version), reverse=True)


def _version_key(v: str) -> list:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-]", v)]


def find_kernel() -> Kernel | None:
    """The newest cloud kernel whose modules are installed (TESTBED_VM_KERNEL=VERSION picks one)."""
    want = os.environ.get("TESTBED_VM_KERNEL")
    for k in find_kernels():
        if want and k.version != want:
            continue
        if (k.modules / "modules.dep").is_file():
            return k
    return None


def is_static_elf(path: str | os.PathLike) -> bool:
    """True for an ELF executable without a program interpreter (statically linked)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
                return False
            order = "little" if head[5] == 1 else "big"
            phoff = int.from_bytes(head[32:40], order)
            phentsize = int.from_bytes(head[54:56], order)
            phnum = int.from_bytes(head[56:58], order)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(phnum):
        if int.from_bytes(table[i * phentsize:i * phentsize + 4], order) == 3:  # PT_INTERP
            return False
    return True


def find_busybox() -> str | None:
    for p in BUSYBOX_PATHS:
        if os.path.isfile(p) and is_static_elf(p):
            return p
    return None


def available() -> str | None:
    """None when the runner can boot a guest here, else what is missing and how to install it."""
    missing = []
    if not shutil.which(QEMU):
        missing.append(f"{QEMU} (package qemu-system-x86)")
    if not os.access(VIRTIOFSD, os.X_OK):
        missing.append(f"{VIRTIOFSD} (package qemu-system-x86, Debian 12's qemu 7.2)")
    kernels = find_kernels()
    if not kernels:
        missing.append(f"a kernel {BOOT_DIR}/vmlinuz-*-cloud-amd64 (package linux-image-cloud-amd64)")
    elif find_kernel() is None:
        want = os.environ.get("TESTBED_VM_KERNEL")
        if want and all(k.version != want for k in kernels):
            missing.append(f"the kernel TESTBED_VM_KERNEL={want} (have: {', '.join(k.version for k in kernels)})")
        else:
            k = kernels[0]
            missing.append(f"the modules of kernel {k.version}: {k.modules}/modules.dep "
                           f"(reinstall linux-image-{k.version}, or run `depmod {k.version}`)")
    if find_busybox() is None:
        missing.append("a static busybox at /bin/busybox (package busybox-static)")
    if not missing:
        return None
    return "testbed vm cannot run here: missing " + "; ".join(missing) + f". Install with: {INSTALL_HINT}"


# --------------------------------------------------------------------------- kernel modules


def read_modules_dep(moddir: Path) -> dict[str, tuple[str, list[str]]]:
    """modules.dep as {name: (relative path, [dependency names])}; names use underscores."""
    paths: dict[str, str] = {}
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        mod, rest = line.split(":", 1)
        name = module_name(mod)
        paths[name] = mod
        deps[name] = [module_name(d) for d in rest.split()]
    return {n: (paths[n], deps[n]) for n in paths}


def read_builtin(moddir: Path) -> set[str]:
    try:
        return {module_name(line) for line in (moddir / "modules.builtin").read_text().split()}
    except OSError:
        return set()


def module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", base)
    return base.replace("-", "_")


def load_order(dep: dict[str, tuple[str, list[str]]], names, builtin: set[str] = frozenset()) -> list[str]:
    """Relative paths of `names` and their dependencies, dependencies first, each once."""
    out: list[str] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        if name not in dep:
            if name in builtin:
                seen.add(name)
                return
            raise VMError(f"kernel module {name} not found in modules.dep" + (f" (needed by {chain[-1]})" if chain else ""))
        seen.add(name)
        for d in dep[name][1]:
            visit(d, chain + (name,))
        out.append(dep[name][0])

    for n in names:
        visit(n, ())
    return out


def with_softdeps(dep: dict[str, tuple[str, list[str]]], moddir: Path) -> dict[str, tuple[str, list[str]]]:
    """`dep` with each module's `softdep … pre:` modules (modules.softdep, aliases resolved through
    modules.alias) as extra dependencies, as modprobe would load them (libcrc32c wants crc32c)."""
    try:
        soft_lines = (moddir / "modules.softdep").read_text().splitlines()
    except OSError:
        return dep
    aliases: dict[str, list[str]] = {}
    try:
        for line in (moddir / "modules.alias").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "alias" and not any(c in parts[1] for c in "*?["):
                aliases.setdefault(parts[1], []).append(module_name(parts[2]))
    except OSError:
        pass
    out = dict(dep)
    for line in soft_lines:
        words = line.split()
        if len(words) < 3 or words[0] != "softdep" or module_name(words[1]) not in dep:
            continue
        mod, pre, mode = module_name(words[1]), [], None
        for w in words[2:]:
            if w in ("pre:", "post:"):
                mode = w
            elif mode == "pre:":
                pre += [m for m in ([module_name(w)] if module_name(w) in dep else aliases.get(w, [])) if m in dep]
        if pre:
            path, deps = out[mod]
            out[mod] = (path, [p for p in pre if p not in deps and p != mod] + deps)
    return out


def load_levels(dep: dict[str, tuple[str, list[str]]], names, builtin: set[str] = frozenset()) -> list[list[tuple[str, str]]]:
    """`names` and their dependencies as (name, relative path) in levels: everything a module needs
    is in an earlier level, so each level can be loaded in parallel."""
    order = [module_name(p) for p in load_order(dep, names, builtin)]
    level: dict[str, int] = {}
    for n in order:  # dependencies come first, so theirs are known
        level[n] = 1 + max((level[d] for d in dep[n][1] if d in level), default=-1)
    levels: list[list[tuple[str, str]]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for n in order:
        levels[level[n]].append((n, dep[n][0]))
    return levels


def guest_modules(dep: dict[str, tuple[str, list[str]]], builtin: set[str] = frozenset()) -> list[str]:
    """GUEST_MODULES (plus every ip_set_* type) that this kernel has as modules, in a stable order."""
    names = list(GUEST_MODULES)
    names += sorted(n for n in dep if n.startswith(GUEST_MODULE_PREFIXES) and n not in names)
    return [n for n in names if n in dep]


# --------------------------------------------------------------------------- guest scripts


def init_script(boot_modules: list[str], tag: str = TAG) -> str:
    """Stage 1, /init of the initramfs (busybox sh): mount the host's / read-only over virtiofs, stack
    a tmpfs overlay on it, fresh /run and /tmp, fetch the job, switch_root into stage 2."""
    mods = " ".join(shlex.quote(m) for m in boot_modules)
    return f"""#!/bin/busybox sh
# testbed guest init, stage 1 (generated by testbed/vm.py; runs from the initramfs)
bb=/bin/busybox
say() {{ $bb echo "testbed-init: $*" >/dev/console; }}
dbg() {{ [ -z "$debug" ] || say "$($bb cut -d' ' -f1 /proc/uptime) $*"; }}
die() {{
  say "FAILED: $*"
  $bb echo "init-failed $*" >/dev/ttyS3
  $bb poweroff -f; $bb sleep 10; exit 1
}}
$bb mount -t proc proc /proc || die "mount /proc"
$bb mount -t sysfs sysfs /sys || die "mount /sys"
$bb mount -t devtmpfs devtmpfs /dev || die "mount /dev"
for m in {mods}; do
  $bb insmod "/lib/modules/$m" || die "insmod $m"
done
job=
debug=
for w in $($bb cat /proc/cmdline); do
  case "$w" in testbed.job=*) job="${{w#testbed.job=}}";; testbed.debug=1) debug=1;; esac
done
dbg "stage 1: modules loaded"
[ -n "$job" ] || die "no testbed.job= on the kernel command line"
n=0
until $bb mount -t virtiofs -o ro {tag} /lower 2>/dev/null; do
  n=$((n + 1))
  [ $n -lt 100 ] || {{ $bb mount -t virtiofs -o ro {tag} /lower; die "mount virtiofs {tag} (is virtiofsd running?)"; }}
  $bb usleep 20000
done
dbg "virtiofs mounted"
$bb mount -t tmpfs -o mode=0755 tmpfs /rw || die "mount tmpfs /rw"
$bb mkdir -p /rw/upper /rw/work
$bb mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || die "mount overlay"
$bb mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run || die "mount tmpfs /run"
$bb mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/tmp || die "mount tmpfs /tmp"
n=0
while IFS= read -r s; do  # the directories under the host's /tmp the job needs: writable overlays of them
  n=$((n + 1))
  $bb mkdir -p "/rw/share$n/upper" "/rw/share$n/work" "/newroot$s" || die "mkdir for $s"
  $bb mount -t overlay overlay -o "lowerdir=/lower$s,upperdir=/rw/share$n/upper,workdir=/rw/share$n/work" "/newroot$s" \
    || die "overlay $s"
done < "/lower${{job%/*}}/shares" || die "read the job's shares next to $job"
$bb mkdir -p /newroot/run/testbed /newroot/run/netns
$bb cp "/lower$job" /newroot/run/testbed/job.sh || die "copy the job $job from the host"
$bb cp /bin/busybox /stage2 /newroot/run/testbed/ || die "copy busybox and stage 2"
dbg "switch_root"
for d in proc sys dev; do
  $bb mount --move /$d /newroot/$d || die "move /$d"
done
$bb umount -l /lower
$bb umount -l /rw
exec $bb switch_root /newroot /run/testbed/busybox sh /run/testbed/stage2
"""


def stage2_script(levels: list[list[tuple[str, str]]], kver: str, hostname: str = GUEST_HOSTNAME) -> str:
    """Stage 2, PID 1 in the overlay root: load the guest modules (level by level, each level in
    parallel, with busybox insmod: no kmod, no index look-ups) while it finishes the mounts, then
    run the job with its stdout/stderr on ttyS1/ttyS2, report "start" and "exit N" on ttyS3, power off."""
    loads = []
    for lvl in levels:
        loads += [f"  ld {shlex.quote(name)} {shlex.quote(rel)} &" for name, rel in lvl]
        loads.append("  wait")
    loads_text = "\n".join(loads) if loads else "  :"
    return f"""# testbed guest init, stage 2 (generated by testbed/vm.py; PID 1 in the overlay root)
bb=/run/testbed/busybox
say() {{ $bb echo "testbed-init: $*" >/dev/console; }}
debug= inodes=
for w in $($bb cat /proc/cmdline); do
  case "$w" in testbed.debug=1) debug=1;; testbed.inodes=*) inodes="${{w#testbed.inodes=}}";; esac
done
dbg() {{ [ -z "$debug" ] || say "$($bb cut -d' ' -f1 /proc/uptime) $*"; }}
dbg "stage 2"
ld() {{ $bb insmod "/lib/modules/{kver}/$2" 2>/dev/null || [ -d "/sys/module/$1" ] || say "cannot load kernel module $1"; }}
(
{loads_text}
) &
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts -o ptmxmode=0666,mode=0620 devpts /dev/pts || say "mount /dev/pts failed"
$bb mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm || say "mount /dev/shm failed"
$bb mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
$bb mount -t bpf bpf /sys/fs/bpf 2>/dev/null
$bb hostname {shlex.quote(hostname)}
$bb ip link set lo up || say "lo up failed"
for n in 1 2 3; do $bb stty -F /dev/ttyS$n -opost -echo || say "stty ttyS$n failed"; done
wait
dbg "modules loaded"
if [ -n "$inodes" ]; then
  # virtiofsd holds one host fd per guest inode it serves and has RLIMIT_NOFILE of them: past
  # `inodes` new inodes, drop the guest's unused dentries and inodes so it can close fds again.
  $bb mkfifo /run/testbed/tick
  (
    # read(1) of a /proc/sys file returns only its first byte: the shell's `read` cannot parse it
    inode_nr() {{ set -- $($bb cat /proc/sys/fs/inode-nr); echo "$1"; }}
    exec 3<>/run/testbed/tick
    base=$(inode_nr)
    while :; do
      read -t 1 _ <&3
      nr=$(inode_nr)
      if [ $((nr - base)) -gt "$inodes" ]; then
        echo 2 >/proc/sys/vm/drop_caches
        now=$(inode_nr)
        dbg "dropped cached inodes: $nr -> $now"
        [ "$now" -gt "$base" ] && base=$now
      fi
    done
  ) </dev/null &
fi
$bb echo start >/dev/ttyS3
$bb env -i /bin/sh /run/testbed/job.sh </dev/null >/dev/ttyS1 2>/dev/ttyS2
rc=$?
$bb echo "exit $rc" >/dev/ttyS3
dbg "command exited $rc"
$bb poweroff -f
$bb sleep 10
"""


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def guest_env(env: dict[str, str] | None = None, host_env: dict[str, str] | None = None) -> dict[str, str]:
    """The command's whole environment in the guest: the host's PATH, HOME=/root, `env`, TESTBED_IN_VM=1."""
    host_env = os.environ if host_env is None else host_env
    out = {"PATH": host_env.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/root"}
    for k, v in (env or {}).items():
        if not _ENV_NAME.match(k):
            raise VMError(f"environment variable name {k!r} cannot be passed to the guest")
        if "\0" in str(v):
            raise VMError(f"environment variable {k} contains a NUL byte")
        out[k] = str(v)
    out["TESTBED_IN_VM"] = "1"
    return out


def job_script(argv: list[str], cwd: str, env: dict[str, str]) -> str:
    """The job, run by the guest's /bin/sh under `env -i`: export env, cd, exec argv."""
    if not argv:
        raise VMError("no command given: testbed vm -- CMD [ARGS…]")
    for a in list(argv) + [cwd]:
        if "\0" in a:
            raise VMError(f"argument {a!r} contains a NUL byte")
    lines = ["# testbed vm job (generated by testbed/vm.py)"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    q = shlex.quote(cwd)
    lines.append(f"cd {q} || {{ echo \"testbed vm: cannot enter the working directory \"{q}\" in the guest\" >&2; "
                 f"exit {EXIT_CWD}; }}")
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


def check_cwd(cwd: str) -> str:
    """An absolute, normalised working directory that exists in the guest too (not under a path that
    is a fresh filesystem there, also through symlinks)."""
    cwd = os.path.abspath(cwd)
    for path in dict.fromkeys((cwd, os.path.realpath(cwd))):
        for top in SHADOWED + (SHARED_TMP,):
            if top == SHARED_TMP and path != top:
                continue  # a directory under /tmp is brought into the guest (tmp_shares)
            if path == top or path.startswith(top + "/"):
                shown = cwd if path == cwd else f"{cwd} (really {path})"
                raise VMError(f"working directory {shown} is under {top}, which is a fresh filesystem in the guest "
                              f"(the host's content is not there): run from another directory or pass cwd=")
    return cwd


# --------------------------------------------------------------------------- qemu and virtiofsd


def _tmp_top(path: str) -> str | None:
    """/tmp/X for a path under /tmp/X, else None."""
    if path.startswith(SHARED_TMP + "/") and len(path) > len(SHARED_TMP) + 1:
        return SHARED_TMP + "/" + path[len(SHARED_TMP) + 1:].split("/", 1)[0]
    return None


def _interpreter(path: str) -> str | None:
    """The program a `#!` script names (a console script's virtualenv python), if any."""
    try:
        with open(path, "rb") as f:
            head = f.readline(512)
    except OSError:
        return None
    words = head[2:].decode(errors="replace").split() if head.startswith(b"#!") else []
    return words[0] if words and words[0].startswith("/") else None


def tmp_shares(cwd: str, argv: list[str], env: dict[str, str]) -> list[str]:
    """The top directories under /tmp that the guest needs from the host, sorted: those holding
    `cwd`, the command (found on the guest's PATH) and its `#!` interpreter, this interpreter's
    environment (sys.prefix, sys.base_prefix, sys.executable), the testbed package, and `env`'s
    PATH and PYTHONPATH entries; through symlinks too. A top that is itself a symlink is left out
    (the guest's /tmp has no symlinks)."""
    paths = [cwd, sys.prefix, sys.base_prefix, sys.executable, str(Path(__file__).resolve().parent.parent)]
    cmd = os.path.join(cwd, argv[0]) if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH", ""))
    if cmd:
        paths += [cmd, _interpreter(cmd) or ""]
    for var in ("PATH", "PYTHONPATH"):
        paths += env.get(var, "").split(":")
    tops = set()
    for p in filter(None, paths):
        for path in (os.path.abspath(p), os.path.realpath(p)):
            top = _tmp_top(path)
            if top and os.path.isdir(top) and not os.path.islink(top):
                tops.add(top)
    for top in tops:
        if any(c in top for c in ",:\\\n"):  # separators of overlayfs' mount options
            raise VMError(f"{top} cannot be brought into the guest: overlay mount options cannot hold "
                          f"',', ':', '\\' or a newline; move it or run from elsewhere")
    return sorted(tops)


def kernel_cmdline(job_path: str, debug: bool = False, inodes: int | None = None) -> str:
    """quiet: the console carries only warnings and errors (printk over a UART is slow under TCG);
    panic=-1 with qemu's -no-reboot: a panic ends qemu at once; the TSC and timer options skip
    checks that only cost time under emulation; testbed.* are read by the guest init."""
    if not re.fullmatch(r"/[A-Za-z0-9._/+-]+", job_path):
        raise VMError(f"job path {job_path!r} must be a plain absolute path (no spaces or quotes)")
    return " ".join([
        "console=ttyS0", "quiet", "loglevel=4", *(("testbed.debug=1",) if debug else ()), "panic=-1", "rdinit=/init",
        "tsc=reliable", "no_timer_check", "mitigations=off", "random.trust_cpu=on",
        f"testbed.job={job_path}", *((f"testbed.inodes={inodes}",) if inodes else ()),
    ])


def _qemu_path(p: str | os.PathLike) -> str:
    return str(p).replace(",", ",,")


def qemu_argv(kernel: str | os.PathLike, initrd: str | os.PathLike, cmdline: str, sock: str | os.PathLike,
              console: str | os.PathLike, out: str | os.PathLike, err: str | os.PathLike, status: str | os.PathLike,
              memory_mb: int = MEMORY_MB, cpus: int = CPUS, qemu: str = QEMU) -> list[str]:
    return [
        qemu,
        "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", str(cpus), "-m", str(memory_mb),
        "-machine", "pc", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
        "-object", f"memory-backend-memfd,id=mem,size={memory_mb}M,share=on", "-numa", "node,memdev=mem",
        "-chardev", f"socket,id=vfs,path={_qemu_path(sock)}",
        "-device", f"vhost-user-fs-pci,chardev=vfs,tag={TAG}",
        "-serial", f"file:{_qemu_path(console)}",
        "-serial", f"file:{_qemu_path(out)}",
        "-serial", f"file:{_qemu_path(err)}",
        "-serial", f"file:{_qemu_path(status)}",
        "-nic", "none",
    ]


def virtiofsd_argv(fd: int, nofile: int | None = None, virtiofsd: str = VIRTIOFSD) -> list[str]:
    # sandbox=chroot: the default namespace sandbox fails with source=/ (pivot_root: busy);
    # cache=always: exec-heavy work is 2-4x faster. The guest mounts it read-only.
    return [virtiofsd, f"--fd={fd}", "-o", "source=/", "-o", "sandbox=chroot", "-o", "cache=always",
            "-o", "log_level=err", *((f"--rlimit-nofile={nofile}",) if nofile else ())]


def _has_cap(bit: int, status: str = "/proc/self/status") -> bool:
    try:
        for line in Path(status).read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError):
        pass
    return False


def virtiofsd_nofile() -> tuple[int | None, int]:
    """(--rlimit-nofile to pass or None for virtiofsd's default, the fd limit it will have). virtiofsd
    keeps one fd per inode the guest has looked up; without CAP_SYS_RESOURCE it cannot go past our
    hard limit (20000 on this machine), so it is told to use exactly that."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if _has_cap(24) or hard == resource.RLIM_INFINITY:  # CAP_SYS_RESOURCE: virtiofsd raises it to ~1e6
        return None, 1_000_000
    return hard, hard


def inode_budget(fd_limit: int) -> int:
    """New guest inodes tolerated before the guest drops its caches (see stage2_script)."""
    return max(1000, int(fd_limit * 0.6))


# --------------------------------------------------------------------------- initramfs


def cpio_newc(entries: list[tuple[str, int, bytes | int]]) -> bytes:
    """An uncompressed newc cpio archive. entries: (path, mode, data) where for a device node
    data is its rdev as (major << 8 | minor) int; directories and files take bytes."""
    buf = io.BytesIO()

    def put(name: str, mode: int, data: bytes, ino: int, rmaj: int = 0, rmin: int = 0) -> None:
        nameb = name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = [ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(nameb), 0]
        buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        buf.write(nameb)
        buf.write(b"\0" * (-(110 + len(nameb)) % 4))
        buf.write(data)
        buf.write(b"\0" * (-len(data) % 4))

    for ino, (path, mode, data) in enumerate(entries, start=1):
        name = path.lstrip("/")
        if isinstance(data, int):
            put(name, mode, b"", ino, data >> 8, data & 0xFF)
        else:
            put(name, mode, data, ino)
    put("TRAILER!!!", 0, b"", 0)
    return buf.getvalue()


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        raise VMError(f"{path}: zstd-compressed modules are not supported by the initramfs builder")
    return data


def initramfs_plan(kernel: Kernel, busybox: str) -> tuple[str, list[tuple[str, int, bytes | int]]]:
    """(cache key, cpio entries) of the guest initramfs; reads local files only."""
    dep = read_modules_dep(kernel.modules)
    builtin = read_builtin(kernel.modules)
    boot = load_order(dep, BOOT_MODULES, builtin)
    stage1 = init_script(boot)
    soft = with_softdeps(dep, kernel.modules)
    stage2 = stage2_script(load_levels(soft, guest_modules(dep, builtin), builtin), kernel.version)
    bb = Path(busybox).read_bytes()
    entries: list[tuple[str, int, bytes | int]] = []
    dirs = {"bin", "dev", "proc", "sys", "lower", "rw", "newroot", "lib", "lib/modules"}
    for rel in boot:
        parts = rel.split("/")[:-1]
        dirs.update("lib/modules/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
    for d in sorted(dirs):
        entries.append((d, stat.S_IFDIR | 0o755, b""))
    entries.append(("dev/console", stat.S_IFCHR | 0o600, (5 << 8) | 1))
    entries.append(("dev/null", stat.S_IFCHR | 0o666, (1 << 8) | 3))
    entries.append(("init", stat.S_IFREG | 0o755, stage1.encode()))
    entries.append(("stage2", stat.S_IFREG | 0o755, stage2.encode()))
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, bb))
    for rel in boot:
        data = _read_module(kernel.modules / rel)
        entries.append(("lib/modules/" + re.sub(r"\.(xz|gz)$", "", rel), stat.S_IFREG | 0o644, data))
    h = hashlib.sha256(f"format {INITRAMFS_FORMAT}\n".encode())
    for name, mode, data in entries:
        h.update(f"{name} {mode:o} ".encode())
        h.update(data if isinstance(data, bytes) else str(data).encode())
    return h.hexdigest()[:16], entries


def initramfs_path(kernel: Kernel, key: str, cache: Path) -> Path:
    return cache / f"vm-initramfs-{kernel.version}-{key}.cpio"


def build_initramfs(kernel: Kernel, busybox: str, cache: Path | None = None) -> Path:
    """The cached initramfs for `kernel`, built if needed (no network; atomic; prunes stale ones)."""
    cache = CACHE_DIR if cache is None else cache
    key, entries = initramfs_plan(kernel, busybox)
    path = initramfs_path(kernel, key, cache)
    if path.is_file():
        return path
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VMError(f"cannot create the initramfs cache {cache}: {e} (run as root or set TESTBED_VM_CACHE)") from e
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(cpio_newc(entries))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    for old in cache.glob(f"vm-initramfs-{kernel.version}-*.cpio"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- running


class _Tail:
    """Copies what a growing file gains to a stream, as it arrives."""

    def __init__(self, path: Path, sink: Callable[[bytes], None] | None):
        path.touch()
        self.fd = os.open(path, os.O_RDONLY)
        self.sink = sink
        self.data = bytearray()  # kept when there is no sink

    def pump(self) -> bool:
        got = False
        while True:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return got
            got = True
            if self.sink is None:
                self.data += chunk
            else:
                self.sink(chunk)

    def close(self) -> None:
        os.close(self.fd)


def _sink(stream) -> Callable[[bytes], None]:
    if isinstance(stream, io.TextIOBase):
        def write(b: bytes) -> None:
            stream.write(b.decode(errors="replace"))
            stream.flush()
    else:
        def write(b: bytes) -> None:
            stream.write(b)
            stream.flush()
    return write


def tail_lines(path: Path, n: int = 25, until: str | None = None, drop: tuple[str, ...] = ()) -> str:
    """The last `n` non-blank lines of a log (up to the first line containing `until`, if given)."""
    try:
        text = path.read_bytes().decode(errors="replace").replace("\r", "")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip() and not any(d in ln for d in drop)]
    if until:
        for i, ln in enumerate(lines):
            if until in ln:
                lines = lines[:i + 1]
                break
    return "\n".join(lines[-n:])


@dataclasses.dataclass
class Status:
    """What the guest reported on its status port."""
    started: float | None = None  # seconds since launch when the command started
    exit_code: int | None = None
    init_failed: str | None = None
    buf: str = ""

    def feed(self, text: str, t: float) -> None:
        self.buf += text.replace("\r", "")
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            line = line.strip()
            if line == "start" and self.started is None:
                self.started = t
            elif line.startswith("exit ") and line[5:].strip().lstrip("-").isdigit():
                self.exit_code = int(line[5:])
            elif line.startswith("init-failed"):
                self.init_failed = line[len("init-failed"):].strip() or "unknown"


def supervise(proc, status_tail: _Tail, tails: list[_Tail], timeout: float, *,
              clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
              poll_interval: float = 0.02, poweroff_grace: float = 10.0) -> Status:
    """Stream the guest's output until it reports its exit code (then let qemu power off) or qemu
    exits or `timeout` passes. Returns the Status; the caller decides what a missing exit code means.
    Raises VMError(timeout) when the deadline passes first. Never kills: the caller does (finally)."""
    start = clock()
    deadline = start + timeout
    st = Status()
    done_at: float | None = None
    while True:
        for t in tails:
            t.pump()
        before = len(status_tail.data)
        status_tail.pump()
        if len(status_tail.data) > before:
            st.feed(status_tail.data[before:].decode(errors="replace"), clock() - start)
        if proc.poll() is not None:
            break
        now = clock()
        if st.exit_code is not None:
            done_at = now if done_at is None else done_at
            if now - done_at > poweroff_grace:
                break  # the guest did not power off; the caller kills it
        elif now >= deadline:
            raise _Timeout(st)
        sleep(poll_interval)
    for t in tails:  # what the guest wrote just before it stopped
        t.pump()
    before = len(status_tail.data)
    status_tail.pump()
    if len(status_tail.data) > before:
        st.feed(status_tail.data[before:].decode(errors="replace") + "\n", clock() - start)
    return st


class _Timeout(Exception):
    def __init__(self, status: Status):
        self.status = status


def _proc_start(pid: int) -> str | None:
    """The start time of process `pid` (field 22 of /proc/PID/stat), or None if there is none."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def sweep_stale(base: str) -> list[str]:
    """Remove the temp dirs of runs whose process is gone (killed with SIGKILL: no finally ran)."""
    removed = []
    for d in Path(base).glob("testbed-vm-*"):
        try:
            pid, start = (d / "owner").read_text().split()
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        if _proc_start(int(pid)) != start:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    return removed


def die_with_parent(argv: list[str]) -> list[str]:
    """argv under `setpriv --pdeathsig KILL` (util-linux) when available: the child gets SIGKILL when
    the thread that started it dies, so even a killed `testbed vm` leaves no qemu or virtiofsd."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# virtiofsd's normal remarks when qemu goes away
_VIRTIOFSD_NOISE = ("Unexpected poll revents",)


def _report(what: str, tmp: Path, hint: str, until: str | None = None) -> str:
    """`what`, the end of the guest console (up to `until`), qemu's and virtiofsd's complaints, `hint`."""
    parts = [what]
    console = tail_lines(tmp / "console", 25, until=until)
    parts.append("last lines of the guest console:\n" + _indent(console) if console
                 else "the guest console is empty (the kernel prints only warnings and errors there).")
    for name, label in (("qemu.log", "qemu"), ("virtiofsd.log", "virtiofsd")):
        log = tail_lines(tmp / name, 10, drop=_VIRTIOFSD_NOISE)
        if log:
            parts.append(f"{label} said:\n" + _indent(log))
    parts.append(hint)
    return "\n".join(parts)


def _indent(text: str) -> str:
    return "\n".join("  | " + ln for ln in text.splitlines())


def _panic_line(tmp: Path) -> str | None:
    for ln in tail_lines(tmp / "console", 200).splitlines():
        if "Kernel panic" in ln:
            return ln.strip()
    return None


def run(argv: list[str], timeout: float = 600, env: dict | None = None, cwd: str | None = None,
        stdout: BinaryIO | None = None, stderr: BinaryIO | None = None, *, timings: dict | None = None) -> int:
    """Boot the cloud kernel under qemu, run `argv` in it as root and return its exit code.

    The guest's root is the host's / (read-only) under a tmpfs overlay; cwd defaults to the current
    directory; the environment is the host's PATH, HOME=/root, `env` and TESTBED_IN_VM=1. stdout and
    stderr (default: sys.stdout.buffer / sys.stderr.buffer, binary or text streams) receive the
    command's output while it runs; the guest has no stdin. Raises VMError when the runner is not
    installed, the guest fails to boot, or `timeout` seconds (boot included) pass. qemu and
    virtiofsd are killed and the temporary directory removed on every path. `timings`, if given,
    receives boot (launch to command start) and total seconds. TESTBED_VM_DEBUG=1 prints the guest
    console, with init-stage timestamps, to stderr afterwards."""
    why = available()
    if why:
        raise VMError(why)
    if os.geteuid() != 0:
        raise VMError("testbed vm needs root: virtiofsd shares the host's / with the guest (run it with sudo)")
    if not timeout > 0:
        raise VMError(f"timeout must be a positive number of seconds, got {timeout!r}")
    argv = [str(a) for a in argv]
    cwd = check_cwd(cwd if cwd is not None else os.getcwd())
    genv = guest_env(env)
    script = job_script(argv, cwd, genv)
    shares = tmp_shares(cwd, argv, genv)
    stdout = stdout if stdout is not None else sys.stdout.buffer
    stderr = stderr if stderr is not None else sys.stderr.buffer
    kernel = find_kernel()
    initrd = build_initramfs(kernel, find_busybox())
    t0 = time.monotonic()

    def boot() -> int:
        return _boot(kernel, initrd, script, shares, stdout, stderr, timings, t0, limit=timeout)

    return retry_crashed_boot(boot, stderr)


class QemuCrashedAtBoot(VMError):
    """qemu died by a signal before the guest ran anything (nothing happened in the guest)."""


def retry_crashed_boot(boot: Callable[[], int], stderr: BinaryIO) -> int:
    """Boot once more, once, when qemu itself crashed before the guest started the command: TCG
    qemu segfaulted at boot once in about 500 boots here (one loaded suite run), with the guest
    console still empty. The command had not run, so a second boot changes no verdict; it is said."""
    try:
        return boot()
    except QemuCrashedAtBoot as e:
        _sink(stderr)(f"testbed vm: {e.signal_name} killed qemu before the guest ran the command "
                      f"(the guest console is empty); booting once more\n".encode())
        return boot()


def _boot(kernel, initrd, script: str, shares, stdout, stderr, timings: dict | None, t0: float,
          limit: float) -> int:
    # A second boot gets what is left of the limit; messages name the limit the caller set.
    timeout = limit - (time.monotonic() - t0)
    if not timeout > 0:
        raise VMError("testbed vm: no time left for a second boot after qemu crashed")
    base = tempfile.gettempdir()
    if not re.fullmatch(r"/[A-Za-z0-9._/+-]+", base) or len(base) > 64:  # kernel command line; unix socket path
        base = "/tmp"
    sweep_stale(base)
    tmp = Path(tempfile.mkdtemp(prefix="testbed-vm-", dir=base))
    vfsd = qemu = None
    tails: list[_Tail] = []
    listener = None
    debug = os.environ.get("TESTBED_VM_DEBUG") == "1"
    nofile, fd_limit = virtiofsd_nofile()
    hint_boot = (f"The guest did not run the command. Check the runner with `testbed vm -- true`; "
                 f"if packages are damaged reinstall them: {INSTALL_HINT}")
    try:
        (tmp / "owner").write_text(f"{os.getpid()} {_proc_start(os.getpid())}\n")
        job = tmp / "job.sh"
        job.write_text(script)
        (tmp / "shares").write_text("".join(f"{d}\n" for d in shares))
        sock = tmp / "vfs.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock))
        listener.listen(1)
        with open(tmp / "virtiofsd.log", "wb") as log:
            vfsd = subprocess.Popen(die_with_parent(virtiofsd_argv(listener.fileno(), nofile)),
                                    pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        listener.close()  # virtiofsd has its own copy: qemu's connection waits in its backlog
        listener = None
        for name, sink in (("out", _sink(stdout)), ("err", _sink(stderr)), ("status", None)):
            tails.append(_Tail(tmp / name, sink))
        out_t, err_t, status_t = tails
        (tmp / "console").touch()
        cmdline = kernel_cmdline(str(job), debug=debug, inodes=inode_budget(fd_limit))
        args = qemu_argv(kernel.image, initrd, cmdline, sock,
                         tmp / "console", tmp / "out", tmp / "err", tmp / "status")
        with open(tmp / "qemu.log", "wb") as log:
            qemu = subprocess.Popen(die_with_parent(args), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        try:
            st = supervise(qemu, status_t, [out_t, err_t], timeout)
        except _Timeout as e:
            where = (f"the command was still running (it started {e.status.started:.1f}s after launch)"
                     if e.status.started is not None else "the guest had not finished booting")
            raise VMError(_report(f"testbed vm: timed out after {limit:g}s: {where}; the VM was killed.", tmp,
                                  "Raise the limit with --timeout SECONDS (run(timeout=…)) or make the command faster "
                                  "(the guest CPU is 20-30x slower than the host).")) from None
        if timings is not None:
            timings["boot"] = st.started
            timings["total"] = time.monotonic() - t0
        if st.exit_code is not None:
            return st.exit_code
        panic = None
        if st.init_failed:
            what = f"testbed vm: the guest init failed: {st.init_failed}."
        elif panic := _panic_line(tmp):
            what = f"testbed vm: the guest kernel panicked: {panic}"
        elif st.started is not None:
            what = "testbed vm: the guest stopped while the command was running (no exit code was reported)."
        elif qemu.returncode not in (0, None):
            what = f"testbed vm: qemu failed (exit code {qemu.returncode}) before the guest ran the command."
            if qemu.returncode < 0 and not (tmp / "console").read_bytes().strip():
                crash = QemuCrashedAtBoot(_report(what, tmp, hint_boot))
                crash.signal_name = signal.Signals(-qemu.returncode).name
                raise crash
        else:
            what = "testbed vm: the guest stopped before running the command."
        raise VMError(_report(what, tmp, hint_boot, until="Kernel panic" if panic else None))
    finally:
        if listener is not None:
            listener.close()
        _stop(qemu)
        _stop(vfsd)
        if debug:
            _sink(stderr)(b"--- testbed vm: guest console ---\n" + (tmp / "console").read_bytes().replace(b"\r", b"")
                          if (tmp / "console").exists() else b"")
        for t in tails:
            t.close()
        shutil.rmtree(tmp, ignore_errors=True)


def cmd_vm(args) -> int:
    """`testbed vm [--timeout S] -- CMD…`: the command's exit code, or 125 when the runner fails."""
    command = list(args.command or [])
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("error: testbed vm: no command given: testbed vm [--timeout SECONDS] -- CMD [ARGS…]", file=sys.stderr)
        return 2
    timeout = getattr(args, "timeout", None)

    def terminate(signum, frame):  # unwind through run()'s cleanup instead of dying on the spot
        raise SystemExit(128 + signum)

    try:
        old = {sig: signal.signal(sig, terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    except ValueError:  # not the main thread
        old = {}
    try:
        return run(command, timeout=600 if timeout is None else float(timeout))
    except VMError as e:
        sys.stdout.flush()
        print(f"error: {e}", file=sys.stderr)
        return VM_ERROR_EXIT
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def guest_python() -> str:
    """The interpreter to run in the guest: this one, keeping a virtualenv (its bin/python symlink
    finds pyvenv.cfg), but never a pyenv shim (a shell script that costs ~10 s in the guest)."""
    exe = sys.executable
    return os.path.realpath(exe) if "/shims/" in exe else exe
