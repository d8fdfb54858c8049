"""A seeded simulated agent platform: agents, task types, traffic and outcomes.

Shared by the demo (``autonomous_retraining_example.py``), the stack demo and
the benchmarks, so they all tell the same story:

* :class:`Scenario` is the platform's truth: for every (task type, agent)
  pair a :class:`PairProfile` (success rate, accuracy, latency, tokens), and
  the drifted profiles some pairs switch to when :meth:`SimulatedPlatform.degrade`
  is called. :func:`default_scenario` is the demo's platform.
* :class:`SimulatedPlatform` draws requests and executes runs. Every request
  carries its own random draws (common random numbers): two orchestrators fed
  the same seed see the same tasks and the same luck, and differ only by the
  agents they choose, which makes "with and without retraining" comparable
  run for run.
* :class:`Orchestrator` routes each request to the agent a selection
  function names and records the run, and the accuracy of its output, on a
  ``PerformanceMonitor`` (or anything with the same two methods).
* :class:`SimClock` is the simulated time injected into the monitor and the
  updater.

Examples
--------
>>> platform = SimulatedPlatform(default_scenario(), seed=1)
>>> request = platform.next_request(task_type="sales_forecast")
>>> outcome = platform.execute(request, "forecaster-pro")
>>> outcome.task_type, outcome.agent_name
('sales_forecast', 'forecaster-pro')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Agent",
    "Orchestrator",
    "PairProfile",
    "Request",
    "RunOutcome",
    "Scenario",
    "SimClock",
    "SimulatedPlatform",
    "default_scenario",
    "record_outcome",
]

#: Unix time at which simulations start (2024-01-01T00:00:00Z): fixed, so
#: timestamps in outputs do not depend on when the simulation ran.
SIM_EPOCH = 1_704_067_200.0

# Spread of a run's accuracy around its pair's median, in logit units, and of
# durations and token counts around theirs, in log units.
_ACCURACY_LOGIT_SD = 0.5
_LATENCY_LOG_SD = 0.35
_TOKENS_LOG_SD = 0.25
# How an unsuccessful run ends: mostly a wrong or unusable answer ("failure"),
# sometimes a crash ("error") or a timeout.
_ERROR_SHARE = 0.25
_TIMEOUT_SHARE = 0.02
_TIMEOUT_MS = 30_000.0


@dataclass(frozen=True)
class Agent:
    """One agent of the platform."""

    name: str
    agent_type: str
    cost_per_1k_tokens: float


@dataclass(frozen=True)
class PairProfile:
    """The true behaviour of one agent on one task type.

    ``accuracy`` is the median accuracy (0..1) of a successful run's output
    against the real outcome; a run that does not succeed delivers nothing
    to score.
    """

    success_rate: float
    accuracy: float
    latency_ms: float = 1200.0
    tokens: int = 1500

    def __post_init__(self) -> None:
        for name in ("success_rate", "accuracy"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value!r}")
        if not self.latency_ms > 0:
            raise ValueError(f"latency_ms must be > 0, got {self.latency_ms!r}")
        if not self.tokens >= 1:
            raise ValueError(f"tokens must be >= 1, got {self.tokens!r}")

    @property
    def reward(self) -> float:
        """Expected success x accuracy: what the selection model estimates."""
        return self.success_rate * self.accuracy


@dataclass(frozen=True)
class Scenario:
    """Agents, task types with their share of traffic, and the true profiles.

    ``profiles`` must hold every (task type, agent) pair; ``drift`` the pairs
    whose profile changes when the platform degrades.
    """

    agents: tuple[Agent, ...]
    task_types: tuple[str, ...]
    task_mix: tuple[float, ...]
    profiles: Mapping[tuple[str, str], PairProfile]
    drift: Mapping[tuple[str, str], PairProfile] = field(default_factory=dict)
    #: A systemic drop (see :meth:`SimulatedPlatform.start_systemic`): while it
    #: lasts, every agent of type ``systemic_agent_type`` has its accuracy
    #: multiplied by ``systemic_accuracy_factor`` on every task type (a shared
    #: upstream service they all depend on degrades). None: no such stage.
    systemic_agent_type: str | None = None
    systemic_accuracy_factor: float = 1.0

    def __post_init__(self) -> None:
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"agent names must be unique and non-empty, got {names}")
        if len(set(self.task_types)) != len(self.task_types) or not self.task_types:
            raise ValueError(f"task types must be unique and non-empty, got {self.task_types}")
        if len(self.task_mix) != len(self.task_types) or not math.isclose(sum(self.task_mix), 1):
            raise ValueError(
                f"task_mix must have one share per task type summing to 1, got {self.task_mix}"
            )
        pairs = {(t, a) for t in self.task_types for a in names}
        missing = sorted(pairs - set(self.profiles))
        if missing:
            raise ValueError(f"profiles missing for pairs {missing}")
        unknown = sorted(set(self.drift) - pairs)
        if unknown:
            raise ValueError(f"drift names unknown pairs {unknown}")
        if not 0.0 < self.systemic_accuracy_factor <= 1.0:
            raise ValueError("systemic_accuracy_factor must be in (0, 1], got "
                             f"{self.systemic_accuracy_factor!r}")

    def agent(self, name: str) -> Agent:
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise ValueError(f"unknown agent {name!r}; known: {', '.join(a.name for a in self.agents)}")

    def best_agents(self, drifted: bool = False) -> dict[str, str]:
        """The agent with the highest true reward per task type."""
        profiles = {**self.profiles, **self.drift} if drifted else dict(self.profiles)
        return {
            t: max((a.name for a in self.agents), key=lambda name: profiles[(t, name)].reward)
            for t in self.task_types
        }

    def systemic_profile(self, task_type: str, agent_name: str,
                         profile: PairProfile) -> PairProfile:
        """``profile`` of a pair while the systemic drop lasts."""
        if self.agent(agent_name).agent_type != self.systemic_agent_type:
            return profile
        return dataclasses.replace(profile,
                                   accuracy=profile.accuracy * self.systemic_accuracy_factor)

    def best_agents_during_systemic(self) -> dict[str, str]:
        """The true best agent per task type during the systemic drop (after the drift)."""
        drifted = {**self.profiles, **self.drift}
        out = {}
        for t in self.task_types:
            out[t] = max((a.name for a in self.agents),
                         key=lambda a: self.systemic_profile(t, a, drifted[(t, a)]).reward)
        return out

    @property
    def degraded_task_types(self) -> tuple[str, ...]:
        """Task types whose best agent changes with the drift."""
        before, after = self.best_agents(), self.best_agents(drifted=True)
        return tuple(t for t in self.task_types if before[t] != after[t])


def default_scenario() -> Scenario:
    """The demo's platform: six agents, four task types, three of them drifting.

    Each task type has a specialist (accuracy about 0.92) and weaker
    alternatives. The drift is an upstream change that hurts three
    specialists (their accuracy falls to about 0.53), while the generalist
    and the rules engine, which were second best there, are unaffected and
    become the best choice (accuracy about 0.85). ``doc_summary`` does not
    drift, so it shows that a retrain keeps what is still right.
    """
    agents = (
        Agent("forecaster-pro", "llm", 0.030),
        Agent("support-bot", "llm", 0.010),
        Agent("review-assistant", "llm", 0.020),
        Agent("summarizer-lite", "llm", 0.004),
        Agent("generalist-llm", "llm", 0.015),
        Agent("rules-engine", "rule_based", 0.001),
    )
    task_types = ("sales_forecast", "support_triage", "code_review", "doc_summary")
    p = PairProfile
    # (success rate, median accuracy, median latency ms, mean tokens)
    table: dict[str, dict[str, PairProfile]] = {
        "sales_forecast": {
            "forecaster-pro": p(0.97, 0.93, 1500, 2200),
            "support-bot": p(0.85, 0.62, 900, 900),
            "review-assistant": p(0.86, 0.66, 1500, 1800),
            "summarizer-lite": p(0.88, 0.64, 700, 800),
            "generalist-llm": p(0.93, 0.86, 1400, 1700),
            "rules-engine": p(0.96, 0.62, 150, 1),
        },
        "support_triage": {
            "forecaster-pro": p(0.88, 0.66, 1600, 1500),
            "support-bot": p(0.97, 0.93, 800, 1000),
            "review-assistant": p(0.87, 0.68, 1400, 1500),
            "summarizer-lite": p(0.90, 0.72, 600, 700),
            "generalist-llm": p(0.93, 0.72, 1300, 1400),
            "rules-engine": p(0.96, 0.86, 120, 1),
        },
        "code_review": {
            "forecaster-pro": p(0.85, 0.62, 1700, 2000),
            "support-bot": p(0.84, 0.60, 1000, 1200),
            "review-assistant": p(0.96, 0.92, 1600, 2600),
            "summarizer-lite": p(0.86, 0.66, 800, 1100),
            "generalist-llm": p(0.93, 0.86, 1500, 2300),
            "rules-engine": p(0.95, 0.58, 200, 1),
        },
        "doc_summary": {
            "forecaster-pro": p(0.88, 0.70, 1500, 1600),
            "support-bot": p(0.89, 0.72, 700, 900),
            "review-assistant": p(0.88, 0.74, 1300, 1500),
            "summarizer-lite": p(0.97, 0.92, 600, 900),
            "generalist-llm": p(0.94, 0.86, 1200, 1300),
            "rules-engine": p(0.90, 0.60, 100, 1),
        },
    }
    profiles = {(t, a): prof for t, row in table.items() for a, prof in row.items()}
    drift = {
        ("sales_forecast", "forecaster-pro"): p(0.90, 0.52, 1700, 2400),
        ("support_triage", "support-bot"): p(0.90, 0.52, 900, 1100),
        ("code_review", "review-assistant"): p(0.90, 0.55, 1800, 2800),
    }
    # Later, a shared upstream service (say the retrieval index every LLM agent
    # reads) degrades: every LLM agent's accuracy falls to 55 % of what it was,
    # on every task type; the rules engine does not use it. No routing can
    # keep the system above the 0.70 threshold then (the best choice per task
    # type averages about 0.66): the case for the alert, a retrain and a person.
    return Scenario(agents, task_types, (0.25, 0.25, 0.25, 0.25), profiles, drift,
                    systemic_agent_type="llm", systemic_accuracy_factor=0.55)


class SimClock:
    """Simulated Unix time: call it for the time, :meth:`advance` to move it."""

    def __init__(self, start: float = SIM_EPOCH) -> None:
        self.start = float(start)
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock only moves forward, got {seconds!r} s")
        self.now += seconds
        return self.now

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return self.now - self.start


@dataclass(frozen=True)
class Request:
    """A task to route, with the random draws that decide how any agent does on it."""

    task_id: str
    task_type: str
    success_draw: float  # uniform: the run succeeds when below the success rate
    failure_draw: float  # uniform: how an unsuccessful run ends
    accuracy_noise: float  # standard normal, in logit units x the spread
    latency_noise: float  # standard normal
    tokens_noise: float  # standard normal
    route_draw: float  # uniform for the orchestrator's own choices (exploration)


@dataclass(frozen=True)
class RunOutcome:
    """What one run did; ``accuracy`` is None when it did not succeed."""

    task_id: str
    task_type: str
    agent_name: str
    agent_type: str
    status: str
    duration_ms: float
    tokens_used: int
    cost: float
    accuracy: float | None


def _logit(x: float) -> float:
    return math.log(x / (1.0 - x))


class SimulatedPlatform:
    """Draws requests and executes runs of a :class:`Scenario`, seeded.

    Parameters
    ----------
    scenario
        The platform's truth.
    seed
        Seed of the request stream; the same seed gives the same requests
        and the same draws, whatever agents are chosen.
    """

    def __init__(self, scenario: Scenario, seed: int | None = None) -> None:
        self.scenario = scenario
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._mix = np.cumsum(scenario.task_mix)
        self._profiles = dict(scenario.profiles)
        self._next_id = 0
        self.degraded = False
        self.systemic = False

    def degrade(self) -> None:
        """Switch the drifting pairs to their drifted profiles."""
        self._profiles.update(self.scenario.drift)
        self.degraded = True

    def start_systemic(self) -> None:
        """The scenario's systemic drop begins (see :class:`Scenario`)."""
        if self.scenario.systemic_agent_type is None:
            raise ValueError("this scenario has no systemic drop")
        self.systemic = True

    def end_systemic(self) -> None:
        """The systemic drop is over (the upstream service is fixed)."""
        self.systemic = False

    def profile(self, task_type: str, agent_name: str) -> PairProfile:
        """The current true profile of a pair."""
        prof = self._profiles[(task_type, agent_name)]
        if self.systemic:
            prof = self.scenario.systemic_profile(task_type, agent_name, prof)
        return prof

    def next_request(self, task_type: str | None = None) -> Request:
        """The next task: its type drawn from the mix, unless ``task_type`` is given."""
        u = self._rng.random(4)
        z = self._rng.standard_normal(3)
        if task_type is None:
            index = min(int(np.searchsorted(self._mix, u[0], side="right")), len(self._mix) - 1)
            task_type = self.scenario.task_types[index]
        elif task_type not in self.scenario.task_types:
            raise ValueError(
                f"unknown task type {task_type!r}; known: {', '.join(self.scenario.task_types)}"
            )
        self._next_id += 1
        return Request(
            task_id=f"task-{self._next_id:06d}",
            task_type=task_type,
            success_draw=float(u[1]),
            failure_draw=float(u[2]),
            accuracy_noise=float(z[0]),
            latency_noise=float(z[1]),
            tokens_noise=float(z[2]),
            route_draw=float(u[3]),
        )

    def onboarding_plan(self, rounds: int = 2) -> list[tuple[Request, str]]:
        """Requests giving every agent ``rounds`` trial runs of every task type.

        A new selection model can only rank agents it has seen; trial runs
        are how a platform introduces its agents to it.
        """
        return [
            (self.next_request(task_type), agent.name)
            for _ in range(rounds)
            for task_type in self.scenario.task_types
            for agent in self.scenario.agents
        ]

    def execute(self, request: Request, agent_name: str) -> RunOutcome:
        """Run ``agent_name`` on ``request`` (deterministic given the request)."""
        agent = self.scenario.agent(agent_name)
        prof = self.profile(request.task_type, agent_name)
        tokens = max(1, round(prof.tokens * math.exp(_TOKENS_LOG_SD * request.tokens_noise)))
        duration = prof.latency_ms * math.exp(_LATENCY_LOG_SD * request.latency_noise)
        accuracy: float | None = None
        if request.success_draw < prof.success_rate:
            status = "success"
            logit = _logit(prof.accuracy) + _ACCURACY_LOGIT_SD * request.accuracy_noise
            accuracy = 1.0 / (1.0 + math.exp(-logit))
        elif request.failure_draw < _TIMEOUT_SHARE:
            status, duration = "timeout", _TIMEOUT_MS
        elif request.failure_draw < _TIMEOUT_SHARE + _ERROR_SHARE:
            status = "error"
        else:
            status = "failure"
        return RunOutcome(
            task_id=request.task_id,
            task_type=request.task_type,
            agent_name=agent.name,
            agent_type=agent.agent_type,
            status=status,
            duration_ms=round(duration, 1),
            tokens_used=tokens,
            cost=round(tokens / 1000.0 * agent.cost_per_1k_tokens, 6),
            accuracy=accuracy,
        )


