"""The selection objective: what "the best agent" means for a task type.

One frozen setting shared by the updater (:class:`~.settings.UpdaterSettings`),
the webhook's configuration and the selector's follower; the model records
the one it ranks by in its saved metadata (``"objective"``), so a follower
ranks by the trainer's objective unless told otherwise.

Modes, for each agent ``a`` of a task type with expected quality ``q_a``
(``E[success] * E[accuracy]``, the model's reward), its standard deviation
``sd_a``, expected cost ``c_a`` (per run, in the unit the events report) and
expected latency ``l_a`` (seconds per run):

``quality`` (the default; the behaviour before objectives existed)
    Rank by ``q_a``; cost and latency are reported, never used.
``weighted``
    Rank by ``q_a - cost_weight * c_a - latency_weight * l_a``: the weights
    are what one unit of cost and one second are worth in quality.
``constrained``
    The cheapest adequate agent: with ``lcb_a = q_a - uncertainty_z * sd_a``
    (what the agent can be trusted to deliver), ``a`` is adequate when
    ``lcb_a >= max_b lcb_b - quality_tolerance``; adequate agents rank by
    cost (then latency, weighted by ``latency_weight``), cheapest first, the
    others after them by quality. A barely-tried cheap agent has a wide
    posterior and a low ``lcb``, so it is not trusted for being cheap; once
    every agent is well estimated (``sd`` near 0) an agent more than
    ``quality_tolerance`` below the best is never ranked first. The agent
    with the highest ``lcb`` is always adequate.

Exploration (``explore=True``) draws each agent's quality from its
posterior (Thompson sampling) and applies the same mode to the draws, with
``sd = 0`` (the draw already carries the uncertainty): a cheap agent that
might be adequate is tried in proportion to that chance.

An agent whose cost (or latency) is not known yet (a model saved before
costs were learnt, or no run of the agent yet) ranks as if it cost the
mean of the known agents of the task type (0 when none is known).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["OBJECTIVE_KEYS", "Objective", "ObjectiveMode", "objective_order"]

#: Standard deviations a constrained-mode quality is discounted by.
UNCERTAINTY_Z = 1.0


class ObjectiveMode(enum.StrEnum):
    """How agents are ranked (see the module docstring)."""

    QUALITY = "quality"
    WEIGHTED = "weighted"
    CONSTRAINED = "constrained"


@dataclass(frozen=True)
class Objective:
    """What the model ranks agents by (see the module docstring).

    Attributes
    ----------
    mode
        ``quality`` (default), ``weighted`` or ``constrained``.
    cost_weight
        Quality one unit of cost is worth (``weighted``); >= 0.
    latency_weight
        Quality one second of latency is worth (``weighted``; in
        ``constrained`` it turns latency into cost when breaking ties); >= 0.
    quality_tolerance
        ``constrained``: how far (in quality, 0..1) below the best an agent
        may be and still count as adequate.
    uncertainty_z
        ``constrained``: standard deviations a quality estimate is discounted by.
    """

    mode: ObjectiveMode | str = ObjectiveMode.QUALITY
    cost_weight: float = 0.0
    latency_weight: float = 0.0
    quality_tolerance: float = 0.05
    uncertainty_z: float = UNCERTAINTY_Z

    def __post_init__(self) -> None:
        try:
            mode = ObjectiveMode(self.mode)
        except ValueError:
            raise ValueError(f"objective must be one of "
                             f"{', '.join(m.value for m in ObjectiveMode)}, got {self.mode!r}"
                             ) from None
        object.__setattr__(self, "mode", mode)
        for name, high in (("cost_weight", math.inf), ("latency_weight", math.inf),
                           ("quality_tolerance", 1.0), ("uncertainty_z", 10.0)):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not 0.0 <= value <= high or not math.isfinite(value)):
                bound = ">= 0" if high == math.inf else f"in [0, {high:g}]"
                raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
            object.__setattr__(self, name, float(value))

    @property
    def uses_cost(self) -> bool:
        """True when cost or latency can change the ranking."""
        return self.mode is not ObjectiveMode.QUALITY

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the model metadata's ``objective``)."""
        out = asdict(self)
        out["mode"] = str(self.mode)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Objective:
        """The objective of :meth:`as_dict` (None or empty: the default);
        ValueError naming an unknown key or a bad value."""
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"objective must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(OBJECTIVE_KEYS))
        if unknown:
            raise ValueError(f"unknown objective setting {unknown[0]!r}; allowed: "
                             f"{', '.join(OBJECTIVE_KEYS)}")
        return cls(**dict(data))


#: The settings' names (``objective`` is the mode in flat configurations).
OBJECTIVE_KEYS = ("mode", "cost_weight", "latency_weight", "quality_tolerance", "uncertainty_z")


def _fill_unknown(values: np.ndarray) -> np.ndarray:
    known = np.isfinite(values)
    if known.all():
        return values
    fill = float(values[known].mean()) if known.any() else 0.0
    return np.where(known, values, fill)


def objective_order(objective: Objective, quality: np.ndarray, quality_sd: np.ndarray,
                    cost: np.ndarray, latency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order best first, score) of one task type's agents under ``objective``.

    ``quality_sd`` is 0 for Thompson draws. ``score`` is what the order is
    by: the quality (``quality``), the weighted value (``weighted``), or
    (``constrained``) the quality, the order being adequate agents by cost.
    Ties keep the agents' order (a stable sort), as the quality ranking does.
    """
    mode = objective.mode
    if mode is ObjectiveMode.QUALITY:
        return np.argsort(-quality, kind="stable"), quality
    cost = _fill_unknown(cost)
    latency = _fill_unknown(latency)
    if mode is ObjectiveMode.WEIGHTED:
        score = quality - objective.cost_weight * cost - objective.latency_weight * latency
        return np.argsort(-score, kind="stable"), score
    lcb = quality - objective.uncertainty_z * quality_sd
    adequate = lcb >= lcb.max() - objective.quality_tolerance - 1e-12
    price = cost + objective.latency_weight * latency
    # Adequate agents first, cheapest first; then the rest by quality.
    key = np.where(adequate, price, np.inf)
    order = np.lexsort((-quality, key))
    return order, quality
