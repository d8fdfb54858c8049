"""Update strategies: how evidence about a (task type, agent) pair accumulates.

Every rule keeps numpy arrays indexed by ``[task_row, agent_col]`` and turns
a batch of observations into array updates with ``np.add.at`` (no Python
loop per event, except the mini-batches of :class:`GradientRule`). A rule
reports its :class:`Evidence`: per pair the effective number of run
observations and their success rate, and the effective number, mean and
variance of accuracy observations. :mod:`.model` turns evidence into
posteriors and rankings.

Notation in the docstrings: an observation ``i`` has a pair, a weight
``w_i`` (1 when streamed; :mod:`.retrain` uses other weights), a timestamp
``t_i`` and a value ``y_i`` (success 1/0 for a run, accuracy for an accuracy
record). ``n``/``s`` are the run count and success sum of a pair; ``m``,
``a``, ``q`` the accuracy count, sum and sum of squares.

Incremental retrain (``reweight``): the factor applied to a pair's evidence
older than the buffer depends on what the buffer says about the pair (see
:func:`retrain_factors`): a pair the buffer does not observe keeps its
evidence (what is known about agents not tried lately, good or bad, is not
forgotten because of an alert about others); any other pair is discounted,
except that the forgetting strategies (EXPONENTIAL, MOVING_AVERAGE) drop
the older evidence of a pair whose buffered observations contradict it (a
change point: the agent is not what it was). BAYESIAN keeps the plain
discount: its counts are the original design's and never restart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from .drops import DROP_LLR, RESTART_EVIDENCE, drop_llr
from .probation import PARK_Z, Probation, sums_reward

__all__ = [
    "CHANGE_MIN_EVIDENCE",
    "CHANGE_Z",
    "BayesianRule",
    "Evidence",
    "ExponentialRule",
    "GradientRule",
    "MovingAverageRule",
    "Observations",
    "Rule",
    "UpdateStrategy",
    "make_rule",
    "retrain_factors",
]

#: Incremental retrain: a pair's buffered observations contradict its older
#: evidence when their success rate or mean accuracy differs from the older
#: one by more than this many standard errors.
CHANGE_Z = 4.0
#: ... and both sides hold at least this much (effective) evidence of that kind.
CHANGE_MIN_EVIDENCE = 3.0
# Floor of the per-record accuracy variance in that test: a few records may
# agree by chance, and a near-zero variance would make any difference "significant".
_ACCURACY_VARIANCE_FLOOR = 0.01


class UpdateStrategy(enum.StrEnum):
    """How the model weighs old evidence against new."""

    MOVING_AVERAGE = "moving_average"
    EXPONENTIAL = "exponential"
    BAYESIAN = "bayesian"
    GRADIENT = "gradient"


@dataclass(frozen=True, eq=False)
class Observations:
    """A batch mapped onto one model's rows and columns (see :class:`~.batch.EventBatch`)."""

    rows: np.ndarray
    cols: np.ndarray
    is_run: np.ndarray
    value: np.ndarray
    timestamp: np.ndarray
    weight: np.ndarray
    task_hash: np.ndarray
    agent_hash: np.ndarray
    context: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.shape[0])


@dataclass(frozen=True, eq=False)
class Evidence:
    """Per pair, arrays of shape ``[n_tasks + 1, n_agents]``; the last row is the
    aggregate over all task types (used for an unknown task type).

    ``runs``: effective run count; ``success``: success rate of the data (or
    the model's probability); ``acc_n``, ``acc_mean``, ``acc_var``: effective
    count, mean and variance of the accuracy observations.
    """

    runs: np.ndarray
    success: np.ndarray
    acc_n: np.ndarray
    acc_mean: np.ndarray
    acc_var: np.ndarray


def _grow(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=array.dtype)
    out[tuple(slice(0, s) for s in array.shape)] = array
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 1e-12)


