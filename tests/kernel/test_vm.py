"""testbed.vm for real: boots Debian's cloud kernel under qemu (TCG) with the host's / shared
read-only. Four boots in all (each a few seconds; more on a busy machine): the exit-code/streams
one, one that checks everything inside the guest at once, one run from a virtualenv under /tmp,
and a timeout.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from testbed import startup, vm

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(bool(vm.available()), reason=vm.available() or "")]

HERE = Path(__file__).resolve().parent


def test_exit_code_and_both_streams():
    out, err = io.BytesIO(), io.BytesIO()
    timings: dict = {}
    rc = vm.run(["sh", "-c", "echo out; echo err >&2; exit 7"], stdout=out, stderr=err, cwd=str(HERE),
                timeout=120, timings=timings)
    assert rc == 7
    assert out.getvalue() == b"out\n" and err.getvalue() == b"err\n"  # no CRLF, nothing else mixed in
    print(f"boot to command: {timings['boot']:.2f}s, whole run: {timings['total']:.2f}s")


def test_inside_the_guest_ipvs_dummy_cwd_env_and_isolation():
    token = uuid.uuid4().hex[:10]
    host_file = Path(f"/root/x-from-guest-{token}")
    repo_file = HERE / f".x-from-guest-{token}"
    python = vm.guest_python()  # this environment's interpreter (a venv's bin/python), never a pyenv shim
    script = f"""
        echo "cwd=$(pwd)"
        echo "probe=$PROBE"
        echo "in_vm=$TESTBED_IN_VM"
        echo "home=$HOME"
        test -e /proc/net/ip_vs && echo ipvs=yes
        ip link add kube-ipvs0 type dummy && ip link show kube-ipvs0 >/dev/null && echo dummy=yes
        ipvsadm -A -t 10.96.0.10:80 -s rr 2>/dev/null && ipvsadm -Ln | grep -q 10.96.0.10:80 && echo ipvsadm=yes
        tc qdisc add dev lo root netem delay 1ms && echo netem=yes
        test "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables)" = 1 && echo brnf=yes
        echo "netns_before=$(ls /run/netns | wc -l)"
        ip netns add vm-{token} && echo "netns_after=$(ls /run/netns)"
        touch {host_file} {repo_file} && echo wrote=yes
        a=$(cut -d' ' -f1 /proc/uptime)
        TESTBED_ORIGINS_DIR=/run/origins {python} -c "import pyroute2, testbed" && echo pyroute2=yes
        b=$(cut -d' ' -f1 /proc/uptime)
        echo "pyroute2_import_s=$(awk "BEGIN {{ print $b - $a }}")"
        echo "origins=$(cat /run/origins/*.json)"
    """
    out, err = io.BytesIO(), io.BytesIO()
    timings: dict = {}
    rc = vm.run(["sh", "-c", script], env={"PROBE": "a b 'c' \"d\" $e"}, cwd=str(HERE), stdout=out, stderr=err,
                timeout=300, timings=timings)
    lines = out.getvalue().decode().splitlines()
    got = dict(ln.split("=", 1) for ln in lines if "=" in ln)
    assert rc == 0, err.getvalue().decode()
    assert got["cwd"] == str(HERE)
    assert got["probe"] == "a b 'c' \"d\" $e"
    assert got["in_vm"] == "1" and got["home"] == "/root"
    for feature in ("ipvs", "dummy", "ipvsadm", "netem", "brnf", "wrote", "pyroute2"):
        assert got.get(feature) == "yes", (feature, lines, err.getvalue().decode())
    # the guest's /run/netns is its own: empty at start whatever the host has, and nothing leaks back
    assert got["netns_before"] == "0" and got["netns_after"] == f"vm-{token}"
    assert not Path(f"/run/netns/vm-{token}").exists()
    assert not host_file.exists() and not repo_file.exists()  # writes stayed in the guest's tmpfs overlay
    # the guest's Python is this environment's: nothing imported from elsewhere on the machine
    assert startup.outside(json.loads(got["origins"]), sys.prefix) == [], got["origins"]
    print(f"boot to command: {timings['boot']:.2f}s; `import pyroute2` in the guest: {got.get('pyroute2_import_s')}s")


@pytest.fixture
def tmp_venv():
    """A virtualenv under /tmp (as CI runners make them) whose packages are this environment's
    (a .pth adds its site-packages and the checkout), with a `testbed` console script as pip
    writes one. Removed afterwards."""
    import shutil
    import subprocess
    import sysconfig
    import tempfile
    from importlib.metadata import entry_points

    root = Path(tempfile.mkdtemp(prefix="testbed-venv-", dir="/tmp"))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
        python = root / "bin" / "python"
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                 check=True, capture_output=True, text=True, timeout=60).stdout.strip()
        Path(purelib, "project-env.pth").write_text(
            f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n{HERE.parent.parent}\n")
        (ep,) = entry_points(group="console_scripts", name="testbed")
        module, func = ep.value.split(":")
        script = root / "bin" / "testbed"
        script.write_text(f"#!{python}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n")
        script.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_run_from_a_virtualenv_under_tmp_sees_it_in_the_guest(tmp_venv):
    """`testbed vm` run by a virtualenv under /tmp (a fresh tmpfs in the guest): its interpreter,
    packages and console script are there, from a working directory elsewhere (as `testbed
    verify --mode ipvs` runs its guest), and guest writes stay in the guest."""
    import subprocess

    python, marker = tmp_venv / "bin" / "python", tmp_venv / "x-from-guest"
    script = f"""
        {tmp_venv}/bin/testbed --help >/dev/null && echo console=yes
        TESTBED_ORIGINS_DIR=/run/origins {python} -c "import pyroute2, testbed" && echo pyroute2=yes
        echo "origins=$(cat /run/origins/*.json)"
        touch {marker} && echo wrote=yes
    """
    res = subprocess.run([str(tmp_venv / "bin" / "testbed"), "vm", "--timeout", "300", "--", "sh", "-c", script],
                         cwd=str(HERE), capture_output=True, text=True, timeout=360, stdin=subprocess.DEVNULL)
    got = dict(ln.split("=", 1) for ln in res.stdout.splitlines() if "=" in ln)
    assert res.returncode == 0, res.stderr
    for check in ("console", "pyroute2", "wrote"):
        assert got.get(check) == "yes", (check, res.stdout, res.stderr)
    report = json.loads(got["origins"])
    assert report["prefix"] == os.path.realpath(tmp_venv)
    assert report["modules"] == startup.origins()["modules"]  # this environment's packages, via the .pth
    assert not marker.exists()


def _ours(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_timeout_raises_and_leaves_no_processes_or_temp_dirs(vm_spawns):
    started, made = vm_spawns
    timeout = 20
    t0 = time.monotonic()
    with pytest.raises(vm.VMError) as e:
        vm.run(["sleep", "600"], cwd=str(HERE), timeout=timeout, stdout=io.BytesIO(), stderr=io.BytesIO())
    took = time.monotonic() - t0
    assert took < timeout + 15
    assert f"timed out after {timeout}s" in str(e.value) and "--timeout" in str(e.value)
    names = sorted(next(os.path.basename(a) for a in p.args if a.endswith(("qemu-system-x86_64", "virtiofsd")))
                   for p in started)
    assert names == ["qemu-system-x86_64", "virtiofsd"]
    assert not any(_ours(p.pid) for p in started), "qemu or virtiofsd left running"
    assert made and not any(os.path.exists(d) for d in made)
