"""Serving the model beyond the trainer: follower latency, ranking API, follower predictions.

``python -m bench.serving [--quick]``

1. **Promotion -> served by a Kafka follower** on loopback: a trainer
   (``RealTimeModelUpdater`` + ``ModelPublisher``, this process) promotes a
   model; a follower process (``tests/servers/model_follower.py``) prints
   when it serves it. Latency = from the end of ``trigger_retraining`` (the
   promoted version saved) to the follower serving it, over >= 20
   promotions; p50 and p99. Baseline, same run, same broker: a raw
   ``KafkaProducer`` send of a message of the same size to a raw consumer
   process (the transport floor). Target p99 <= 1 s.
2. **Ranking requests/s** on the production server: the selector
   (``python -m autoretrain.selector``, waitress, 8 threads, following a
   store) against bare waitress answering a constant JSON body with the same
   threads; keep-alive clients on loopback for a fixed time. Target >= 0.5 x.
3. **``ModelFollower.predict_best_agent`` per call** against the updater's
   in-process call on the same model (interleaved repeats). Target <= 1.2 x.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .harness import fmt, interleaved, ratios, summary, table, write_results
from .http_load import Request, free_port, keepalive_load, wait_ready

REPO = Path(__file__).resolve().parents[1]
TARGET_P99_S = 1.0
TARGET_RPS = 0.5
TARGET_PREDICT = 1.2

RAW_CONSUMER = """
import sys, time
from kafka import KafkaConsumer, TopicPartition
consumer = KafkaConsumer(bootstrap_servers=sys.argv[1], group_id=None,
                         auto_offset_reset="latest", enable_auto_commit=False,
                         max_partition_fetch_bytes=20_000_000)
tp = TopicPartition(sys.argv[2], 0)
consumer.assign([tp])
consumer.seek_to_end(tp)
consumer.position(tp)
print("started", flush=True)
while True:
    for records in consumer.poll(timeout_ms=100).values():
        for r in records:
            print(f"serving {r.value[:12].decode()} {time.time()}", flush=True)
"""

CONSTANT = """
import sys, waitress
BODY = b'{"model_version": 1, "task_type": "t0", "ranking": [{"agent": "a0", "score": 0.9}]}'
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(BODY)))])
    return [BODY]
