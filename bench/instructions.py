"""Instructions per operation of the hot paths, two trees: ``python -m bench.instructions``.

    python -m bench.instructions [--before REV | --before-tree DIR] [--after-tree DIR]
                                 [NAME ...]

Why: on a shared two-core machine the time-based figures of
``bench.compare_trees`` move by 10-20 % from one round to the next, more
than the 5 % a change may cost. The number of CPU instructions a hot path
executes does not depend on what else the machine runs: valgrind's
callgrind counts them (``Ir``), repeatable to about 1 %. It is not a time
(cache misses and branch mispredictions are not in it), so it complements
the timed benchmarks, it does not replace them.

Each NAME is one hot path, counted per operation, the setup left out (a
small C shim toggles callgrind's collection around the measured loop only):

* ``ingest``: ``RealTimeModelUpdater.ingest`` of Kafka message bytes, 50,000
  run events in batches of 1,000 (bench.ingest's workload), per event;
* ``recording``: ``PerformanceMonitor.record_agent_run`` on the embedded
  bus, 20 agents and 6 statuses cycling (bench.recording's), per call;
* ``render``: ``AgentMetrics.render()`` of 1,000 agents (bench.exposition's
  ``/metrics`` body), per render;
* ``predict``: ``RealTimeModelUpdater.predict_best_agent`` on a model of 10
  agents and 5 task types, cached ranking (bench.updater's), per call;
* ``full_retrain``: the candidate of a full retrain of 100,000 buffered
  events (``retrain.full_retrain``, bench.updater's), per event.

Both trees run the same workload in their own code (``PYTHONPATH`` set to
the tree; a tree from before the ``autoretrain`` import root, such as
d88ac93, the default, imports bare ``exporter``/``webhook``), with
``PYTHONHASHSEED=0``. Needs ``valgrind`` and a C compiler (Debian:
``apt-get install valgrind gcc``). Prints the counts and the change
(positive: more instructions after); writes
``$AUTORETRAIN_BENCH_RESULTS/instructions.json`` when that is set, else
``bench/results/instructions.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .compare_trees import add_tree_options, before_tree
from .harness import table, write_results

NAMES = ("ingest", "recording", "render", "predict", "full_retrain")

_SHIM = r"""
#include <valgrind/callgrind.h>
void start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_TOGGLE_COLLECT; }
void stop(void) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT("measured"); }
"""

# The workload, run by the child process in the tree under test. `ops` is
# how many operations the measured loop performs.
_CHILD = r"""
import ctypes, itertools, sys, tempfile
from pathlib import Path

tree, name, shim = Path(sys.argv[1]), sys.argv[2], ctypes.CDLL(sys.argv[3])
root = "autoretrain." if (tree / "autoretrain").is_dir() else ""


def module(path):
    return __import__(root + path, fromlist=["_"])


if name == "ingest":
    encode_event = module("exporter.events").encode_event
    Updater = module("webhook.updater.updater").RealTimeModelUpdater
    from bench.updater import make_events
    ops = 50_000
    values = [encode_event(e) for e in make_events(ops, seed=0)]
    with tempfile.TemporaryDirectory() as d:
        u = Updater(model_storage_path=d, batch_size=1_000, enable_auto_save=False, seed=0)
        u.ingest(values[:10])
        shim.start()
        for i in range(0, ops, 1_000):
            u.ingest(values[i:i + 1_000])
        shim.stop()
