"""The origin report (testbed/startup.py): where a process imports pyroute2, scapy and yaml from."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import startup

ROOT = Path(__file__).resolve().parents[2]


def run_python(exe: str, env: dict, code: str = "import testbed") -> subprocess.CompletedProcess:
    """`exe -c code` with testbed importable from the checkout and nothing else of ours inherited."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([exe, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_this_environment_reports_itself():
    r = startup.origins()
    assert r["prefix"] == os.path.realpath(sys.prefix) and r["pid"] == os.getpid()
    assert set(r["modules"]) == {"pyroute2", "scapy", "yaml"}
    assert startup.outside(r, sys.prefix) == []


def test_a_process_importing_testbed_writes_its_report_only_when_asked(tmp_path):
    where = tmp_path / "o"
    res = run_python(sys.executable, {startup.ORIGINS_ENV: str(where)})
    assert res.returncode == 0, res.stderr
    (report,) = [json.loads(p.read_text()) for p in where.glob("*.json")]
    assert report["argv"][:2] == [sys.executable, "-c"]
    assert startup.outside(report, sys.prefix) == []
    assert not list(where.glob("*.tmp"))
    res = run_python(sys.executable, {}, f"import testbed, os; print(os.path.exists({str(where)!r}))")
    assert res.returncode == 0 and res.stdout.strip() == "True"  # unset: nothing new is written
    assert len(list(where.glob("*.json"))) == 1


def test_another_interpreter_is_named_as_outside(tmp_path):
    """The base interpreter (outside the venv) is what a guest ran before the fix: caught."""
    if os.path.realpath(sys.prefix) == os.path.realpath(sys.base_prefix):
        pytest.skip("the tests run outside a virtualenv: there is no base interpreter to compare with")
    where = tmp_path / "o"
    res = run_python(sys._base_executable, {startup.ORIGINS_ENV: str(where)})
    assert res.returncode == 0, res.stderr
    (report,) = [json.loads(p.read_text()) for p in where.glob("*.json")]
    problems = startup.outside(report, sys.prefix)
    assert problems and problems[0].startswith("sys.prefix ")
    assert any(p.startswith(("pyroute2 ", "scapy ", "yaml ")) for p in problems), problems


def test_outside_names_each_module_and_a_missing_one():
    report = {"prefix": "/env", "modules": {"yaml": "/env/lib/yaml/__init__.py", "scapy": "/envx/scapy/__init__.py",
                                            "pyroute2": None}}
    assert startup.outside(report, "/env") == ["pyroute2 not found", "scapy from /envx/scapy/__init__.py"]
    assert startup.outside(dict(report, prefix="/other"), "/env")[0] == "sys.prefix /other"


def test_an_unwritable_report_directory_does_not_stop_the_process(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = run_python(sys.executable, {startup.ORIGINS_ENV: str(blocker / "sub")}, "import testbed; print('ran')")
    assert res.returncode == 0 and res.stdout.strip() == "ran", res.stderr
