"""MOVING_AVERAGE: a sliding window of each pair's last observations."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import (
    Evidence,
    Observations,
    Rule,
    UpdateStrategy,
    check_int,
    evidence_from_sums,
    retrain_factors,
)
from .bayesian import MEASURE_MEMORY_RUNS

__all__ = ["WINDOW_SIZE", "MovingAverageRule"]

#: Default observations per pair and kind in the window.
WINDOW_SIZE = 100


def _rank_in_pair(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stable order by pair, each element's rank within its pair, its pair's size."""
    order = np.argsort(flat, kind="stable")
    sorted_flat = flat[order]
    n = sorted_flat.shape[0]
    starts = np.flatnonzero(np.r_[True, sorted_flat[1:] != sorted_flat[:-1]])
    sizes = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, sizes)
    return order, rank, np.repeat(sizes, sizes)


class MovingAverageRule(Rule):
    """A sliding window of the last ``N`` observations of each pair and kind.

    Each pair has a ring of ``N`` (value, weight) slots for runs and one for
    accuracy records; observation ``k`` of a pair goes to slot ``k mod N``,
    evicting observation ``k - N``. Evidence is over the window only:
    ``n = sum_window w_j``, ``s = sum_window w_j y_j`` (likewise ``m``,
    ``a``, ``q``); the success posterior is ``Beta(1 + s, 1 + n - s)``.
    A batch writes only each pair's last ``N`` observations, vectorised.
    """

    strategy = UpdateStrategy.MOVING_AVERAGE
    restarts_at_change_points = True
    pair_arrays = ("run_value", "run_weight", "run_count", "acc_value", "acc_weight", "acc_count")

    def __init__(self, window_size: int = WINDOW_SIZE) -> None:
        super().__init__()
        self.window_size = check_int("window_size", window_size, 1)
        n = self.window_size
        self.run_value = np.zeros((0, 0, n))
        self.run_weight = np.zeros((0, 0, n))
        self.run_count = np.zeros((0, 0), dtype=np.int64)
        self.acc_value = np.zeros((0, 0, n))
        self.acc_weight = np.zeros((0, 0, n))
        self.acc_count = np.zeros((0, 0), dtype=np.int64)

    def _rings(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]]:
        return [
            (self.run_value, self.run_weight, self.run_count, True),
            (self.acc_value, self.acc_weight, self.acc_count, False),
        ]

    def update(self, obs: Observations) -> None:
        if not len(obs):
            return
        n_slots = self.window_size
        for values, weights, counts, is_run in self._rings():
            mask = obs.is_run if is_run else ~obs.is_run
            if not mask.any():
                continue
            flat = (obs.rows * self.capacity[1] + obs.cols)[mask]
            order, rank, size = _rank_in_pair(flat)
            keep = rank >= size - n_slots  # older ones would be evicted in this batch
            pair = flat[order][keep]
            counts_flat = counts.reshape(-1)
            slot = (counts_flat[pair] + rank[keep]) % n_slots
            values.reshape(-1, n_slots)[pair, slot] = obs.value[mask][order][keep]
            weights.reshape(-1, n_slots)[pair, slot] = obs.weight[mask][order][keep]
            np.add.at(counts_flat, flat, 1)

    def reweight(self, obs: Observations, new_weight: np.ndarray, discount: float) -> None:
        # The buffered events are each pair's newest observations, so the
        # j-th newest of a pair sits in slot (count - 1 - j) mod N, if j < N.
        n_slots = self.window_size
        factor = retrain_factors(*self._older_and_buffered(obs), discount,
                                 self.restarts_at_change_points)[..., None]
        for _, weights, counts, is_run in self._rings():
            weights *= factor
            mask = obs.is_run if is_run else ~obs.is_run
            if not mask.any():
                continue
            flat = (obs.rows * self.capacity[1] + obs.cols)[mask]
            order, rank, size = _rank_in_pair(flat)
            from_end = size - 1 - rank
            pair = flat[order]
            keep = (from_end < n_slots) & (from_end < counts.reshape(-1)[pair])
            slot = (counts.reshape(-1)[pair[keep]] - 1 - from_end[keep]) % n_slots
            weights.reshape(-1, n_slots)[pair[keep], slot] = new_weight[mask][order][keep]

    def _older_and_buffered(self, obs: Observations) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Window sums without the buffered observations (as they weigh now), and
        the buffered observations' sums (each counted once), per pair."""
        rw, rv, aw, av = self.run_weight, self.run_value, self.acc_weight, self.acc_value
        window = [rw.sum(-1), (rw * rv).sum(-1), aw.sum(-1), (aw * av).sum(-1),
                  (aw * av * av).sum(-1)]
        flat = obs.rows * self.capacity[1] + obs.cols
        run, v = obs.is_run, obs.value
        size = self.capacity[0] * self.capacity[1]
        buffered: list[np.ndarray] = []
        current: list[np.ndarray] = []
        for mask, x in ((run, 1.0), (run, v), (~run, 1.0), (~run, v), (~run, v * v)):
            for out, w in ((buffered, 1.0), (current, obs.weight)):
                total = np.zeros(size)
                np.add.at(total, flat[mask], np.broadcast_to(w * x, flat.shape)[mask])
                out.append(total.reshape(self.capacity))
        older = [np.maximum(a - b, 0.0) for a, b in zip(window, current, strict=True)]
        return older, buffered

    def evidence(self, n_tasks: int, n_agents: int, task_hash: np.ndarray,
                 agent_hash: np.ndarray) -> Evidence:
        rv = self.run_value[:n_tasks, :n_agents]
        rw = self.run_weight[:n_tasks, :n_agents]
        av = self.acc_value[:n_tasks, :n_agents]
        aw = self.acc_weight[:n_tasks, :n_agents]
        return evidence_from_sums(
            rw.sum(-1), (rw * rv).sum(-1), aw.sum(-1), (aw * av).sum(-1), (aw * av * av).sum(-1)
        )

    def measure_rule(self) -> MovingAverageRule:
        # The window, at most MEASURE_MEMORY_RUNS runs: a price follows within
        # a bounded number of runs whatever the quality window is.
        return MovingAverageRule(min(self.window_size, int(MEASURE_MEMORY_RUNS)))

    def hyperparameters(self) -> dict[str, Any]:
        return {"window_size": self.window_size}
