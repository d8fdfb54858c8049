"""Smoke test of the decision-quality benchmark (bench/decisions.py) on tiny sizes.

Not a benchmark: it checks that the harness runs every policy on every
scenario, produces finite figures, and that the oracle is the limit.
"""

from __future__ import annotations

import math

import pytest

from bench import decisions
from bench.decisions import (
    HEADLINE,
    JOINER,
    NOISY_PAIR,
    ORIGINAL,
    PREVIOUS,
    Sizes,
    Stream,
    joiner_scenario,
    noisy_scenario,
    play,
    policy_factories,
    properties,
    scenarios,
)

TINY = Sizes(decisions=300, drift_at=120, ramp=60, outage=60, window=60)


@pytest.fixture(scope="module")
def result() -> dict:
    return decisions.run(seeds=1, sizes=TINY)


def test_every_policy_runs_every_scenario(result: dict) -> None:
    # The first three from issue 6; "joiner" and "noisy" from issue 14.
    assert list(result["scenarios"])[:3] == ["abrupt", "gradual", "revert"]
    assert {"joiner", "noisy"} <= set(result["scenarios"])
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
    assert {"abrupt", "gradual", "revert"} <= set(result["targets"])
    text = decisions.report(result)
    for heading in ("### abrupt", "### gradual", "### revert", "### targets", HEADLINE):
        assert heading in text
    for heading in ("### joiner", "### noisy", PREVIOUS, decisions.DAY, "new agent found",
                    "noisy pair: parks"):
        assert heading in text
    for judged in result["targets"].values():
        assert set(judged) == {HEADLINE, decisions.DAY, PREVIOUS}


def test_streams_are_seeded_and_the_drift_changes_the_best_agent() -> None:
    abrupt = scenarios(TINY)[0]
    a, b = Stream.build(abrupt, 3), Stream.build(abrupt, 3)
    assert (a.task == b.task).all() and a.draws == b.draws
    assert a.execute(10, 4) == b.execute(10, 4)
    # sales_forecast (row 0): the specialist (column 0) is best before the drift only.
    assert a.best[TINY.drift_at - 1, 0] == 0 and a.best[TINY.drift_at, 0] != 0


def test_the_joining_agent_is_unavailable_before_it_joins() -> None:
    sc = joiner_scenario(TINY)
    stream = Stream.build(sc, 1)
    col = [a for a, _ in sc.agents].index(JOINER[0])
    at = dict(sc.joins)[JOINER[0]]
    triage = decisions.TASK_TYPES.index("support_triage")
    assert (stream.best[:at] != col).all()
    assert stream.best[at, triage] == col  # the best on support triage from then on
    # Its trial runs come right after it joins, never before.
    forced = [i for i, a in enumerate(stream.onboarding) if a == col]
    assert forced and min(forced) >= at and len(forced) == 2 * len(decisions.TASK_TYPES)
    # No policy can choose it before it joins (River's arms, VW's actions ...).
    for name, factory in policy_factories(include_vw=False).items():
        played = play(stream, factory(decisions.SimClock(), 1, stream))
        assert (played["chosen"][:at] != col).all(), name


def test_the_noisy_spell_scatters_records_around_the_same_median() -> None:
    sc = noisy_scenario(TINY)
    stream = Stream.build(sc, 1)
    (spell,) = sc.drifts
    t, a = decisions.TASK_TYPES.index(NOISY_PAIR[0]), [x for x, _ in sc.agents].index(NOISY_PAIR[1])
    assert stream.noise[spell.start - 1, t, a] == decisions.ACCURACY_LOGIT_SD
    assert stream.noise[spell.start, t, a] == decisions.NOISY_LOGIT_SD
    assert stream.noise[spell.end, t, a] == decisions.ACCURACY_LOGIT_SD
    assert stream.accuracy[spell.start, t, a] == stream.accuracy[0, t, a]  # the same median
    assert stream.success[spell.start, t, a] == stream.success[0, t, a]
    # Still the best agent on its task type throughout: setting it aside only costs.
    assert (stream.best[:, t] == a).all()


# Large enough for the properties to mean something, one seed, the defaults only.
MEDIUM = Sizes(decisions=3000, drift_at=1000, ramp=600, outage=900, window=300)


def _defaults(sc: decisions.Scenario) -> dict:
    stream = Stream.build(sc, 1)
    played = play(stream, policy_factories(include_vw=False)[HEADLINE](
        decisions.SimClock(), 1, stream))
    return properties(stream, played)


def test_the_defaults_find_the_joining_agent_through_exploration() -> None:
    # The benchmark's sizes and its seed 1 (found after ~500 decisions there):
    # two trial runs do not make the newcomer the greedy choice over the
    # specialist's long record; only the exploration share of requests can.
    found = _defaults(joiner_scenario(decisions.FULL))
    assert found["found_after"] is not None and found["found_after"] <= 1500, found
    assert found["joiner_end_share"] >= decisions.FOUND_SHARE, found


def test_the_noisy_spell_does_not_park_the_healthy_agent_for_long_nor_flap() -> None:
    noisy = _defaults(noisy_scenario(MEDIUM))
    assert noisy["noisy_parks"] <= decisions.NOISY_MAX_PARKS, noisy
    assert noisy["noisy_longest_park"] <= decisions.NOISY_MAX_PARK_DECISIONS, noisy
    assert noisy["noisy_back_share"] >= 0.8, noisy


