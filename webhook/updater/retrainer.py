"""Retrains on the serving model's buffer: :class:`Retrainer`.

One retrain at a time (the checkpointer's ``retrain_lock``; a second caller
waits, then retrains on what is new). The state lock is held to take the
buffer and a snapshot and to promote, never for the candidate building and
scoring, which run on copies while events keep being applied (they go to
the journal and are re-applied to a promoted model).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from autoretrain.exporter.timefmt import utc_iso

from .checkpoint import Checkpointer
from .metrics import INVALID_MODEL_TYPE, UpdaterMetrics
from .results import MODEL_TYPES, RetrainResult, RetrainStatus, RetrainType
from .retrain import retrain
from .settings import RetrainSettings
from .state import ModelState

__all__ = ["Retrainer"]

log = logging.getLogger(__name__)


class Retrainer:
    """Builds, scores and maybe promotes a candidate; saves a promoted model."""

    def __init__(self, state: ModelState, checkpointer: Checkpointer, settings: RetrainSettings,
                 metrics: UpdaterMetrics, clock: Callable[[], float]) -> None:
        self.state = state
        self.checkpointer = checkpointer
        self.settings = settings
        self.metrics = metrics
        self.clock = clock

    def run(self, reason: str, retrain_type: RetrainType, model_type: str) -> RetrainResult:
        """One retrain; see ``RealTimeModelUpdater.trigger_retraining``."""
        started = time.perf_counter()
        # duration_ms is the retrain itself (candidate, scoring, promotion);
        # persisting a promoted model is storage I/O, reported as save_ms.
        save_seconds = 0.0
        state = self.state
        result = RetrainResult(model_type=model_type, retrain_type=retrain_type, reason=reason,
                               timestamp=utc_iso(self.clock()), model_version=state.version)

        def finish(status: RetrainStatus, error: str | None = None) -> RetrainResult:
            duration = time.perf_counter() - started - save_seconds
            result.duration_ms = round(duration * 1000.0, 3)
            result.status = status
            result.error = error
            label = model_type if model_type in MODEL_TYPES else INVALID_MODEL_TYPE
            self.metrics.retrains.labels(label, retrain_type.value, status.value).inc()
            if result.success:
                self.metrics.retrain_duration.labels(retrain_type.value).observe(duration)
                self.metrics.retrain_events.set(result.events_processed)
            with state.lock:
                state.last_retrain = result.as_dict()
            log.info("retrain (%s, %s): %s %s", retrain_type.value, reason, status.value,
                     error or "")
            return result

        if model_type not in MODEL_TYPES:
            return finish(RetrainStatus.FAILED, f"unknown model_type {model_type!r}; known: "
                                                f"{', '.join(MODEL_TYPES)}")
        self.checkpointer.ensure_loaded()
        full = retrain_type is RetrainType.FULL
        with self.checkpointer.retrain_lock:
            with state.lock:
                buffer, weights = state.buffer.contents()
                if not len(buffer):
                    return finish(RetrainStatus.SKIPPED, "no buffered events to retrain on")
                snapshot = state.pick_snapshot(len(buffer))
                if snapshot is None:
                    return finish(
                        RetrainStatus.SKIPPED,
                        f"fewer than min_holdout_events={self.settings.min_holdout_events} "
                        "events applied since the last promotion or load; retry later")
                seq, baseline = snapshot
                holdout_start = len(buffer) - (state.applied_total - seq)
                serving = state.model.copy()
                state.retraining = True
                state.journal = []
            promoted = False
            try:
                outcome = retrain(
                    serving, buffer, weights, baseline=baseline, holdout_start=holdout_start,
                    full=full, discount=self.settings.discount,
                    recency_weight=self.settings.recency_weight,
                    tolerance=self.settings.promotion_tolerance)
                with state.lock:
                    if outcome.promoted:
                        assert outcome.model is not None and outcome.weights is not None
                        state.promote(outcome.model, buffer, outcome.weights)
                        promoted = True
            finally:
                with state.lock:
                    state.retraining = False
                    state.journal = []
            result.events_processed = len(buffer)
            result.promoted = promoted
            result.candidate_score = outcome.candidate_score.score
            result.serving_score = outcome.serving_score.score
            result.scores = {"candidate": outcome.candidate_score.as_dict(),
                             "serving": outcome.serving_score.as_dict(),
                             "holdout_events": len(buffer) - holdout_start}
            state.last_scores = result.scores
            save_error = None
            if promoted:
                self.metrics.last_retrain.set(self.clock())
                # A promoted model is a new version: always saved. When the save
                # fails (disk full) the promoted model already serves: reported
                # as promoted but not saved (result, ledger, autoretrain_model_save_failures_total),
                # never as a failed retrain; the state stays dirty, so the next
                # periodic or explicit save retries.
                save_started = time.perf_counter()
                try:
                    self.checkpointer.save(force=True)
                    result.saved = True
                except OSError as exc:
                    result.saved = False
                    save_error = (f"promoted, not saved: {type(exc).__name__}: {exc}; the "
                                  "promoted model serves from memory, the next save retries")
                    log.error("retrain (%s, %s): %s", retrain_type.value, reason, save_error)
                save_seconds = time.perf_counter() - save_started
                result.save_ms = round(save_seconds * 1000.0, 3)
            result.model_version = state.version
            return finish(RetrainStatus.PROMOTED if promoted else RetrainStatus.REJECTED,
                          save_error)
