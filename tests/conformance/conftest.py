"""One lab per (topology, proxy mode) for the whole conformance run, removed at the end."""
import uuid

import pytest

from testbed.model import builtin


@pytest.fixture(scope="session")
def conformance_labs():
    from testbed.lab import Lab

    labs: dict[tuple[str, str], Lab] = {}

    def get(topology: str, mode: str) -> Lab:
        key = (topology, mode)
        if key not in labs:
            labs[key] = Lab.up(str(builtin(topology)), name=f"c{uuid.uuid4().hex[:7]}", mode=mode)
        return labs[key]

    try:
        yield get
    finally:
        for lab in labs.values():
            lab.down()