def test_a_subset_of_scenarios_runs_and_writes_beside_the_full_results() -> None:
    result = decisions.run(seeds=1, sizes=TINY, first_seed=3, only=["revert"])
    assert list(result["scenarios"]) == ["revert"] and list(result["targets"]) == ["revert"]
    assert result["seeds"] == [3]
    # Only seeds 1..N of every scenario are the figures BENCHMARKS.md cites.
    assert decisions.results_name([1, 2, 3, 4, 5]) == "decisions"
    assert decisions.results_name([6, 7, 8, 9, 10]) == "decisions-seeds-6-10"
    assert decisions.results_name([1, 2], ["revert", "joiner"]) == (
        "decisions-revert-joiner-seeds-1-2")


def test_the_outage_length_is_a_parameter_named_in_the_results() -> None:
    sizes = decisions.with_outage(decisions.FULL, 45)
    assert sizes.outage == 1350 and sizes.decisions == decisions.FULL.decisions
    revert = {sc.name: sc for sc in decisions.scenarios(sizes)}["revert"]
    assert revert.story == "two agents fail 75 % of runs for 45 min, then recover"
    (drift,) = revert.drifts
    assert drift.end - drift.start == 1350
    assert decisions.results_name([1, 2], ["revert"], 45.0) == (
        "decisions-revert-outage-45min-seeds-1-2")
    assert decisions.results_name([1, 2, 3], None, 12.5) == "decisions-outage-12.5min-seeds-1-3"


@pytest.mark.parametrize("minutes", ["0", "-5", "nan", "inf", "200"])
def test_an_outage_that_does_not_fit_the_run_is_refused(
        minutes: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        decisions.main(["--quick", "--scenarios", "revert", "--outage-minutes", minutes])
    assert "--outage-minutes: the outage must last more than 0 and at most" in (
        capsys.readouterr().err)


def test_unknown_scenarios_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        decisions.main(["--quick", "--scenarios", "revert,nope"])
    assert "--scenarios must name some of abrupt" in capsys.readouterr().err


def test_the_defaults_are_rerun_on_other_draws_as_the_noise_floor(result: dict) -> None:
    # The module's run has the full run's twins: the defaults again with
    # other seeds for their Thompson draws, on the same stream.
    twins_seen = []
    for name, scenario in result["scenarios"].items():
        (per_seed,) = scenario["draw_twins"]  # one seed
        assert [t["draw_seed"] for t in per_seed] == [
            1 + decisions.TWIN_SEED_STEP * k for k in range(1, decisions.DRAW_TWINS + 1)]
        head = scenario["policies"][HEADLINE]["runs"][0]
        twins_seen += [t["share"] for t in per_seed]
        judged = result["targets"][name][HEADLINE]
        below = sum(t["share"] > head["share"] for t in per_seed) > 0
        assert judged["below_own_twin_runs"] == f"{int(below)}/1"
        assert judged["draw_twins"] == decisions.DRAW_TWINS
        # Only the defaults get twins.
        assert "draw_twins" not in result["targets"][name][PREVIOUS]
    # A twin is the defaults with other draws: rerun with its seed it gives
    # the same figures, and the draws change some run.
    stream = Stream.build(scenarios(TINY)[0], 1)
    oracle = play(stream, None)["rewards"]
    factory = policy_factories(include_vw=False)[HEADLINE]
    twin = result["scenarios"]["abrupt"]["draw_twins"][0][0]
    again = play(stream, factory(decisions.SimClock(), twin["draw_seed"], stream))
    assert decisions.evaluate(stream, again["rewards"], oracle)["share"] == twin["share"]
    heads = [sc["policies"][HEADLINE]["runs"][0]["share"] for sc in result["scenarios"].values()]
    assert set(twins_seen) - set(heads)
    assert "the defaults on other Thompson draws (noise floor)" in decisions.report(result)
    assert "twins in" in decisions.report(result)


def test_the_noise_floor_counts_runs_below_a_twin_and_twins_missing_targets() -> None:
    head = [{"share": 0.980}, {"share": 0.990}]
    orig = [{"post_drift_regret": 100.0}, {"post_drift_regret": 50.0}]
    twins = [
        [{"share": 0.985, "post_drift_regret": 10.0}, {"share": 0.960, "post_drift_regret": 30.0}],
        [{"share": 0.990, "post_drift_regret": 5.0}, {"share": 0.975, "post_drift_regret": 11.0}],
    ]
    floor = decisions._noise_floor(head, orig, twins)
    # Seed 1 is below its first twin (by 0.005); seed 2 ties its best twin.
    assert floor["below_own_twin_runs"] == "1/2"
    assert floor["below_own_twin_by_max"] == pytest.approx(0.005)
    assert floor["twin_share_missed_runs"] == "1/4"  # 0.960
    assert floor["twin_regret_missed_runs"] == "2/4"  # 30/100 and 11/50
    assert floor["draw_twins"] == 2


def test_no_twins_leaves_the_noise_floor_out(capsys: pytest.CaptureFixture[str]) -> None:
    result = decisions.run(seeds=1, sizes=TINY, only=["noisy"], twins=0)
    assert "draw_twins" not in result["scenarios"]["noisy"]
    assert "draw_twins" not in result["targets"]["noisy"][HEADLINE]
    assert "twins in" not in decisions.report(result)
    with pytest.raises(SystemExit):
        decisions.main(["--quick", "--twins", "-1"])
    assert "--twins must be >= 0, got -1" in capsys.readouterr().err
