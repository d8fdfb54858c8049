"""BackgroundLoop: steps until stopped, backs off after errors, resets after a success."""

from __future__ import annotations

import threading

import pytest

from autoretrain.exporter.background import BackgroundLoop


def test_steps_until_stopped_and_stops_promptly() -> None:
    calls = threading.Semaphore(0)
    loop = BackgroundLoop("t", lambda: calls.release(), interval=0.001)
    loop.start()
    assert all(calls.acquire(timeout=5) for _ in range(3))
    assert loop.running
    assert loop.stop(timeout=5)
    assert not loop.running


def test_errors_are_reported_with_a_doubling_backoff_reset_by_success() -> None:
    outcomes = iter([ValueError("a"), ValueError("b"), None, ValueError("c")])
    reported: list[tuple[str, float]] = []
    done = threading.Event()

    def step() -> None:
        outcome = next(outcomes, None)
        if len(reported) == 3:
            done.set()
        if outcome is not None:
            raise outcome

    loop = BackgroundLoop("t", step, on_error=lambda exc, wait: reported.append((str(exc), wait)),
                          initial_backoff=0.01, max_backoff=1.0)
    loop.start()
    assert done.wait(5)
    loop.stop(5)
    assert reported == [("a", 0.01), ("b", 0.02), ("c", 0.01)]


@pytest.mark.parametrize("kwargs", [{"interval": -1}, {"initial_backoff": 0},
                                    {"initial_backoff": 2, "max_backoff": 1}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="initial_backoff"):
        BackgroundLoop("t", lambda: None, **kwargs)