class RunRecorder(Protocol):
    """What the orchestrator records runs on (``exporter.PerformanceMonitor``)."""

    def record_agent_run(self, run_id: str, agent_name: str, agent_type: str, status: Any,
                         duration_ms: float, tokens_used: int = 0, cost: float = 0.0, *,
                         task_type: str = "default",
                         context: Mapping[str, Any] | None = None) -> None: ...

    def record_accuracy(self, agent_name: str, task_id: str,
                        predicted_outcome: Mapping[str, Any] | None = None,
                        actual_outcome: Mapping[str, Any] | None = None,
                        feedback_source: str = "ground_truth", *,
                        accuracy: float | None = None,
                        task_type: str = "default", context: Mapping[str, Any] | None = None,
                        agent_type: str | None = None) -> float: ...


def record_outcome(recorder: RunRecorder, outcome: Any) -> None:
    """Record one run and, when known, its accuracy, as an orchestrator would.

    ``outcome`` has the fields of :class:`RunOutcome` (the benchmarks' own
    outcome type has them too). A real platform would pass
    ``predicted_outcome=`` and ``actual_outcome=`` and let the monitor score
    them; the simulation knows the score.
    """
    recorder.record_agent_run(
        run_id=f"run-{outcome.task_id}",
        agent_name=outcome.agent_name,
        agent_type=outcome.agent_type,
        status=outcome.status,
        duration_ms=outcome.duration_ms,
        tokens_used=outcome.tokens_used,
        cost=outcome.cost,
        task_type=outcome.task_type,
    )
    if outcome.accuracy is not None:
        recorder.record_accuracy(
            agent_name=outcome.agent_name,
            task_id=outcome.task_id,
            accuracy=outcome.accuracy,
            feedback_source="ground_truth",
            task_type=outcome.task_type,
            agent_type=outcome.agent_type,
        )


