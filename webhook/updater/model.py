"""The agent-selection model: which agent should get a task of a given type.

For every (task type, agent) pair the model estimates, with uncertainty,

* the success probability of a run: ``Beta(alpha, beta)``. For the counting
  strategies the prior of a pair is centred on its agent's success rate over
  all task types, ``mu = (1 + S) / (2 + N)`` (aggregate counts), worth
  :data:`PAIR_PRIOR_STRENGTH` = 2 runs: ``alpha = 2 mu + s``,
  ``beta = 2 (1 - mu) + n - s``; so an agent never given this task type
  ranks by its record elsewhere, not by a blind 0.5 (an agent never seen at
  all has ``mu = 0.5``, the uniform prior). The aggregate row itself has the
  uniform prior ``Beta(1 + S, 1 + N - S)``. For GRADIENT the mean is the
  logistic model's ``p`` and the concentration the pair's run count:
  ``alpha = p (n + 2)``, ``beta = (1 - p)(n + 2)``;
* the accuracy against real outcomes: a Normal posterior of the mean with a
  prior of :data:`ACCURACY_PRIOR_MEAN` = 1.0 worth
  :data:`ACCURACY_PRIOR_STRENGTH` = 1 observation, i.e.
  ``acc = (a + 1) / (m + 1)``; GRADIENT shrinks its accuracy head's
  prediction ``q`` the same way: ``acc = (m q + 1) / (m + 1)``.

The expected reward that ranks agents is ``E[success] * E[accuracy]``. The
accuracy prior of 1.0 makes a pair without accuracy records rank by its
success rate alone (the multiplier is 1) and lets accuracy records pull it
down smoothly as they accumulate, instead of a jump at the first record;
the slight optimism for pairs without records favours trying them.

Greedy routing (``explore=False``, the orchestrator's usual request; not a
GRADIENT request with a context, ranked by its context means) orders
agents by the expected reward plus :data:`GREEDY_OPTIMISM` posterior
standard deviations of it; the score it reports is the expected reward.
Why: by its mean alone, an agent that was unlucky in its first few runs
(the best one for the task type, say, with one failure among them) ranks
just below a well-known runner-up and then gets only the requests routed
with Thompson sampling, a few per cent of the type's traffic shared with
every other agent, so it can stay unfound for hours. One standard
deviation tips such a near tie towards the agent known from fewer runs; its
next runs settle it, and the bonus shrinks with the evidence, so a
well-known ranking is greedy as before (in the decision benchmark, 0.5 and
0.75 left more runs short of the oracle, 1.5 lowered the median share).
The cost-aware objectives order as before: their trade-off is the
operator's setting. A pair whose history is parked (see
:mod:`.probation`) gets no bonus: its evidence is thin on purpose, and its
retry decides when it is tried.

The model also learns each pair's expected cost and latency per run from
the run events (:class:`Measures`), with the update rule's own forgetting
(see :meth:`~.strategies.Rule.measure_rule`), retrains and persistence.
Which agent ranks first is the :class:`~.objective.Objective`'s call: by
default the expected reward alone (the cost is reported, not used).

An unknown task type (or ``None``) ranks by the aggregate over all task
types. Rankings are cached per model state, so a repeated
:meth:`AgentSelectionModel.predict_best_agent` is a dict lookup and a slice.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batch import EventBatch, context_hash, stable_hash
from .objective import Objective, ObjectiveMode, objective_order
from .strategies import (
    GradientRule,
    Observations,
    Rule,
    UpdateStrategy,
    make_rule,
    rule_from_hyperparameters,
)
from .strategies.bayesian import update_measures

__all__ = [
    "ACCURACY_PRIOR_MEAN",
    "ACCURACY_PRIOR_STRENGTH",
    "GREEDY_OPTIMISM",
    "PAIR_PRIOR_STRENGTH",
    "AgentEstimate",
    "AgentSelectionModel",
    "Measures",
    "Posterior",
]

log = logging.getLogger(__name__)

PAIR_PRIOR_STRENGTH = 2.0
ACCURACY_PRIOR_MEAN = 1.0
ACCURACY_PRIOR_STRENGTH = 1.0
#: Prior variance of single accuracy records (sets the width of the accuracy
#: posterior before records arrive).
ACCURACY_PRIOR_VARIANCE = 0.05
#: Posterior standard deviations of the expected reward added to it for the
#: greedy order under the quality objective (see the module docstring).
GREEDY_OPTIMISM = 1.0


@dataclass(frozen=True, eq=False)
class Posterior:
    """Per pair (``[n_tasks + 1, n_agents]``, last row the aggregate)."""

    alpha: np.ndarray
    beta: np.ndarray
    success: np.ndarray
    success_sd: np.ndarray
    accuracy: np.ndarray
    accuracy_sd: np.ndarray
    reward: np.ndarray
    accuracy_n: np.ndarray


@dataclass(frozen=True, eq=False)
class Measures:
    """Expected cost and latency (seconds) per run of every pair
    (``[n_tasks + 1, n_agents]``, last row the aggregate over task types),
    and the effective run counts behind them. NaN where nothing is known: a
    pair never run falls back to its agent's aggregate, an agent never run
    (or a model saved before costs were learnt) is NaN."""

    cost: np.ndarray
    cost_n: np.ndarray
    latency: np.ndarray
    latency_n: np.ndarray


@dataclass(frozen=True)
class AgentEstimate:
    """One agent in a ranking: what the objective ranked it by (``score``) and
    its expected quality (success x accuracy), cost and latency in seconds
    per run (None when not known yet)."""

    agent: str
    score: float
    quality: float
    cost: float | None
    latency_seconds: float | None


def check_top_k(top_k: object) -> None:
    """Refuse a ``top_k`` that is not an integer >= 1 (every ranking entry point)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")


