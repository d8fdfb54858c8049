"""Smoke test of the decision-quality benchmark (bench/decisions.py) on tiny sizes.

Not a benchmark: it checks that the harness runs every policy on every
scenario, produces finite figures, and that the oracle is the limit.
"""

from __future__ import annotations

import math

import pytest

from bench import decisions
from bench.decisions import HEADLINE, ORIGINAL, Sizes, Stream, scenarios

TINY = Sizes(decisions=300, drift_at=120, ramp=60, outage=60, window=60)


@pytest.fixture(scope="module")
def result() -> dict:
    return decisions.run(seeds=1, sizes=TINY)


def test_every_policy_runs_every_scenario(result: dict) -> None:
    assert list(result["scenarios"]) == ["abrupt", "gradual", "revert"]
    for scenario in result["scenarios"].values():
        policies = scenario["policies"]
        assert {HEADLINE, ORIGINAL, "oracle"} <= set(policies)
        assert any(name.startswith("River") for name in policies)
        for name, p in policies.items():
            assert math.isfinite(p["share"]["median"]) and p["share"]["median"] > 0.3, name
            assert math.isfinite(p["post_drift_regret"]["median"]), name


def test_the_oracle_is_the_limit(result: dict) -> None:
    for scenario in result["scenarios"].values():
        oracle = scenario["policies"]["oracle"]
        assert oracle["share"]["median"] == 1.0
        assert oracle["post_drift_regret"]["median"] == 0.0
        assert oracle["recovery"]["median"] == 0


def test_targets_and_report(result: dict) -> None:
    assert set(result["targets"]) == {"abrupt", "gradual", "revert"}
    text = decisions.report(result)
    for heading in ("### abrupt", "### gradual", "### revert", "### targets", HEADLINE):
        assert heading in text


def test_streams_are_seeded_and_the_drift_changes_the_best_agent() -> None:
    abrupt = scenarios(TINY)[0]
    a, b = Stream.build(abrupt, 3), Stream.build(abrupt, 3)
    assert (a.task == b.task).all() and a.draws == b.draws
    assert a.execute(10, 4) == b.execute(10, 4)
    # sales_forecast (row 0): the specialist (column 0) is best before the drift only.
    assert a.best[TINY.drift_at - 1, 0] == 0 and a.best[TINY.drift_at, 0] != 0
