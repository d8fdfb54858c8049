"""``python -m autoretrain.webhook.updater``: the model updater alone, Kafka into a model store.

What it is for: keeping a model store current from the outcome topic in a
process of its own, without the webhook's HTTP API. Other processes read the
store (``ModelStore`` / ``AgentSelectionModel.from_metadata``, as
``examples/platform_feed.py``'s ``ModelFollower`` does) and so route with a
model that follows the stream within a few seconds. The webhook
(``python -m autoretrain.webhook``) embeds the same updater and adds the
retrain API; run one or the other on a store, never both (one process owns a
store directory).

SIGTERM or SIGINT stops it: apply what is queued, save, commit.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from autoretrain.exporter.kafka_security import add_security_arguments, security_from_args

from .objective import Objective, ObjectiveMode
from .settings import UpdaterSettings
from .strategies import ExponentialRule
from .updater import RealTimeModelUpdater

__all__ = ["STANDALONE_OVERRIDES", "build_parser", "build_updater", "main"]

log = logging.getLogger("autoretrain.webhook.updater")

PROG = "python -m autoretrain.webhook.updater"
#: Kafka security settings (and its secrets) may come from
#: ``AUTORETRAIN_UPDATER_KAFKA_<SETTING>``, as the webhook's and the exporter's do.
ENV_PREFIX = "AUTORETRAIN_UPDATER_"

#: Where this process departs from UpdaterSettings' defaults, and why: its
#: readers are other processes polling the store, so it saves every few
#: seconds (the embedded updater's 5 minutes suit a process that serves the
#: model itself); it consumes a topic rather than a monitor's trickle, so it
#: applies larger batches without waiting long for them to fill.
STANDALONE_OVERRIDES: dict[str, Any] = {
    "batch_size": 100,
    "batch_timeout_seconds": 0.2,
    "save_interval_seconds": 5.0,
}


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The command line; ``environ`` (default ``os.environ``) supplies the
    ``AUTORETRAIN_UPDATER_KAFKA_*`` defaults and secrets."""
    defaults = UpdaterSettings()
    p = argparse.ArgumentParser(
        prog=PROG,
        # No abbreviations: "--kafka-sasl-password" is not --kafka-sasl-password-file.
        allow_abbrev=False,
        description=(
            "Keep an agent-selection model store current from a Kafka topic of outcome "
            "events, without the webhook's HTTP API: other processes read the store. "
            "Run it or the webhook on a store, not both."),
    )
    p.add_argument("--kafka-servers", required=True, help="bootstrap servers, host:port[,...]")
    p.add_argument("--topic", default=defaults.kafka_topic, help="(default %(default)s)")
    p.add_argument("--group", default=defaults.consumer_group,
                   help="consumer group (default %(default)s)")
    p.add_argument("--model-dir", required=True, help="model store directory")
    p.add_argument("--batch-size", type=int, default=STANDALONE_OVERRIDES["batch_size"],
                   help="(default %(default)s)")
    p.add_argument("--batch-timeout-seconds", type=float,
                   default=STANDALONE_OVERRIDES["batch_timeout_seconds"],
                   help="(default %(default)s)")
    p.add_argument("--save-interval-seconds", type=float,
                   default=STANDALONE_OVERRIDES["save_interval_seconds"],
                   help="save (then commit) at most this often (default %(default)s)")
    p.add_argument("--max-event-skew-seconds", type=float,
                   default=defaults.max_event_skew_seconds,
                   help="events timestamped more than this after now are invalid "
                        "(default %(default)s)")
    # The updater assigns itself every partition (no group membership, so no
    # session to wait out after a restart): these two are accepted and ignored.
    p.add_argument("--session-timeout-ms", type=int, default=None,
                   help="ignored (kept for compatibility): the updater assigns itself "
                        "every partition and joins no group")
    p.add_argument("--group-instance-id", default=None,
                   help="ignored (kept for compatibility), as --session-timeout-ms")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    objective = Objective()
    p.add_argument("--objective", default=str(objective.mode),
                   choices=[m.value for m in ObjectiveMode],
                   help="what ranks agents first (default %(default)s; see README)")
    p.add_argument("--cost-weight", type=float, default=objective.cost_weight,
                   help="weighted: quality one unit of cost is worth (default %(default)s)")
    p.add_argument("--latency-weight", type=float, default=objective.latency_weight,
                   help="weighted: quality one second is worth (default %(default)s)")
    p.add_argument("--quality-tolerance", type=float, default=objective.quality_tolerance,
                   help="constrained: how far below the best an agent may be "
                        "(default %(default)s)")
    add_security_arguments(p, ENV_PREFIX, environ)
    return p


def build_updater(args: argparse.Namespace) -> RealTimeModelUpdater:
    """The updater the parsed ``args`` describe (ValueError for bad settings)."""
    consumer_config: dict[str, Any] = {}
    settings = UpdaterSettings(
        kafka_servers=args.kafka_servers, kafka_topic=args.topic,
        consumer_group=args.group, model_storage_path=args.model_dir,
        batch_size=args.batch_size, batch_timeout_seconds=args.batch_timeout_seconds,
        save_interval_seconds=args.save_interval_seconds, consumer_config=consumer_config,
        max_event_skew_seconds=args.max_event_skew_seconds,
        kafka_security=security_from_args(args),
        objective=Objective(args.objective, cost_weight=args.cost_weight,
                            latency_weight=args.latency_weight,
                            quality_tolerance=args.quality_tolerance))
    return RealTimeModelUpdater.from_settings(settings, ExponentialRule())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        updater = build_updater(args)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    updater.start()
    try:
        stop.wait()
    finally:
        updater.stop()
    log.info("stopped at model version %d", updater.status().model_version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
