"""``python -m autoretrain.exporter``: the standalone Kafka-fed exporter."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from .events import MAX_EVENT_SKEW_SECONDS
from .http import DEFAULT_ADDRESS, ServerLimits, metrics_app, serve
from .kafka_security import add_security_arguments, security_from_args
from .metrics import DURATION_BUCKETS_SECONDS
from .standalone import StandaloneExporter

ENV_PREFIX = "AUTORETRAIN_EXPORTER_"


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name, default)


def _number_option(p: argparse.ArgumentParser, flag: str, name: str, kind: type[float],
                   default: float, help_text: str) -> None:
    """``flag`` of type ``kind`` (int or float), default from the variable ``name``;
    a variable that is not a number is a ``ValueError`` naming it."""
    text = _env(name, str(default))
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name} must be a number ({kind.__name__}), "
                         f"got {text!r}") from None
    p.add_argument(flag, type=kind, default=value,
                   help=f"{help_text} [{name}] (default %(default)s)")


def parse_buckets(text: str) -> tuple[float, ...]:
    """Comma-separated bucket bounds in seconds (``0.5,1,5,30``); ``ValueError`` if not numbers."""
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(
            f"duration buckets must be comma-separated numbers of seconds such as "
            f"'0.5,1,5,30', got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m autoretrain.exporter",
        # No abbreviations: "--kafka-sasl-password SECRET" must be refused, not
        # taken for --kafka-sasl-password-file (a secret belongs in a file or
        # the environment, never in argv).
        allow_abbrev=False,
        description=(
            "Consume autoretrain outcome events from Kafka and serve per-agent metrics "
            "on /metrics (plus /healthz and /readyz). Every option can also be set "
            f"with an environment variable {ENV_PREFIX}<NAME>, shown in brackets."
        ),
    )
    p.add_argument(
        "--kafka-servers",
        default=_env("KAFKA_SERVERS", "localhost:9092"),
        help="Kafka bootstrap servers, host:port[,...] [KAFKA_SERVERS] (default %(default)s)",
    )
    p.add_argument(
        "--topic",
        default=_env("TOPIC", "agent-outcomes"),
        help="topic of outcome events [TOPIC] (default %(default)s)",
    )
    p.add_argument(
        "--group",
        default=_env("GROUP", "autoretrain-exporter"),
        help="consumer group; instances in one group split the partitions [GROUP] "
        "(default %(default)s)",
    )
    p.add_argument(
        "--listen-address",
        default=_env("LISTEN_ADDRESS", DEFAULT_ADDRESS),
        help="address to serve metrics on; 0.0.0.0 for every interface [LISTEN_ADDRESS] "
        "(default %(default)s)",
    )
    _number_option(p, "--port", "PORT", int, 9108, "port to serve metrics on")
    _number_option(p, "--connection-limit", "CONNECTION_LIMIT", int,
                   ServerLimits.connection_limit, "open connections served at once")
    _number_option(p, "--channel-timeout", "CHANNEL_TIMEOUT_SECONDS", int,
                   ServerLimits.channel_timeout_seconds,
                   "seconds before an idle or half-sent connection is closed")
    _number_option(p, "--max-agents", "MAX_AGENTS", int, 500,
                   'distinct agent label values before new ones become agent="other"')
    _number_option(p, "--max-event-skew-seconds", "MAX_EVENT_SKEW_SECONDS", float,
                   MAX_EVENT_SKEW_SECONDS,
                   "events timestamped more than this after now are invalid, "
                   "fault field:timestamp")
    p.add_argument(
        "--duration-buckets",
        default=_env("DURATION_BUCKETS", ",".join(f"{b:g}" for b in DURATION_BUCKETS_SECONDS)),
        help="upper bounds of autoretrain_agent_run_duration_seconds' buckets, seconds, "
        "comma-separated, increasing; size them to your agents' run times [DURATION_BUCKETS] "
        "(default %(default)s)",
    )
    p.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="[LOG_LEVEL] (default %(default)s)",
    )
    add_security_arguments(p, ENV_PREFIX)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ValueError as exc:  # a bad number in an environment variable
        print(f"python -m autoretrain.exporter: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        limits = ServerLimits(connection_limit=args.connection_limit,
                              channel_timeout_seconds=args.channel_timeout)
        exporter = StandaloneExporter(
            args.kafka_servers,
            topic=args.topic,
            group_id=args.group,
            max_agents=args.max_agents,
            duration_buckets=parse_buckets(args.duration_buckets),
            max_event_skew_seconds=args.max_event_skew_seconds,
            kafka_security=security_from_args(args),
        )
    except ValueError as exc:
        print(f"python -m autoretrain.exporter: {exc}", file=sys.stderr)
        return 2
    server, _ = serve(
        metrics_app(exporter.registry, exporter.ready, fast=[exporter.metrics]),
        args.listen_address,
        args.port,
        limits,
    )
    logging.getLogger("exporter").info(
        "serving metrics on http://%s:%d/metrics", args.listen_address, server.server_port
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    exporter.start()
    stop.wait()
    exporter.stop()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
