"""What a retrain is and what it returned: :class:`RetrainType`, :class:`RetrainResult`.

Inside the package a retrain's result is a :class:`RetrainResult`; the dict
the public API has always returned (``trigger_retraining``, the HTTP body,
the ledger) is built in one place, :meth:`RetrainResult.as_dict`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from autoretrain.exporter.retrain_types import MODEL_TYPE, MODEL_TYPES, RetrainType

__all__ = ["MODEL_TYPE", "MODEL_TYPES", "RetrainResult", "RetrainStatus", "RetrainType"]


class RetrainStatus(enum.StrEnum):
    """How a retrain ended (the ``result`` label of ``autoretrain_model_retrains_total``)."""

    PROMOTED = "promoted"
    REJECTED = "rejected"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class RetrainResult:
    """One retrain's result; :meth:`as_dict` is the public dict.

    ``duration_ms`` is the retrain itself (candidate, held-out scoring,
    promotion); ``save_ms`` the save of a promoted model. ``scores`` holds the
    score components once candidates were scored. ``saved`` (promoted
    retrains only) is False when the promoted model serves but its save
    failed (disk full): ``model_version`` is then still the last saved
    version, ``error`` says why, and the next save retries.
    """

    model_type: str
    retrain_type: RetrainType
    reason: str
    timestamp: str
    model_version: int
    status: RetrainStatus | None = None
    events_processed: int = 0
    duration_ms: float = 0.0
    promoted: bool = False
    candidate_score: float | None = None
    serving_score: float | None = None
    error: str | None = None
    scores: dict[str, Any] | None = None
    save_ms: float | None = None
    saved: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        """True when candidates were built and scored (promoted or rejected)."""
        return self.status in (RetrainStatus.PROMOTED, RetrainStatus.REJECTED)

    def as_dict(self) -> dict[str, Any]:
        """The dict ``trigger_retraining`` returns (keys and order as they always were)."""
        out: dict[str, Any] = {
            "success": self.success,
            "model_type": self.model_type,
            "retrain_type": self.retrain_type.value,
            "events_processed": self.events_processed,
            "duration_ms": self.duration_ms,
            "reason": self.reason,
            "timestamp": self.timestamp,
            "promoted": self.promoted,
            "candidate_score": self.candidate_score,
            "serving_score": self.serving_score,
            "model_version": self.model_version,
        }
        if self.scores is not None:
            out["scores"] = self.scores
        if self.save_ms is not None:
            out["save_ms"] = self.save_ms
        if self.saved is not None:
            out["saved"] = self.saved
        if self.status is not None:
            out["result"] = self.status.value
        if self.error is not None:
            out["error"] = self.error
        return out
