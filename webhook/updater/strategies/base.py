"""The base of the update rules: the strategy names, observations, evidence, ``Rule``.

Every rule keeps numpy arrays indexed by ``[task_row, agent_col]`` and turns
a batch of observations into array updates with ``np.add.at`` (no Python
loop per event, except the mini-batches of the gradient rule). A rule
reports its :class:`Evidence`: per pair the effective number of run
observations and their success rate, and the effective number, mean and
variance of accuracy observations. :mod:`..model` turns evidence into
posteriors and rankings.

Notation in the docstrings: an observation ``i`` has a pair, a weight
``w_i`` (1 when streamed; :mod:`..retrain` uses other weights), a timestamp
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

Hyperparameters belong to the rule: each rule takes its own as constructor
arguments (stored under the same names), checks them there and returns
them from :meth:`Rule.hyperparameters`, so :meth:`Rule.clone` builds an
empty rule with the same settings.
"""

from __future__ import annotations

import enum
import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..probation import Probation, accuracy_moments, success_rate, sums_reward

__all__ = [
    "CHANGE_MIN_EVIDENCE",
    "CHANGE_Z",
    "Evidence",
    "Observations",
    "Rule",
    "UpdateStrategy",
    "check_bool",
    "check_int",
    "check_number",
    "evidence_from_sums",
    "retrain_factors",
]

#: Incremental retrain: a pair's buffered observations contradict its older
#: evidence when their success rate or mean accuracy differs from the older
#: one by more than this many standard errors.
CHANGE_Z = 4.0
#: ... and both sides hold at least this much (effective) evidence of that kind.
CHANGE_MIN_EVIDENCE = 3.0


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


def evidence_from_sums(
    n: np.ndarray, s: np.ndarray, m: np.ndarray, a: np.ndarray, q: np.ndarray
) -> Evidence:
    # Append the aggregate row: sums over task types.
    n, s, m, a, q = (np.vstack([x, x.sum(axis=0, keepdims=True)]) for x in (n, s, m, a, q))
    acc_mean = _ratio(a, m)
    acc_var = np.maximum(_ratio(q, m) - acc_mean**2, 0.0)
    return Evidence(n, _ratio(s, n), m, acc_mean, acc_var)


def check_number(name: str, value: Any, low: float, high: float = math.inf, *,
                 low_inclusive: bool = False) -> float:
    """``value`` as a finite float in ``(low, high]`` (``[low, high]`` with
    ``low_inclusive``); ValueError naming ``name`` and the value otherwise."""
    ok = (not isinstance(value, bool) and isinstance(value, int | float)
          and math.isfinite(value)
          and (value >= low if low_inclusive else value > low) and value <= high)
    if not ok:
        lower = "[" if low_inclusive else "("
        allowed = f"> {low:g}" if high == math.inf and not low_inclusive else (
            f">= {low:g}" if high == math.inf else f"in {lower}{low:g}, {high:g}]")
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return float(value)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; ValueError naming ``name`` otherwise."""
    if (isinstance(value, bool) or not isinstance(value, int) or value < low
            or (high is not None and value > high)):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool; ValueError naming ``name`` otherwise."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


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
      (:func:`~..probation.success_rate`) or the mean accuracies
      (:func:`~..probation.accuracy_moments`) differ by more than
      :data:`CHANGE_Z` standard errors (unpooled); with ``park_z``
      (probation on, see :mod:`..probation`), also
      where the buffer is *worse* (lower expected reward) by more than
      ``park_z`` standard errors: the history is then parked, not lost, so
      a lower bar is safe;
    * ``discount`` otherwise.
    """
    n_o, s_o, m_o, a_o, q_o = (np.asarray(x, dtype=float) for x in older)
    n_b, s_b, m_b, a_b, q_b = (np.asarray(x, dtype=float) for x in buffered)
    p_o, p_b = success_rate(n_o, s_o), success_rate(n_b, s_b)
    se_run = np.sqrt(p_o * (1.0 - p_o) / np.maximum(n_o, 1e-12)
                     + p_b * (1.0 - p_b) / np.maximum(n_b, 1e-12))
    mean_o, var_o = accuracy_moments(m_o, a_o, q_o)
    mean_b, var_b = accuracy_moments(m_b, a_b, q_b)
    # Variances of the means: the per-record variance over the record count.
    se_acc = np.sqrt(var_o / np.maximum(m_o, 1e-12) + var_b / np.maximum(m_b, 1e-12))
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
    #: The parked pairs and their retries (see :mod:`.probation`); None for a
    #: rule that parks nothing.
    probation: Probation | None = None

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

    def update_measure(self, obs: Observations) -> None:
        """Fold real-valued measurements (accuracy-channel ``obs``) into a rule
        made by :meth:`measure_rule`. Here: :meth:`update`; a forgetting rule
        also restarts a pair whose measurements shifted (a price change)."""
        self.update(obs)

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

    def probation_scores(self, n_tasks: int, n_agents: int,
                         probing: bool = False) -> np.ndarray | None:
        """Per pair, the reward exploration should rank a pair on probation by
        (NaN for pairs that are not); None when no pair is (see :mod:`.probation`).
        ``probing``: only the open retries greedy routing should still try."""
        return None

    def parked_pairs(self) -> int:
        """Pairs whose history is parked (on probation or waiting for it)."""
        return 0 if self.probation is None else len(self.probation)

    def take_detections(self) -> list[tuple[int, int]]:
        """(row, col) of the pairs the drop detector parked since the last
        call, oldest first; the list is emptied. Rules without a drop
        detector detect nothing."""
        return []

    def route_probe(self, row: int, col: int) -> bool:
        """Greedy routing sent a request to the open retry of pair (``row``,
        ``col``); True when greedy routing should stop trying it for now (its
        probes spent, or as many awaiting their outcomes as may; see
        :mod:`.probation`)."""
        return True

    def keep_parked(self, source: Rule,
                    pairs: list[tuple[tuple[int, int], tuple[int, int]]]) -> None:
        """Take over the parked pairs of ``source`` (the serving model's rule;
        this one is a full retrain's candidate): ``pairs`` maps each parked
        (row, col) of ``source`` to this rule's. Rules without probation
        park nothing."""

    def hyperparameters(self) -> dict[str, Any]:
        """The rule's constructor arguments (saved in the model metadata)."""
        return {}

    def clone(self) -> Rule:
        """An empty rule of the same kind with the same hyperparameters."""
        return type(self)(**self.hyperparameters())

    def measure_rule(self) -> Rule:
        """An empty rule that learns a real-valued measurement per pair (a run's
        cost or latency, fed as accuracy observations: mean and variance, any
        scale) with this rule's forgetting: the same half-life or window, no
        probation. Here (no forgetting): Beta-Bernoulli counts' sums."""
        from .bayesian import BayesianRule  # the subclass module imports this one

        return BayesianRule()

    @classmethod
    def hyperparameter_names(cls) -> tuple[str, ...]:
        """The names :meth:`hyperparameters` returns (the constructor's arguments)."""
        return tuple(name for name in inspect.signature(cls).parameters)

    @classmethod
    def check_hyperparameters(cls, **values: Any) -> None:
        """Raise the constructor's ValueError for a bad value, keeping nothing."""
        cls(**values)

