"""testbed.vm without booting: qemu/virtiofsd command lines, the generated guest scripts, env/cwd
quoting (the job script is run for real by the host's /bin/sh), modules.dep handling, the cpio
writer and initramfs cache, the output/exit-code protocol, timeouts with a fake clock, and run()'s
cleanup with stand-in processes for qemu and virtiofsd.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed import vm

# --------------------------------------------------------------------------- command lines


def test_qemu_argv_is_tcg_with_virtiofs_and_four_serial_files(tmp_path):
    args = vm.qemu_argv("/boot/vmlinuz-x", "/cache/initrd.cpio", "console=ttyS0", tmp_path / "vfs.sock",
                        tmp_path / "console", tmp_path / "out", tmp_path / "err", tmp_path / "status",
                        memory_mb=1024, cpus=2)
    assert args[0] == "qemu-system-x86_64"

    def after(flag):
        return [args[i + 1] for i, a in enumerate(args) if a == flag]

    assert after("-accel") == ["tcg,thread=multi"]
    assert after("-cpu") == ["max"] and after("-smp") == ["2"] and after("-m") == ["1024"]
    assert after("-kernel") == ["/boot/vmlinuz-x"] and after("-initrd") == ["/cache/initrd.cpio"]
    assert after("-append") == ["console=ttyS0"]
    # vhost-user-fs needs shared guest memory of exactly -m
    assert after("-object") == ["memory-backend-memfd,id=mem,size=1024M,share=on"]
    assert after("-numa") == ["node,memdev=mem"]
    assert after("-chardev") == [f"socket,id=vfs,path={tmp_path}/vfs.sock"]
    assert after("-device") == [f"vhost-user-fs-pci,chardev=vfs,tag={vm.TAG}"]
    # ttyS0 console, ttyS1 stdout, ttyS2 stderr, ttyS3 status: the order is the protocol
    assert after("-serial") == [f"file:{tmp_path}/{n}" for n in ("console", "out", "err", "status")]
    assert after("-nic") == ["none"]
    assert "-no-reboot" in args and "-nodefaults" in args  # a panic (panic=-1) ends qemu


def test_qemu_argv_escapes_commas_in_paths():
    args = vm.qemu_argv("k", "i", "c", "/t/a,b/vfs.sock", "/t/a,b/console", "/o", "/e", "/s")
    assert "socket,id=vfs,path=/t/a,,b/vfs.sock" in args
    assert "file:/t/a,,b/console" in args


def test_virtiofsd_argv_shares_root_with_chroot_sandbox_and_cache():
    args = vm.virtiofsd_argv(7, 20000)
    assert args[0] == vm.VIRTIOFSD
    assert "--fd=7" in args and "--rlimit-nofile=20000" in args
    opts = [args[i + 1] for i, a in enumerate(args) if a == "-o"]
    assert {"source=/", "sandbox=chroot", "cache=always"} <= set(opts)
    assert not any(a.startswith("--rlimit") for a in vm.virtiofsd_argv(7, None))


def test_inode_budget_leaves_headroom_below_the_fd_limit():
    assert vm.inode_budget(20000) == 12000
    assert vm.inode_budget(100) == 1000  # never absurdly small


def test_kernel_cmdline():
    line = vm.kernel_cmdline("/tmp/testbed-vm-abc/job.sh", inodes=12000)
    words = line.split()
    assert "console=ttyS0" in words and "panic=-1" in words and "rdinit=/init" in words
    assert "testbed.job=/tmp/testbed-vm-abc/job.sh" in words and "testbed.inodes=12000" in words
    assert "quiet" in words and "testbed.debug=1" not in words
    assert "testbed.debug=1" in vm.kernel_cmdline("/j", debug=True).split()
    with pytest.raises(vm.VMError, match="plain absolute path"):
        vm.kernel_cmdline("/tmp/with space/job.sh")
    with pytest.raises(vm.VMError):
        vm.kernel_cmdline("relative/job.sh")


# --------------------------------------------------------------------------- env, cwd, job script


def test_guest_env_is_path_home_env_and_the_vm_marker():
    env = vm.guest_env({"A": "1", "TESTBED_IN_VM": "0"}, host_env={"PATH": "/x:/y", "SECRET": "no"})
    assert env == {"PATH": "/x:/y", "HOME": "/root", "A": "1", "TESTBED_IN_VM": "1"}
    assert vm.guest_env({"PATH": "/only"}, host_env={"PATH": "/x"})["PATH"] == "/only"
    assert vm.guest_env(None, host_env={})["PATH"].endswith("/bin")
    with pytest.raises(vm.VMError, match="cannot be passed"):
        vm.guest_env({"A-B": "1"}, host_env={})
    with pytest.raises(vm.VMError, match="NUL"):
        vm.guest_env({"A": "x\0y"}, host_env={})


@pytest.mark.parametrize("cwd", ["/tmp", "/run/netns", "/var/run/x", "/proc/1", "/dev/shm"])
def test_cwd_under_a_guest_fresh_filesystem_is_refused(cwd):
    with pytest.raises(vm.VMError, match="fresh filesystem in the guest"):
        vm.check_cwd(cwd)


@pytest.fixture
def fake_tmp(tmp_path, monkeypatch):
    """vm.SHARED_TMP pointed at an empty directory, so only what a test makes there is found."""
    top = tmp_path / "tmp"
    top.mkdir()
    monkeypatch.setattr(vm, "SHARED_TMP", str(top))
    return top


def _dirs(top: Path, *names: str) -> list[Path]:
    for n in names:
        (top / n).mkdir(parents=True)
    return [top / n for n in names]


def test_a_working_directory_under_tmp_is_brought_into_the_guest(fake_tmp):
    """CI clones and scratch checkouts live under /tmp: the guest gets a writable overlay of them."""
    assert vm.check_cwd("/tmp/clone/tests") == "/tmp/clone/tests"
    tests, _ = _dirs(fake_tmp, "clone/tests", "unrelated")
    assert vm.tmp_shares(str(tests), ["true"], {"PATH": "/usr/bin:/bin"}) == [str(fake_tmp / "clone")]
    assert vm.tmp_shares("/", ["true"], {"PATH": "/usr/bin:/bin"}) == []


def test_the_command_its_interpreter_and_path_entries_under_tmp_are_brought_in(fake_tmp):
    """A virtualenv under /tmp: its console script (found on PATH) and the #! python it names."""
    venv, py, lib, rel = _dirs(fake_tmp, "venv/bin", "py/bin", "lib/site", "rel")
    (py / "python").write_text("")
    tool = venv / "tool"
    tool.write_text(f"#!{py}/python -E\nprint()\n")
    tool.chmod(0o755)
    env = {"PATH": f"/usr/bin:{venv}"}
    assert vm.tmp_shares("/", ["tool"], env) == [str(fake_tmp / "py"), str(fake_tmp / "venv")]
    assert vm.tmp_shares("/", [str(tool)], {"PATH": "/usr/bin"}) == [str(fake_tmp / "py"), str(fake_tmp / "venv")]
    assert vm.tmp_shares(str(fake_tmp), ["./rel/x"], {"PATH": ""}) == [str(rel)]
    assert vm.tmp_shares("/", ["true"], {"PATH": "/usr/bin", "PYTHONPATH": f"{lib}:/opt"}) == [str(fake_tmp / "lib")]
    assert vm.tmp_shares("/", ["true"], {"PATH": f"{fake_tmp}/absent/bin"}) == []  # nothing to bring


