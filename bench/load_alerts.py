"""A bounded, open-loop load of Alertmanager notifications on ``POST /alerts``.

``scripts/load-alerts --url http://127.0.0.1:9109 --rate 500 --duration 30``

Request ``i`` is due at ``start + i / rate`` whatever happened to the ones
before it (open loop: a slow server does not slow the offered load down,
so its queueing shows in the latency). A fixed number of keep-alive
connections, one thread each, take the next due request; when all of them
are busy, requests start late and that wait is part of their latency
(measured from the due time, as wrk2 does; the time from the actual send is
reported too, as ``service``). The run offers exactly ``rate * duration``
requests and stops by itself: after the last one is due, in-flight requests
get ``--timeout`` seconds.

The mix is what Alertmanager sends: a fraction ``--new`` of the requests
are new alert episodes (a fresh fingerprint each), the rest repeat one of
``--episodes`` firing episodes (its re-sends). An error is any answer other
than 202 or a connection failure. Prints the achieved rate, errors and
latency percentiles; ``--json FILE`` writes them. Exit status 0 when there
were no errors, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LoadResult", "Mix", "alert_body", "main", "percentile", "run"]

TOKEN_ENV = "AUTORETRAIN_WEBHOOK_TOKEN"
_TEMPLATE = {
    "receiver": "autoretrain-webhook",
    "status": "firing",
    "version": "4",
    "groupKey": '{}/{retrain=~".+"}:{model_type="agent_selection"}',
    "truncatedAlerts": 0,
    "groupLabels": {"model_type": "agent_selection"},
    "commonLabels": {},
    "commonAnnotations": {},
    "externalURL": "http://127.0.0.1:9093",
}


def alert_body(fingerprint: str, alertname: str, retrain: str, starts_at: str) -> bytes:
    """One Alertmanager v4 notification with one firing alert."""
    labels = {"alertname": alertname, "model_type": "agent_selection", "severity": "warning",
              "retrain": retrain}
    alert = {"status": "firing", "labels": labels,
             "annotations": {"summary": "load test", "description": "bench.load_alerts"},
             "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": fingerprint}
    return json.dumps({**_TEMPLATE, "commonLabels": labels, "alerts": [alert]}).encode()


@dataclass
class Mix:
    """Which body request ``i`` sends; seeded, so a run is reproducible.

    New episodes have fingerprints ``f<run><counter>`` (hex) unique to this
    run (``run`` is random unless seeded), so a second run against the same
    ledger still sends new episodes.
    """

    new_fraction: float
    repeat_pool: int
    seed: int | None = None
    new_episodes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self._run = rng.getrandbits(32)
        self._starts_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # 1 in 5 asks for a full retrain: the coalesced retrain is then full.
        self._repeats = [self._make(f"e{self._run:08x}{k:07x}", rng)
                         for k in range(self.repeat_pool)]
        self._rng = rng

    def _make(self, fingerprint: str, rng: random.Random) -> bytes:
        retrain = "full" if rng.random() < 0.2 else "incremental"
        name = rng.choice(("SystemAccuracyLow", "AgentAccuracyLow", "SystemErrorRateHigh"))
        return alert_body(fingerprint, name, retrain, self._starts_at)

    def next(self) -> bytes:
        with self._lock:  # one RNG shared by the sending threads
            if self.repeat_pool == 0 or self._rng.random() < self.new_fraction:
                self.new_episodes += 1
                return self._make(f"f{self._run:08x}{self.new_episodes:07x}", self._rng)
            return self._rng.choice(self._repeats)

    @property
    def episodes(self) -> int:
        """Distinct episodes this run could have sent so far (the pool counts whole)."""
        return self.repeat_pool + self.new_episodes


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class LoadResult:
    """What a run measured; ``as_json()`` for files."""

    target_rate: float
    duration_s: float
    connections: int
    offered: int = 0
    completed: int = 0
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    send_window_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)  # from the due time
    service_s: list[float] = field(default_factory=list)    # from the actual send
    max_start_delay_s: float = 0.0
    new_episodes: int = 0
    repeat_pool: int = 0

    @property
    def achieved_rate(self) -> float:
        """Requests sent per second over the sending window (the offered load achieved)."""
        return self.offered / self.send_window_s if self.send_window_s else 0.0

    @property
    def throughput(self) -> float:
        """Answers per second from the first due time to the last answer."""
        return self.completed / self.elapsed_s if self.elapsed_s else 0.0

    def as_json(self) -> dict[str, Any]:
        lat, svc = sorted(self.latencies_s), sorted(self.service_s)

        def ms(values: Sequence[float], q: float) -> float | None:
            value = percentile(values, q)
            return None if value is None else round(1000 * value, 3)

        return {
            "target_rate": self.target_rate,
            "duration_s": self.duration_s,
            "connections": self.connections,
            "requests_offered": self.offered,
            "requests_completed": self.completed,
            "achieved_rate": round(self.achieved_rate, 1),
            "throughput": round(self.throughput, 1),
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "latency_ms": {"p50": ms(lat, 0.50), "p90": ms(lat, 0.90), "p99": ms(lat, 0.99),
                           "p999": ms(lat, 0.999), "max": ms(lat, 1.0)},
            "service_ms": {"p50": ms(svc, 0.50), "p99": ms(svc, 0.99), "max": ms(svc, 1.0)},
            "max_start_delay_ms": round(1000 * self.max_start_delay_s, 3),
            "new_episodes": self.new_episodes,
            "repeat_pool": self.repeat_pool,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def run(url: str, token: str, *, rate: float, duration: float, connections: int = 16,
        new_fraction: float = 0.1, repeat_pool: int = 20, timeout: float = 10.0,
        seed: int | None = None) -> LoadResult:
    """Offer ``rate * duration`` requests to ``url`` (…/alerts) at ``rate`` per second."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"url must be http://host:port/path, got {url!r}")
    host, port, path = parts.hostname, parts.port or 80, parts.path or "/alerts"
    total = round(rate * duration)
    mix = Mix(new_fraction, repeat_pool, seed)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    result = LoadResult(rate, duration, connections, repeat_pool=repeat_pool)
    lock = threading.Lock()
    start = time.perf_counter() + 0.05  # every thread is waiting on request 0
    issued = iter(range(total))
    last_send, last_answer = start, start

    def take() -> int | None:
        with lock:
            return next(issued, None)

    def worker() -> None:
        nonlocal last_send, last_answer
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        sent = start
        latencies: list[float] = []
        service: list[float] = []
        statuses: Counter[int] = Counter()
        kinds: Counter[str] = Counter()
        max_delay = 0.0
        while (i := take()) is not None:
            due = start + i / rate
            body = mix.next()
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            sent = time.perf_counter()
            max_delay = max(max_delay, sent - due)
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                kinds[type(exc).__name__] += 1
                conn.close()  # a fresh connection for the next one
                continue
            done = time.perf_counter()
            statuses[response.status] += 1
            if response.status != 202:
                kinds[f"http_{response.status}"] += 1
            latencies.append(done - due)
            service.append(done - sent)
            if response.will_close:
                conn.close()
        conn.close()
        with lock:
            result.latencies_s.extend(latencies)
            result.service_s.extend(service)
            result.statuses.update(statuses)
            result.error_kinds.update(kinds)
            result.max_start_delay_s = max(result.max_start_delay_s, max_delay)
            last_send = max(last_send, sent)
            last_answer = max(last_answer, time.perf_counter())

    threads = [threading.Thread(target=worker, name=f"load-{k}", daemon=True)
               for k in range(connections)]
    for thread in threads:
        thread.start()
    # Bounded: the last request is due at ``duration``; after that, in-flight
    # ones have their socket timeout, and a thread stuck past it is abandoned.
    deadline = start + duration + timeout + 5.0
    for thread in threads:
        thread.join(max(0.0, deadline - time.perf_counter()))
    stuck = sum(thread.is_alive() for thread in threads)
    if stuck:
        result.error_kinds["stuck_connection"] += stuck
    result.offered = total
    result.completed = sum(result.statuses.values())
    result.errors = sum(result.error_kinds.values())
    result.elapsed_s = last_answer - start
    # The first request is due at 0 and the last at (total - 1) / rate.
    result.send_window_s = max(last_send - start, (total - 1) / rate if total > 1 else 0.0)
    result.new_episodes = mix.new_episodes
    return result


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not value > 0 or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/load-alerts", description=__doc__.split("\n\n")[0],
        epilog="The token comes from --token-file, else $" + TOKEN_ENV + ".")
    p.add_argument("--url", default="http://127.0.0.1:9109/alerts",
                   help="the webhook's POST /alerts (default %(default)s)")
    p.add_argument("--rate", type=_positive(float), default=500.0,
                   help="requests per second offered (default %(default)s)")
    p.add_argument("--duration", type=_positive(float), default=30.0,
                   help="seconds of load (default %(default)s)")
    p.add_argument("--connections", type=_positive(int), default=16,
                   help="keep-alive connections, one thread each (default %(default)s)")
    p.add_argument("--new", type=_fraction, default=0.1, dest="new_fraction",
                   help="fraction of requests that are new episodes (default %(default)s)")
    p.add_argument("--episodes", type=int, default=20,
                   help="firing episodes the other requests repeat (default %(default)s)")
    p.add_argument("--timeout", type=_positive(float), default=10.0,
                   help="socket timeout per request, seconds (default %(default)s)")
    p.add_argument("--seed", type=int, help="seed of the request mix")
    p.add_argument("--token-file", help="file holding the Bearer token")
    p.add_argument("--json", help="also write the results to this file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.token_file:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    else:
        token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"load-alerts: no token: pass --token-file or set {TOKEN_ENV}", file=sys.stderr)
        return 2
    if args.episodes < 0:
        print("load-alerts: --episodes must be >= 0", file=sys.stderr)
        return 2
    try:
        result = run(args.url, token, rate=args.rate, duration=args.duration,
                     connections=args.connections, new_fraction=args.new_fraction,
                     repeat_pool=args.episodes, timeout=args.timeout, seed=args.seed)
    except ValueError as exc:
        print(f"load-alerts: {exc}", file=sys.stderr)
        return 2
    data = result.as_json()
    lat, svc = data["latency_ms"], data["service_ms"]
    print(f"offered {data['requests_offered']} requests at {args.rate:g}/s for "
          f"{args.duration:g} s over {args.connections} connections")
    print(f"achieved {data['achieved_rate']:.1f} req/s sent, {data['throughput']:.1f} answered/s; "
          f"errors {data['errors']} {data['error_kinds'] or ''}")
    print(f"latency from due time ms: p50 {lat['p50']} p90 {lat['p90']} p99 {lat['p99']} "
          f"p99.9 {lat['p999']} max {lat['max']}")
    print(f"service time ms: p50 {svc['p50']} p99 {svc['p99']} max {svc['max']}; "
          f"latest start {data['max_start_delay_ms']} ms after due")
    print(f"episodes: {data['new_episodes']} new + {data['repeat_pool']} repeated")
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0 if result.errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
