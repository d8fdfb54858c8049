"""BAYESIAN: Beta-Bernoulli counts that never forget (the original design's bandit)."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np

from .base import (
    CHANGE_MIN_EVIDENCE,
    CHANGE_Z,
    Evidence,
    Observations,
    Rule,
    UpdateStrategy,
    evidence_from_sums,
    retrain_factors,
)

__all__ = ["BayesianRule"]

#: Up to this many pairs, a measure rule finds a batch's pairs by a bincount.
_DENSE_PAIRS = 4096


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
        np.add.at(self.runs.reshape(-1), flat[run], w[run])
        np.add.at(self.successes.reshape(-1), flat[run], w[run] * v[run])
        np.add.at(self.acc_n.reshape(-1), flat[acc], w[acc])
        np.add.at(self.acc_sum.reshape(-1), flat[acc], w[acc] * v[acc])
        np.add.at(self.acc_sq.reshape(-1), flat[acc], w[acc] * v[acc] ** 2)

    def update_measure(self, obs: Observations) -> None:
        if self.restarts_at_change_points and len(obs):
            self._restart_shifted(obs)
        self.update(obs)

    def _restart_shifted(self, obs: Observations) -> None:
        """Drop the older measurements of each pair whose measurements in ``obs``
        differ from them by more than :data:`~.base.CHANGE_Z` standard errors,
        with at least :data:`~.base.CHANGE_MIN_EVIDENCE` on both sides (the
        test of :func:`~.base.retrain_factors`, per batch and only for the
        pairs ``obs`` touches): a price that doubled is followed within a few
        of the agent's runs, not after the half-life."""
        flat = obs.rows * self.capacity[1] + obs.cols
        size = self.capacity[0] * self.capacity[1]
        if size <= _DENSE_PAIRS:  # a bincount over all pairs is cheaper than a sort
            inverse = flat
            counts = np.bincount(flat, minlength=size).astype(float)
            pairs = np.flatnonzero(counts >= CHANGE_MIN_EVIDENCE)
            if not len(pairs):
                return
        else:
            pairs, inverse = np.unique(flat, return_inverse=True)
            counts = np.bincount(inverse, minlength=len(pairs)).astype(float)
            if counts.max() < CHANGE_MIN_EVIDENCE:
                return
        v = obs.value
        sums = np.bincount(inverse, weights=v, minlength=len(counts))
        squares = np.bincount(inverse, weights=v * v, minlength=len(counts))
        if size <= _DENSE_PAIRS:
            counts, sums, squares = counts[pairs], sums[pairs], squares[pairs]
        mean_b = sums / counts
        var_b = np.maximum(squares / counts - mean_b**2, 0.0)
        decay = self._decay()
        n_o = self.acc_n.reshape(-1)[pairs] * decay
        mean_o = self.acc_sum.reshape(-1)[pairs] * decay / np.maximum(n_o, 1e-12)
        var_o = np.maximum(self.acc_sq.reshape(-1)[pairs] * decay / np.maximum(n_o, 1e-12)
                           - mean_o**2, 0.0)
        se = np.sqrt(var_o / np.maximum(n_o, 1e-12) + var_b / counts)
        # A relative floor: measurements with (nearly) no spread must not
        # restart on rounding.
        se = np.maximum(se, 1e-6 * np.maximum(np.abs(mean_o), np.abs(mean_b)))
        shifted = ((n_o >= CHANGE_MIN_EVIDENCE) & (counts >= CHANGE_MIN_EVIDENCE)
                   & (np.abs(mean_b - mean_o) > CHANGE_Z * np.maximum(se, 1e-12)))
        for name in ("acc_n", "acc_sum", "acc_sq"):
            getattr(self, name).reshape(-1)[pairs[shifted]] = 0.0

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