def test_this_interpreters_environment_under_tmp_is_brought_in(fake_tmp, monkeypatch):
    """`testbed verify --mode ipvs` from a virtualenv under /tmp runs that venv's python in the guest."""
    (venv,) = _dirs(fake_tmp, "ci-venv/bin")
    monkeypatch.setattr(vm.sys, "prefix", str(fake_tmp / "ci-venv"))
    monkeypatch.setattr(vm.sys, "executable", str(venv / "python"))
    assert vm.tmp_shares("/work/main", ["sh"], {"PATH": "/usr/bin:/bin"}) == [str(fake_tmp / "ci-venv")]


def test_tmp_shares_follow_symlinks_and_refuse_unmountable_names(fake_tmp, tmp_path):
    _dirs(fake_tmp, "real/sub", "a,b")
    real = fake_tmp / "real"
    (fake_tmp / "link").symlink_to(real)
    (tmp_path / "elsewhere").symlink_to(real)
    # the top that is a symlink cannot exist in the guest's /tmp; what it points to is brought in
    assert vm.tmp_shares(str(fake_tmp / "link" / "sub"), ["true"], {}) == [str(real)]
    assert vm.tmp_shares(str(tmp_path / "elsewhere"), ["true"], {}) == [str(real)]
    with pytest.raises(vm.VMError, match="overlay mount options"):
        vm.tmp_shares(str(fake_tmp / "a,b"), ["true"], {})


def test_cwd_is_made_absolute_and_normalised():
    assert vm.check_cwd("/work/main/../main/tests") == "/work/main/tests"
    assert vm.check_cwd("/tmpfoo") == "/tmpfoo"  # only whole path components count
    assert vm.check_cwd(".") == os.getcwd()


NASTY = ["it's", 'a "b"', "$HOME", "`id`", "back\\slash", "new\nline", "tab\there", "ünïcode", "*", "-n", ""]


def _run_job(tmp_path: Path, argv, cwd, env) -> subprocess.CompletedProcess:
    """Run the job script as the guest does: `env -i /bin/sh job.sh`."""
    job = tmp_path / "job.sh"
    job.write_text(vm.job_script(argv, cwd, env))
    return subprocess.run(["env", "-i", "/bin/sh", str(job)], check=False, capture_output=True, timeout=30)


def test_job_script_passes_argv_cwd_and_env_exactly(tmp_path):
    workdir = tmp_path / "dir with 'quotes' and $dollar"
    workdir.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": "/root", "V": "x 'y' \"z\" $w `v` \\ \n end", "TESTBED_IN_VM": "1"}
    probe = "import json, os, sys; print(json.dumps([sys.argv[1:], os.getcwd(), dict(os.environ)]))"
    res = _run_job(tmp_path, [sys.executable, "-c", probe, *NASTY], str(workdir), env)
    assert res.returncode == 0, res.stderr
    argv, cwd, seen = json.loads(res.stdout)
    assert argv == NASTY
    assert cwd == str(workdir)
    for k, v in env.items():
        assert seen[k] == v
    assert set(seen) <= set(env) | {"PWD", "OLDPWD", "SHLVL", "_", "LC_CTYPE"}  # nothing else leaks in
    # (LC_CTYPE: Python's own C-locale coercion in the probe)


