"""Resident memory of the updater over a long stream: flat once the buffer is full.

``python -m bench.memory [--quick]``

Feeds 1,000,000 events (10 agents, 5 task types, unique ids) through
``RealTimeModelUpdater.ingest`` in batches of 1,000 and samples the
process's resident set size every 100,000 events. The de-dup memory and the
retraining buffer are bounded, so after they fill the curve must stay flat:
reported as the growth between the sample at 200,000 events and the last.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path
from typing import Any

from autoretrain.webhook.updater.updater import RealTimeModelUpdater

from .harness import table, write_results
from .updater import make_events


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def run(quick: bool = False) -> dict[str, Any]:
    total, step, batch = (400_000, 50_000, 1_000) if quick else (1_000_000, 100_000, 1_000)
    curve = []
    with tempfile.TemporaryDirectory() as d:
        updater = RealTimeModelUpdater(
            model_storage_path=d, batch_size=batch, enable_auto_save=False, seed=0
        )
        gc.collect()
        curve.append({"events": 0, "rss_mib": rss_mib()})
        template = make_events(step, seed=3)
        for start in range(0, total, step):
            # Fresh ids for every chunk: the stream never repeats an event.
            chunk = [{**e, "event_id": f"{start}-{i}"} for i, e in enumerate(template)]
            for i in range(0, step, batch):
                updater.ingest(chunk[i : i + batch])
            del chunk
            gc.collect()
            curve.append({"events": start + step, "rss_mib": rss_mib()})
        applied = updater.get_metrics()["events_applied"]
    # The buffer fills after 10 x batch events; the de-dup memory (at least
    # 100,000 ids, two generations) after 100,000: judge from 200,000 on.
    settled = next(p["rss_mib"] for p in curve if p["events"] >= 200_000)
    return {
        "events": total,
        "applied": applied,
        "buffer_size": 10 * batch,
        "curve": curve,
        "growth_after_fill_mib": curve[-1]["rss_mib"] - settled,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="400,000 events (CI)")
    args = parser.parse_args(argv)
    result = run(args.quick)
    print("## Updater memory over a long stream\n")
    print(
        table(
            ["events applied", "RSS (MiB)"],
            [[f"{p['events']:,}", f"{p['rss_mib']:.1f}"] for p in result["curve"]],
        )
    )
    print(f"\ngrowth after the buffer filled: {result['growth_after_fill_mib']:+.1f} MiB")
    print(f"\nwritten to {write_results('memory', result, quick=args.quick)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
