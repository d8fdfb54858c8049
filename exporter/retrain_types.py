"""The names a retrain goes by across the loop: the model type and the retrain type.

The alert rules (:mod:`.rules`) label retrain alerts with them, the
monitor's checker asks for them, and the webhook and the updater
(:mod:`autoretrain.webhook.updater.results`) validate, record and export
them; written once here, in the lowest layer, so that every part agrees.
"""

from __future__ import annotations

import enum

__all__ = ["MODEL_TYPE", "MODEL_TYPES", "RetrainType"]

#: The one model the updater keeps (``model_type`` in alerts, requests,
#: results, metrics, files and model messages).
MODEL_TYPE = "agent_selection"
#: Every model type a retrain may name.
MODEL_TYPES = (MODEL_TYPE,)


class RetrainType(enum.StrEnum):
    """Incremental (shift the serving model toward the buffer) or full (refit on it)."""

    INCREMENTAL = "incremental"
    FULL = "full"

    @classmethod
    def of(cls, full: bool) -> RetrainType:
        """FULL when ``full``, else INCREMENTAL."""
        return cls.FULL if full else cls.INCREMENTAL
