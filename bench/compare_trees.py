"""Two source trees, the same benchmarks, one run: ``python -m bench.compare_trees``.

    python -m bench.compare_trees [--before REV | --before-tree DIR] [--rounds N] [--quick]
                                  [NAME ...]

Runs ``python -m bench.NAME`` (default: recording ingest exposition updater)
on a "before" tree and on this tree, alternated round by round (the order
flips every round, so a machine that slows down or speeds up hits both
alike), each run in its own process with ``PYTHONPATH`` set to its tree: a
tree from before the ``autoretrain`` import root (d88ac93, the default,
imports bare ``exporter``/``webhook``) runs as it did then. ``--before REV``
checks REV out with ``git worktree add --detach`` in a temporary directory
(removed at the end); ``--before-tree DIR`` uses a checkout you made.

Prints, per figure both trees report (every ``median``), the median over
rounds of each tree and the change, signed so that a positive change is
worse (slower, fewer per second, a higher time ratio), and the figures worse
than ``--limit`` (default 5 %). Writes everything to
``$AUTORETRAIN_BENCH_RESULTS/compare_trees.json`` when that is set, else
prints only. Exit status 0 even when a figure is worse: it measures, it
does not judge a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .harness import table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BEFORE = "d88ac93"
DEFAULT_NAMES = ("recording", "ingest", "exposition", "updater")
# A benchmark's own "ratio" is ours / baseline: of times (lower is better)
# except ingest's, which is of events per second.
_RATIO_HIGHER_IS_BETTER = {"ingest"}


def figures(name: str, data: dict[str, Any]) -> dict[str, tuple[float, bool]]:
    """``{figure: (median, higher_is_better)}`` of one benchmark's JSON."""
    out: dict[str, tuple[float, bool]] = {}
    if isinstance(data.get("results"), list):  # bench.updater: named rows with a unit
        seen: dict[str, int] = {}
        for row in data["results"]:
            label = str(row.get("name"))
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > 1:
                label = f"{label} #{seen[label]}"
            unit = str(row.get("unit", ""))
            if isinstance(row.get("median"), int | float):
                out[f"{label} [{unit}]"] = (float(row["median"]), unit.endswith("/s"))
        return out
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(value.get("median"), int | float):
            higher = (key.endswith("per_s") if key != "ratio"
                      else name in _RATIO_HIGHER_IS_BETTER)
            out[key] = (float(value["median"]), higher)
    return out


def run_one(tree: Path, name: str, quick: bool, out_dir: Path) -> dict[str, Any]:
    """Run ``python -m bench.NAME`` in ``tree``; its JSON result."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "AUTORETRAIN_BENCH_RESULTS": str(out_dir)}
    started = time.time()
    cmd = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {tree} failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    # An older tree writes into its own bench/results/ whatever the variable says.
    for path in (out_dir / f"{name}.json", tree / "bench" / "results" / f"{name}.json"):
        if path.exists() and path.stat().st_mtime >= started - 1:
            data: dict[str, Any] = json.loads(path.read_text())
            return data
    raise RuntimeError(f"{' '.join(cmd)} in {tree} wrote no {name}.json")


@contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """A detached worktree of ``rev`` in a temporary directory, removed afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="autoretrain-before-"))
    path = parent / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet",
                    str(path), rev], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
                       check=False)
        parent.rmdir()


def compare(before: Path, after: Path, names: list[str], rounds: int,
            quick: bool) -> dict[str, Any]:
    trees = {"before": before, "after": after}
    samples: dict[str, dict[str, dict[str, list[float]]]] = {
        name: {"before": {}, "after": {}} for name in names}
    directions: dict[tuple[str, str], bool] = {}
    with tempfile.TemporaryDirectory(prefix="compare-trees-") as scratch:
        for r in range(rounds):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            for name in names:
                for side in order:
                    print(f"round {r + 1}/{rounds}: {name} on {side}", flush=True)
                    data = run_one(trees[side], name, quick, Path(scratch) / side / str(r))
                    for figure, (value, higher) in figures(name, data).items():
                        samples[name][side].setdefault(figure, []).append(value)
                        directions[(name, figure)] = higher
    rows = []
    for name in names:
        common = [f for f in samples[name]["after"] if f in samples[name]["before"]]
        for figure in common:
            b = statistics.median(samples[name]["before"][figure])
            a = statistics.median(samples[name]["after"][figure])
            higher = directions[(name, figure)]
            # Positive: worse. Rates: fewer after; times and time ratios: more after.
            change = (b / a - 1.0) if higher else (a / b - 1.0)
            rows.append({"benchmark": name, "figure": figure, "before": b, "after": a,
                         "higher_is_better": higher, "worse_by": change,
                         "before_samples": samples[name]["before"][figure],
                         "after_samples": samples[name]["after"][figure]})
        for side, other in (("before", "after"), ("after", "before")):
            only = sorted(set(samples[name][side]) - set(samples[name][other]))
            if only:
                print(f"{name}: only {side} reports {', '.join(only)}")
    return {"before_tree": str(before), "after_tree": str(after), "rounds": rounds,
            "quick": quick, "rows": rows}


def add_tree_options(parser: argparse.ArgumentParser) -> None:
    """``--before REV`` | ``--before-tree DIR``, and ``--after-tree DIR`` (also
    bench.instructions')."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--before", default=DEFAULT_BEFORE, metavar="REV",
                       help=f"commit to check out as the before tree (default {DEFAULT_BEFORE})")
    which.add_argument("--before-tree", type=Path, metavar="DIR",
                       help="an existing checkout to use as the before tree")
    parser.add_argument("--after-tree", type=Path, default=REPO, metavar="DIR",
                        help="the after tree (default: this checkout)")


@contextmanager
def before_tree(args: argparse.Namespace) -> Iterator[Path]:
    """The before tree :func:`add_tree_options` named: the checkout given, or
    ``--before`` checked out for the run."""
    if args.before_tree is not None:
        yield args.before_tree.resolve()
    else:
        with checkout(args.before) as path:
            yield path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare_trees",
                                     description=__doc__.splitlines()[0])
    add_tree_options(parser)
    parser.add_argument("--rounds", type=int, default=3, help="alternations (default 3)")
    parser.add_argument("--limit", type=float, default=0.05,
                        help="flag figures worse by more than this (default 0.05)")
    parser.add_argument("--quick", action="store_true",
                        help="the benchmarks' small sizes: checks the harness, not the code")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks (default: {' '.join(DEFAULT_NAMES)})")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    names = list(args.names or DEFAULT_NAMES)
    with before_tree(args) as before:
        result = compare(before, args.after_tree.resolve(), names, args.rounds, args.quick)
    result["before_rev"] = None if args.before_tree else args.before
    print(f"\n## before ({result['before_rev'] or result['before_tree']}) and after "
          f"({result['after_tree']}): medians of {args.rounds} alternated rounds"
          f"{' (--quick)' if args.quick else ''}\n")
    print(table(["benchmark", "figure", "before", "after", "worse by"],
                [[r["benchmark"], r["figure"], f"{r['before']:,.4g}", f"{r['after']:,.4g}",
                  f"{100 * r['worse_by']:+.1f} %"] for r in result["rows"]]))
    worse = [r for r in result["rows"] if r["worse_by"] > args.limit]
    print(f"\nworse by more than {100 * args.limit:.0f} %: "
          + (", ".join(f"{r['benchmark']}: {r['figure']}" for r in worse) or "none"))
    out = os.environ.get("AUTORETRAIN_BENCH_RESULTS")
    if out:
        path = Path(out) / "compare_trees.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