waitress.serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=8, _quiet=True)
"""


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    n = len(ordered)
    return {"p50": ordered[n // 2], "p99": ordered[min(n - 1, int(n * 0.99))],
            "max": ordered[-1], "n": n}


def _trained(store: str, publisher: Any = None) -> Any:
    sys.path.insert(0, str(REPO / "tests"))
    from servers.models import teach

    from autoretrain.webhook import RealTimeModelUpdater

    updater = RealTimeModelUpdater(model_storage_path=store, seed=5, min_holdout_events=10,
                                   promotion_tolerance=1.0, model_publisher=publisher)
    teach(updater, "a0", n=400, agents=10)
    updater.save()
    return updater


# -- 1. promotion -> served ----------------------------------------------------------------
def follower_latency(promotions: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    from kafka import KafkaProducer
    from servers import KafkaServer
    from servers.lines import LineProcess
    from servers.models import teach

    from autoretrain.webhook.serving import ModelPublisher

    with tempfile.TemporaryDirectory(prefix="autoretrain-bench-serving-") as d:
        broker = KafkaServer(Path(d) / "kafka").start()
        try:
            publisher = ModelPublisher(broker.bootstrap, "bench-models")
            updater = _trained(str(Path(d) / "store"), publisher)
            publisher.flush(60)
            follower = LineProcess(REPO / "tests" / "servers" / "model_follower.py",
                                   ["--kafka-servers", broker.bootstrap, "--topic",
                                    "bench-models"], Path(d) / "follower.log")
            ours: list[float] = []
            size = 0
            try:
                follower.expect(lambda line: line.startswith("serving "), 60, "first model")
                for step in range(1, promotions + 1):
                    teach(updater, f"a{step % 10}", n=50, agents=10, seed=step,
                          start=5000.0 + 100 * step)
                    result = updater.trigger_retraining(reason="bench")
                    done = time.time()
                    assert result["promoted"], result
                    line = follower.expect(lambda line: line.startswith("serving "), 60,
                                           f"version {result['model_version']}")
                    assert int(line.split()[1]) == result["model_version"], line
                    ours.append(float(line.split()[2]) - done)
                    time.sleep(0.05)
                size = int(publisher.registry.get_sample_value(
                    "autoretrain_publisher_message_bytes") or 0)
            finally:
                follower.stop()
                publisher.close()
                updater.stop()
            # Baseline: the same number of raw messages of the same size.
            broker.create_topic("bench-raw", partitions=1)
            (Path(d) / "raw.py").write_text(RAW_CONSUMER)
            raw = LineProcess(Path(d) / "raw.py", [broker.bootstrap, "bench-raw"],
                              Path(d) / "raw.log")
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                     linger_ms=0, max_request_size=20_000_000)
            floor: list[float] = []
            try:
                raw.expect(lambda line: line == "started", 60, "raw consumer")
                for step in range(1, promotions + 1):
                    tag = f"{step:012d}"
                    expected = f"serving {tag}"
                    sent = time.time()
                    producer.send("bench-raw",
                                  value=tag.encode() + os.urandom(max(0, size - 12))).get(30)
                    line = raw.expect(lambda line, e=expected: line.startswith(e), 60,
                                      f"raw message {step}")
                    floor.append(float(line.split()[2]) - sent)
                    time.sleep(0.05)
            finally:
                producer.close()
                raw.stop()
        finally:
            broker.stop()
    return {"promotions": promotions, "message_bytes": size,
            "follower_s": _percentiles(ours), "raw_kafka_s": _percentiles(floor),
            "target_p99_s": TARGET_P99_S,
            "met": _percentiles(ours)["p99"] <= TARGET_P99_S}


# -- 2. ranking requests/s ------------------------------------------------------------------------
def load(port: int, duration: float, clients: int) -> dict[str, Any]:
    paths = [f"/api/model/ranking?task_type=t{i % 2}&top_k=3" for i in range(2)]
    sent = [0] * clients

    def request(k: int, rng: random.Random) -> Request:
        sent[k] += 1
        return "GET", paths[sent[k] % 2], None, {}

    return keepalive_load(port, duration, clients, request, expect=200)


def ranking_rps(duration: float, clients: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"duration_s": duration, "clients": clients, "repeats": repeats,
                           "selector": [], "baseline_waitress_constant": []}
    with tempfile.TemporaryDirectory(prefix="autoretrain-bench-ranking-") as d:
        _trained(str(Path(d) / "store")).stop()
        env = {**os.environ, "PYTHONPATH": str(REPO),
               "AUTORETRAIN_SELECTOR_MODEL_STORAGE_PATH": str(Path(d) / "store"),
               "AUTORETRAIN_SELECTOR_LOG_LEVEL": "WARNING"}
        for _ in range(repeats):
            for name in ("selector", "baseline_waitress_constant"):
                port = free_port()
                cmd = ([sys.executable, "-m", "autoretrain.selector", "--port", str(port)]
                       if name == "selector" else [sys.executable, "-c", CONSTANT, str(port)])
                with open(Path(d) / f"{name}.log", "ab") as log:
                    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
                    try:
                        wait_ready(port, "/readyz" if name == "selector" else "/", proc)
                        load(port, 1.0, clients)  # warm-up
                        out[name].append(load(port, duration, clients))
                    finally:
                        proc.terminate()
                        proc.wait(timeout=30)
    out["ratio_rps"] = ratios([r["requests_per_s"] for r in out["selector"]],
                              [r["requests_per_s"] for r in out["baseline_waitress_constant"]])
    out["target"] = TARGET_RPS
    out["met"] = out["ratio_rps"]["median"] >= TARGET_RPS
    return out


# -- 3. predict_best_agent ------------------------------------------------------------------------
def predict(calls: int, repeats: int) -> dict[str, Any]:
    from autoretrain.webhook.serving import ModelFollower

    out: dict[str, Any] = {"calls": calls, "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="autoretrain-bench-predict-") as d:
        updater = _trained(str(Path(d) / "store"))
        follower = ModelFollower(str(Path(d) / "store"), seed=5)
        follower.refresh()
        assert follower.predict_best_agent("t0") == updater.predict_best_agent("t0")
        for explore in (False, True):
            timed = interleaved({
                "updater": lambda e=explore: updater.predict_best_agent("t0", None, 3, e),
                "follower": lambda e=explore: follower.predict_best_agent("t0", None, 3, e),
            }, calls if not explore else calls // 10, repeats)
            key = "explore" if explore else "cached"
            out[key] = {"updater_us": summary([x * 1e6 for x in timed["updater"]]),
                        "follower_us": summary([x * 1e6 for x in timed["follower"]]),
                        "ratio": ratios(timed["follower"], timed["updater"])}
        updater.stop()
    out["target"] = TARGET_PREDICT
    out["met"] = all(out[k]["ratio"]["median"] <= TARGET_PREDICT for k in ("cached", "explore"))
    return out


def run(quick: bool) -> dict[str, Any]:
    return {
        "predict": predict(*((20_000, 3) if quick else (200_000, 9))),
        "ranking": ranking_rps(*((2.0, 4, 1) if quick else (10.0, 8, 3))),
        "follower_latency": follower_latency(20 if quick else 40),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, 20 promotions (CI)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    r = run(args.quick)

    p = r["predict"]
    print(f"## ModelFollower.predict_best_agent vs the updater's, per call "
          f"({p['repeats']} interleaved repeats)\n")
    print(table(["measure", "median (min-max)"], [
        ["updater, cached ranking, us/call", fmt(p["cached"]["updater_us"])],
        ["follower, cached ranking, us/call", fmt(p["cached"]["follower_us"])],
        [f"ratio follower/updater (target <= {TARGET_PREDICT})", fmt(p["cached"]["ratio"], ".2f")],
        ["updater, explore=True, us/call", fmt(p["explore"]["updater_us"])],
        ["follower, explore=True, us/call", fmt(p["explore"]["follower_us"])],
        [f"ratio follower/updater (target <= {TARGET_PREDICT})",
         fmt(p["explore"]["ratio"], ".2f")],
    ]))
    k = r["ranking"]
    print(f"\n## GET /api/model/ranking, {k['clients']} keep-alive clients, "
          f"{k['duration_s']:.0f} s x {k['repeats']}\n")
    rows = []
    for name in ("selector", "baseline_waitress_constant"):
        for x in k[name]:
            rows.append([name, f"{x['requests_per_s']:,.0f}", f"{x['p50_ms']:.2f}",
                         f"{x['p99_ms']:.2f}", x["errors"]])
    print(table(["server", "requests/s", "p50 ms", "p99 ms", "errors"], rows))
    print(f"\nratio selector / bare waitress requests/s (target >= {TARGET_RPS}): "
          f"{fmt(k['ratio_rps'], '.2f')}")
    f = r["follower_latency"]
    print(f"\n## Promotion -> served by a Kafka follower process, loopback, "
          f"{f['promotions']} promotions, {f['message_bytes']:,} byte messages\n")
    print(table(["path", "p50 ms", "p99 ms", "max ms"], [
        ["trainer promotion -> ModelFollower serving it",
         *(f"{1000 * f['follower_s'][q]:.1f}" for q in ("p50", "p99", "max"))],
        ["baseline: raw producer send -> raw consumer, same size",
         *(f"{1000 * f['raw_kafka_s'][q]:.1f}" for q in ("p50", "p99", "max"))],
    ]))
    print(f"\ntarget p99 <= {TARGET_P99_S:g} s: {'met' if f['met'] else 'NOT met'}")
    print(f"\nwritten to {write_results('serving', r, quick=args.quick)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
