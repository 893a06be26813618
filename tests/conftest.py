"""Fixtures shared by the unit and kernel tests."""
from __future__ import annotations

import subprocess

import pytest

GUEST_TEST = "test_ipvs_in_vm.py::test_ipvs_sctp_and_nftables_suite_in_one_guest_boot"


def pytest_collection_modifyitems(config, items):
    """The guest run's test goes last: its guest starts when collection ends and works while the
    host's tests run (test_ipvs_in_vm.GuestRun)."""
    guest = [i for i in items if i.nodeid.endswith(GUEST_TEST)]
    for item in guest:
        items.remove(item)
        items.append(item)


def pytest_collection_finish(session):
    if session.config.option.collectonly:
        return
    for item in session.items:
        if item.nodeid.endswith(GUEST_TEST):
            item.module.start_early()


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
