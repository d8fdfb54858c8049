"""Agent-selection policies behind one small interface, for ``bench.decisions``.

Every policy sees the same decisions in the same order: ``choose(task_type,
draws)`` names an agent, ``observe(outcome)`` feeds it what happened, and
``tick()`` runs what a deployment does every simulated step of its clock
(the orchestrator's flush, the monitor's check). ``draws`` are the
request's own uniform random numbers, shared by all policies (common random
numbers): a policy that explores on a fraction of requests explores on the
same requests as the others, and a Bernoulli reward is the same coin for all.

Policies:

* :class:`AutoretrainPolicy`: a ``RealTimeModelUpdater`` (any strategy) fed
  by a ``PerformanceMonitor`` over the embedded bus, optionally with the
  monitor's auto-retraining on a simulated clock.
* :class:`OriginalThompson`: the original design's bandit re-implemented
  from its description (Beta counts, no forgetting, the "incremental
  retrain" that re-feeds the last 100 events), retrained by the same monitor.
* :class:`RiverBandit`: one ``river.bandit`` policy per task type.
* :class:`VowpalWabbitCB`: ``--cb_explore_adf`` with the task type as
  shared feature and the agent as action feature.
"""

from __future__ import annotations

import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from autoretrain.exporter import PerformanceMonitor
from autoretrain.webhook.updater import RealTimeModelUpdater, UpdateStrategy
from examples.platform_sim import RunOutcome, SimClock, record_outcome

__all__ = [
    "AutoretrainPolicy",
    "Draws",
    "MonitorSettings",
    "OriginalThompson",
    "Outcome",
    "Policy",
    "RiverBandit",
    "VowpalWabbitCB",
    "vowpalwabbit_available",
]


@dataclass(frozen=True)
class Draws:
    """A request's uniform draws that policies may use (shared by all policies)."""

    route: float  # exploration decision of an epsilon mix
    reward: float  # Bernoulli coin for policies that need a binary reward
    pick: float  # sampling an action from a distribution (VW's pmf)


@dataclass(frozen=True)
class Outcome(RunOutcome):
    """One decision's result as the platform reports it (the simulated
    platform's run outcome, with the reward every policy is judged by)."""

    @property
    def reward(self) -> float:
        """success x accuracy."""
        return 0.0 if self.accuracy is None else self.accuracy


@dataclass(frozen=True)
class MonitorSettings:
    """The monitor's checker on the simulated clock (see ``bench.decisions``)."""

    window_minutes: float = 5.0
    check_every_decisions: int = 15
    min_runs: int = 40
    cooldown_seconds: float = 300.0
    full_retrain_grace_seconds: float = 600.0
    accuracy_min: float = 0.80
    success_rate_min: float = 0.80

    def monitor(self, clock: SimClock, updater: Any, auto: bool) -> PerformanceMonitor:
        return PerformanceMonitor(
            window_size_minutes=self.window_minutes,
            enable_auto_retraining=auto,
            model_updater=updater,
            alert_thresholds={
                "accuracy_min": self.accuracy_min,
                "success_rate_min": self.success_rate_min,
            },
            registry=CollectorRegistry(),
            clock=clock,
            min_runs=self.min_runs,
            cooldown_seconds=self.cooldown_seconds,
            full_retrain_grace_seconds=self.full_retrain_grace_seconds,
        )


class Policy:
    """Base: a named policy over a fixed list of agents."""

    name = "policy"

    def __init__(self, agents: Sequence[tuple[str, str]]) -> None:
        self.agents = [a for a, _ in agents]
        self.agent_types = dict(agents)
        #: Agents not (yet) on the platform: never chosen. A policy that
        #: learns agents from outcomes (autoretrain) cannot name one anyway.
        self.hidden: set[str] = set()

    def available(self) -> list[str]:
        """The agents that may be chosen now."""
        return [a for a in self.agents if a not in self.hidden] if self.hidden else self.agents

    def choose(self, task_type: str, draws: Draws) -> str:
        raise NotImplementedError

    def observe(self, outcome: Outcome, draws: Draws) -> None:
        """Learn from a decision (also the forced onboarding ones)."""

    def tick(self) -> None:
        """Called after every decision, after ``observe``."""

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def _record(monitor: PerformanceMonitor, outcome: Outcome) -> None:
    record_outcome(monitor, outcome)