def _evidence_from_sums(
    n: np.ndarray, s: np.ndarray, m: np.ndarray, a: np.ndarray, q: np.ndarray
) -> Evidence:
    # Append the aggregate row: sums over task types.
    n, s, m, a, q = (np.vstack([x, x.sum(axis=0, keepdims=True)]) for x in (n, s, m, a, q))
    acc_mean = _ratio(a, m)
    acc_var = np.maximum(_ratio(q, m) - acc_mean**2, 0.0)
    return Evidence(n, _ratio(s, n), m, acc_mean, acc_var)


def retrain_factors(older: list[np.ndarray], buffered: list[np.ndarray],
                    discount: float, restart: bool = True,
                    park_z: float | None = None) -> np.ndarray:
    """Per pair, the factor an incremental retrain applies to evidence older than the buffer.

    ``older`` and ``buffered`` are the sums ``[n, s, m, a, q]`` (see the
    module notation; effective counts) of the older evidence and of the
    buffered observations, each counted once. The factor is

    * 1 where the buffer holds no observation of the pair;
    * 0, when ``restart``, where the buffer contradicts the older evidence: with at least
      :data:`CHANGE_MIN_EVIDENCE` on both sides, the success rates
      (``(s + 1/2) / (n + 1)``) or the mean accuracies differ by more than
      :data:`CHANGE_Z` standard errors (unpooled; accuracy variances floored
      at 0.01); with ``park_z`` (probation on, see :mod:`.probation`), also
      where the buffer is *worse* (lower expected reward) by more than
      ``park_z`` standard errors: the history is then parked, not lost, so
      a lower bar is safe;
    * ``discount`` otherwise.
    """
    n_o, s_o, m_o, a_o, q_o = (np.asarray(x, dtype=float) for x in older)
    n_b, s_b, m_b, a_b, q_b = (np.asarray(x, dtype=float) for x in buffered)

    def accuracy_moments(m: np.ndarray, a: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, ...]:
        mean = _ratio(a, m)
        var = np.maximum(_ratio(q, m) - mean**2, _ACCURACY_VARIANCE_FLOOR)
        return mean, var / np.maximum(m, 1e-12)

    p_o, p_b = (s_o + 0.5) / (n_o + 1.0), (s_b + 0.5) / (n_b + 1.0)
    se_run = np.sqrt(p_o * (1.0 - p_o) / np.maximum(n_o, 1e-12)
                     + p_b * (1.0 - p_b) / np.maximum(n_b, 1e-12))
    mean_o, var_o = accuracy_moments(m_o, a_o, q_o)
    mean_b, var_b = accuracy_moments(m_b, a_b, q_b)
    se_acc = np.sqrt(var_o + var_b)
    enough_runs = (n_o >= CHANGE_MIN_EVIDENCE) & (n_b >= CHANGE_MIN_EVIDENCE)
    enough_acc = (m_o >= CHANGE_MIN_EVIDENCE) & (m_b >= CHANGE_MIN_EVIDENCE)
    z = np.maximum(np.where(enough_runs, np.abs(p_o - p_b) / np.maximum(se_run, 1e-12), 0.0),
                   np.where(enough_acc, np.abs(mean_o - mean_b) / np.maximum(se_acc, 1e-12), 0.0))
    changed = z > CHANGE_Z
    if park_z is not None:
        changed |= (z > park_z) & (sums_reward(*buffered) < sums_reward(*older))
    observed = (n_b + m_b) > 0
    return np.where(changed & restart, 0.0, np.where(observed, discount, 1.0))


