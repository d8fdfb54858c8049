"""The drop detector's ratios: a batch of runs per pair equals the ratios per observation."""

import numpy as np

from autoretrain.webhook.updater.drops import DROP_MIN_EVIDENCE, drop_llr, drop_llr_runs


def test_ratios_of_runs_per_pair_equal_the_ratios_per_observation():
    rng = np.random.default_rng(3)
    pairs = 12
    runs = rng.choice([0.0, 2.0, DROP_MIN_EVIDENCE, 40.0, 1e4], size=pairs) * rng.random(pairs)
    runs[:4] = [0.0, DROP_MIN_EVIDENCE, 50.0, 3.0]
    successes = runs * rng.random(pairs)
    records = rng.random((3, pairs)) * 20.0
    pair = rng.integers(pairs, size=500)
    value = (rng.random(500) < 0.6).astype(float)
    is_run = np.ones(500, dtype=bool)

    evidence = [x[pair] for x in (runs, successes, *records)]
    expected = drop_llr(evidence, is_run, value)
    tested = evidence[0] >= DROP_MIN_EVIDENCE
    result = drop_llr_runs(runs, successes, pair, value)
    assert result is not None
    llr, kept = result
    assert np.array_equal(kept, pair[tested])
    assert np.array_equal(llr, expected[tested])  # bit for bit
    assert not expected[~tested].any()


def test_no_ratios_when_no_run_is_of_a_tested_pair():
    runs = np.array([DROP_MIN_EVIDENCE + 1.0, 1.0])
    assert drop_llr_runs(runs, runs / 2, np.array([1, 1]), np.array([1.0, 0.0])) is None
    assert drop_llr_runs(runs * 0.0, runs, np.array([0, 1]), np.array([1.0, 0.0])) is None