def test_job_script_exit_codes_and_missing_things(tmp_path):
    env = {"PATH": "/usr/bin:/bin"}
    assert _run_job(tmp_path, ["sh", "-c", "exit 7"], str(tmp_path), env).returncode == 7
    res = _run_job(tmp_path, ["no-such-command-xyz"], str(tmp_path), env)
    assert res.returncode == 127
    res = _run_job(tmp_path, ["true"], str(tmp_path / "absent"), env)
    assert res.returncode == vm.EXIT_CWD
    assert b"cannot enter the working directory" in res.stderr and b"absent" in res.stderr


def test_job_script_refuses_nothing_to_run():
    with pytest.raises(vm.VMError, match="no command"):
        vm.job_script([], "/", {})
    with pytest.raises(vm.VMError, match="NUL"):
        vm.job_script(["a\0b"], "/", {})


# --------------------------------------------------------------------------- guest init scripts


def _shell_syntax_ok(script: str, tmp_path: Path) -> None:
    f = tmp_path / "s.sh"
    f.write_text(script)
    for sh in ("busybox", "dash", "sh"):
        exe = shutil.which(sh)
        if exe:
            cmd = [exe, "sh", "-n", str(f)] if sh == "busybox" else [exe, "-n", str(f)]
            res = subprocess.run(cmd, check=False, capture_output=True, text=True)
            assert res.returncode == 0, f"{sh}: {res.stderr}"
            return
    pytest.skip("no shell to check syntax with")


def test_init_script_mounts_share_readonly_overlay_fresh_run_tmp_and_switch_roots(tmp_path):
    s = vm.init_script(["kernel/a/virtio.ko", "kernel/b/overlay.ko"], tag="T")
    _shell_syntax_ok(s, tmp_path)
    assert s.startswith("#!/bin/busybox sh\n")
    assert "for m in kernel/a/virtio.ko kernel/b/overlay.ko; do" in s  # dependencies first, as given
    assert "mount -t virtiofs -o ro T /lower" in s
    assert "upperdir=/rw/upper" in s and "lowerdir=/lower" in s and "mount -t tmpfs -o mode=0755 tmpfs /rw" in s
    assert "tmpfs /newroot/run " in s and "tmpfs /newroot/tmp " in s  # host's /run/netns does not leak in
    assert "mkdir -p /newroot/run/testbed /newroot/run/netns" in s
    assert "switch_root /newroot" in s and "chroot" not in s.replace("switch_root", "")
    assert 'echo "init-failed $*" >/dev/ttyS3' in s  # failures reach the host's status channel
    # each directory listed in the job's shares file: a writable overlay of the host's, before switch_root
    assert 'done < "/lower${job%/*}/shares"' in s and 'lowerdir=/lower$s,upperdir=/rw/share$n/upper' in s
    assert s.index("/rw/share$n/upper") < s.index("switch_root /newroot")
    assert s.index("mount --move /$d") < s.index("switch_root /newroot")


def test_stage2_script_loads_modules_level_by_level_and_reports_on_ttys(tmp_path):
    levels = [[("a", "kernel/a.ko"), ("b", "kernel/b.ko")], [("c", "kernel/c.ko")]]
    s = vm.stage2_script(levels, "9.9.9-cloud-amd64", hostname="h")
    _shell_syntax_ok(s, tmp_path)
    body = s.splitlines()
    i_a, i_b, i_c = (body.index(f"  ld {m} kernel/{m}.ko &") for m in "abc")
    assert i_a < i_b < body.index("  wait") < i_c  # a level is loaded in parallel, after the one before
    assert '$bb insmod "/lib/modules/9.9.9-cloud-amd64/$2"' in s and '[ -d "/sys/module/$1" ]' in s
    assert s.index(") &") < s.index("mount -t devpts") < s.index("\nwait\n")  # mounts while modules load
    assert s.index("\nwait\n") < s.index("echo start >/dev/ttyS3")  # modules are in before the command starts
    assert "env -i /bin/sh /run/testbed/job.sh </dev/null >/dev/ttyS1 2>/dev/ttyS2" in s
    assert 'echo "exit $rc" >/dev/ttyS3' in s and "poweroff -f" in s
    assert "stty -F /dev/ttyS$n -opost" in s  # no CRLF in the command's output
    assert "drop_caches" in s and "testbed.inodes=" in s
    _shell_syntax_ok(vm.stage2_script([], "v"), tmp_path)


