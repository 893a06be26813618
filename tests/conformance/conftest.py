"""One lab per (topology, proxy mode), kept while the rows of that pair run; none after the module.

The rows run mode by mode and, within a mode, topology by topology (test_conformance's ids), so a
lab is taken down when the next pair's is built: a lab left up keeps its agent probing and
health-checking every second (1 % of a core for default.yaml, idle, on the host; the emulated
`testbed vm` guest runs Python 20-30x slower), and the whole run would keep some 20 of them up,
through every test after it too: in the guest, six conformance labs left up slowed the IPVS
reproductions after them from 30-36 s to 80-378 s each, and one's agent did not start within
120 s. A pair asked for again later (a re-ordered run) gets a new lab."""
import uuid

import pytest

from testbed.model import builtin


@pytest.fixture(scope="module")
def conformance_labs():
    from testbed.lab import Lab

    labs: dict[tuple[str, str], Lab] = {}

    def get(topology: str, mode: str) -> Lab:
        key = (topology, mode)
        if key not in labs:
            while labs:
                labs.pop(next(iter(labs))).down()
            labs[key] = Lab.up(str(builtin(topology)), name=f"c{uuid.uuid4().hex[:7]}", mode=mode)
        return labs[key]

    try:
        yield get
    finally:
        for lab in labs.values():
            lab.down()
