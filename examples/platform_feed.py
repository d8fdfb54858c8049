"""A simulated agent platform in real time, producing outcome events to Kafka.

Used by the stack demo (``examples/stack_demo.py``, in a thread) and by the
docker-compose ``platform`` service (``python -m examples.platform_feed``,
forever). It plays the seeded scenario of :mod:`examples.platform_sim`:

* The orchestrator records every run and its accuracy on a
  :class:`~exporter.PerformanceMonitor` with ``kafka_servers=``, so the
  events reach the standalone exporter and the webhook's updater through the
  topic ``agent-outcomes``, as a production platform's would.
* It picks agents with the webhook's model through the product's
  :class:`~autoretrain.ModelFollower`, embedded in the orchestrator as a
  production platform would: it follows the model topic the webhook
  publishes every saved version to (``--model-topic``, the compose
  service), or the webhook's model store on a shared volume
  (``--model-store``). A second updater in the platform would learn on its
  own and never see the webhook's retrains; following means a promoted
  retrain changes the routing within a second, which is the loop the demo
  shows.
* A fresh platform first sends ``history_minutes`` of past traffic (time
  stamps in the past; the true best agent serves, 30 % of the requests go to
  a random agent). Without that history the model would know the
  specialists from a few seconds of runs only, and would give them up by
  itself a few seconds after the drift, before any alert could fire; a
  platform in production has a long record of its good agents, which is
  what makes a retrain necessary. The history is skipped when the store
  already holds a model (a restarted platform).
* :meth:`PlatformFeed.request_degrade` switches the drifting pairs to their
  degraded profiles (three specialists get worse).

Run ``python -m examples.platform_feed --help`` for the options; each can
also be set with an environment variable ``AUTORETRAIN_PLATFORM_<NAME>``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import this repository's packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoretrain import ModelFollower
from autoretrain.exporter import PerformanceMonitor
from examples.platform_sim import (
    Orchestrator,
    RunOutcome,
    Scenario,
    SimulatedPlatform,
    default_scenario,
)

__all__ = ["FeedClock", "FeedSettings", "PlatformFeed", "choose", "events_seen", "main",
           "selection"]

log = logging.getLogger(__name__)

ENV_PREFIX = "AUTORETRAIN_PLATFORM_"

class FeedClock:
    """Wall-clock time, or a pinned time while the history is being written."""

    def __init__(self) -> None:
        self.pinned: float | None = None

    def __call__(self) -> float:
        pinned = self.pinned
        return time.time() if pinned is None else pinned


def choose(follower: ModelFollower, task_type: str, explore: bool) -> str | None:
    """The followed model's agent for ``task_type`` (None before the first model)."""
    ranking = follower.predict_best_agent(task_type, top_k=1, explore=explore)
    return ranking[0][0] if ranking else None


def selection(follower: ModelFollower, task_types: Sequence[str]) -> dict[str, str]:
    """The greedy choice per task type ("-" when unknown)."""
    return {t: choose(follower, t, False) or "-" for t in task_types}


def events_seen(follower: ModelFollower) -> int:
    """Events the followed model has learnt (0 before the first model)."""
    model = follower.model
    return 0 if model is None else model.events_seen