def test_guest_modules_cover_the_brief():
    need = {"br_netfilter", "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_lblc", "ip_vs_lblcr",
            "ip_vs_dh", "ip_vs_sh", "ip_vs_sed", "ip_vs_nq", "ip_vs_mh", "xt_ipvs", "dummy", "sch_netem", "veth",
            "bridge", "nf_conntrack", "nf_nat", "nf_tables", "ip_set", "iptable_nat", "nft_compat"}
    assert need <= set(vm.GUEST_MODULES)
    dep = {n: (f"kernel/{n}.ko", []) for n in need | {"ip_set_hash_ip", "ip_set_bitmap_port", "unrelated"}}
    got = vm.guest_modules(dep)
    assert set(got) == need | {"ip_set_hash_ip", "ip_set_bitmap_port"}  # only what the kernel has, plus set types
    assert len(got) == len(set(got))


# --------------------------------------------------------------------------- modules.dep


def _moddir(tmp_path: Path) -> Path:
    d = tmp_path / "lib/modules/9.9.9-cloud-amd64"
    (d / "kernel/fs").mkdir(parents=True)
    (d / "modules.dep").write_text(
        "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko "
        "kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n"
        "kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n"
        "kernel/drivers/virtio/virtio_ring.ko:\n"
        "kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n"
        "kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko "
        "kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n"
        "kernel/fs/fuse/fuse.ko:\n"
        "kernel/fs/overlayfs/overlay.ko:\n"
        "kernel/net/ip-vs.ko.xz: kernel/fs/fuse/fuse.ko\n")
    (d / "modules.builtin").write_text("kernel/lib/crc32.ko\n")
    return d


def test_load_order_is_dependencies_first_each_once(tmp_path):
    dep = vm.read_modules_dep(_moddir(tmp_path))
    assert dep["ip_vs"] == ("kernel/net/ip-vs.ko.xz", ["fuse"])  # names use underscores, suffixes dropped
    order = vm.load_order(dep, ["virtio_pci", "virtiofs", "overlay"])
    names = [vm.module_name(p) for p in order]
    assert len(names) == len(set(names))
    for mod, deps in dep.items():
        if mod in names:
            assert all(names.index(d) < names.index(mod) for d in deps[1])
    assert names[-1] == "overlay" and set(names) == {"virtio_pci", "virtio_pci_modern_dev", "virtio_ring", "virtio",
                                                     "virtiofs", "fuse", "overlay"}


def test_load_order_skips_builtins_and_names_missing_modules(tmp_path):
    d = _moddir(tmp_path)
    dep, builtin = vm.read_modules_dep(d), vm.read_builtin(d)
    assert vm.load_order(dep, ["crc32", "overlay"], builtin) == ["kernel/fs/overlayfs/overlay.ko"]
    with pytest.raises(vm.VMError, match="kernel module nosuch not found"):
        vm.load_order(dep, ["nosuch"], builtin)


def test_softdeps_become_dependencies_through_aliases(tmp_path):
    d = _moddir(tmp_path)
    (d / "modules.softdep").write_text("# comment\nsoftdep overlay pre: crcalias post: fuse\nsoftdep absent pre: fuse\n")
    (d / "modules.alias").write_text("alias crcalias virtio_ring\nalias pci:v*d* virtio_pci\n")
    dep = vm.with_softdeps(vm.read_modules_dep(d), d)
    assert dep["overlay"] == ("kernel/fs/overlayfs/overlay.ko", ["virtio_ring"])  # pre: only
    assert "absent" not in dep


def test_load_levels_put_each_module_after_what_it_needs(tmp_path):
    dep = vm.read_modules_dep(_moddir(tmp_path))
    levels = vm.load_levels(dep, ["virtio_pci", "virtiofs", "overlay"])
    where = {name: i for i, lvl in enumerate(levels) for name, _ in lvl}
    assert sorted(where) == sorted(["virtio_pci", "virtio_pci_modern_dev", "virtio_ring", "virtio", "virtiofs",
                                    "fuse", "overlay"])
    for name, lvl in where.items():
        assert all(where[d] < lvl for d in dep[name][1])
    assert where["overlay"] == where["virtio_ring"] == where["fuse"] == 0 and where["virtio_pci"] == 2
    assert ("overlay", "kernel/fs/overlayfs/overlay.ko") in levels[0]
    assert vm.load_levels(dep, []) == []


# --------------------------------------------------------------------------- cpio and the initramfs cache


def _parse_newc(data: bytes) -> dict[str, tuple[int, int, int, bytes]]:
    """{name: (mode, rdevmajor, rdevminor, data)} from a newc archive; checks alignment and the trailer."""
    out, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701", pos
        f = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        assert data[pos + 110 + namesize - 1] == 0
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos:pos + filesize]
        pos += filesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out[name] = (mode, rmaj, rmin, body)


def test_cpio_newc_roundtrip():
    entries = [("bin", stat.S_IFDIR | 0o755, b""), ("/init", stat.S_IFREG | 0o755, b"#!/bin/sh\n"),
               ("dev/console", stat.S_IFCHR | 0o600, (5 << 8) | 1), ("odd", stat.S_IFREG | 0o644, b"abcde")]
    got = _parse_newc(vm.cpio_newc(entries))
    assert got["init"] == (stat.S_IFREG | 0o755, 0, 0, b"#!/bin/sh\n")
    assert got["dev/console"][:3] == (stat.S_IFCHR | 0o600, 5, 1)
    assert got["odd"][3] == b"abcde" and stat.S_ISDIR(got["bin"][0])


