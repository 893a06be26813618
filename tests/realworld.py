"""The published manifest sets in ../shared/real-world/ (other projects' files: read from there, never
copied into this repository). Tests that use them skip with a reason where the folder is absent, as on
a user's clone."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Beside the checkout (../shared/real-world), or where this workplace keeps it for a clone made elsewhere.
_CANDIDATES = [Path(__file__).resolve().parents[2] / "shared" / "real-world", Path("/work/shared/real-world")]
REAL_WORLD = Path(os.environ.get("TESTBED_REAL_WORLD") or next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0]))


def real_world(name: str) -> Path:
    path = REAL_WORLD / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the published manifest sets live beside the repository, not in it)")
    return path


def all_sets() -> list[str]:
    return sorted(p.name for p in REAL_WORLD.glob("*.yaml")) if REAL_WORLD.is_dir() else []
