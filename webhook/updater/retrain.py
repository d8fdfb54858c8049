"""Retraining: incremental and full candidates, held-out scoring, promotion.

Pure functions on models and batches; :class:`~.updater.RealTimeModelUpdater`
supplies the buffer, the snapshots and the locking.

Fair comparison. The serving model has learnt every buffered event, the
newest included, so scoring it on those would flatter it. The updater
keeps a *snapshot*: a copy of the serving model taken before the newest
events (the holdout) were applied. Both sides are then built without the
holdout: the baseline is the snapshot itself, the candidate is the retrain
procedure applied to the snapshot (incremental) or to a fresh model (full)
with the buffered events older than the holdout. Neither has seen the
holdout when scored. If the candidate is not worse, the same procedure is
refitted on the whole buffer from the current serving state and that model
is promoted (validate the procedure on a split, then fit it on all data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .batch import EventBatch
from .model import AgentSelectionModel
from .results import RetrainType

__all__ = [
    "RetrainOutcome",
    "Score",
    "full_retrain",
    "incremental_retrain",
    "recency_weights",
    "retrain",
    "score_model",
]

_EPS = 1e-4


@dataclass(frozen=True)
class Score:
    """How well a model predicted held-out events; higher ``score`` is better.

    ``log_loss``: mean cross-entropy of the predicted success probability
    (run events, target 1/0) and of the predicted accuracy (accuracy events,
    the accuracy as a soft target). ``selection_reward``: for each task type
    in the holdout, the holdout's observed reward (success rate x mean
    accuracy, a missing factor counting as 1) of the agent the model ranks
    first among the agents the holdout observed for that type, averaged with
    weights = events of the type (the "replayed" value of the model's
    choices). ``score = selection_reward - log_loss``.
    """

    score: float
    log_loss: float
    selection_reward: float
    events: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "log_loss": self.log_loss,
            "selection_reward": self.selection_reward,
            "events": self.events,
        }


def recency_weights(n: int, recency_weight: float) -> np.ndarray:
    """Weights of ``n`` buffered events, oldest first: ``1 + (r - 1)(i + 1)/n``.

    The newest event weighs ``r = recency_weight``, the oldest just over 1.
    """
    if recency_weight < 1.0:
        raise ValueError(f"recency_weight must be >= 1, got {recency_weight!r}")
    if n == 0:
        return np.zeros(0)
    return 1.0 + (recency_weight - 1.0) * np.arange(1, n + 1) / n


def incremental_retrain(
    model: AgentSelectionModel,
    buffer: EventBatch,
    current_weight: np.ndarray,
    *,
    discount: float,
    recency_weight: float,
) -> tuple[AgentSelectionModel, np.ndarray]:
    """Shift ``model`` toward the buffered events without counting any twice.

    ``buffer`` must be the newest events ``model`` has learnt, in order, and
    ``current_weight`` the weights they carry in it (1 when streamed). The
    candidate is, per (task type, agent) pair, ``f x (model - buffer) +
    sum_i w_i x buffer_i`` with ``w = recency_weights(len(buffer),
    recency_weight)``: the buffer's current contribution is removed, the
    older evidence scaled by the pair's factor ``f``, and the buffer added
    back once with recency weights (MOVING_AVERAGE and GRADIENT realise this
    on their own state, see their ``reweight``). ``f`` is
    (:func:`~.strategies.retrain_factors`) ``discount`` for a pair the
    buffer observes, 0 for one whose buffered observations contradict its
    older evidence (a change point; every strategy but GRADIENT),
    and 1 for a pair the buffer does not observe: what the model knew about
    agents not tried lately is kept, so after a retrain they do not look as
    good as the best for lack of evidence. GRADIENT's shared hashed weights
    get the plain ``discount``.

    Returns the candidate and the weights the buffered events now carry.
    """
    new_weight = recency_weights(len(buffer), recency_weight)
    candidate = model.copy()
    candidate.reweight(buffer, current_weight, new_weight, discount)
    return candidate, new_weight


def full_retrain(model: AgentSelectionModel, buffer: EventBatch) -> AgentSelectionModel:
    """A fresh model (same strategy and hyperparameters) fed ``buffer`` in
    order, holding the pairs ``model`` holds set aside as it does (see
    :meth:`~.model.AgentSelectionModel.keep_set_aside`)."""
    candidate = model.fresh()
    candidate.update(buffer)
    candidate.keep_set_aside(model)
    return candidate


def _log_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return -(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))


def score_model(model: AgentSelectionModel, holdout: EventBatch) -> Score:
    """Score ``model`` on ``holdout`` (see :class:`Score`)."""
    n = len(holdout)
    if n == 0:
        raise ValueError("holdout is empty")
    success, accuracy = model.event_means(holdout)
    run = holdout.is_run
    loss = np.where(run, _log_loss(success, holdout.value), _log_loss(accuracy, holdout.value))

    n_t, n_a = len(holdout.task_names), len(holdout.agent_names)
    flat = holdout.task * n_a + holdout.agent
    runs = np.bincount(flat[run], minlength=n_t * n_a).reshape(n_t, n_a)
    wins = np.bincount(flat[run], weights=holdout.value[run], minlength=n_t * n_a).reshape(n_t, n_a)
    accs = np.bincount(flat[~run], minlength=n_t * n_a).reshape(n_t, n_a)
    acc_sum = np.bincount(flat[~run], weights=holdout.value[~run],
                          minlength=n_t * n_a).reshape(n_t, n_a)
    observed = np.where(runs > 0, wins / np.maximum(runs, 1), 1.0) * np.where(
        accs > 0, acc_sum / np.maximum(accs, 1), 1.0)
    seen = (runs + accs) > 0

    # The model's expected reward for every (task type, agent) of the holdout.
    grid = EventBatch(
        holdout.task_names,
        holdout.agent_names,
        np.repeat(np.arange(n_t), n_a),
        np.tile(np.arange(n_a), n_t),
        np.ones(n_t * n_a, dtype=bool),
        np.zeros(n_t * n_a),
        np.zeros(n_t * n_a),
        np.zeros((n_t * n_a, 0), dtype=np.uint64),
        np.zeros(n_t * n_a),
        np.zeros(n_t * n_a),
    )
    g_success, g_accuracy = model.event_means(grid)
    predicted = np.where(seen, (g_success * g_accuracy).reshape(n_t, n_a), -np.inf)
    choice = np.argmax(predicted, axis=1)  # first maximum: ties go to first seen
    per_type = observed[np.arange(n_t), choice]
    events_per_type = np.bincount(holdout.task, minlength=n_t)
    selection = float(np.dot(per_type, events_per_type) / n)
    log_loss = float(loss.mean())
    return Score(selection - log_loss, log_loss, selection, n)


@dataclass(frozen=True, eq=False)
class RetrainOutcome:
    """What :func:`retrain` decided."""

    retrain_type: RetrainType
    promoted: bool
    candidate_score: Score
    serving_score: Score
    model: AgentSelectionModel | None  # the model to serve when promoted
    weights: np.ndarray | None  # the buffered events' weights in that model


def retrain(
    serving: AgentSelectionModel,
    buffer: EventBatch,
    weights: np.ndarray,
    *,
    baseline: AgentSelectionModel,
    holdout_start: int,
    full: bool,
    discount: float,
    recency_weight: float,
    tolerance: float = 0.0,
) -> RetrainOutcome:
    """Build, score and decide on a candidate.

    Parameters
    ----------
    serving
        The serving model; it has learnt all of ``buffer`` (with ``weights``).
    buffer, weights
        The buffered events, oldest first, and the weights they carry.
    baseline
        Snapshot of the serving model from before ``buffer[holdout_start:]``
        (the holdout) was applied.
    full
        Full retrain (fresh model) instead of incremental.
    tolerance
        Promote when ``candidate >= serving - tolerance`` ("not worse").
    """
    if not 0 < holdout_start < len(buffer):
        raise ValueError(
            f"holdout_start must be in (0, {len(buffer)}), got {holdout_start!r}")
    train = buffer.take(slice(0, holdout_start))
    holdout = buffer.take(slice(holdout_start, None))
    if full:
        fair = full_retrain(baseline, train)
    else:
        fair, _ = incremental_retrain(baseline, train, weights[:holdout_start],
                                      discount=discount, recency_weight=recency_weight)
    candidate_score = score_model(fair, holdout)
    serving_score = score_model(baseline, holdout)
    promoted = candidate_score.score >= serving_score.score - tolerance
    model: AgentSelectionModel | None = None
    new_weights: np.ndarray | None = None
    if promoted:
        if full:
            model, new_weights = full_retrain(serving, buffer), np.ones(len(buffer))
        else:
            model, new_weights = incremental_retrain(
                serving, buffer, weights, discount=discount, recency_weight=recency_weight)
    return RetrainOutcome(RetrainType.of(full), promoted, candidate_score,
                          serving_score, model, new_weights)