def _measure(rule: Rule, n_tasks: int, n_agents: int) -> tuple[np.ndarray, np.ndarray]:
    ev = rule.evidence(n_tasks, n_agents, np.zeros(0, dtype=np.uint64),
                       np.zeros(0, dtype=np.uint64))
    n, mean = ev.acc_n, ev.acc_mean
    known = n > 1e-9
    pair = np.where(known, mean, np.where(known[-1], mean[-1], np.nan))
    return pair, n


#: Array-name prefixes of the cost and latency rules' state in a saved model.
_MEASURE_PREFIXES = ("cost__", "latency__")


def _shrink_accuracy(acc_n: np.ndarray, acc_mean: np.ndarray) -> np.ndarray:
    return (acc_n * acc_mean + ACCURACY_PRIOR_STRENGTH * ACCURACY_PRIOR_MEAN) / (
        acc_n + ACCURACY_PRIOR_STRENGTH)


def _posterior(runs: np.ndarray, success: np.ndarray, acc_n: np.ndarray, acc_mean: np.ndarray,
               acc_var: np.ndarray, model_based: bool) -> Posterior:
    if model_based:
        alpha = success * (runs + 2.0)
        beta = (1.0 - success) * (runs + 2.0)
    else:
        successes = runs * success
        agg_alpha = 1.0 + successes[-1]
        mu = agg_alpha / (agg_alpha + 1.0 + runs[-1] - successes[-1])
        prior_alpha = np.vstack([np.broadcast_to(PAIR_PRIOR_STRENGTH * mu, runs[:-1].shape),
                                 np.ones((1, runs.shape[1]))])
        prior_beta = np.vstack([np.broadcast_to(PAIR_PRIOR_STRENGTH * (1.0 - mu), runs[:-1].shape),
                                np.ones((1, runs.shape[1]))])
        alpha = prior_alpha + successes
        beta = prior_beta + runs - successes
    k = acc_n + ACCURACY_PRIOR_STRENGTH
    m0 = ACCURACY_PRIOR_MEAN
    accuracy = _shrink_accuracy(acc_n, acc_mean)
    second = (acc_n * (acc_var + acc_mean**2)
              + ACCURACY_PRIOR_STRENGTH * (m0**2 + ACCURACY_PRIOR_VARIANCE)) / k
    spread = np.maximum(second - accuracy**2, 1e-9)
    mean_success = alpha / (alpha + beta)
    return Posterior(alpha, beta, mean_success, _beta_sd(alpha, beta), accuracy,
                     np.sqrt(spread / k), mean_success * accuracy, acc_n)


