"""Fixtures shared by the unit and kernel tests."""
from __future__ import annotations

import subprocess

import pytest


@pytest.fixture
def vm_spawns(monkeypatch):
    """(processes, temporary directories) that testbed.vm starts and makes, recorded as it goes, so a
    test can check that every one of them is gone afterwards."""
    from testbed import vm

    started: list[subprocess.Popen] = []
    made: list[str] = []
    real_popen, real_mkdtemp = subprocess.Popen, vm.tempfile.mkdtemp

    class Recording(real_popen):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            started.append(self)

    monkeypatch.setattr(vm.subprocess, "Popen", Recording)
    monkeypatch.setattr(vm.tempfile, "mkdtemp", lambda **kw: made.append(real_mkdtemp(**kw)) or made[-1])
    return started, made
