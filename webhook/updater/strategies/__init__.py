"""Update strategies: how evidence about a (task type, agent) pair accumulates.

One module per rule (as river keeps one policy per file), on the base in
:mod:`.base`: :class:`BayesianRule` (counts that never forget),
:class:`ExponentialRule` (forgetting in event time, probation, drop
detection), :class:`MovingAverageRule` (a window per pair) and
:class:`GradientRule` (logistic models on hashed features).

A rule owns its hyperparameters: pass a rule object, e.g.
``ExponentialRule(half_life_seconds=600)``, where a strategy is expected, and
only that rule's settings can be given. :func:`make_rule` keeps the older
keyword form (``strategy`` plus every strategy's hyperparameters by name)
working for the public API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import (
    CHANGE_MIN_EVIDENCE,
    CHANGE_Z,
    Evidence,
    Observations,
    Rule,
    UpdateStrategy,
    retrain_factors,
)
from .bayesian import BayesianRule
from .exponential import ExponentialRule
from .gradient import GradientRule
from .moving_average import MovingAverageRule

__all__ = [
    "CHANGE_MIN_EVIDENCE",
    "CHANGE_Z",
    "HYPERPARAMETERS",
    "RULES",
    "BayesianRule",
    "Evidence",
    "ExponentialRule",
    "GradientRule",
    "MovingAverageRule",
    "Observations",
    "Rule",
    "UpdateStrategy",
    "make_rule",
    "parse_strategy",
    "retrain_factors",
    "rule_from_hyperparameters",
]

#: The rule class of each strategy.
RULES: dict[UpdateStrategy, type[Rule]] = {
    UpdateStrategy.BAYESIAN: BayesianRule,
    UpdateStrategy.EXPONENTIAL: ExponentialRule,
    UpdateStrategy.MOVING_AVERAGE: MovingAverageRule,
    UpdateStrategy.GRADIENT: GradientRule,
}

#: The hyperparameters of the keyword form and the rule that owns each.
HYPERPARAMETERS: dict[str, type[Rule]] = {
    "half_life_seconds": ExponentialRule,
    "retry_after_seconds": ExponentialRule,
    "detect_drops": ExponentialRule,
    "window_size": MovingAverageRule,
    "learning_rate": GradientRule,
    "hash_bits": GradientRule,
    "minibatch_size": GradientRule,
}


def parse_strategy(value: Any, name: str = "update_strategy") -> UpdateStrategy:
    """``value`` (an :class:`UpdateStrategy` or its value) as a strategy;
    ValueError naming the allowed values otherwise."""
    try:
        return UpdateStrategy(value)
    except ValueError:
        allowed = ", ".join(s.value for s in UpdateStrategy)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}") from None


def make_rule(strategy: UpdateStrategy | str | Rule, **hyperparameters: Any) -> Rule:
    """The rule for ``strategy`` with the named hyperparameters (the others: the rule's defaults).

    ``strategy`` may be a rule object already (then no hyperparameters may be
    given: it has its own). In the keyword form a hyperparameter of another
    strategy is still checked (a bad value is a ValueError, as it always
    was) but has no effect, so a caller may pass one set of settings
    whatever the strategy; ``detect_drops=True`` with a strategy other than
    EXPONENTIAL is refused, since it would silently do nothing.
    """
    if isinstance(strategy, Rule):
        if hyperparameters:
            raise ValueError(
                f"{type(strategy).__name__} has its own hyperparameters; do not also pass "
                f"{', '.join(sorted(hyperparameters))}")
        return strategy
    strategy = parse_strategy(strategy, "strategy")
    rule_class = RULES[strategy]
    own: dict[str, Any] = {}
    foreign: dict[type[Rule], dict[str, Any]] = {}
    for name, value in hyperparameters.items():
        owner = HYPERPARAMETERS.get(name)
        if owner is None:
            raise ValueError(f"unknown hyperparameter {name!r}; known: "
                             f"{', '.join(HYPERPARAMETERS)}")
        if owner is rule_class:
            own[name] = value
        else:
            foreign.setdefault(owner, {})[name] = value
    exponential = foreign.get(ExponentialRule, {})
    if exponential.get("detect_drops") is True:
        raise ValueError(f"detect_drops works with the exponential strategy, not {strategy.value}")
    for owner, values in foreign.items():
        owner.check_hyperparameters(**values)
    return rule_class(**own)


def rule_from_hyperparameters(strategy: UpdateStrategy | str,
                              saved: Mapping[str, Any]) -> Rule:
    """The rule a stored model's metadata describes: ``saved`` is its
    ``hyperparameters`` map, in which only the keys the strategy's rule takes
    are used (the updater stores its own settings in the same map, and older
    versions stored every strategy's)."""
    rule_class = RULES[parse_strategy(strategy, "strategy")]
    names = rule_class.hyperparameter_names()
    return rule_class(**{k: v for k, v in saved.items() if k in names})