@pytest.fixture
def fake_kernel(tmp_path, monkeypatch):
    moddir = _moddir(tmp_path)
    for rel in ("kernel/drivers/virtio/virtio_pci.ko", "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio.ko", "kernel/fs/fuse/virtiofs.ko",
                "kernel/fs/fuse/fuse.ko", "kernel/fs/overlayfs/overlay.ko"):
        (moddir / rel).parent.mkdir(parents=True, exist_ok=True)
        (moddir / rel).write_bytes(b"\x7fELF module " + rel.encode())
    monkeypatch.setattr(vm, "MODULES_DIR", tmp_path / "lib/modules")
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF busybox")
    return vm.Kernel("9.9.9-cloud-amd64", tmp_path / "vmlinuz-9.9.9-cloud-amd64"), str(busybox)


def test_initramfs_is_built_once_and_keyed_by_content(fake_kernel, tmp_path, monkeypatch):
    kernel, busybox = fake_kernel
    cache = tmp_path / "cache"
    path = vm.build_initramfs(kernel, busybox, cache)
    assert path.parent == cache and path.name.startswith("vm-initramfs-9.9.9-cloud-amd64-")
    files = _parse_newc(path.read_bytes())
    assert files["bin/busybox"][3] == b"\x7fELF busybox"
    assert files["dev/console"][1:3] == (5, 1)
    assert files["init"][3].decode() == vm.init_script(vm.load_order(vm.read_modules_dep(kernel.modules),
                                                                     vm.BOOT_MODULES))
    assert b"ip_vs" not in files["init"][3]
    mods = sorted(n for n in files if n.startswith("lib/modules/") and n.endswith(".ko"))
    assert len(mods) == 7 and files["lib/modules/kernel/fs/overlayfs/overlay.ko"][3].endswith(b"overlay.ko")
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert vm.build_initramfs(kernel, busybox, cache) == path and path.stat().st_mtime_ns == mtime  # cached
    # a changed init script is a new key; the stale image of that kernel is pruned
    monkeypatch.setattr(vm, "init_script", lambda mods, tag=vm.TAG: "#!/bin/busybox sh\necho changed\n")
    path2 = vm.build_initramfs(kernel, busybox, cache)
    assert path2 != path and not path.exists() and path2.exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp files left


def test_initramfs_cache_dir_not_writable_is_a_clear_error(fake_kernel, tmp_path):
    kernel, busybox = fake_kernel
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(vm.VMError, match="cannot create the initramfs cache"):
        vm.build_initramfs(kernel, busybox, blocker / "cache")


# --------------------------------------------------------------------------- what is installed


def _elf(interp: bool) -> bytes:
    phoff, phentsize = 64, 56
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[32:40] = phoff.to_bytes(8, "little")
    header[54:56] = phentsize.to_bytes(2, "little")
    header[56:58] = (2).to_bytes(2, "little")
    ph = (1).to_bytes(4, "little") + bytes(52)  # PT_LOAD
    ph2 = (3 if interp else 1).to_bytes(4, "little") + bytes(52)
    return bytes(header) + ph + ph2


def test_is_static_elf(tmp_path):
    (tmp_path / "static").write_bytes(_elf(False))
    (tmp_path / "dynamic").write_bytes(_elf(True))
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert vm.is_static_elf(tmp_path / "static")
    assert not vm.is_static_elf(tmp_path / "dynamic")
    assert not vm.is_static_elf(tmp_path / "script")
    assert not vm.is_static_elf(tmp_path / "absent")


def test_kernels_newest_first_and_only_with_modules(tmp_path, monkeypatch):
    boot, mods = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    for v in ("6.1.0-9-cloud-amd64", "6.1.0-10-cloud-amd64", "6.1.0-11-amd64"):
        (boot / f"vmlinuz-{v}").write_text("")
    (mods / "6.1.0-9-cloud-amd64").mkdir(parents=True)
    (mods / "6.1.0-9-cloud-amd64/modules.dep").write_text("")
    monkeypatch.setattr(vm, "BOOT_DIR", boot)
    monkeypatch.setattr(vm, "MODULES_DIR", mods)
    monkeypatch.delenv("TESTBED_VM_KERNEL", raising=False)
    assert [k.version for k in vm.find_kernels(boot)] == ["6.1.0-10-cloud-amd64", "6.1.0-9-cloud-amd64"]
    assert vm.find_kernel().version == "6.1.0-9-cloud-amd64"  # -10 has no modules


def test_available_names_what_is_missing_and_the_apt_command(tmp_path, monkeypatch):
    monkeypatch.setattr(vm, "BOOT_DIR", tmp_path)
    monkeypatch.setattr(vm, "MODULES_DIR", tmp_path)
    monkeypatch.setattr(vm.shutil, "which", lambda name: None)
    monkeypatch.setattr(vm.os, "access", lambda p, mode: False)
    monkeypatch.setattr(vm, "find_busybox", lambda: None)
    msg = vm.available()
    for what in ("qemu-system-x86_64", "virtiofsd", "vmlinuz-*-cloud-amd64", "busybox-static",
                 "apt-get install -y --no-install-recommends qemu-system-x86 linux-image-cloud-amd64 busybox-static"):
        assert what in msg