class _Checked(Policy):
    """A policy whose retrains the monitor triggers: records every outcome on
    a ``PerformanceMonitor`` and runs its check every ``check_every_decisions``."""

    def __init__(
        self,
        agents: Sequence[tuple[str, str]],
        clock: SimClock,
        settings: MonitorSettings,
        auto: bool,
    ) -> None:
        super().__init__(agents)
        self.clock = clock
        self.settings = settings
        self.auto = auto
        self.monitor: PerformanceMonitor | None = None
        self._decisions = 0
        self.retrains: list[dict[str, Any]] = []

    def _before_check(self) -> None:
        pass

    def tick(self) -> None:
        self._decisions += 1
        # The check runs with or without auto-retraining (a monitor without it
        # still checks and alerts): the events it flushes first reach the
        # model at the same decisions in both, so a policy and its "alone"
        # twin differ by the retrains only, not by fresher data.
        if self.monitor is not None and self._decisions % self.settings.check_every_decisions == 0:
            self._before_check()
            for alert in self.monitor.check():
                result = alert.details.get("result")
                if result is not None:
                    self.retrains.append(
                        {
                            "decision": self._decisions,
                            "retrain_type": result.get("retrain_type"),
                            "result": result.get("result", "failed"),
                        }
                    )

    def stats(self) -> dict[str, Any]:
        promoted = sum(1 for r in self.retrains if r["result"] == "promoted")
        return {"retrains": len(self.retrains), "promoted": promoted, "retrain_log": self.retrains}

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()


class AutoretrainPolicy(_Checked):
    """autoretrain's updater and monitor, wired as a platform embeds them.

    Routing: a share ``explore_share`` of requests (``draws.route`` below it)
    is ranked with ``explore=True`` (Thompson sampling), the rest greedily.
    The orchestrator hands its events to the updater every
    ``flush_every_decisions`` decisions (``process_pending``), and before
    every monitor check.
    """

    def __init__(
        self,
        agents: Sequence[tuple[str, str]],
        *,
        clock: SimClock,
        settings: MonitorSettings,
        strategy: UpdateStrategy,
        auto: bool,
        explore_share: float,
        seed: int,
        flush_every_decisions: int = 10,
        updater_kwargs: dict[str, Any] | None = None,
        name: str = "",
    ) -> None:
        super().__init__(agents, clock, settings, auto)
        self.name = name or f"autoretrain {strategy.value}"
        self.explore_share = explore_share
        self.flush_every = flush_every_decisions
        self._dir = tempfile.TemporaryDirectory(prefix="bench-decisions-")
        self.updater = RealTimeModelUpdater(
            model_storage_path=self._dir.name,
            update_strategy=strategy,
            enable_auto_save=False,
            registry=CollectorRegistry(),
            clock=clock,
            seed=seed,
            **(updater_kwargs or {}),
        )
        self.monitor = settings.monitor(clock, self.updater, auto)
        # (decision, event, task type, agent, cause) of what probation did.
        self.probation_log: list[tuple[int, str, str, str, str | None]] = []
        self._probation_seen = 0

    def _note_probation(self) -> None:
        for e in self.updater.get_metrics()["recent_probation_events"]:
            if e["seq"] > self._probation_seen:
                self._probation_seen = e["seq"]
                self.probation_log.append(
                    (self._decisions, e["event"], e["task_type"], e["agent"], e.get("cause"))
                )

    def choose(self, task_type: str, draws: Draws) -> str:
        ranking = self.updater.predict_best_agent(
            task_type, top_k=1, explore=draws.route < self.explore_share
        )
        return ranking[0][0] if ranking else self.agents[0]

    def observe(self, outcome: Outcome, draws: Draws) -> None:
        assert self.monitor is not None
        _record(self.monitor, outcome)

    def _before_check(self) -> None:
        self.updater.process_pending()

    def tick(self) -> None:
        if (self._decisions + 1) % self.flush_every == 0:
            self.updater.process_pending()
        super().tick()
        if self._decisions % self.flush_every == 0:
            self._note_probation()

    def stats(self) -> dict[str, Any]:
        self._note_probation()
        return {**super().stats(), "probation_log": list(self.probation_log)}

    def close(self) -> None:
        super().close()
        self._dir.cleanup()


