import math

import pytest

from autoretrain.exporter import score_accuracy


@pytest.mark.parametrize(
    ("predicted", "actual", "expected"),
    [
        ({"sales": 10000}, {"sales": 9500}, 1 - 500 / 9500),
        ({"sales": 9500}, {"sales": 9500}, 1.0),
        ({"sales": 30000}, {"sales": 9500}, 0.0),  # clamped at 0
        ({"sales": -9500}, {"sales": 9500}, 0.0),
        ({"label": "spam"}, {"label": "spam"}, 1.0),
        ({"label": "ham"}, {"label": "spam"}, 0.0),
        ({}, {"label": "spam"}, 0.0),  # missing key scores 0
        ({"label": "spam"}, {"label": "spam", "n": 4}, 0.5),
        ({"x": 0}, {"x": 0}, 1.0),  # zero actual: eps denominator, exact match
        ({"x": 0.5}, {"x": 0}, 0.0),  # zero actual: any miss is total
        ({"flag": True}, {"flag": True}, 1.0),  # bools compare, not subtract
        ({"flag": 1}, {"flag": True}, 0.0),
        ({"a": 10, "b": "x", "extra": 1}, {"a": 8, "b": "y"}, (0.75 + 0.0) / 2),
    ],
)
def test_accuracy_scoring_table(predicted, actual, expected):
    assert math.isclose(score_accuracy(predicted, actual), expected, abs_tol=1e-12)


def test_design_example_rounds_to_0_947():
    assert round(score_accuracy({"sales": 10000}, {"sales": 9500}), 3) == 0.947


@pytest.mark.parametrize(
    ("predicted", "actual", "message"),
    [({"a": 1}, {}, "at least one key"), ([1], {"a": 1}, "mappings"), ({"a": 1}, "a", "mappings")],
)
def test_bad_outcomes_raise(predicted, actual, message):
    with pytest.raises(ValueError, match=message):
        score_accuracy(predicted, actual)
