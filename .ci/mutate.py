"""Mutation-test the unit suite: `./bootstrap mutate [--workers N] [--only GLOB] [--summary]`.

mutmut (the `mutation` extra) mutates testbed/render/, testbed/control.py and testbed/proxy.py
([tool.mutmut] in pyproject.toml), one small change at a time, and runs only the unit tests that
reach the changed function, stopping at the first failure. A mutant no test fails survived.
Results are kept in ./mutants/ (re-runs test only what changed). Not part of CI: it takes an hour
or more on 2 cores. It runs at the lowest priority, with at most 2 workers, and never needs root.
docs/mutation.md has the score and why each survivor is left.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = Path(sys.executable).with_name("mutmut")
CAUGHT = ("killed", "timeout", "caught by type check")  # a test (or the checker) noticed the change


def results() -> list[tuple[str, str]]:
    """(mutant name, status) for every mutant mutmut has made, tested or not."""
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"mutate: mutmut results failed: {out.stderr.strip()[-500:]}")
    rows = []
    for line in out.stdout.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name:
            rows.append((name, status))
    return rows


def summary(rows: list[tuple[str, str]], only: list[str]) -> int:
    """Print the score and the survivors; 0 when at least 90 % of the tested mutants are caught."""
    from fnmatch import fnmatch

    if only:
        rows = [(n, s) for n, s in rows if any(fnmatch(n, g) for g in only)]
    counts = Counter(s for _, s in rows)
    tested = sum(n for s, n in counts.items() if s != "not checked")
    caught = sum(counts[s] for s in CAUGHT)
    print("mutants: " + ", ".join(f"{n} {s}" for s, n in counts.most_common()))
    if not tested:
        print("no mutant tested yet")
        return 1
    print(f"score: {caught}/{tested} caught ({100 * caught / tested:.1f} %)")
    survivors = [n for n, s in rows if s not in CAUGHT and s != "not checked"]
    for name in survivors:
        print(f"  {dict(rows)[name]:<10} {name}")
    if survivors:
        print("see one with: .venv/bin/mutmut show NAME")
    return 0 if caught >= 0.9 * tested else 1


def forget_survivors() -> int:
    """Mark every mutant that no test caught as untested again: mutmut keeps a verdict until the
    mutated function changes, so new tests are only tried on survivors after this."""
    reset = 0
    for meta in (ROOT / "mutants").rglob("*.py.meta"):
        data = json.loads(meta.read_text())
        codes = data.get("exit_code_by_key", {})
        stale = [k for k, v in codes.items() if v is not None and v not in (1, 3)]  # 1, 3: killed
        for k in stale:
            codes[k] = None
        if stale:
            meta.write_text(json.dumps(data))
            reset += len(stale)
    return reset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="./bootstrap mutate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, choices=(1, 2), help="mutmut's children (default 2)")
    ap.add_argument("--only", action="append", default=[], metavar="GLOB",
                    help="mutant names to test, e.g. 'testbed.proxy*' (repeatable; default all)")
    ap.add_argument("--summary", action="store_true", help="print the last run's score only")
    ap.add_argument("--retest", action="store_true", help="test the last run's survivors again (after new tests)")
    args = ap.parse_args(argv)
    if not MUTMUT.exists():
        sys.exit("mutate: mutmut is not installed: run ./bootstrap mutate (it installs the 'mutation' extra)")
    if args.retest:
        print(f"mutate: {forget_survivors()} surviving mutants to test again")
    if not args.summary:
        os.nice(19)  # the machine's cores belong to everything else first
        run = subprocess.run([str(MUTMUT), "run", "--max-children", str(args.workers), *args.only], cwd=ROOT)
        if run.returncode != 0:
            print(f"mutate: mutmut run exited {run.returncode}", file=sys.stderr)
            return run.returncode
    return summary(results(), args.only)


if __name__ == "__main__":
    sys.exit(main())