class OriginalThompson(_Checked):
    """The original design's bandit, re-implemented from its description.

    "Thompson-sampling bandit over agents' successes and failures with task
    and context patterns": per (task type, agent) ``Beta(s + 1, f + 1)``
    counts of run successes and failures, no forgetting; every request is
    routed by a Thompson draw. Its incremental retrain re-feeds the last
    ``refeed`` events a second time (they are then counted twice); its full
    retrain rebuilds the counts from every event once (undoing the double
    counts). Retrains are triggered by the same monitor logic as autoretrain.

    ``signal``: ``"run"`` counts a run's status (success or not), as the
    description says; ``"reward"`` counts a Bernoulli draw of the reward
    (``draws.reward < success x accuracy``), i.e. the same algorithm given
    the reward every other policy is judged by.
    """

    def __init__(
        self,
        agents: Sequence[tuple[str, str]],
        task_types: Sequence[str],
        *,
        clock: SimClock,
        settings: MonitorSettings,
        auto: bool,
        seed: int,
        signal: str = "run",
        refeed: int = 100,
    ) -> None:
        super().__init__(agents, clock, settings, auto)
        if signal not in ("run", "reward"):
            raise ValueError(f"signal must be 'run' or 'reward', got {signal!r}")
        self.name = "original TS" + (" (reward-fed)" if signal == "reward" else "")
        self.signal = signal
        self._rng = np.random.default_rng(seed)
        self._row = {t: i for i, t in enumerate(task_types)}
        self._col = {a: i for i, a in enumerate(self.agents)}
        self.successes = np.zeros((len(task_types), len(self.agents)))
        self.failures = np.zeros_like(self.successes)
        self._recent: deque[tuple[int, int, bool]] = deque(maxlen=refeed)
        self._all: list[tuple[int, int, bool]] = []
        self.monitor = settings.monitor(clock, self, auto)

    def choose(self, task_type: str, draws: Draws) -> str:
        row = self._row[task_type]
        sample = self._rng.beta(self.successes[row] + 1.0, self.failures[row] + 1.0)
        if self.hidden:
            sample[[self._col[a] for a in self.hidden]] = -1.0
        return self.agents[int(np.argmax(sample))]

    def observe(self, outcome: Outcome, draws: Draws) -> None:
        ok = outcome.status == "success" if self.signal == "run" else draws.reward < outcome.reward
        event = (self._row[outcome.task_type], self._col[outcome.agent_name], ok)
        self._learn([event])
        self._recent.append(event)
        self._all.append(event)
        assert self.monitor is not None
        _record(self.monitor, outcome)

    def _learn(self, events: Sequence[tuple[int, int, bool]]) -> None:
        for row, col, ok in events:
            if ok:
                self.successes[row, col] += 1.0
            else:
                self.failures[row, col] += 1.0

    def trigger_retraining(
        self, reason: str = "manual", force_full_retrain: bool = False
    ) -> dict[str, Any]:
        """The original's retrain: incremental re-feeds, full rebuilds once."""
        if force_full_retrain:
            self.successes[...] = 0.0
            self.failures[...] = 0.0
            self._learn(self._all)
            n = len(self._all)
        else:
            self._learn(list(self._recent))
            n = len(self._recent)
        return {
            "success": True,
            "model_type": "agent_selection",
            "retrain_type": "full" if force_full_retrain else "incremental",
            "events_processed": n,
            "duration_ms": 0.0,
            "reason": reason,
            "timestamp": "",
            "promoted": True,
            "result": "promoted",
        }


