"""Shared pieces of the benchmarks: timing with repeats, machine facts, tables, JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """Cores, CPU model, Python and library versions, date: what BENCHMARKS.md cites."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libs = {}
    for name in ("numpy", "prometheus-client", "kafka-python", "flask"):
        try:
            libs[name] = version(name)
        except Exception:
            libs[name] = "absent"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "libraries": libs,
    }


def per_call(fn: Callable[[], Any], calls: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn``, one figure per repeat (``calls`` calls each)."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - start) / calls)
    return out


def interleaved(
    fns: dict[str, Callable[[], Any]], calls: int, repeats: int
) -> dict[str, list[float]]:
    """Time several candidates in alternation, so machine noise hits all alike."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            out[name].extend(per_call(fn, calls, 1))
    return out


def summary(samples: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def ratios(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Per-repeat ratios a/b (paired, same repeat), summarised."""
    return summary([x / y for x, y in zip(a, b, strict=True)])


def fmt(d: dict[str, float], spec: str = ".3f", unit: str = "") -> str:
    """A :func:`summary` as ``median (min-max)``."""
    return f"{d['median']:{spec}}{unit} ({d['min']:{spec}}-{d['max']:{spec}})"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, data: dict[str, Any], quick: bool = False) -> Path:
    """Write ``NAME.json`` into bench/results/ (the figures BENCHMARKS.md
    cites), or into $AUTORETRAIN_BENCH_RESULTS when set. A ``quick`` run
    without it writes into a new temporary directory: its small-size figures
    are not the ones BENCHMARKS.md cites, and ``python -m bench.NAME --quick``
    run on its own used to overwrite them (``python -m bench --quick`` sets
    the variable for every benchmark it runs)."""
    chosen = os.environ.get("AUTORETRAIN_BENCH_RESULTS")
    if not chosen and quick:
        chosen = tempfile.mkdtemp(prefix="bench-quick-")
    directory = Path(chosen or RESULTS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    return path