class Rule:
    """Base of the update rules; subclasses document their exact formula."""

    strategy: ClassVar[UpdateStrategy]
    #: Whether an incremental retrain drops the older evidence of a pair at a
    #: change point (see :func:`retrain_factors`).
    restarts_at_change_points: ClassVar[bool] = False
    #: Names of the per-pair arrays (shape ``[tasks, agents, ...]``).
    pair_arrays: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.capacity = (0, 0)

    # -- state -----------------------------------------------------------
    def resize(self, n_tasks: int, n_agents: int) -> None:
        """Grow the arrays to hold at least ``n_tasks`` x ``n_agents`` pairs."""
        if n_tasks <= self.capacity[0] and n_agents <= self.capacity[1]:
            return
        cap = (
            max(n_tasks, 2 * self.capacity[0], 4),
            max(n_agents, 2 * self.capacity[1], 4),
        )
        for name in self.pair_arrays:
            old = getattr(self, name)
            setattr(self, name, _grow(old, cap + old.shape[2:]))
        self.capacity = cap

    def arrays(self, n_tasks: int, n_agents: int) -> dict[str, np.ndarray]:
        """The state trimmed to the used pairs, for saving."""
        return {name: getattr(self, name)[:n_tasks, :n_agents].copy() for name in self.pair_arrays}

    def load_arrays(self, arrays: dict[str, np.ndarray], n_tasks: int, n_agents: int) -> None:
        """Restore :meth:`arrays`; raise ValueError when shapes do not fit."""
        self.capacity = (0, 0)
        for name in self.pair_arrays:
            getattr(self, name)  # the attribute must exist
            array = arrays.get(name)
            expected = (n_tasks, n_agents, *getattr(self, name).shape[2:])
            if array is None or array.shape != expected:
                got = None if array is None else array.shape
                raise ValueError(f"array {name!r} has shape {got}, expected {expected}")
            setattr(self, name, np.array(array, dtype=getattr(self, name).dtype))
        self.capacity = (n_tasks, n_agents)

    def copy(self) -> Rule:
        """An independent copy."""
        clone = object.__new__(type(self))
        for key, value in self.__dict__.items():
            setattr(clone, key, value.copy() if isinstance(value, np.ndarray) else value)
        return clone

    # -- learning --------------------------------------------------------
    def update(self, obs: Observations) -> None:
        """Fold ``obs`` (weights included) into the state."""
        raise NotImplementedError

    def reweight(self, obs: Observations, new_weight: np.ndarray, discount: float) -> None:
        """Incremental retrain (see :func:`~.retrain.incremental_retrain`).

        ``obs`` are the newest observations of this state, in order, with the
        weights they currently carry; afterwards they carry ``new_weight``
        and each pair's older evidence is multiplied by its factor from
        :func:`retrain_factors` (1 for pairs ``obs`` does not observe, 0 at a
        change point, ``discount`` otherwise).
        """
        raise NotImplementedError

    def evidence(self, n_tasks: int, n_agents: int, task_hash: np.ndarray,
                 agent_hash: np.ndarray) -> Evidence:
        """Evidence for all pairs plus the aggregate row."""
        raise NotImplementedError

    def event_means(self, obs: Observations) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-observation (success, accuracy) estimates when they depend on more
        than the pair (context); None when :meth:`evidence` says it all."""
        return None

    def probation_scores(self, n_tasks: int, n_agents: int) -> np.ndarray | None:
        """Per pair, the reward exploration should rank a pair on probation by
        (NaN for pairs that are not); None when no pair is (see :mod:`.probation`)."""
        return None

    def hyperparameters(self) -> dict[str, Any]:
        """The rule's hyperparameters, saved in the model metadata."""
        return {}


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
        np.add.at(self.runs.reshape(-1), flat[run], w[run])
        np.add.at(self.successes.reshape(-1), flat[run], w[run] * v[run])
        np.add.at(self.acc_n.reshape(-1), flat[acc], w[acc])
        np.add.at(self.acc_sum.reshape(-1), flat[acc], w[acc] * v[acc])
        np.add.at(self.acc_sq.reshape(-1), flat[acc], w[acc] * v[acc] ** 2)

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
        return _evidence_from_sums(*self._sums(n_tasks, n_agents))


