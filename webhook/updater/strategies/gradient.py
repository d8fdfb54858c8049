"""GRADIENT: two logistic models on hashed features, trained by mini-batch SGD."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .base import Evidence, Observations, Rule, UpdateStrategy, check_int, check_number
from .bayesian import BayesianRule

__all__ = ["HASH_BITS", "LEARNING_RATE", "MINIBATCH_SIZE", "GradientRule"]

#: Default SGD step size.
LEARNING_RATE = 0.1
#: Default ``2**hash_bits`` hashed feature weights per head.
HASH_BITS = 16
#: Default events per SGD step.
MINIBATCH_SIZE = 64


_GOLDEN_INT = 0x9E3779B97F4A7C15
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 finaliser of ``x + salt * golden`` (uint64, wrapping)."""
    # The salt product is taken mod 2**64 in Python: numpy warns on scalar overflow.
    z = np.asarray(x, dtype=np.uint64) + np.uint64((salt * _GOLDEN_INT) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))


class GradientRule(Rule):
    """Two logistic models on hashed features, trained by mini-batch SGD.

    Features of an observation (hashed into ``D = 2**hash_bits`` weights,
    slot 0 the bias): bias, task type, agent, task type x agent, and agent x
    ``key=value`` for each context entry. The success head predicts
    ``p = sigmoid(w_s . x)`` (target 1/0 of a run), the accuracy head
    ``sigmoid(w_a . x)`` (target: the accuracy, a soft label).

    Update: the batch is cut into consecutive mini-batches ``B`` of at most
    ``minibatch_size`` events; for each ``B`` and each feature ``j`` it
    touches, with ``B_j`` the events of ``B`` having ``j``::

        w_j <- w_j + learning_rate * (1/|B_j|) * sum_{i in B_j} w_i (y_i - sigmoid(w . x_i))

    (gradients at the weights before ``B``; per-feature averaging keeps the
    shared bias from taking ``|B|`` steps at once). The rule also keeps the
    :class:`BayesianRule` counts, used only for the uncertainty of Thompson
    sampling and for the accuracy variance.
    """

    strategy = UpdateStrategy.GRADIENT
    pair_arrays = BayesianRule.pair_arrays

    def __init__(self, learning_rate: float = LEARNING_RATE, hash_bits: int = HASH_BITS,
                 minibatch_size: int = MINIBATCH_SIZE) -> None:
        super().__init__()
        self.learning_rate = check_number("learning_rate", learning_rate, 0.0, 10.0)
        self.hash_bits = check_int("hash_bits", hash_bits, 8, 24)
        self.minibatch_size = check_int("minibatch_size", minibatch_size, 1)
        self.dims = 2**self.hash_bits
        self.counts = BayesianRule()
        self.w_success = np.zeros(self.dims + 1)  # slot dims: padding, always 0
        self.w_accuracy = np.zeros(self.dims + 1)

    @classmethod
    def check_hyperparameters(cls, **values: Any) -> None:
        # Without building the rule: 2**hash_bits weights may be large.
        checks = {"learning_rate": lambda v: check_number("learning_rate", v, 0.0, 10.0),
                  "hash_bits": lambda v: check_int("hash_bits", v, 8, 24),
                  "minibatch_size": lambda v: check_int("minibatch_size", v, 1)}
        for name, value in values.items():
            checks[name](value)

    def copy(self) -> GradientRule:
        clone = super().copy()
        assert isinstance(clone, GradientRule)
        clone.counts = self.counts.copy()  # type: ignore[assignment]
        return clone

    def resize(self, n_tasks: int, n_agents: int) -> None:
        self.counts.resize(n_tasks, n_agents)
        self.capacity = self.counts.capacity

    def arrays(self, n_tasks: int, n_agents: int) -> dict[str, np.ndarray]:
        out = self.counts.arrays(n_tasks, n_agents)
        out["w_success"] = self.w_success.copy()
        out["w_accuracy"] = self.w_accuracy.copy()
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray], n_tasks: int, n_agents: int) -> None:
        self.counts.load_arrays(arrays, n_tasks, n_agents)
        self.capacity = self.counts.capacity
        for name in ("w_success", "w_accuracy"):
            array = arrays.get(name)
            if array is None or array.shape != (self.dims + 1,):
                got = None if array is None else array.shape
                raise ValueError(f"array {name!r} has shape {got}, expected {(self.dims + 1,)}")
            setattr(self, name, np.array(array, dtype=np.float64))

    def _features(self, task_hash: np.ndarray, agent_hash: np.ndarray,
                  context: np.ndarray) -> np.ndarray:
        span = np.uint64(self.dims - 1)
        one = np.uint64(1)
        agent_mix = _mix(agent_hash, 3)
        cols = [
            np.zeros(task_hash.shape, dtype=np.uint64),  # bias
            one + _mix(task_hash, 1) % span,
            one + _mix(agent_hash, 2) % span,
            one + _mix(task_hash ^ agent_mix, 4) % span,
        ]
        feats = np.stack(cols, axis=-1)
        if context.shape[-1]:
            ctx = one + _mix(context ^ agent_mix[..., None], 6) % span
            ctx = np.where(context == 0, np.uint64(self.dims), ctx)
            feats = np.concatenate([feats, ctx], axis=-1)
        return feats.astype(np.intp)

    def _sgd(self, w: np.ndarray, feats: np.ndarray, y: np.ndarray, weight: np.ndarray) -> None:
        step = self.minibatch_size
        k = feats.shape[1]
        for start in range(0, feats.shape[0], step):
            f = feats[start : start + step]
            residual = y[start : start + step] - _sigmoid(w[f].sum(axis=1))
            g = weight[start : start + step] * residual
            uniq, inverse = np.unique(f.reshape(-1), return_inverse=True)
            total = np.bincount(inverse, weights=np.repeat(g, k))
            # An event lists a feature at most once, so this counts events.
            count = np.bincount(inverse)
            w[uniq] += self.learning_rate * total / count
            w[self.dims] = 0.0

    def update(self, obs: Observations) -> None:
        if not len(obs):
            return
        self.counts.update(obs)
        feats = self._features(obs.task_hash, obs.agent_hash, obs.context)
        run = obs.is_run
        if run.any():
            self._sgd(self.w_success, feats[run], obs.value[run], obs.weight[run])
        if (~run).any():
            self._sgd(self.w_accuracy, feats[~run], obs.value[~run], obs.weight[~run])

    def reweight(self, obs: Observations, new_weight: np.ndarray, discount: float) -> None:
        # Counts: exact (remove, per-pair factor, re-add). Weights: SGD has no
        # exact "remove", and hashed features are shared by pairs, so old
        # knowledge is shrunk toward the prior by the plain discount and the
        # buffer is replayed once with the recency weights.
        self.counts.reweight(obs, new_weight, discount)
        self.w_success *= discount
        self.w_accuracy *= discount
        feats = self._features(obs.task_hash, obs.agent_hash, obs.context)
        run = obs.is_run
        if run.any():
            self._sgd(self.w_success, feats[run], obs.value[run], new_weight[run])
        if (~run).any():
            self._sgd(self.w_accuracy, feats[~run], obs.value[~run], new_weight[~run])

    def evidence(self, n_tasks: int, n_agents: int, task_hash: np.ndarray,
                 agent_hash: np.ndarray) -> Evidence:
        base = self.counts.evidence(n_tasks, n_agents, task_hash, agent_hash)
        th = np.broadcast_to(task_hash[:n_tasks, None], (n_tasks, n_agents))
        ah = np.broadcast_to(agent_hash[None, :n_agents], (n_tasks, n_agents))
        feats = self._features(th, ah, np.zeros((n_tasks, n_agents, 0), dtype=np.uint64))
        agg = self._features(agent_hash[:n_agents], agent_hash[:n_agents],
                             np.zeros((n_agents, 0), dtype=np.uint64))[:, [0, 2]]
        probs = []
        for w in (self.w_success, self.w_accuracy):
            pairs = _sigmoid(w[feats].sum(axis=-1))
            probs.append(np.vstack([pairs, _sigmoid(w[agg].sum(axis=-1))[None, :]]))
        return replace(base, success=probs[0], acc_mean=probs[1])

    def event_means(self, obs: Observations) -> tuple[np.ndarray, np.ndarray]:
        feats = self._features(obs.task_hash, obs.agent_hash, obs.context)
        return (
            _sigmoid(self.w_success[feats].sum(axis=1)),
            _sigmoid(self.w_accuracy[feats].sum(axis=1)),
        )

    def context_means(self, task_hash: int | None, agent_hash: np.ndarray,
                      context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(success, accuracy) of every agent for one task type and context;
        ``task_hash=None`` drops the task-type features (unknown task type)."""
        n = agent_hash.shape[0]
        th = np.full(n, 0 if task_hash is None else task_hash, dtype=np.uint64)
        feats = self._features(th, agent_hash, np.broadcast_to(context, (n, context.shape[0])))
        if task_hash is None:
            feats = np.delete(feats, [1, 3], axis=1)
        return (
            _sigmoid(self.w_success[feats].sum(axis=1)),
            _sigmoid(self.w_accuracy[feats].sum(axis=1)),
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "hash_bits": self.hash_bits,
            "minibatch_size": self.minibatch_size,
        }