@dataclass(frozen=True)
class FeedSettings:
    """Traffic of the simulated platform (real seconds unless named otherwise)."""

    seed: int = 7
    runs_per_second: float = 10.0
    # Share of requests routed by Thompson sampling (explore=True), as in the
    # embedded demo: without it the model never learns that an alternative
    # has become better.
    explore_share: float = 0.10
    history_minutes: float = 60.0
    # Share of the history's requests sent to a random agent (trials, A/B
    # tests). The alternatives need a record too: a retrain discounts old
    # evidence, and with 10 % the runner-up's few discounted runs leave its
    # estimate near the prior, so after the retrain the selection tries one
    # weak agent after another before it settles (seeds 1-10 of the stack
    # settings, simulated: 3-19 selection changes after the retrain with 10 %,
    # 2-7 with 30 %; accuracy 15-30 s after it 0.80-0.86 and 0.85-0.86).
    history_explore_share: float = 0.30
    history_interval_seconds: float = 2.0  # 30 runs a minute, as in the embedded demo
    refresh_seconds: float = 0.5  # how often on_tick runs (the follower loads on its own)
    model_wait_seconds: float = 60.0  # after the history: wait this long for a first model

    def __post_init__(self) -> None:
        if not (math.isfinite(self.runs_per_second) and 0 < self.runs_per_second <= 1000):
            raise ValueError(f"runs_per_second must be in (0, 1000], got {self.runs_per_second!r}")
        for name in ("explore_share", "history_explore_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not self.history_minutes >= 0:
            raise ValueError(f"history_minutes must be >= 0, got {self.history_minutes!r}")
        for name in ("history_interval_seconds", "refresh_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.model_wait_seconds >= 0:
            raise ValueError(f"model_wait_seconds must be >= 0, got {self.model_wait_seconds!r}")


class PlatformFeed:
    """The simulated platform's orchestrator, in real time.

    Parameters
    ----------
    monitor
        Where runs and accuracy records go (a ``PerformanceMonitor`` publishing
        to Kafka); its clock must be ``clock``.
    follower
        The model that picks agents.
    settings
        Traffic settings.
    clock
        The monitor's clock, pinned to past times while writing the history.
    scenario
        The platform's truth (:func:`~examples.platform_sim.default_scenario`).
    """

    def __init__(self, monitor: Any, follower: ModelFollower, settings: FeedSettings,
                 clock: FeedClock, scenario: Scenario | None = None) -> None:
        self.settings = settings
        self.scenario = scenario or default_scenario()
        self.follower = follower
        self.clock = clock
        self.platform = SimulatedPlatform(self.scenario, seed=settings.seed)
        self.orchestrator = Orchestrator(self.platform,
                                         lambda task, explore: choose(follower, task, explore),
                                         monitor,
                                         explore_share=settings.explore_share)
        self._history_rng = random.Random(settings.seed)
        self._degrade = threading.Event()
        self._systemic = threading.Event()  # set: the systemic drop should be on
        self._lock = threading.Lock()
        # (monotonic time, accuracy or NaN) of the recent live runs.
        self._recent: deque[tuple[float, float]] = deque()
        self.runs = 0
        self.history_runs = 0

    # -- history -------------------------------------------------------------
    def _history_select(self, task_type: str, explore: bool) -> str:
        if explore:
            return self._history_rng.choice(self.scenario.agents).name
        return self.scenario.best_agents()[task_type]

    def write_history(self, minutes: float | None = None) -> int:
        """Record ``minutes`` of past traffic ending now; returns the runs recorded.

        Trial runs of every pair come first, as a platform introduces its
        agents; then the true best agent serves, and ``history_explore_share``
        of the requests go to a random agent.
        """
        s = self.settings
        minutes = s.history_minutes if minutes is None else minutes
        plan = self.platform.onboarding_plan(rounds=2)
        steps = len(plan) + int(minutes * 60.0 / s.history_interval_seconds)
        start = time.time() - steps * s.history_interval_seconds
        history = Orchestrator(self.platform, self._history_select, self.orchestrator.recorder,
                               explore_share=s.history_explore_share)
        try:
            for i in range(steps):
                self.clock.pinned = start + i * s.history_interval_seconds
                if i < len(plan):
                    request, agent = plan[i]
                    history.handle(request, agent)
                else:
                    history.handle(self.platform.next_request())
        finally:
            self.clock.pinned = None
        self.history_runs += steps
        return steps

    def wait_for_model(self, stop: threading.Event, timeout: float | None = None) -> bool:
        """Wait until the follower serves a model (True) or ``timeout`` / ``stop`` (False).

        The follower loads in its own thread (``follower.start()``)."""
        timeout = self.settings.model_wait_seconds if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while self.follower.version is None:
            left = deadline - time.monotonic()
            if left <= 0 or stop.wait(min(self.settings.refresh_seconds, left)):
                return False
        return True

    # -- live traffic -----------------------------------------------------------
    def request_degrade(self) -> None:
        """Make the drifting pairs worse (applied by the feed's thread before its next run)."""
        self._degrade.set()

    @property
    def degraded(self) -> bool:
        return self.platform.degraded

    def request_systemic(self, on: bool = True) -> None:
        """Start (or, ``on=False``, end) the scenario's systemic drop (see
        :meth:`~examples.platform_sim.SimulatedPlatform.start_systemic`),
        applied by the feed's thread before its next run."""
        if on:
            self._systemic.set()
        else:
            self._systemic.clear()

    def step(self) -> RunOutcome:
        """One live run, routed by the followed model."""
        if self._degrade.is_set() and not self.platform.degraded:
            self.platform.degrade()
            log.info("drift: %s get worse",
                     ", ".join(f"{a} on {t}" for t, a in self.scenario.drift))
        if self._systemic.is_set() != self.platform.systemic:
            if self._systemic.is_set():
                self.platform.start_systemic()
            else:
                self.platform.end_systemic()
            log.info("systemic drop %s", "begins" if self.platform.systemic else "ends")
        outcome = self.orchestrator.handle(self.platform.next_request())
        now = time.monotonic()
        with self._lock:
            self.runs += 1
            self._recent.append((now, math.nan if outcome.accuracy is None else outcome.accuracy))
            while self._recent and self._recent[0][0] < now - 120.0:
                self._recent.popleft()
        return outcome

    def run(self, stop: threading.Event,
            on_tick: Callable[[PlatformFeed], None] | None = None) -> None:
        """Serve requests at ``runs_per_second`` until ``stop`` is set."""
        s = self.settings
        interval = 1.0 / s.runs_per_second
        next_run = next_refresh = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_refresh:
                # The follower swaps new versions in on its own thread.
                next_refresh = now + s.refresh_seconds
                if on_tick is not None:
                    on_tick(self)
            self.step()
            next_run += interval
            # Behind by more than a second (a stalled machine): drop the
            # backlog rather than send a burst that would distort the rates.
            next_run = max(next_run, time.monotonic() - 1.0)
            stop.wait(max(0.0, next_run - time.monotonic()))

    def recent_accuracy(self, seconds: float) -> float | None:
        """Mean accuracy of the live runs of the last ``seconds`` (None without records)."""
        since = time.monotonic() - seconds
        with self._lock:
            values = [a for t, a in self._recent if t >= since and not math.isnan(a)]
        return sum(values) / len(values) if values else None


# -- command line (the docker-compose platform service) -------------------------------
def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name, default)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m examples.platform_feed",
        description=(
            "A simulated agent platform: routes tasks with the webhook's model (read from its "
            "model store) and produces every run and accuracy record to Kafka, until stopped. "
            f"Every option can also be set with {ENV_PREFIX}<NAME>, shown in brackets."))
    p.add_argument("--kafka-servers", default=_env("KAFKA_SERVERS", "localhost:9092"),
                   help="Kafka bootstrap servers [KAFKA_SERVERS] (default %(default)s)")
    p.add_argument("--topic", default=_env("TOPIC", "agent-outcomes"),
                   help="topic of outcome events [TOPIC] (default %(default)s)")
    p.add_argument("--model-topic", default=_env("MODEL_TOPIC", "agent-models"),
                   help="follow the webhook's model on this topic [MODEL_TOPIC] "
                        "(default %(default)s)")
    p.add_argument("--model-store", default=_env("MODEL_STORE", "") or None,
                   help="follow the webhook's model store directory instead (a shared volume, "
                        "read-only) [MODEL_STORE]")
    p.add_argument("--seed", type=int, default=int(_env("SEED", "7")),
                   help="seed of the simulation [SEED] (default %(default)s)")
    p.add_argument("--runs-per-second", type=float, default=float(_env("RUNS_PER_SECOND", "5")),
                   help="live traffic [RUNS_PER_SECOND] (default %(default)s)")
    p.add_argument("--history-minutes", type=float,
                   default=float(_env("HISTORY_MINUTES", "60")),
                   help="past traffic sent first when the model store is empty "
                        "[HISTORY_MINUTES] (default %(default)s)")
    p.add_argument("--degrade-after", type=float, default=float(_env("DEGRADE_AFTER", "600")),
                   help="seconds of live traffic before three specialists get worse; "
                        "negative: never [DEGRADE_AFTER] (default %(default)s)")
    p.add_argument("--systemic-after", type=float,
                   default=float(_env("SYSTEMIC_AFTER", "-1")),
                   help="seconds of live traffic before a systemic drop (every LLM agent's "
                        "accuracy falls; what only the alert path can answer); negative: never "
                        "[SYSTEMIC_AFTER] (default %(default)s)")
    p.add_argument("--systemic-for", type=float, default=float(_env("SYSTEMIC_FOR", "900")),
                   help="seconds the systemic drop lasts [SYSTEMIC_FOR] (default %(default)s)")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"),
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="[LOG_LEVEL] (default %(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        settings = FeedSettings(seed=args.seed, runs_per_second=args.runs_per_second,
                                history_minutes=args.history_minutes)
    except ValueError as exc:  # a bad number in an environment variable, or out of range
        print(f"python -m examples.platform_feed: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    clock = FeedClock()
    monitor = PerformanceMonitor(window_size_minutes=5, enable_auto_retraining=False,
                                 kafka_servers=args.kafka_servers, kafka_topic=args.topic,
                                 clock=clock)
    if args.model_store:
        follower = ModelFollower(args.model_store, seed=args.seed)
    else:
        follower = ModelFollower(kafka_servers=args.kafka_servers, topic=args.model_topic,
                                 seed=args.seed)
    feed = PlatformFeed(monitor, follower, settings, clock)
    try:
        if _has_model(follower):
            log.info("the webhook has a model (version %s): no history sent", follower.version)
        elif settings.history_minutes > 0:
            runs = feed.write_history()
            log.info("sent %g minutes of history (%d runs)", settings.history_minutes, runs)
        follower.start()
        if not feed.wait_for_model(stop):
            log.warning("no model from the webhook yet: routing round-robin until one appears")
        started = time.monotonic()
        last_status = [started]

        def tick(f: PlatformFeed) -> None:
            now = time.monotonic()
            if args.degrade_after >= 0 and not f.degraded and now - started >= args.degrade_after:
                f.request_degrade()
            if args.systemic_after >= 0:
                since = now - started - args.systemic_after
                f.request_systemic(0 <= since < args.systemic_for)
            if now - last_status[0] >= 30.0:
                last_status[0] = now
                acc = f.recent_accuracy(60.0)
                log.info("runs %d, accuracy (last minute) %s, model version %s, serving %s",
                         f.runs, "n/a" if acc is None else f"{acc:.3f}", follower.version,
                         selection(follower, f.scenario.task_types))

        log.info("live traffic: %g runs/s, drift %s", settings.runs_per_second,
                 "never" if args.degrade_after < 0 else f"after {args.degrade_after:g} s")
        feed.run(stop, on_tick=tick)
    finally:
        follower.stop()
        monitor.stop()  # delivers what is queued, closes the producer
    return 0


def _has_model(follower: ModelFollower) -> bool:
    """Does the webhook have a model already (a restarted platform)? One synchronous look."""
    from kafka.errors import KafkaError

    try:
        follower.refresh(timeout=5.0)
    except (LookupError, OSError, KafkaError) as exc:  # no topic yet, Kafka away
        log.info("no model found yet (%s)", exc)
    return follower.version is not None


if __name__ == "__main__":
    sys.exit(main())
