"""``python -m autoretrain.webhook.updater`` with what crash tests need, as a process.

Run as ``python -m servers.updater [updater options] --status-file F
[--save-delay-seconds S]`` with ``tests/`` and the repository on the path
(:func:`command` and :func:`env`): the product's updater (same options, same
settings), plus, for the tests only,

* ``--status-file``: the updater's state (loaded version, counters, offsets)
  written as JSON every 0.1 s, atomically (the test reads it while this
  process may be killed), and once more with ``"stopped": true``;
* ``--save-delay-seconds``: a sleep inside each model save, between the
  arrays file and the metadata (the commit marker), so that kills land
  inside saves.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoretrain.webhook.updater import RealTimeModelUpdater
from autoretrain.webhook.updater import store as store_module
from autoretrain.webhook.updater.__main__ import build_parser, build_updater

__all__ = ["command", "env", "main", "slow_saves"]

REPO = Path(__file__).resolve().parents[2]


def command(*args: str) -> list[str]:
    """The command line of this wrapper with ``args``."""
    return [sys.executable, "-m", "servers.updater", *args]


def env() -> dict[str, str]:
    """The environment it needs: ``tests/`` and the tree under test importable."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), str(REPO / "tests"), out.get("PYTHONPATH")]))
    return out


def slow_saves(delay: float) -> None:
    """Sleep ``delay`` seconds after each arrays file a model save writes."""
    write = store_module._atomic_write

    def write_then_wait(path: Path, data: bytes) -> None:
        write(path, data)
        if path.suffix == ".npz":
            time.sleep(delay)

    store_module._atomic_write = write_then_wait


def _write_status(path: Path, status: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, sort_keys=True))
    os.replace(tmp, path)


def _status(updater: RealTimeModelUpdater, loaded: dict[str, Any]) -> dict[str, Any]:
    s = updater.status()
    return {
        "pid": os.getpid(),
        "loaded": loaded,
        "model_version": s.model_version,
        "events_seen": s.events_seen,
        "events_applied": s.events_applied,
        "duplicates": s.duplicates,
        "invalid": s.invalid,
        "kafka_offsets": {str(p): o for p, o in s.kafka_offsets.items()},
        "consumer_lag": s.consumer_lag,
        "saves": s.saves,
        "errors": s.errors,
        "kafka_error": s.kafka_error,
        "corrupt_versions": s.corrupt_versions,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--status-file", required=True)
    parser.add_argument("--save-delay-seconds", type=float, default=0.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.save_delay_seconds > 0:
        slow_saves(args.save_delay_seconds)
    updater = build_updater(args)
    # Loading happens here (before the consumer starts), so the status names
    # exactly the state the process resumed from.
    first = updater.status()
    loaded = {"version": first.model_version, "events_seen": first.events_seen,
              "offsets": {str(p): o for p, o in first.kafka_offsets.items()}}
    status_path = Path(args.status_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    updater.start()
    try:
        while not stop.wait(0.1):
            _write_status(status_path, _status(updater, loaded))
    finally:
        updater.stop()
        _write_status(status_path, {**_status(updater, loaded), "stopped": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
