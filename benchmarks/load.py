"""Loading a large file: testbed's loader against libyaml's C loader alone, in the same run.

    .venv/bin/python benchmarks/load.py [--sizes 1000,10000,30000] [--repeat 3]

For each size: a file of N Services with an EndpointSlice each (2N+1 documents, about 580 bytes a
document, the shape of a `kubectl get svc,endpointslices -A -o yaml` dump split into documents),
then, each in a fresh process (so the peak RSS is its own), the best of `--repeat` runs of
- `yaml.load_all(…, Loader=yaml.CSafeLoader)`: the baseline, parsing only;
- `testbed.model.load_file`: parsing, every object validated, the Lab completed.
Printed: seconds, the ratio to the baseline (the target is at most 1.5), peak RSS, and seconds per
1,000 objects (flat when validation is linear). No timed assertion anywhere: figures to read.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

LAB = "apiVersion: testbed.dev/v1alpha1\nkind: Lab\nmetadata: {name: big}\nspec: {nodes: [{name: node-1}, {name: node-2}]}\n"


def write_file(path: str, n: int) -> None:
    with open(path, "w") as f:
        f.write(LAB)
        for i in range(n):
            a, b = divmod(i, 250)
            f.write(f"""---
apiVersion: v1
kind: Service
metadata:
  name: svc-{i}
  namespace: default
  labels: {{app: svc-{i}}}
spec:
  selector: {{app: svc-{i}}}
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-{i}-abcde
  namespace: default
  labels:
    kubernetes.io/service-name: svc-{i}
    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
endpoints:
- addresses: [10.244.{a % 256}.{b + 2}]
  conditions: {{ready: true, serving: true, terminating: false}}
  nodeName: node-1
- addresses: [10.245.{a % 256}.{b + 2}]
  conditions: {{ready: true, serving: true, terminating: false}}
  nodeName: node-2
""")


CHILD = r"""
import json, resource, sys, time
what, path, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
best = None
for _ in range(repeat):
    t0 = time.perf_counter()
    if what == "libyaml":
        import yaml
        with open(path) as f:
            docs = list(yaml.load_all(f.read(), Loader=yaml.CSafeLoader))
        n = len(docs)
    else:
        from testbed import model
        topo = model.load_file(path)
        n = len(topo.services) + len(topo.slices)
    took = time.perf_counter() - t0
    best = took if best is None else min(best, took)
print(json.dumps({"seconds": best, "objects": n, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(what: str, path: str, repeat: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, what, path, str(repeat)], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,30000", help="comma-separated numbers of Services")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measure; the best is kept")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    rows = []
    print(f"{'services':>8} {'docs':>6} {'MB':>5} {'libyaml s':>9} {'testbed s':>9} {'ratio':>5} "
          f"{'RSS MB':>6} {'ms/1k obj':>9}")
    with tempfile.TemporaryDirectory(prefix="testbed-bench-load-") as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            path = os.path.join(tmp, f"services-{n}.yaml")
            write_file(path, n)
            base, ours = measure("libyaml", path, args.repeat), measure("testbed", path, args.repeat)
            row = {"services": n, "documents": 2 * n + 1, "mb": os.path.getsize(path) / 1e6,
                   "libyaml_s": base["seconds"], "testbed_s": ours["seconds"],
                   "ratio": ours["seconds"] / base["seconds"], "rss_mb": ours["rss_mb"],
                   "ms_per_1k_objects": 1000 * ours["seconds"] / (ours["objects"] / 1000)}
            rows.append(row)
            print(f"{n:>8} {row['documents']:>6} {row['mb']:>5.1f} {row['libyaml_s']:>9.2f} {row['testbed_s']:>9.2f} "
                  f"{row['ratio']:>5.2f} {row['rss_mb']:>6.0f} {row['ms_per_1k_objects']:>9.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