class RiverBandit(Policy):
    """One ``river.bandit`` policy per task type, arms = agents.

    ``binary``: update with the Bernoulli coin of the reward (for Beta
    Thompson sampling, whose reward object counts successes); otherwise with
    the reward itself.
    """

    def __init__(
        self,
        agents: Sequence[tuple[str, str]],
        task_types: Sequence[str],
        *,
        name: str,
        factory: Callable[[int], Any],
        seed: int,
        binary: bool = False,
    ) -> None:
        super().__init__(agents)
        self.name = name
        self.binary = binary
        self._policies = {t: factory(seed * 1000 + i) for i, t in enumerate(task_types)}

    def choose(self, task_type: str, draws: Draws) -> str:
        return str(self._policies[task_type].pull(self.available()))

    def observe(self, outcome: Outcome, draws: Draws) -> None:
        value: Any = draws.reward < outcome.reward if self.binary else outcome.reward
        self._policies[outcome.task_type].update(outcome.agent_name, value)


def vowpalwabbit_available() -> str | None:
    """None when ``vowpalwabbit`` imports, else the error text."""
    try:
        import vowpalwabbit  # noqa: F401
    except Exception as exc:  # any import failure means "leave it out"
        return f"{type(exc).__name__}: {exc}"
    return None


class VowpalWabbitCB(Policy):
    """Vowpal Wabbit ``--cb_explore_adf``: shared feature the task type, one
    action per agent (feature: the agent), task x agent interactions; cost is
    ``-reward``. The action is sampled from VW's pmf with ``draws.pick``."""

    def __init__(
        self,
        agents: Sequence[tuple[str, str]],
        *,
        seed: int,
        args: str = "--cb_explore_adf -q sa --epsilon 0.05",
    ) -> None:
        super().__init__(agents)
        import vowpalwabbit

        self.name = f"VW {args.replace('--cb_explore_adf', 'cb_explore_adf').strip()}"
        self._vw = vowpalwabbit.Workspace(f"{args} --quiet --random_seed {seed}")
        self._actions = [f"|a agent={a}" for a in self.agents]
        self._prob: dict[str, float] = {}

    def _example(self, task_type: str, label: tuple[int, float, float] | None) -> list[str]:
        # The actions of the agents available now (ADF takes any action set).
        lines = [f"shared |s task={task_type}"]
        for i, name in enumerate(self.available()):
            action = self._actions[self.agents.index(name)]
            if label is not None and label[0] == i:
                lines.append(f"0:{label[1]}:{label[2]} {action}")
            else:
                lines.append(action)
        return lines

    def choose(self, task_type: str, draws: Draws) -> str:
        pmf = np.asarray(self._vw.predict(self._example(task_type, None)), dtype=float)
        cdf = np.cumsum(pmf / pmf.sum())
        i = min(int(np.searchsorted(cdf, draws.pick, side="right")), len(cdf) - 1)
        name = self.available()[i]
        self._prob = {name: float(pmf[i] / pmf.sum())}
        return name

    def observe(self, outcome: Outcome, draws: Draws) -> None:
        # Onboarding choices were forced (uniform over agents in turn).
        available = self.available()
        prob = self._prob.pop(outcome.agent_name, 1.0 / len(available))
        col = available.index(outcome.agent_name)
        self._vw.learn(self._example(outcome.task_type, (col, -outcome.reward, max(prob, 1e-3))))

    def close(self) -> None:
        self._vw.finish()
