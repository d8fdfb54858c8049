"""Accuracy of one prediction against the real outcome (docs/DESIGN.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["score_accuracy"]

_EPS = 1e-9


def _score_value(predicted: Any, actual: Any) -> float:
    if isinstance(actual, bool) or isinstance(predicted, bool):
        # True == 1 in Python; a yes/no outcome is matched as a yes/no.
        return 1.0 if type(predicted) is type(actual) and predicted == actual else 0.0
    numeric = (int, float)
    if isinstance(actual, numeric) and isinstance(predicted, numeric):
        if not (math.isfinite(actual) and math.isfinite(predicted)):
            return 1.0 if predicted == actual else 0.0
        return max(0.0, 1.0 - abs(predicted - actual) / max(abs(actual), _EPS))
    return 1.0 if predicted == actual else 0.0


def score_accuracy(predicted: Mapping[str, Any], actual: Mapping[str, Any]) -> float:
    """Mean per-key score of ``predicted`` against ``actual``, in 0..1.

    For each key of ``actual``: numbers score ``max(0, 1 - |p - a| / max(|a|, eps))``,
    other values score 1 if equal else 0, and a key missing from the
    prediction scores 0. Keys only in the prediction are ignored.

    >>> round(score_accuracy({"sales": 10000}, {"sales": 9500}), 3)
    0.947
    >>> score_accuracy({"label": "spam"}, {"label": "spam", "score": 3})
    0.5
    """
    if not isinstance(actual, Mapping) or not isinstance(predicted, Mapping):
        raise ValueError(
            "predicted_outcome and actual_outcome must be mappings, got "
            f"{type(predicted).__name__} and {type(actual).__name__}"
        )
    if not actual:
        raise ValueError("actual_outcome must hold at least one key to score against")
    total = 0.0
    for key, value in actual.items():
        if key in predicted:
            total += _score_value(predicted[key], value)
    return total / len(actual)
