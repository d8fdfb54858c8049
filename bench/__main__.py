"""Run the benchmarks, print tables, write JSON: ``python -m bench [--quick] [NAME ...]``.

Each benchmark is a module of this package with a ``main(argv)``; results
land in ``bench/results/NAME.json`` (a ``--quick`` run's in a temporary
directory) and their tables go into BENCHMARKS.md.
``--quick`` (small sizes) is what CI runs so the harness cannot rot; the
figures in BENCHMARKS.md come from full runs by hand.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

BENCHMARKS = (
    "decisions",
    "cost",
    "recording",
    "exposition",
    "updater",
    "ingest",
    "memory",
    "webhook_http",
    "kafka_e2e",
    "loop",
    "serving",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (CI)")
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default all: {', '.join(BENCHMARKS)})",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    env = dict(os.environ)
    if args.quick and not env.get("AUTORETRAIN_BENCH_RESULTS"):
        # Quick figures are not the ones BENCHMARKS.md cites: keep them out
        # of the tracked bench/results/ (CI's checkout stays clean). Each
        # benchmark would make its own temporary directory (write_results);
        # one for the whole run keeps its results together.
        env["AUTORETRAIN_BENCH_RESULTS"] = tempfile.mkdtemp(prefix="bench-quick-")
    failed = []
    for name in args.names or BENCHMARKS:
        print(f"\n=== {name} ===\n", flush=True)
        # One process per benchmark: memory and timings are not coloured by
        # what an earlier benchmark left behind.
        cmd = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
        if subprocess.run(cmd, check=False, env=env).returncode != 0:
            failed.append(name)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