def test_available_is_none_when_everything_is_there(tmp_path, monkeypatch):
    (tmp_path / "vmlinuz-6.1.0-9-cloud-amd64").write_text("")
    (tmp_path / "6.1.0-9-cloud-amd64").mkdir()
    (tmp_path / "6.1.0-9-cloud-amd64/modules.dep").write_text("")
    monkeypatch.setattr(vm, "BOOT_DIR", tmp_path)
    monkeypatch.setattr(vm, "MODULES_DIR", tmp_path)
    monkeypatch.setattr(vm.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(vm.os, "access", lambda p, mode: True)
    monkeypatch.setattr(vm, "find_busybox", lambda: "/bin/busybox")
    monkeypatch.delenv("TESTBED_VM_KERNEL", raising=False)
    assert vm.available() is None
    (tmp_path / "6.1.0-9-cloud-amd64/modules.dep").unlink()
    assert "depmod 6.1.0-9-cloud-amd64" in vm.available()


# --------------------------------------------------------------------------- status protocol and supervision


def test_status_parses_crlf_partial_lines_and_failures():
    st = vm.Status()
    st.feed("sta", 1.0)
    assert st.started is None
    st.feed("rt\r\nexi", 2.0)
    assert st.started == 2.0 and st.exit_code is None
    st.feed("t 42\r\n", 3.0)
    assert st.exit_code == 42
    st2 = vm.Status()
    st2.feed("init-failed mount virtiofs\n", 1.0)
    assert st2.init_failed == "mount virtiofs" and st2.exit_code is None


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    def sleep(self, dt):
        self.t += dt


class FakeQemu:
    """poll() plays one step per call: ("out"|"err"|"status", bytes) appends to that file; "exit" ends."""

    def __init__(self, files: dict[str, Path], steps):
        self.files, self.steps, self.returncode = files, list(steps), None
        self.polls = 0

    def poll(self):
        self.polls += 1
        if self.returncode is None and self.steps:
            step = self.steps.pop(0)
            if step == "exit":
                self.returncode = 0
            elif step is not None:
                with open(self.files[step[0]], "ab") as f:
                    f.write(step[1])
        return self.returncode


def _tails(tmp_path):
    got: list[tuple[str, bytes]] = []
    files = {n: tmp_path / n for n in ("out", "err", "status")}
    out = vm._Tail(files["out"], lambda b: got.append(("out", b)))
    err = vm._Tail(files["err"], lambda b: got.append(("err", b)))
    status = vm._Tail(files["status"], None)
    return files, out, err, status, got


def test_supervise_streams_while_running_and_returns_the_exit_code(tmp_path):
    files, out, err, status, got = _tails(tmp_path)
    clock = FakeClock()
    qemu = FakeQemu(files, [("status", b"start\r\n"), ("out", b"one\n"), None, None, ("err", b"oops\n"),
                            ("out", b"two\n"), ("status", b"exit 7\n"), None, ("out", b"late\n"), "exit"])
    st = vm.supervise(qemu, status, [out, err], timeout=60, clock=clock, sleep=clock.sleep, poll_interval=0.5)
    assert st.exit_code == 7 and st.started == 0.5
    assert got == [("out", b"one\n"), ("err", b"oops\n"), ("out", b"two\n"), ("out", b"late\n")]


def test_supervise_output_arrives_before_the_command_ends(tmp_path):
    files, out, err, status, _ = _tails(tmp_path)
    clock = FakeClock()
    seen_at = []
    out.sink = lambda b: seen_at.append((clock(), b))
    qemu = FakeQemu(files, [("status", b"start\n"), ("out", b"early\n")] + [None] * 20 + [("status", b"exit 0\n"), "exit"])
    vm.supervise(qemu, status, [out, err], timeout=60, clock=clock, sleep=clock.sleep, poll_interval=1)
    assert seen_at[0][1] == b"early\n" and seen_at[0][0] < clock() - 15


def test_supervise_times_out_during_boot_and_while_running(tmp_path):
    files, out, err, status, _ = _tails(tmp_path)
    clock = FakeClock()
    hung = FakeQemu(files, [])
    with pytest.raises(vm._Timeout) as e:
        vm.supervise(hung, status, [out, err], timeout=5, clock=clock, sleep=clock.sleep, poll_interval=0.1)
    assert e.value.status.started is None and 1005 <= clock() < 1005.2
    (tmp_path / "again").mkdir()
    files, out, err, status, _ = _tails(tmp_path / "again")
    clock = FakeClock()
    running = FakeQemu(files, [("status", b"start\n")])
    with pytest.raises(vm._Timeout) as e:
        vm.supervise(running, status, [out, err], timeout=5, clock=clock, sleep=clock.sleep, poll_interval=0.1)
    assert e.value.status.started is not None


def test_supervise_stops_waiting_when_the_guest_does_not_power_off(tmp_path):
    files, out, err, status, _ = _tails(tmp_path)
    clock = FakeClock()
    qemu = FakeQemu(files, [("status", b"start\nexit 3\n")])
    st = vm.supervise(qemu, status, [out, err], timeout=600, clock=clock, sleep=clock.sleep, poll_interval=1,
                      poweroff_grace=10)
    assert st.exit_code == 3 and qemu.returncode is None and clock() < 1000 + 15


def test_supervise_reports_a_guest_that_stopped_without_an_exit_code(tmp_path):
    files, out, err, status, _ = _tails(tmp_path)
    clock = FakeClock()
    qemu = FakeQemu(files, [("status", b"init-failed mount overlay\n"), "exit"])
    st = vm.supervise(qemu, status, [out, err], timeout=60, clock=clock, sleep=clock.sleep)
    assert st.exit_code is None and st.init_failed == "mount overlay"


def test_sink_accepts_text_and_binary_streams():
    text, binary = io.StringIO(), io.BytesIO()
    vm._sink(text)(b"h\xc3\xa9\n")
    vm._sink(binary)(b"h\xc3\xa9\n")
    assert text.getvalue() == "hé\n" and binary.getvalue() == b"h\xc3\xa9\n"


def test_report_shows_console_up_to_the_panic_and_drops_virtiofsd_noise(tmp_path):
    (tmp_path / "console").write_bytes(b"a\r\nKernel panic - not syncing: x\r\n call trace\r\n")
    (tmp_path / "virtiofsd.log").write_text("virtio_loop: Unexpected poll revents 11\n")
    msg = vm._report("what", tmp_path, "hint", until="Kernel panic")
    assert msg.startswith("what\n") and msg.endswith("\nhint")
    assert "  | Kernel panic - not syncing: x" in msg and "call trace" not in msg and "virtiofsd" not in msg
    assert "console is empty" in vm._report("w", tmp_path / "nothing", "h")


# --------------------------------------------------------------------------- run() with stand-ins


@pytest.fixture
def stand_ins(tmp_path, monkeypatch, vm_spawns):
    """run() with qemu and virtiofsd replaced by shell scripts; records the processes it starts."""
    monkeypatch.setattr(vm, "available", lambda: None)
    monkeypatch.setattr(vm.os, "geteuid", lambda: 0)
    monkeypatch.setattr(vm, "find_kernel", lambda: vm.Kernel("9.9.9-cloud-amd64", tmp_path / "vmlinuz"))
    monkeypatch.setattr(vm, "find_busybox", lambda: "/bin/busybox")
    monkeypatch.setattr(vm, "build_initramfs", lambda kernel, busybox: tmp_path / "initrd")
    monkeypatch.setattr(vm, "virtiofsd_argv", lambda fd, nofile=None: ["sleep", "300"])
    started, made = vm_spawns

    def guest(script: str):
        def argv(kernel, initrd, cmdline, sock, console, out, err, status, **kw):
            env = f"console={console} out={out} err={err} status={status}; "
            return ["sh", "-c", env + script]
        monkeypatch.setattr(vm, "qemu_argv", argv)

    return guest, started, made


def _gone(p: subprocess.Popen) -> bool:
    """Ended and reaped by run() (no zombie left either)."""
    return p.returncode is not None and not Path(f"/proc/{p.pid}").exists()


def test_run_streams_and_returns_the_exit_code_and_cleans_up(stand_ins):
    guest, started, made = stand_ins
    # (>>: qemu opens each file once; a second `>` would truncate it under the reader)
    guest('echo start >>$status; printf "o1\\n" >>$out; printf "e1\\n" >>$err; echo "exit 5" >>$status; exit 0')
    out, err = io.BytesIO(), io.BytesIO()
    timings: dict = {}
    assert vm.run(["x"], cwd="/", stdout=out, stderr=err, timeout=30, timings=timings) == 5
    assert out.getvalue() == b"o1\n" and err.getvalue() == b"e1\n"
    assert timings["boot"] is not None and timings["total"] >= timings["boot"]
    assert len(started) == 2 and all(_gone(p) for p in started)  # the stand-in virtiofsd was killed too
    assert made and not any(os.path.exists(d) for d in made)


def test_run_lists_the_shares_next_to_the_job(stand_ins, fake_tmp):
    guest, _, _ = stand_ins
    (clone,) = _dirs(fake_tmp, "clone")
    guest('cat "$(dirname $out)/shares" >>$out; echo start >>$status; echo "exit 0" >>$status')
    out = io.BytesIO()
    assert vm.run(["true"], cwd=str(clone), stdout=out, stderr=io.BytesIO(), timeout=30) == 0
    assert out.getvalue().decode() == f"{clone}\n"


def test_run_timeout_raises_kills_everything_and_removes_the_temp_dir(stand_ins):
    guest, started, made = stand_ins
    guest("echo start >>$status; echo partial >>$out; exec sleep 300")
    out = io.BytesIO()
    t0 = time.monotonic()
    with pytest.raises(vm.VMError) as e:
        vm.run(["sleep", "600"], cwd="/", stdout=out, stderr=io.BytesIO(), timeout=1.5)
    assert time.monotonic() - t0 < 1.5 + 15
    msg = str(e.value)
    assert "timed out after 1.5s" in msg and "still running" in msg and "--timeout" in msg
    assert out.getvalue() == b"partial\n"  # what arrived before the timeout was passed on
    assert len(started) == 2 and all(_gone(p) for p in started)
    assert made and not any(os.path.exists(d) for d in made)


def test_run_reports_a_failed_boot_with_the_console_and_the_fix(stand_ins):
    guest, started, made = stand_ins
    guest('printf "[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\\r\\n[ 1.1] trace\\r\\n" >$console; exit 0')
    with pytest.raises(vm.VMError) as e:
        vm.run(["true"], cwd="/", stdout=io.BytesIO(), stderr=io.BytesIO(), timeout=30)
    msg = str(e.value)
    assert "kernel panicked" in msg and "Unable to mount root fs" in msg and "apt-get install" in msg
    assert "trace" not in msg
    assert all(_gone(p) for p in started) and not any(os.path.exists(d) for d in made)


def test_run_reports_missing_packages_without_starting_anything(monkeypatch):
    monkeypatch.setattr(vm, "available", lambda: "testbed vm cannot run here: missing X. Install with: apt-get …")
    with pytest.raises(vm.VMError, match="missing X"):
        vm.run(["true"])


def test_run_refuses_bad_arguments_before_booting(stand_ins):
    with pytest.raises(vm.VMError, match="fresh filesystem"):
        vm.run(["true"], cwd="/tmp")
    with pytest.raises(vm.VMError, match="no command"):
        vm.run([], cwd="/")
    with pytest.raises(vm.VMError, match="positive"):
        vm.run(["true"], cwd="/", timeout=0)
    assert stand_ins[1] == []


# --------------------------------------------------------------------------- the CLI entry


def test_cmd_vm_strips_the_separator_and_passes_the_timeout(monkeypatch):
    calls = []
    monkeypatch.setattr(vm, "run", lambda argv, timeout: calls.append((argv, timeout)) or 3)
    assert vm.cmd_vm(argparse.Namespace(command=["--", "ls", "--", "-l"], timeout=12)) == 3
    assert vm.cmd_vm(argparse.Namespace(command=["true"], timeout=None)) == 3
    assert calls == [(["ls", "--", "-l"], 12.0), (["true"], 600)]


def test_cmd_vm_prints_errors_and_returns_125(monkeypatch, capsys):
    def fail(argv, timeout):
        raise vm.VMError("testbed vm: the guest init failed: x")
    monkeypatch.setattr(vm, "run", fail)
    assert vm.cmd_vm(argparse.Namespace(command=["--", "true"], timeout=5)) == vm.VM_ERROR_EXIT == 125
    assert capsys.readouterr().err == "error: testbed vm: the guest init failed: x\n"
    assert vm.cmd_vm(argparse.Namespace(command=["--"], timeout=5)) == 2
    assert "no command given" in capsys.readouterr().err


def test_children_die_with_the_runner():
    """A `testbed vm` killed with SIGKILL (no finally) still takes qemu and virtiofsd with it."""
    if not shutil.which("setpriv"):
        pytest.skip("no setpriv (util-linux)")
    code = ("import subprocess, sys; from testbed import vm; "
            "p = subprocess.Popen(vm.die_with_parent(['sleep', '300'])); print(p.pid, flush=True)")
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=30)
    pid = int(res.stdout)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        stat_line = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
        if " Z " in stat_line:  # killed, waiting for init to reap it
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text()