class ExponentialRule(BayesianRule):
    """Exponential forgetting in event time with half-life ``h`` seconds.

    At the model's clock ``T`` (the newest event timestamp seen) a pair's
    evidence is ``n(T) = sum_i w_i 2**(-(T - t_i)/h)``,
    ``s(T) = sum_i w_i y_i 2**(-(T - t_i)/h)`` (likewise ``m``, ``a``, ``q``),
    and the success posterior is ``Beta(1 + s(T), 1 + n(T) - s(T))``.

    Why event time and not "observations per pair": the state then depends
    only on the events, not on when they were processed, so a replay, a
    Kafka restart or a simulated clock gives the same model; out-of-order
    events are weighed by their own age; and a pair that stops receiving
    events loses certainty, so Thompson sampling retries it.

    Stored form: every array holds ``sum_i x_i 2**((t_i - t0)/h)`` for a
    reference ``t0``, so an update is order-free (one ``np.add.at``) and the
    decay to ``T`` is applied when evidence is read. ``t0`` moves forward
    (rescaling the arrays) before the factors could overflow.

    Probation (``retry_after_seconds`` not None, see :mod:`.probation`): at
    an incremental retrain, a pair that got worse has its older evidence
    parked in :attr:`probation` instead of dropped, and retried later. With
    ``detect_drops``, a CUSUM per pair (``drop_cusum``, see :mod:`.drops`)
    also parks a pair whose runs drop between retrains, batch by batch.
    """

    strategy = UpdateStrategy.EXPONENTIAL
    restarts_at_change_points = True
    pair_arrays = (*BayesianRule.evidence_arrays, "drop_cusum")
    _REBASE_HALF_LIVES = 64.0

    def __init__(self, half_life_seconds: float, retry_after_seconds: float | None = None,
                 detect_drops: bool = False) -> None:
        if detect_drops and retry_after_seconds is None:
            raise ValueError("detect_drops parks pairs for a retry: it needs retry_after_seconds")
        super().__init__()
        self.half_life_seconds = float(half_life_seconds)
        self.t0 = float("nan")  # reference time; NaN until the first event
        self.clock = float("-inf")  # newest event time seen
        self.probation = None if retry_after_seconds is None else Probation(retry_after_seconds)
        self.detect_drops = bool(detect_drops)
        self.drop_cusum = np.zeros((0, 0))

    def copy(self) -> ExponentialRule:
        clone = super().copy()
        assert isinstance(clone, ExponentialRule)
        if self.probation is not None:
            clone.probation = self.probation.copy()
        return clone

    def _scale(self, obs: Observations) -> np.ndarray:
        return obs.weight * np.exp2((obs.timestamp - self.t0) / self.half_life_seconds)

    def update(self, obs: Observations) -> None:
        if not len(obs):
            return
        newest = float(obs.timestamp.max())
        if newest > self.clock:
            self.clock = newest
        if self.t0 != self.t0:  # first event
            self.t0 = self.clock
        elif (self.clock - self.t0) / self.half_life_seconds > self._REBASE_HALF_LIVES:
            factor = 2.0 ** (-(self.clock - self.t0) / self.half_life_seconds)
            for name in self.evidence_arrays:
                getattr(self, name)[...] *= factor
            if self.probation is not None:
                self.probation.rescale(factor)
            self.t0 = self.clock
        if self.probation is None:
            self._accumulate(obs)
            return
        if self.detect_drops:
            self._detect_drops(obs)
        if self.probation:  # pairs are parked: the common case skips this
            self.probation.observe(
                obs.rows, obs.cols, obs.is_run, obs.value, obs.timestamp,
                self._scale(replace(obs, weight=np.ones(len(obs)))),
                [getattr(self, name) for name in self.evidence_arrays], self._decay(), self.clock)
        self._accumulate(obs)

    def _decay(self) -> float:
        if self.t0 != self.t0:
            return 1.0
        return float(2.0 ** (-(self.clock - self.t0) / self.half_life_seconds))

    def _sums(self, n_tasks: int, n_agents: int) -> list[np.ndarray]:
        decay = self._decay()
        return [x * decay for x in super()._sums(n_tasks, n_agents)]

    # -- probation ---------------------------------------------------------
    def _detect_drops(self, obs: Observations) -> None:
        """Advance the pairs' CUSUMs by ``obs`` (against the evidence before
        them); park the pairs that dropped, keeping a little of their history."""
        assert self.probation is not None
        flat = obs.rows * self.capacity[1] + obs.cols
        stored = [getattr(self, name).reshape(-1) for name in self.evidence_arrays]
        decay = self._decay()
        llr = drop_llr([x[flat] * decay for x in stored], obs.is_run, obs.value)
        cusum = self.drop_cusum.reshape(-1)
        np.add.at(cusum, flat, llr)
        cusum[flat] = np.maximum(cusum[flat], 0.0)
        dropped = np.unique(flat[cusum[flat] >= DROP_LLR])
        for pair in dropped:
            key = divmod(int(pair), self.capacity[1])
            history = np.array([x[pair] for x in stored])
            self.probation.park(key, history, self.clock)
            runs, records = history[0] * decay, history[2] * decay
            keep_runs = min(1.0, RESTART_EVIDENCE / runs) if runs > 0 else 1.0
            keep_records = min(1.0, RESTART_EVIDENCE / records) if records > 0 else 1.0
            for k, x in enumerate(stored):
                x[pair] *= keep_runs if k < 2 else keep_records
            cusum[pair] = 0.0

    def _park_z(self) -> float | None:
        return None if self.probation is None else PARK_Z

    def _change_points(self, changed: np.ndarray, older: list[np.ndarray],
                       buffered: list[np.ndarray]) -> list[np.ndarray] | None:
        if self.probation is None or not changed.any():
            return None
        worse = sums_reward(*buffered) < sums_reward(*older)
        decay = self._decay()
        return self.probation.at_retrain(changed, worse, [x / decay for x in older], self.clock)

    def probation_scores(self, n_tasks: int, n_agents: int) -> np.ndarray | None:
        if not self.probation:
            return None
        return self.probation.scores(n_tasks, n_agents, self.clock)

    def parked_pairs(self) -> int:
        """Pairs whose history is parked (on probation or waiting for it)."""
        return len(self.probation) if self.probation is not None else 0

    # -- persistence -------------------------------------------------------
    def arrays(self, n_tasks: int, n_agents: int) -> dict[str, np.ndarray]:
        out = super().arrays(n_tasks, n_agents)
        out["t0"] = np.array(self.t0)
        out["clock"] = np.array(self.clock)
        if self.probation:
            out.update(self.probation.to_arrays())
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray], n_tasks: int, n_agents: int) -> None:
        if "drop_cusum" not in arrays:  # saved before the detector existed
            arrays = {**arrays, "drop_cusum": np.zeros((n_tasks, n_agents))}
        super().load_arrays(arrays, n_tasks, n_agents)
        self.t0 = float(arrays["t0"])
        self.clock = float(arrays["clock"])
        if self.probation is not None:
            self.probation.load_arrays(arrays, n_tasks, n_agents)

    def hyperparameters(self) -> dict[str, Any]:
        return {"half_life_seconds": self.half_life_seconds}


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

    def __init__(self, window_size: int) -> None:
        super().__init__()
        self.window_size = int(window_size)
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
        return _evidence_from_sums(
            rw.sum(-1), (rw * rv).sum(-1), aw.sum(-1), (aw * av).sum(-1), (aw * av * av).sum(-1)
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {"window_size": self.window_size}


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

    def __init__(self, learning_rate: float, hash_bits: int = 16, minibatch_size: int = 64) -> None:
        super().__init__()
        self.learning_rate = float(learning_rate)
        self.hash_bits = int(hash_bits)
        self.minibatch_size = int(minibatch_size)
        self.dims = 2**self.hash_bits
        self.counts = BayesianRule()
        self.w_success = np.zeros(self.dims + 1)  # slot dims: padding, always 0
        self.w_accuracy = np.zeros(self.dims + 1)

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


def make_rule(
    strategy: UpdateStrategy,
    *,
    half_life_seconds: float,
    window_size: int,
    learning_rate: float,
    hash_bits: int = 16,
    retry_after_seconds: float | None = None,
    detect_drops: bool = False,
) -> Rule:
    """The rule for ``strategy`` with its hyperparameters."""
    if strategy is UpdateStrategy.BAYESIAN:
        return BayesianRule()
    if strategy is UpdateStrategy.EXPONENTIAL:
        return ExponentialRule(half_life_seconds, retry_after_seconds, detect_drops)
    if strategy is UpdateStrategy.MOVING_AVERAGE:
        return MovingAverageRule(window_size)
    if strategy is UpdateStrategy.GRADIENT:
        return GradientRule(learning_rate, hash_bits)
    raise ValueError(f"unknown update strategy {strategy!r}")
