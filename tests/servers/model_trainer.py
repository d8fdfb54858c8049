"""A trainer process for the model topic tests: ``python tests/servers/model_trainer.py``.

A ``RealTimeModelUpdater`` with a ``ModelPublisher`` (as ``python -m
autoretrain.webhook`` builds them), driven by lines on stdin:

``promote``  teach a new seeded stream, retrain (always promoted: tolerance 1)
             and print ``promoted <version> <unix time> <ranking JSON>``
             once the publish was acknowledged;
``quit``     stop.

At start it teaches, saves and prints ``ready <version> <ranking JSON>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

# Run as a script, its own folder is sys.path[0], where servers/kafka.py would
# shadow kafka-python: tests/ takes its place (for servers.models).
sys.path[0] = str(Path(__file__).resolve().parents[1])

from autoretrain.webhook import RealTimeModelUpdater  # noqa: E402
from autoretrain.webhook.serving import ModelPublisher  # noqa: E402
from servers.models import teach  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--kafka-servers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--store", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    publisher = ModelPublisher(args.kafka_servers, args.topic)
    updater = RealTimeModelUpdater(model_storage_path=args.store, seed=5, batch_size=10,
                                   min_holdout_events=10, promotion_tolerance=1.0,
                                   model_publisher=publisher)
    teach(updater, "a0", n=200)
    version = updater.save()
    if not publisher.flush(60) or publisher.published_version != version:
        print(f"error publishing version {version}: {publisher.status()}", flush=True)
        return 1
    print(f"ready {version} {json.dumps(updater.predict_best_agent('t0'))}", flush=True)
    step = 0
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command != "promote":
            print(f"error unknown command {command!r}", flush=True)
            continue
        step += 1
        teach(updater, f"a{step % 3}", n=60, seed=100 + step, start=2000.0 + 100 * step)
        result = updater.trigger_retraining(reason=f"test {step}")
        if not result["promoted"]:
            print(f"error not promoted: {result}", flush=True)
            continue
        promoted_at = time.time()
        version = result["model_version"]
        if not publisher.flush(60) or publisher.published_version != version:
            print(f"error publishing version {version}: {publisher.status()}", flush=True)
            continue
        print(f"promoted {version} {promoted_at} "
              f"{json.dumps(updater.predict_best_agent('t0'))}", flush=True)
    publisher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