#: ``select(task_type, explore)``: the agent to run, or None when the
#: selection model knows no agent yet.
Selector = Callable[[str, bool], "str | None"]


class Orchestrator:
    """Routes requests to agents and records every run and its accuracy.

    Parameters
    ----------
    platform
        Executes the runs.
    select
        ``select(task_type, explore) -> agent name or None``; typically
        ``RealTimeModelUpdater.predict_best_agent``.
    recorder
        Where runs and accuracy records go (a ``PerformanceMonitor``).
    explore_share
        Share of requests routed with ``explore=True``.
    """

    def __init__(self, platform: SimulatedPlatform, select: Selector, recorder: RunRecorder,
                 explore_share: float = 0.1) -> None:
        if not 0.0 <= explore_share <= 1.0:
            raise ValueError(f"explore_share must be in [0, 1], got {explore_share!r}")
        self.platform = platform
        self.select = select
        self.recorder = recorder
        self.explore_share = explore_share
        self._fallback = 0

    def handle(self, request: Request, agent_name: str | None = None) -> RunOutcome:
        """Route ``request`` (to ``agent_name`` when given), execute and record it."""
        if agent_name is None:
            agent_name = self.select(request.task_type, request.route_draw < self.explore_share)
        if agent_name is None:  # cold start: the model knows no agent yet
            agents = self.platform.scenario.agents
            agent_name = agents[self._fallback % len(agents)].name
            self._fallback += 1
        outcome = self.platform.execute(request, agent_name)
        record_outcome(self.recorder, outcome)
        return outcome
