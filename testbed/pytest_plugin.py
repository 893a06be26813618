"""pytest plugin (entry point `testbed`): a `lab` fixture factory and the `kernel` marker's skip.

Usage in any test suite:  def test_x(lab_factory): lab = lab_factory("topologies/default.yaml")
Labs made through the factory are torn down after the test, also when it fails or is interrupted.
"""
from __future__ import annotations

import os
import uuid

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "kernel: needs root and real network namespaces (skips with a reason otherwise)")


def kernel_missing() -> str | None:
    """Why kernel tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables): run the suite with sudo"
    if not os.path.exists("/proc/self/ns/net"):
        return "the kernel has no network namespaces"
    return None


def pytest_collection_modifyitems(config, items):
    reason = kernel_missing()
    if reason:
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if "kernel" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def lab_factory():
    """Build labs from topology files (unique names); all are removed after the test."""
    from testbed.lab import Lab

    made: list[Lab] = []

    def make(path: str | None = None, mode: str | None = None, name: str | None = None) -> Lab:
        lab = Lab.up(path, name=name or f"t{uuid.uuid4().hex[:8]}", mode=mode)
        made.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in made:
            lab.down()
