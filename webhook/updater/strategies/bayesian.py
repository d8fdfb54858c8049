"""BAYESIAN: Beta-Bernoulli counts that never forget (the original design's bandit)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar

import numpy as np

from .base import (
    Evidence,
    Observations,
    Rule,
    UpdateStrategy,
    evidence_from_sums,
    retrain_factors,
)

__all__ = ["MEASURE_MEMORY_RUNS", "BayesianRule", "update_measures"]

#: Effective runs of cost (or latency) evidence a pair keeps at most (see
#: :meth:`BayesianRule.update_measure`): a price that doubles is believed
#: half-way after about ``0.7 x`` this many of the agent's runs.
MEASURE_MEMORY_RUNS = 20.0


class BayesianRule(Rule):
    """Beta-Bernoulli counts that never forget (the original design's bandit).

    Update of a pair by a run observation: ``n += w_i``, ``s += w_i y_i``;
    by an accuracy observation: ``m += w_i``, ``a += w_i y_i``,
    ``q += w_i y_i**2``. The success posterior is ``Beta(1 + s, 1 + n - s)``.
    Order does not matter, so a batch is one ``np.add.at`` per array.
    """

    strategy = UpdateStrategy.BAYESIAN
    #: The evidence sums ``[n, s, m, a, q]``, in this order.
    evidence_arrays: ClassVar[tuple[str, ...]] = ("runs", "successes", "acc_n", "acc_sum",
                                                  "acc_sq")
    pair_arrays = evidence_arrays
    #: An incremental retrain drops the older evidence of a pair whose buffered
    #: runs contradict it: with the default ``retrain_discount`` of 1 (issue
    #: 14) that is how a retrain moves counts that never forget.
    restarts_at_change_points = True

    def __init__(self) -> None:
        super().__init__()
        self.runs = np.zeros((0, 0))
        self.successes = np.zeros((0, 0))
        self.acc_n = np.zeros((0, 0))
        self.acc_sum = np.zeros((0, 0))
        self.acc_sq = np.zeros((0, 0))

    def _scale(self, obs: Observations) -> np.ndarray:
        return obs.weight

    def update(self, obs: Observations) -> None:
        self._accumulate(obs)

    def _accumulate(self, obs: Observations) -> None:
        if not len(obs):
            return
        flat = obs.rows * self.capacity[1] + obs.cols
        w = self._scale(obs)
        run = obs.is_run
        acc = ~run
        v = obs.value
        if not run.any():  # measurements (cost, latency) and accuracy-only batches
            np.add.at(self.acc_n.reshape(-1), flat, w)
            np.add.at(self.acc_sum.reshape(-1), flat, w * v)
            np.add.at(self.acc_sq.reshape(-1), flat, w * v**2)
            return
        if run.all():  # runs only (the common streamed batch): no masks to apply
            np.add.at(self.runs.reshape(-1), flat, w)
            np.add.at(self.successes.reshape(-1), flat, w * v)
            return
        np.add.at(self.runs.reshape(-1), flat[run], w[run])
        np.add.at(self.successes.reshape(-1), flat[run], w[run] * v[run])
        np.add.at(self.acc_n.reshape(-1), flat[acc], w[acc])
        np.add.at(self.acc_sum.reshape(-1), flat[acc], w[acc] * v[acc])
        np.add.at(self.acc_sq.reshape(-1), flat[acc], w[acc] * v[acc] ** 2)

    def update_measure(self, obs: Observations) -> None:
        """:meth:`update`, then cap each touched pair's measurement evidence at
        :data:`MEASURE_MEMORY_RUNS` effective runs (older runs weigh less in
        proportion): a price is nearly deterministic, so its estimate needs
        few runs, and a price that changed is followed within a bounded
        number of the agent's runs, not only after the half-life (nor never,
        for the rules that do not forget)."""
        self.update(obs)
        if not len(obs):
            return
        self._cap_measure(self._touched(obs.rows * self.capacity[1] + obs.cols))

    def _touched(self, flat: np.ndarray) -> np.ndarray:
        """The distinct pairs of ``flat``, ascending (a mask over the pairs:
        cheaper than ``np.unique`` of a full retrain's 100,000 runs)."""
        touched = np.zeros(self.capacity[0] * self.capacity[1], dtype=bool)
        touched[flat] = True
        return np.flatnonzero(touched)

    def _cap_measure(self, pairs: np.ndarray) -> None:
        """The cap of :meth:`update_measure` on ``pairs``."""
        n = self.acc_n.reshape(-1)[pairs] * self._decay()
        over = n > MEASURE_MEMORY_RUNS
        if not over.any():
            return
        pairs, scale = pairs[over], MEASURE_MEMORY_RUNS / n[over]
        for name in ("acc_n", "acc_sum", "acc_sq"):
            getattr(self, name).reshape(-1)[pairs] *= scale

    def _advance(self, obs: Observations) -> None:
        """Move the rule's clock to ``obs`` before they are weighed (here: none)."""

    def _same_clock(self, other: BayesianRule) -> bool:
        """Whether ``other`` weighs an observation as this rule does (here: always)."""
        return True

    def _decay(self) -> float:
        """Factor from the stored sums to effective evidence now (1: no forgetting)."""
        return 1.0

    def _pair_sums(self, obs: Observations) -> list[np.ndarray]:
        """``[n, s, m, a, q]`` of ``obs`` per pair, each observation counted once,
        in the stored form."""
        flat = obs.rows * self.capacity[1] + obs.cols
        w = self._scale(replace(obs, weight=np.ones(len(obs))))
        run, v = obs.is_run, obs.value
        out = []
        for mask, x in ((run, w), (run, w * v), (~run, w), (~run, w * v), (~run, w * v * v)):
            total = np.zeros(self.capacity[0] * self.capacity[1])
            np.add.at(total, flat[mask], x[mask])
            out.append(total.reshape(self.capacity))
        return out

    def reweight(self, obs: Observations, new_weight: np.ndarray, discount: float) -> None:
        # Remove the buffered events' current contribution exactly, scale what
        # remains (older evidence) per pair, then add them back with new weights.
        self._accumulate(replace(obs, weight=-obs.weight))
        older = []
        for name in self.evidence_arrays:
            array = getattr(self, name)
            np.maximum(array, 0.0, out=array)  # rounding may leave -1e-17
            older.append(array)
        decay = self._decay()
        older_now = [x * decay for x in older]
        buffered_now = [x * decay for x in self._pair_sums(obs)]
        factor = retrain_factors(older_now, buffered_now, discount,
                                 self.restarts_at_change_points, self._park_z())
        restored = self._change_points(factor == 0.0, older_now, buffered_now)
        for array in older:
            array *= factor
        if restored is not None:
            for array, extra in zip(older, restored, strict=True):
                array += extra
        self._accumulate(replace(obs, weight=new_weight))

    def _park_z(self) -> float | None:
        """``park_z`` of :func:`retrain_factors` (None: no probation)."""
        return None

    def _change_points(self, changed: np.ndarray, older: list[np.ndarray],
                       buffered: list[np.ndarray]) -> list[np.ndarray] | None:
        """Called by :meth:`reweight` before the older evidence of ``changed``
        pairs is dropped (sums as they weigh now); returns stored-form sums to
        add back after the drop, or None. Here: nothing (BAYESIAN never drops)."""
        return None

    def _sums(self, n_tasks: int, n_agents: int) -> list[np.ndarray]:
        return [getattr(self, name)[:n_tasks, :n_agents] for name in self.evidence_arrays]

    def evidence(self, n_tasks: int, n_agents: int, task_hash: np.ndarray,
                 agent_hash: np.ndarray) -> Evidence:
        return evidence_from_sums(*self._sums(n_tasks, n_agents))


def update_measures(rules: Sequence[Rule], obs: Observations,
                    values: Sequence[np.ndarray]) -> None:
    """``rule.update_measure(replace(obs, value=v))`` for each rule and its
    values: the measurements (cost, latency) of the same runs.

    Rules of one counting kind, in step (same capacity, same clock), are fed
    in one pass: the runs' weights, pairs and touched pairs are computed
    once for all of them; each rule's arrays get exactly the additions and
    the cap :meth:`BayesianRule.update_measure` would give them. Other
    rules (MOVING_AVERAGE's window, rules out of step) get their own call.
    """
    counted = [r for r in rules if isinstance(r, BayesianRule)]
    fused = len(obs) > 0 and len(counted) == len(rules) > 0 and all(
        type(r) is type(counted[0]) and r.capacity == counted[0].capacity for r in counted)
    if fused:
        # Advancing a clock twice to the same observations is a no-op, so a
        # fallback below may advance again.
        for counting in counted:
            counting._advance(obs)
        fused = all(counted[0]._same_clock(r) for r in counted)
    if not fused:
        for any_rule, v in zip(rules, values, strict=True):
            any_rule.update_measure(replace(obs, value=v))
        return
    first = counted[0]
    flat = obs.rows * first.capacity[1] + obs.cols
    w = first._scale(obs)
    pairs = first._touched(flat)
    for rule, v in zip(counted, values, strict=True):
        np.add.at(rule.acc_n.reshape(-1), flat, w)
        np.add.at(rule.acc_sum.reshape(-1), flat, w * v)
        np.add.at(rule.acc_sq.reshape(-1), flat, w * v**2)
        rule._cap_measure(pairs)
