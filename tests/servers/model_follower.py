"""A follower process for the model topic tests: ``python tests/servers/model_follower.py``.

A ``ModelFollower`` on the model topic; prints a line whenever what it
serves or counts changes:

``serving <version> <unix time> <ranking of t0, JSON>``
``failures <JSON of the skipped versions by reason>``
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

# Run as a script, its own folder is sys.path[0], where servers/kafka.py would
# shadow kafka-python.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from autoretrain.webhook.serving import ModelFollower  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--kafka-servers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--max-message-bytes", type=int, default=1_000_000)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    follower = ModelFollower(kafka_servers=args.kafka_servers, topic=args.topic,
                             max_message_bytes=args.max_message_bytes,
                             poll_interval_seconds=0.1)
    follower.start()
    print("started", flush=True)
    version, failures = None, follower.failures
    try:
        while not stop.wait(0.002):
            if follower.version != version:
                version = follower.version
                print(f"serving {version} {time.time()} "
                      f"{json.dumps(follower.predict_best_agent('t0'))}", flush=True)
            if follower.failures != failures:
                failures = follower.failures
                print(f"failures {json.dumps(failures)}", flush=True)
    finally:
        follower.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
