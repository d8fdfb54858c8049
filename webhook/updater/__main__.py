"""``python -m autoretrain.webhook.updater``: the model updater alone, Kafka into a model store.

The webhook (``python -m autoretrain.webhook``) embeds the same updater; this process
exists for running the consumer without the HTTP API, and for the crash
tests (tests/integration/test_faults_updater.py), which SIGKILL it
repeatedly and restart it. Its state (loaded version, counters, offsets) is
written as JSON to ``--status-file`` (atomically, every 0.1 s). SIGTERM or
SIGINT stops it: apply what is queued, save, commit.
"""

from __future__ import annotations

import argparse
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

from .updater import RealTimeModelUpdater

__all__ = ["build_parser", "main"]

log = logging.getLogger("autoretrain.webhook.updater")

PROG = "python -m autoretrain.webhook.updater"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Consume outcome events from Kafka into the agent-selection model store.",
    )
    p.add_argument("--kafka-servers", required=True, help="bootstrap servers, host:port[,...]")
    p.add_argument("--topic", default="agent-outcomes", help="(default %(default)s)")
    p.add_argument("--group", default="autoretrain-updater", help="consumer group")
    p.add_argument("--model-dir", required=True, help="model store directory")
    p.add_argument("--batch-size", type=int, default=100, help="(default %(default)s)")
    p.add_argument("--batch-timeout-seconds", type=float, default=0.2,
                   help="(default %(default)s)")
    p.add_argument("--save-interval-seconds", type=float, default=5.0,
                   help="save (then commit) at most this often (default %(default)s)")
    p.add_argument("--session-timeout-ms", type=int, default=None,
                   help="consumer group session timeout (broker bounds apply)")
    p.add_argument("--group-instance-id", default=None,
                   help="static group membership: a restart with the same id takes its "
                        "predecessor's partitions at once, without a rebalance")
    p.add_argument("--status-file", default=None,
                   help="write the updater's state as JSON here every 0.1 s")
    p.add_argument("--test-save-delay-seconds", type=float, default=0.0,
                   help="TEST ONLY: sleep inside each save, between the arrays file and the "
                        "metadata (commit marker), so crash tests can kill a save midway")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _write_status(path: Path, status: dict[str, Any]) -> None:
    # Atomic replace: the test reads it while this process may be killed.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, sort_keys=True))
    os.replace(tmp, path)


def _status(updater: RealTimeModelUpdater, loaded: dict[str, Any]) -> dict[str, Any]:
    m = updater.get_metrics()
    return {
        "pid": os.getpid(),
        "loaded": loaded,
        "model_version": m["model_version"],
        "events_seen": m["events_seen"],
        "events_applied": m["events_applied"],
        "duplicates": m["duplicates"],
        "invalid": m["invalid"],
        "kafka_offsets": {str(p): o for p, o in m["kafka_offsets"].items()},
        "consumer_lag": m["consumer_lag"],
        "saves": m["saves"],
        "errors": m["errors"],
        "kafka_error": m["kafka_error"],
        "corrupt_versions": m["corrupt_versions"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    consumer_config: dict[str, Any] = {}
    if args.session_timeout_ms is not None:
        consumer_config["session_timeout_ms"] = args.session_timeout_ms
        consumer_config["heartbeat_interval_ms"] = max(100, args.session_timeout_ms // 3)
    if args.group_instance_id is not None:
        consumer_config["group_instance_id"] = args.group_instance_id
    try:
        updater = RealTimeModelUpdater(
            kafka_servers=args.kafka_servers, kafka_topic=args.topic,
            consumer_group=args.group, model_storage_path=args.model_dir,
            batch_size=args.batch_size, batch_timeout_seconds=args.batch_timeout_seconds,
            save_interval_seconds=args.save_interval_seconds, consumer_config=consumer_config)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if args.test_save_delay_seconds > 0:
        delay = args.test_save_delay_seconds
        updater.store.on_arrays_written = lambda version: time.sleep(delay)

    # Loading happens here (before the consumer starts), so the status names
    # exactly the state the process resumed from.
    first = updater.get_metrics()
    loaded = {"version": first["model_version"], "events_seen": first["events_seen"],
              "offsets": {str(p): o for p, o in first["kafka_offsets"].items()}}
    status_path = Path(args.status_file) if args.status_file else None

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    updater.start()
    try:
        while not stop.wait(0.1):
            if status_path is not None:
                _write_status(status_path, _status(updater, loaded))
    finally:
        updater.stop()
        if status_path is not None:
            _write_status(status_path, {**_status(updater, loaded), "stopped": True})
    log.info("stopped at model version %d", updater.get_metrics()["model_version"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
