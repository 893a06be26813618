"""Pod wiring speed alone: testbed's in-process netlink against the same topology wired with `ip`
commands, measured in the same run — `testbed bench`'s lab-build part, without the Service parts.

    sudo .venv/bin/python benchmarks/build.py [--pods 10,100,300,1000] [--build-repeat 3] [--json PATH]

Both sides build one node namespace with a pod bridge and N pod namespaces, each with a veth to the
bridge (hairpin on, no IPv6 link-local), an address, `lo` and `eth0` up and a default route; then
tear everything down. Method and figures: docs/benchmarks.md ("Lab build").
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed import bench  # noqa: E402

if __name__ == "__main__":
    sys.exit(bench.main(["--modes", "none", "--no-vm", "--plots", "none", "--json", "results/build.json", *sys.argv[1:]]))