def test_sweep_stale_removes_only_dead_owners_dirs(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    for name, owner in (("testbed-vm-dead", f"{dead.pid} 1"), ("testbed-vm-live", f"{os.getpid()} {vm._proc_start(os.getpid())}"),
                        ("testbed-vm-foreign", None), ("other-dead", f"{dead.pid} 1")):
        (tmp_path / name).mkdir()
        if owner:
            (tmp_path / name / "owner").write_text(owner + "\n")
    assert vm.sweep_stale(str(tmp_path)) == [str(tmp_path / "testbed-vm-dead")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-dead", "testbed-vm-foreign", "testbed-vm-live"]


def test_cwd_reaching_a_fresh_filesystem_through_a_symlink_is_refused(tmp_path, monkeypatch):
    fresh, other = tmp_path / "fresh", tmp_path / "other"
    (fresh / "dir").mkdir(parents=True)
    other.mkdir()
    (other / "link").symlink_to(fresh / "dir")
    monkeypatch.setattr(vm, "SHADOWED", (str(fresh),))
    with pytest.raises(vm.VMError, match=f"really {fresh}/dir"):
        vm.check_cwd(str(other / "link"))
    assert vm.check_cwd(str(other)) == str(other)


def test_a_qemu_crash_before_the_guest_ran_anything_boots_once_more_and_says_so():
    import io

    from testbed.vm import QemuCrashedAtBoot, retry_crashed_boot

    def crash():
        e = QemuCrashedAtBoot("testbed vm: qemu failed (exit code -11) before the guest ran the command.")
        e.signal_name = "SIGSEGV"
        return e

    calls, err = [], io.BytesIO()

    def boot_crashing_once():
        calls.append(1)
        if len(calls) == 1:
            raise crash()
        return 3

    assert retry_crashed_boot(boot_crashing_once, err) == 3 and len(calls) == 2
    assert b"SIGSEGV killed qemu before the guest ran the command" in err.getvalue()

    def boot_crashing():
        raise crash()

    with pytest.raises(QemuCrashedAtBoot):  # twice: the error stands, no third boot
        retry_crashed_boot(boot_crashing, io.BytesIO())
