"""Smoke test of the cost benchmark (bench/cost.py) on tiny sizes: every policy runs,
the figures are finite, the references are what they claim."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import cost
from bench.cost import CostStream, Sizes

TINY = Sizes(decisions=400, price_change_at=200)


@pytest.fixture(scope="module")
def result() -> dict:
    return cost.run(seeds=1, sizes=TINY)


def test_every_policy_runs_with_finite_figures(result: dict) -> None:
    policies = result["policies"]
    assert {"always the strongest", "always the cheapest"} <= set(policies)
    assert sum(name.startswith("autoretrain constrained") for name in policies) == len(
        cost.TOLERANCES)
    assert any(name.startswith("River") for name in policies)
    for name, p in policies.items():
        assert math.isfinite(p["quality"]) and math.isfinite(p["cost"]), name
        assert 0.0 < p["cost_share"] <= 1.5, name
    assert policies["always the strongest"]["quality_share"] == 1.0
    assert policies["always the strongest"]["cost_share"] == 1.0


def test_the_oracle_frontier_is_monotone_and_the_random_line_is_between(result: dict) -> None:
    front = result["oracle_frontier"]
    costs = [f["cost"] for f in front]
    assert costs == sorted(costs, reverse=True)  # a wider tolerance never costs more
    cheap, strong = result["policies"]["always the cheapest"], result["policies"][
        "always the strongest"]
    for name, p in result["policies"].items():
        if "random_same_cost_quality" in p:
            low, high = sorted((cheap["quality"], strong["quality"]))
            assert low <= p["random_same_cost_quality"] <= high, name


def test_the_price_doubles_halfway() -> None:
    stream = CostStream.build(TINY, seed=1)
    col = [a for a, _ in cost.AGENTS].index(cost.REPRICED)
    assert stream.prices[TINY.price_change_at, col] == 2 * stream.prices[0, col]
    assert stream.prices[TINY.price_change_at - 1, col] == stream.prices[0, col]


def test_the_plot_is_written(result: dict, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = cost.plot(result, tmp_path / "curve.png")
    assert path.stat().st_size > 10_000