elif name == "recording":
    from prometheus_client import CollectorRegistry
    exporter = module("exporter")

    class Stand:
        def __init__(self):
            self.event_bus = exporter.EmbeddedBus(maxsize=10_000_000)

        def trigger_retraining(self, **_):
            return {}

    monitor = exporter.PerformanceMonitor(model_updater=Stand(), registry=CollectorRegistry())
    agents = [f"agent-{i}" for i in range(20)]
    statuses = ("success", "success", "success", "failure", "error", "timeout")
    inputs = list(itertools.product(agents, statuses))
    record = monitor.record_agent_run
    for agent, status in inputs * 10:  # every series exists before the count
        record("run-1", agent, "llm", status, 1200.0, 350, 0.004, task_type="qa")
    ops = 60_000
    shim.start()
    for agent, status in inputs * (ops // len(inputs)):
        record("run-1", agent, "llm", status, 1200.0, 350, 0.004, task_type="qa")
    shim.stop()
elif name == "render":
    from bench.exposition import populate
    registry, metrics = populate(1000)
    metrics.render()
    ops = 5
    shim.start()
    for _ in range(ops):
        metrics.render()
    shim.stop()
elif name == "predict":
    encode_event = module("exporter.events").encode_event
    Updater = module("webhook.updater.updater").RealTimeModelUpdater
    from bench.updater import make_events
    with tempfile.TemporaryDirectory() as d:
        u = Updater(model_storage_path=d, batch_size=1_000, enable_auto_save=False, seed=0)
        u.ingest(make_events(5_000, seed=0))
        tasks = [f"task-{i}" for i in range(5)]
        for t in tasks:
            u.predict_best_agent(t)
        ops = 50_000
        shim.start()
        for t in tasks * (ops // len(tasks)):
            u.predict_best_agent(t)
        shim.stop()
elif name == "full_retrain":
    Updater = module("webhook.updater.updater").RealTimeModelUpdater
    full_retrain = module("webhook.updater.retrain").full_retrain
    from bench.updater import make_events
    ops = 100_000
    events = make_events(ops + 2_000, seed=1)
    with tempfile.TemporaryDirectory() as d:
        u = Updater(model_storage_path=d, batch_size=1_000, buffer_size=ops,
                    enable_auto_save=False)
        for i in range(0, ops + 2_000, 1_000):
            u.ingest(events[i:i + 1_000])
        state = getattr(u, "_state", None)
        buffer = state.buffer if state is not None else u._buffer
        batch, _ = buffer.contents()
        full_retrain(u.model, batch)
        shim.start()
        full_retrain(u.model, batch)
        shim.stop()
else:
    raise SystemExit(f"unknown workload {name!r}")
print(ops)
"""


def _shim(directory: Path) -> Path:
    """Compile the callgrind shim into ``directory``."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or shutil.which("valgrind") is None:
        raise SystemExit("bench.instructions needs valgrind and a C compiler "
                         "(Debian: apt-get install valgrind gcc)")
    source, library = directory / "shim.c", directory / "shim.so"
    source.write_text(_SHIM)
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(library), str(source)],
                   check=True)
    return library


def count(tree: Path, name: str, shim: Path, scratch: Path) -> float:
    """Instructions per operation of workload ``name`` in ``tree``."""
    out = scratch / f"{tree.name}-{name}"
    out.mkdir(parents=True, exist_ok=True)
    child = out / "child.py"
    child.write_text(_CHILD)
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no",
           f"--callgrind-out-file={out}/callgrind.out", sys.executable, str(child),
           str(tree), name, str(shim)]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} in {tree} failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    ops = int(done.stdout.split()[-1])
    totals = [int(line.split()[1]) for dump in out.glob("callgrind.out*")
              for line in dump.read_text().splitlines() if line.startswith("totals:")]
    if not totals:
        raise RuntimeError(f"{name} in {tree}: callgrind wrote no totals")
    return max(totals) / ops


def compare(before: Path, after: Path, names: list[str]) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="instructions-") as scratch_dir:
        scratch = Path(scratch_dir)
        shim = _shim(scratch)
        for name in names:
            counts = {}
            for side, tree in (("before", before), ("after", after)):
                print(f"{name} on {side}", flush=True)
                counts[side] = count(tree, name, shim, scratch / side)
            rows.append({"workload": name, "before": counts["before"], "after": counts["after"],
                         "change": counts["after"] / counts["before"] - 1.0})
    return {"before_tree": str(before), "after_tree": str(after), "unit": "instructions per op",
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tree_options(parser)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"workloads (default: {' '.join(NAMES)})")
    args = parser.parse_args(argv)
    names = args.names or list(NAMES)
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        parser.error(f"unknown workload {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    with before_tree(args) as before:
        result = compare(before, args.after_tree.resolve(), names)
    result["before_rev"] = None if args.before_tree else args.before
    before = result["before_rev"] or result["before_tree"]
    print(f"\n## Instructions per operation: before ({before}) and after "
          f"({result['after_tree']})\n")
    print(table(["workload", "before", "after", "change"],
                [[r["workload"], f"{r['before']:,.0f}", f"{r['after']:,.0f}",
                  f"{100 * r['change']:+.1f} %"] for r in result["rows"]]))
    print(f"\nwritten to {write_results('instructions', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