def _beta_sd(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    total = alpha + beta
    return np.sqrt(alpha * beta / (total * total * (total + 1.0)))


def _reward_sd(success: np.ndarray, success_sd: np.ndarray, accuracy: np.ndarray,
               accuracy_sd: np.ndarray, accuracy_n: np.ndarray) -> np.ndarray:
    """Standard deviation of ``success * accuracy`` (independent factors, first
    order). A pair without accuracy records has the accuracy prior, the same
    for every agent: its spread says nothing about one agent against another,
    so it is left out (it would hide the difference in run evidence)."""
    accuracy_sd = np.where(accuracy_n > 0.0, accuracy_sd, 0.0)
    return np.sqrt((accuracy * success_sd) ** 2 + (success * accuracy_sd) ** 2)


class AgentSelectionModel:
    """Per (task type, agent) reward estimates under one update strategy.

    Parameters
    ----------
    strategy
        The update rule: a :class:`~.strategies.Rule` object with its own
        hyperparameters (e.g. ``ExponentialRule(half_life_seconds=600)``),
        or an :class:`~.strategies.UpdateStrategy` (or its value) whose rule
        is built from the keyword hyperparameters.
    seed
        Seed of the generator used by ``explore=True``.
    objective
        What :meth:`predict_best_agent` ranks by (:class:`~.objective.Objective`
        or its ``as_dict`` mapping); default the expected reward alone.
    **hyperparameters
        With a strategy name: ``half_life_seconds``, ``retry_after_seconds``,
        ``detect_drops`` (EXPONENTIAL), ``window_size`` (MOVING_AVERAGE),
        ``learning_rate``, ``hash_bits`` (GRADIENT); see the rules in
        :mod:`.strategies` for their meaning and defaults. Those of another
        strategy are checked and have no effect (see
        :func:`~.strategies.make_rule`).

    Examples
    --------
    >>> from autoretrain.exporter.events import run_event
    >>> model = AgentSelectionModel(UpdateStrategy.BAYESIAN, seed=0)
    >>> events = [run_event(str(i), float(i), "a" if i % 2 else "b", "llm",
    ...                     "success" if i % 2 else "failure", 1.0, 0, 0.0)
    ...           for i in range(4)]
    >>> model.update(EventBatch.from_events(events))
    >>> model.predict_best_agent("default")
    [('a', 0.875), ('b', 0.125)]
    """

    def __init__(
        self,
        strategy: UpdateStrategy | str | Rule = UpdateStrategy.EXPONENTIAL,
        *,
        seed: int | None = None,
        objective: Objective | dict[str, Any] | None = None,
        **hyperparameters: Any,
    ) -> None:
        # Validates the hyperparameters (ValueError naming the bad one).
        self._prototype = make_rule(strategy, **hyperparameters)
        self.strategy = self._prototype.strategy
        self.seed = seed
        self.objective = (objective if isinstance(objective, Objective)
                          else Objective.from_dict(objective))
        self._rng = np.random.default_rng(seed)
        self._reset()

    def _reset(self) -> None:
        self.task_types: list[str] = []
        self.agents: list[str] = []
        self._task_row: dict[str, int] = {}
        self._agent_col: dict[str, int] = {}
        self._task_hash = np.zeros(0, dtype=np.uint64)
        self._agent_hash = np.zeros(0, dtype=np.uint64)
        # Newest event time per agent (NaN: unknown, a file saved before it
        # was kept); decides which agent may be dropped (drop_agents).
        self._last_seen = np.zeros(0)
        self._rule: Rule = self._prototype.clone()
        # Cost and latency per run: run events as real-valued observations.
        self._cost_rule: Rule = self._prototype.measure_rule()
        self._latency_rule: Rule = self._prototype.measure_rule()
        self.events_seen = 0
        self._invalidate()

    def _invalidate(self) -> None:
        self._post: Posterior | None = None
        self._measures: Measures | None = None
        self._orders: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._rankings: dict[int, list[tuple[str, float]]] = {}
        # Row -> agent column whose open retry heads the row's greedy order
        # (the half-open state's probes; see _count_probe).
        self._probing: dict[int, int] = {}

    # -- configuration -----------------------------------------------------
    @property
    def rule(self) -> Rule:
        """The update rule's settings (an empty rule; do not update it)."""
        return self._prototype

    def hyperparameters(self) -> dict[str, Any]:
        """The update rule's hyperparameters (its constructor arguments)."""
        return self._prototype.hyperparameters()

    def fresh(self) -> AgentSelectionModel:
        """An empty model with the same strategy, hyperparameters and seed."""
        return AgentSelectionModel(self._prototype.clone(), seed=self.seed,
                                   objective=self.objective)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], seed: int | None = None
                      ) -> AgentSelectionModel:
        """An empty model of the strategy, hyperparameters and objective a saved
        version names (call :meth:`load` with its arrays and ``metadata`` next);
        a version saved before objectives existed ranks by quality."""
        rule = rule_from_hyperparameters(metadata["strategy"],
                                         metadata.get("hyperparameters") or {})
        return cls(rule, seed=seed, objective=metadata.get("objective"))

    def copy(self) -> AgentSelectionModel:
        """An independent copy (the explore generator's state included)."""
        clone = object.__new__(AgentSelectionModel)
        clone.__dict__.update(self.__dict__)
        clone.task_types = list(self.task_types)
        clone.agents = list(self.agents)
        clone._task_row = dict(self._task_row)
        clone._agent_col = dict(self._agent_col)
        clone._last_seen = self._last_seen.copy()
        clone._rule = self._rule.copy()
        clone._cost_rule = self._cost_rule.copy()
        clone._latency_rule = self._latency_rule.copy()
        clone._rng = copy.deepcopy(self._rng)
        clone._invalidate()
        return clone

    # -- learning -----------------------------------------------------------
    def _index(self, names: tuple[str, ...], table: dict[str, int], order: list[str],
                grow: bool) -> np.ndarray:
        out = np.empty(len(names), dtype=np.intp)
        for i, name in enumerate(names):
            pos = table.get(name)
            if pos is None:
                if not grow:
                    out[i] = -1
                    continue
                pos = table[name] = len(order)
                order.append(name)
            out[i] = pos
        return out

    def _lookup(self, task_names: tuple[str, ...], agent_names: tuple[str, ...],
                grow: bool) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``task_names`` and columns of ``agent_names`` (-1: unknown,
        unless ``grow`` adds them, with their hashes and the rules' room)."""
        n_tasks, n_agents = len(self.task_types), len(self.agents)
        task_lookup = self._index(task_names, self._task_row, self.task_types, grow)
        agent_lookup = self._index(agent_names, self._agent_col, self.agents, grow)
        if len(self.task_types) > n_tasks:
            new = [stable_hash(n) for n in self.task_types[n_tasks:]]
            self._task_hash = np.concatenate([self._task_hash, np.array(new, dtype=np.uint64)])
        if len(self.agents) > n_agents:
            new = [stable_hash(n) for n in self.agents[n_agents:]]
            self._agent_hash = np.concatenate([self._agent_hash, np.array(new, dtype=np.uint64)])
            self._last_seen = np.concatenate(
                [self._last_seen, np.full(len(self.agents) - n_agents, -np.inf)])
        self._rule.resize(len(self.task_types), len(self.agents))
        self._cost_rule.resize(len(self.task_types), len(self.agents))
        self._latency_rule.resize(len(self.task_types), len(self.agents))
        return task_lookup, agent_lookup

    def _observations(self, batch: EventBatch, weight: np.ndarray | None,
                      grow: bool) -> Observations:
        task_lookup, agent_lookup = self._lookup(batch.task_names, batch.agent_names, grow)
        task_hash = np.array([stable_hash(n) for n in batch.task_names], dtype=np.uint64)
        agent_hash = np.array([stable_hash(n) for n in batch.agent_names], dtype=np.uint64)
        return Observations(
            rows=task_lookup[batch.task],
            cols=agent_lookup[batch.agent],
            is_run=batch.is_run,
            value=batch.value,
            timestamp=batch.timestamp,
            weight=np.ones(len(batch)) if weight is None else np.asarray(weight, dtype=float),
            task_hash=task_hash[batch.task],
            agent_hash=agent_hash[batch.agent],
            context=batch.context,
        )

    def _measure_observations(self, obs: Observations, batch: EventBatch
                              ) -> tuple[Observations, tuple[np.ndarray, np.ndarray]]:
        """The runs of ``obs`` as measurement observations (the accuracy
        channel: mean and variance) for the measure rules, and their (cost,
        latency) values."""
        run = obs.is_run
        if run.all():
            cols = obs
            cost, latency = batch.cost, batch.duration
        else:
            cols = Observations(obs.rows[run], obs.cols[run], obs.is_run[run], obs.value[run],
                                obs.timestamp[run], obs.weight[run], obs.task_hash[run],
                                obs.agent_hash[run], obs.context[run])
            cost, latency = batch.cost[run], batch.duration[run]
        flags = np.zeros(len(cols), dtype=bool)
        measured = Observations(cols.rows, cols.cols, flags, cost, cols.timestamp, cols.weight,
                                cols.task_hash, cols.agent_hash, cols.context)
        return measured, (cost, latency)

    def update(self, batch: EventBatch, weight: np.ndarray | None = None) -> None:
        """Learn from ``batch`` (oldest first), each event with weight 1 or ``weight``."""
        if not len(batch):
            return
        obs = self._observations(batch, weight, grow=True)
        self._rule.update(obs)
        if obs.is_run.any():
            # Cost and latency of the same runs, in one pass (update_measures).
            measured, values = self._measure_observations(obs, batch)
            update_measures(self._measure_rules(), measured, values)
        np.maximum.at(self._last_seen, obs.cols, obs.timestamp)
        self.events_seen += len(batch)
        self._invalidate()

    def reweight(self, batch: EventBatch, current_weight: np.ndarray, new_weight: np.ndarray,
                 discount: float) -> None:
        """Give the newest events ``batch`` (already learnt with ``current_weight``)
        ``new_weight`` and scale each pair's older evidence by its factor:
        ``discount``, 0 at a change point (forgetting strategies), 1 for pairs
        ``batch`` does not observe (see :func:`~.retrain.incremental_retrain`)."""
        if not 0.0 <= discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {discount!r}")
        self._rule.reweight(self._observations(batch, current_weight, grow=True),
                            np.asarray(new_weight, dtype=float), discount)
        # Cost and latency are left as they are: their evidence is already the
        # newest runs of each pair (at most MEASURE_MEMORY_RUNS of them), which
        # is what the reweighting would favour, and the cap makes taking the
        # buffered runs out inexact. A full retrain rebuilds them from the
        # buffer like everything else.
        self._invalidate()

    # -- estimates ------------------------------------------------------------
    def posterior(self) -> Posterior:
        """Posteriors of all pairs (cached until the next update)."""
        if self._post is None:
            n_tasks, n_agents = len(self.task_types), len(self.agents)
            ev = self._rule.evidence(n_tasks, n_agents, self._task_hash, self._agent_hash)
            self._post = _posterior(ev.runs, ev.success, ev.acc_n, ev.acc_mean, ev.acc_var,
                                    isinstance(self._rule, GradientRule))
        return self._post

    def measures(self) -> Measures:
        """Expected cost and latency of all pairs (cached until the next update)."""
        if self._measures is None:
            n_tasks, n_agents = len(self.task_types), len(self.agents)
            cost, cost_n = _measure(self._cost_rule, n_tasks, n_agents)
            latency, latency_n = _measure(self._latency_rule, n_tasks, n_agents)
            self._measures = Measures(cost, cost_n, latency, latency_n)
        return self._measures

    def event_means(self, batch: EventBatch) -> tuple[np.ndarray, np.ndarray]:
        """Predicted (success probability, accuracy) for each event's pair.

        Names this model has not seen get the prior (success 0.5, accuracy
        1.0); an unknown task type uses the aggregate row.
        """
        obs = self._observations(batch, None, grow=False)
        post = self.posterior()
        rows = np.where(obs.rows < 0, len(self.task_types), obs.rows)
        known = obs.cols >= 0
        cols = np.where(known, obs.cols, 0)
        if not self.agents:
            n = len(batch)
            return np.full(n, 0.5), np.full(n, ACCURACY_PRIOR_MEAN)
        success = np.where(known, post.success[rows, cols], 0.5)
        accuracy = np.where(known, post.accuracy[rows, cols], ACCURACY_PRIOR_MEAN)
        means = self._rule.event_means(obs)
        if means is not None:  # GRADIENT: the logistic heads know the context
            acc_n = np.where(known, post.accuracy_n[rows, cols], 0.0)
            success, accuracy = means[0], _shrink_accuracy(acc_n, means[1])
        return success, accuracy

    def _row(self, task_type: str | None) -> int:
        if task_type is None:
            return len(self.task_types)
        return self._task_row.get(task_type, len(self.task_types))

    def predict_best_agent(
        self,
        task_type: str | None = None,
        context: dict[str, Any] | None = None,
        top_k: int = 3,
        explore: bool = False,
    ) -> list[tuple[str, float]]:
        """The ``top_k`` agents for ``task_type`` with their expected reward.

        Parameters
        ----------
        task_type
            None or an unknown type ranks by the aggregate over task types.
        context
            Used by GRADIENT only (hashed ``key=value`` features).
        top_k
            How many agents to return (at most the number known).
        explore
            Thompson sampling: rank by a draw from each posterior instead
            of its mean, so uncertain agents get tried; an agent on
            probation for ``task_type`` (see ``retry_after_seconds``) ranks
            by its reward before the change point, so it gets retried.

        Returns
        -------
        list of (agent, score), best first, under the model's
        :attr:`objective`; score is the expected (or the sampled) ``success
        * accuracy`` (the default objective and ``constrained``), or that
        minus the weighted cost and latency (``weighted``). Without
        ``explore`` the default objective orders by the expected value plus
        :data:`GREEDY_OPTIMISM` posterior standard deviations of it, so a
        lower score may come first (an agent known from few runs, tried in
        a near tie).
        """
        check_top_k(top_k)
        if not self.agents:
            return []
        if not explore and not (context and isinstance(self._rule, GradientRule)):
            # The orchestrator's per-request path: a dict lookup and a slice.
            row = self._row(task_type)
            ranking = self._rankings.get(row)
            if ranking is None:
                order, score = self._greedy_order(row)
                ranking = [(self.agents[i], float(score[i])) for i in order]
                if row in self._probing:  # counted per request, so not cached
                    self._count_probe(row)
                else:
                    self._rankings[row] = ranking
            return ranking[:top_k]
        return self._rank(task_type, context, top_k, explore, estimates=False)

    def rank_agents(
        self,
        task_type: str | None = None,
        context: dict[str, Any] | None = None,
        top_k: int = 3,
        explore: bool = False,
    ) -> list[AgentEstimate]:
        """:meth:`predict_best_agent` with each agent's expected quality, cost and latency."""
        check_top_k(top_k)
        return self._rank(task_type, context, top_k, explore, estimates=True)

    def _estimates(self, row: int, order: np.ndarray, score: np.ndarray
                   ) -> list[AgentEstimate]:
        reward = self.posterior().reward[row]
        m = self.measures()

        def known(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        return [AgentEstimate(self.agents[i], float(score[i]), float(reward[i]),
                              known(m.cost[row, i]), known(m.latency[row, i])) for i in order]

    def _rank(self, task_type: str | None, context: dict[str, Any] | None, top_k: int,
              explore: bool, estimates: bool) -> list[Any]:
        # top_k was checked by the entry point (predict_best_agent, rank_agents).
        if not self.agents:
            return []
        row = self._row(task_type)
        quality_only = self.objective.mode is ObjectiveMode.QUALITY
        use_context = bool(context) and isinstance(self._rule, GradientRule)
        if not explore and not use_context:
            # rank_agents' greedy path: predict_best_agent answers its own
            # (the cached rankings) and calls here only to explore or for a
            # context.
            order, score = self._greedy_order(row)
            if row in self._probing:
                self._count_probe(row)
            return self._estimates(row, order[:top_k], score)
        post = self.posterior()
        alpha, beta = post.alpha[row], post.beta[row]
        success, success_sd = post.success[row], post.success_sd[row]
        accuracy, accuracy_sd = post.accuracy[row], post.accuracy_sd[row]
        if use_context:
            assert context is not None and isinstance(self._rule, GradientRule)
            ctx = np.array([context_hash(k, v) for k, v in context.items()], dtype=np.uint64)
            known = row < len(self.task_types)
            success, head_accuracy = self._rule.context_means(
                int(self._task_hash[row]) if known else None, self._agent_hash, ctx)
            accuracy = _shrink_accuracy(post.accuracy_n[row], head_accuracy)
            concentration = alpha + beta
            success_sd = _beta_sd(success * concentration, (1.0 - success) * concentration)
        if explore:
            # Thompson sampling with Gaussian draws of the posteriors' mean and
            # spread (the Beta's exact sd for success), clipped to [0, 1]:
            # numpy's Beta sampler alone costs ~14 us per call for 10 agents,
            # one normal draw ~1.5 us, and the ranking it induces is the same
            # in all but the smallest counts, where both explore widely.
            z = self._rng.standard_normal((2, len(success)))
            success = np.minimum(np.maximum(success + success_sd * z[0], 0.0), 1.0)
            accuracy = np.minimum(np.maximum(accuracy + accuracy_sd * z[1], 0.0), 1.0)
        score = success * accuracy
        if explore and row < len(self.task_types):
            retry = self._rule.probation_scores(len(self.task_types), len(self.agents))
            if retry is not None:
                score = np.where(np.isnan(retry[row]), score, retry[row])
        if quality_only:
            order = np.argsort(-score, kind="stable")[:top_k]
        else:
            # A draw carries its uncertainty; a context mean is given the pair's.
            spread = (np.zeros(len(score)) if explore
                      else _reward_sd(success, success_sd, accuracy, accuracy_sd,
                                      post.accuracy_n[row]))
            m = self.measures()
            order, score = objective_order(self.objective, score, spread, m.cost[row],
                                           m.latency[row])
            order = order[:top_k]
        if estimates:
            return self._estimates(row, order, score)
        return [(self.agents[i], float(score[i])) for i in order]

    def _greedy_order(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Order and score of the row's agents by their posterior means (cached)."""
        cached = self._orders.get(row)
        if cached is not None:
            return cached
        self._orders[row] = cached = self._order_by_means(row)
        return cached

    def _order_by_means(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        post = self.posterior()
        reward = post.reward[row]
        retry = None
        if row < len(self.task_types):
            # An open retry's first requests are routed greedily too (the
            # half-open state's probes), ranked by the pair's parked reward.
            retry = self._rule.probation_scores(len(self.task_types), len(self.agents),
                                                probing=True)
            if retry is not None:
                reward = np.where(np.isnan(retry[row]), reward, retry[row])
        if self.objective.mode is ObjectiveMode.QUALITY:
            index = reward + GREEDY_OPTIMISM * self._optimism_sd(row, post)
            order, score = np.argsort(-index, kind="stable"), reward
        else:
            m = self.measures()
            spread = _reward_sd(post.success[row], post.success_sd[row], post.accuracy[row],
                                post.accuracy_sd[row], post.accuracy_n[row])
            order, score = objective_order(self.objective, reward, spread, m.cost[row],
                                           m.latency[row])
        if retry is not None and len(order) and not np.isnan(retry[row, order[0]]):
            self._probing[row] = int(order[0])
        return order, score

    def _optimism_sd(self, row: int, post: Posterior) -> np.ndarray:
        """The row's reward sd the greedy order adds a share of: 0 for pairs
        whose history is parked, and on the aggregate row (the ranking of a
        task type the model has not seen: its first outcomes make the type
        known, and its own row, bonus included, decides from then on)."""
        if row >= len(self.task_types):
            return np.zeros(len(self.agents))
        sd = _reward_sd(post.success[row], post.success_sd[row], post.accuracy[row],
                        post.accuracy_sd[row], post.accuracy_n[row])
        if self._rule.probation:
            sd[[c for c in self._rule.probation.parked_columns(row) if c < len(sd)]] = 0.0
        return sd

    def _count_probe(self, row: int) -> None:
        """A greedy request of ``row`` was routed: if an open retry heads it,
        count a probe, and while the retry should get no more (its probes
        spent, or PROBES_IN_FLIGHT awaiting their outcomes) rank the row
        without it. Counted where requests are routed, not only where their
        outcomes arrive, so the probes a still-broken agent gets are bounded
        (per model instance, so per serving process, and per reload) however
        late its outcomes come back."""
        col = self._probing.get(row)
        if col is not None and self._rule.route_probe(row, col):
            del self._probing[row]
            self._orders.pop(row, None)
            self._rankings.pop(row, None)

    def probation_events(self) -> list[tuple[str, str, str]]:
        """``(event, task_type, agent)`` of the parks, restorations, failed
        retries and give-ups since the last call (see :mod:`.probation`),
        oldest first; the list is emptied. A copy starts with none."""
        probation = self._rule.probation
        if probation is None or not probation.journal:
            return []
        events = [(event, self.task_types[r], self.agents[c])
                  for event, (r, c) in probation.journal]
        probation.journal.clear()
        return events

    def drop_detections(self) -> list[tuple[str, str]]:
        """``(task_type, agent)`` of the pairs the drop detector set aside
        between retrains since the last call (the fast path, see
        :mod:`.drops`), oldest first; the list is emptied. A copy starts with
        none. Each also appears as a ``parked`` probation event."""
        return [(self.task_types[r], self.agents[c]) for r, c in self._rule.take_detections()]

    def agent_last_seen(self) -> dict[str, float]:
        """Newest event time of each agent (NaN when unknown: loaded from a
        file saved before it was kept)."""
        return {name: float(t) for name, t in zip(self.agents, self._last_seen, strict=True)}

    def agent_evidence(self) -> np.ndarray:
        """Per agent, its runs and accuracy records as they weigh now (all task types)."""
        if not self.agents:
            return np.zeros(0)
        post = self.posterior()
        # alpha + beta is the pair prior plus the effective runs; the last row
        # is the aggregate over task types.
        return (post.alpha[-1] + post.beta[-1]) + post.accuracy_n[-1]

    def drop_agents(self, names: list[str] | set[str]) -> list[str]:
        """Forget ``names`` (their every pair) and return those dropped.

        The other agents keep their state exactly: their columns of every
        per-pair array, parked histories and last-seen times; the hashed
        weights of GRADIENT are shared and kept. The result saves and loads
        like any model (it goes through :meth:`to_arrays` and :meth:`load`).
        """
        drop = [n for n in self.agents if n in set(names)]
        if not drop:
            return []
        n_tasks, n_agents = len(self.task_types), len(self.agents)
        keep = np.array([i for i, n in enumerate(self.agents) if n not in set(drop)],
                        dtype=np.intp)
        arrays = self.to_arrays()
        pair_names = set(self._rule.pair_arrays)
        for prefix, rule in zip(_MEASURE_PREFIXES, self._measure_rules(), strict=True):
            pair_names.update(prefix + name for name in rule.pair_arrays)
        for name, array in arrays.items():
            if name in pair_names and array.shape[:2] == (n_tasks, n_agents):
                arrays[name] = array[:, keep]
        if "parked_pairs" in arrays and len(arrays["parked_pairs"]):
            new_col = np.full(n_agents, -1, dtype=np.int64)
            new_col[keep] = np.arange(len(keep))
            pairs = np.asarray(arrays["parked_pairs"], dtype=np.int64)
            kept = new_col[pairs[:, 1]] >= 0
            for name in [k for k in arrays if k.startswith("parked_")]:
                arrays[name] = np.asarray(arrays[name])[kept]
            pairs = pairs[kept]
            pairs[:, 1] = new_col[pairs[:, 1]]
            arrays["parked_pairs"] = pairs
        arrays["agent_last_seen"] = self._last_seen[keep]
        metadata = self.metadata()
        metadata["agents"] = [self.agents[i] for i in keep]
        rng = self._rng
        self.load(arrays, metadata)
        self._rng = rng
        return drop

    def set_aside(self) -> list[tuple[str, str]]:
        """``(task_type, agent)`` of the pairs whose history is parked (set
        aside after a drop, awaiting or on a retry)."""
        probation = self._rule.probation
        if not probation:
            return []
        keys = list(probation.pairs)  # one C-level copy: safe against a concurrent update
        return [(self.task_types[r], self.agents[c]) for r, c in keys
                if r < len(self.task_types) and c < len(self.agents)]

    def keep_set_aside(self, serving: AgentSelectionModel) -> None:
        """Hold the pairs ``serving`` holds set aside as it does (a full
        retrain's candidate, fed the buffer, calls this).

        A fresh model has no probation, and its drop detector sees the buffer
        in one batch, with no earlier evidence to test it against: without
        this, every promoted full retrain (the alert's ``retrain="full"``, a
        scheduled one) put broken agents back into greedy routing on the
        buffer's mix of runs from before and after their drop, ended the
        ``AgentSetAside`` alert while they were still broken, and threw away
        the histories their retries restore. So the breaker state carries
        over, and with it the pair's evidence as ``serving`` holds it (a
        little of its history and its runs since the park), which the
        buffer's runs from before the drop would otherwise dilute.
        """
        probation = serving._rule.probation
        if not probation:
            return
        keys = list(probation.pairs)
        rows, cols = self._lookup(tuple(serving.task_types[r] for r, _ in keys),
                                  tuple(serving.agents[c] for _, c in keys), grow=True)
        self._rule.keep_parked(serving._rule, [(key, (int(r), int(c)))
                                               for key, r, c in zip(keys, rows, cols, strict=True)])
        self._invalidate()

    def parked_pairs(self) -> int:
        """(task type, agent) pairs whose history is parked awaiting a retry."""
        return self._rule.parked_pairs()

    # -- persistence --------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The learnt state as named arrays (no object arrays: loadable without pickle)."""
        n_tasks, n_agents = len(self.task_types), len(self.agents)
        arrays = self._rule.arrays(n_tasks, n_agents)
        for prefix, rule in zip(_MEASURE_PREFIXES, self._measure_rules(), strict=True):
            arrays.update({prefix + k: v for k, v in rule.arrays(n_tasks, n_agents).items()})
        arrays["agent_last_seen"] = self._last_seen.copy()
        return arrays

    def _measure_rules(self) -> tuple[Rule, Rule]:
        return self._cost_rule, self._latency_rule

    def metadata(self) -> dict[str, Any]:
        """JSON-ready description: strategy, hyperparameters, objective, names,
        events seen."""
        return {
            "strategy": self.strategy.value,
            "hyperparameters": self.hyperparameters(),
            "objective": self.objective.as_dict(),
            "task_types": list(self.task_types),
            "agents": list(self.agents),
            "events_seen": self.events_seen,
        }

    def load(self, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
        """Replace the state with a saved one; ValueError when it does not fit.

        The objective stays this model's own (the saved one is in
        ``metadata``: :meth:`from_metadata` builds a model ranking by it).
        A version saved before costs were learnt loads with cost and
        latency unknown until runs teach them."""
        if metadata.get("strategy") != self.strategy.value:
            raise ValueError(
                f"saved strategy {metadata.get('strategy')!r} is not {self.strategy.value!r}"
            )
        task_types = [str(n) for n in metadata["task_types"]]
        agents = [str(n) for n in metadata["agents"]]
        rule = self._prototype.clone()
        rule.load_arrays(arrays, len(task_types), len(agents))
        measures = []
        for prefix in _MEASURE_PREFIXES:
            measure = self._prototype.measure_rule()
            own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            if own:
                measure.load_arrays(own, len(task_types), len(agents))
            else:  # saved before costs were learnt: unknown until runs teach them
                measure.resize(len(task_types), len(agents))
            measures.append(measure)
        self._reset()
        self._rule = rule
        self._cost_rule, self._latency_rule = measures
        self.task_types = task_types
        self.agents = agents
        self._task_row = {n: i for i, n in enumerate(task_types)}
        self._agent_col = {n: i for i, n in enumerate(agents)}
        self._task_hash = np.array([stable_hash(n) for n in task_types], dtype=np.uint64)
        self._agent_hash = np.array([stable_hash(n) for n in agents], dtype=np.uint64)
        last_seen = arrays.get("agent_last_seen")
        if last_seen is not None and np.shape(last_seen) != (len(agents),):
            raise ValueError(f"array 'agent_last_seen' has shape {np.shape(last_seen)}, "
                             f"expected {(len(agents),)}")
        # Absent (saved before it was kept): unknown.
        self._last_seen = (np.full(len(agents), np.nan) if last_seen is None
                           else np.array(last_seen, dtype=np.float64))
        self.events_seen = int(metadata.get("events_seen", 0))
