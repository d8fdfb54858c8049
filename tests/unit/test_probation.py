"""Probation and drop detection (EXPONENTIAL): a worse agent is parked, retried, restored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from autoretrain.exporter.events import accuracy_event, run_event
from autoretrain.webhook import RealTimeModelUpdater
from autoretrain.webhook.updater import model as model_module
from autoretrain.webhook.updater.batch import EventBatch
from autoretrain.webhook.updater.model import AgentSelectionModel
from autoretrain.webhook.updater.probation import PROBE_RUNS, PROBES_IN_FLIGHT, Probation
from autoretrain.webhook.updater.retrain import full_retrain, incremental_retrain
from autoretrain.webhook.updater.strategies import UpdateStrategy, retrain_factors

# Timeline (event time, seconds): "a" and "b" run once a second on task type
# "t" for HISTORY seconds; then BAD seconds in which "a" succeeds 25 % of the
# time. The buffer of the retrain is the bad period, so the model clock is
# PARKED_AT and the first retry opens RETRY seconds later.
HISTORY, BAD, RETRY = 3000, 100, 600
PARKED_AT = float(HISTORY + BAD - 1)
FIRST_RETRY = PARKED_AT + RETRY


def run(eid: str, t: float, ok: bool, agent: str, task: str = "t") -> dict:
    return run_event(eid, t, agent, "llm", "success" if ok else "failure", 1.0, 0, 0.0,
                     task_type=task)


def acc(eid: str, t: float, value: float, agent: str, task: str = "t") -> dict:
    return accuracy_event(eid, t, agent, "llm", "task", value, "human", task_type=task)


def b_ok(i: int) -> bool:
    return i % 20 >= 3  # 85 %


def history(n: int = HISTORY) -> list[dict]:
    """"a": 97 % success, accuracy 0.9; "b": 85 %, accuracy 0.8 (one record per 10 runs)."""
    events = []
    for i in range(n):
        events.append(run(f"ha{i}", float(i), i % 100 >= 3, "a"))
        events.append(run(f"hb{i}", float(i), b_ok(i), "b"))
        if i % 10 == 0:
            events.append(acc(f"ca{i}", float(i), 0.9, "a"))
            events.append(acc(f"cb{i}", float(i), 0.8, "b"))
    return events


def bad_period(start: int = HISTORY, n: int = BAD) -> list[dict]:
    """"a" succeeds one run in four; "b" is as before."""
    events = []
    for k in range(n):
        t = float(start + k)
        events.append(run(f"ba{start + k}", t, k % 4 == 0, "a"))
        events.append(run(f"bb{start + k}", t, b_ok(k), "b"))
    return events


def b_until(model: AgentSelectionModel, start: float, stop: float) -> None:
    """Only "b" runs, one a second from ``start`` to ``stop`` (inclusive): time passes."""
    ts = np.arange(start, stop + 1.0)
    model.update(EventBatch.from_events([run(f"tb{t}", float(t), b_ok(int(t)), "b")
                                         for t in ts]))


def a_runs(model: AgentSelectionModel, start: float, outcomes: list[bool]) -> None:
    for k, ok in enumerate(outcomes):
        model.update(EventBatch.from_events([run(f"ra{start + k}", start + k, ok, "a")]))


# A retry of "a" that finds it worse but running (three runs in five succeed,
# against 97 % before): the fifth run decides "still broken", and its runs
# since the park succeed more than half as often as its history's, so its
# retries back off from the second that fails. Two failures alone are an
# outage: retried on schedule.
WORSE = [True, True, False, True, False]


def top(model: AgentSelectionModel) -> str:
    return model.predict_best_agent("t")[0][0]


def successes_to_restore(model: AgentSelectionModel, start: float) -> int:
    """Successful runs of "a" from ``start`` until its open retry restores it
    (up to 20); it is then the greedy choice again."""
    for k in range(1, 21):
        a_runs(model, start + k - 1, [True])
        if not model.parked_pairs():
            assert top(model) == "a"
            return k
    raise AssertionError("twenty successes did not restore it")


def explore_tops(model: AgentSelectionModel, draws: int = 30) -> set[str]:
    return {model.predict_best_agent("t", explore=True)[0][0] for _ in range(draws)}


def serving_and_candidate(retry_after_seconds: float | None = RETRY
                          ) -> tuple[AgentSelectionModel, AgentSelectionModel]:
    """The serving model after the bad period, and its incremental retrain on it
    (the drop detector off: this is the retrain's path)."""
    model = AgentSelectionModel(retry_after_seconds=retry_after_seconds,
                                detect_drops=False if retry_after_seconds else None, seed=0)
    model.update(EventBatch.from_events(history()))
    buffer = EventBatch.from_events(bad_period())
    model.update(buffer)
    assert top(model) == "a"  # the long history still outweighs the bad period
    candidate, _ = incremental_retrain(model, buffer, np.ones(len(buffer)), discount=0.25,
                                       recency_weight=2.0)
    return model, candidate


@pytest.fixture
def parked() -> AgentSelectionModel:
    return serving_and_candidate()[1]


def test_retrain_parks_the_worse_agent_and_explore_retries_it_on_time() -> None:
    serving, candidate = serving_and_candidate()
    assert candidate.parked_pairs() == 1
    assert serving.parked_pairs() == 0 and top(serving) == "a"  # the serving model is untouched
    assert top(candidate) == "b"
    assert explore_tops(candidate) == {"b"}  # before the retry: "a" looks broken
    b_until(candidate, PARKED_AT + 1, FIRST_RETRY - 1)
    assert explore_tops(candidate) == {"b"}
    b_until(candidate, FIRST_RETRY, FIRST_RETRY)
    ranked = candidate.predict_best_agent("t", explore=True)
    assert ranked[0][0] == "a" and ranked[0][1] == pytest.approx(0.97 * 0.9, abs=0.01)
    assert explore_tops(candidate) == {"a"}
    assert top(candidate) == "a"  # the open retry's probes are routed greedily too
    assert candidate.parked_pairs() == 1


def test_a_probe_is_routed_greedily_until_it_has_its_runs(parked: AgentSelectionModel) -> None:
    b_until(parked, PARKED_AT + 1, FIRST_RETRY)
    # Neither "back" nor "still broken" yet: four successes, a failure, successes.
    outcomes = [True, True, True, True, False, True, True, True]
    assert len(outcomes) == PROBE_RUNS
    for k, ok in enumerate(outcomes):
        assert top(parked) == "a", k  # every request of the task type tries it
        a_runs(parked, FIRST_RETRY + 1 + k, [ok])
    assert parked.parked_pairs() == 1  # undecided ...
    assert top(parked) == "b"  # ... and its probes spent: greedy routing is back on "b"
    assert explore_tops(parked) == {"a"}  # the retry goes on with the explored share
    a_runs(parked, FIRST_RETRY + 1 + PROBE_RUNS, [True, True])
    assert parked.parked_pairs() == 0 and top(parked) == "a"


def test_probes_go_out_a_few_at_a_time_so_late_outcomes_do_not_flood_the_agent(
        parked: AgentSelectionModel) -> None:
    """A router whose outcomes come back late (a busy task type between two
    updates, a serving process that reloads the model every few seconds)
    sends an open retry PROBES_IN_FLIGHT greedy requests, then none until
    their outcomes are observed; ranking with estimates routes too."""
    b_until(parked, PARKED_AT + 1, FIRST_RETRY)
    routed = [parked.rank_agents("t", top_k=1)[0].agent]
    routed += [top(parked) for _ in range(20)]
    assert routed == ["a"] * PROBES_IN_FLIGHT + ["b"] * (21 - PROBES_IN_FLIGHT)
    assert explore_tops(parked) == {"a"}  # the explored share still retries it
    t = FIRST_RETRY + 1
    for _ in range(PROBES_IN_FLIGHT):  # their outcomes arrive: more probes go out
        a_runs(parked, t, [True])
        t += 1
    assert [top(parked) for _ in range(5)] == ["a"] * PROBES_IN_FLIGHT + ["b"] * (
        5 - PROBES_IN_FLIGHT)
    a_runs(parked, t, [True] * (5 - PROBES_IN_FLIGHT))
    assert parked.parked_pairs() == 0 and top(parked) == "a"  # five successes: back


def test_a_failed_retry_gives_the_next_one_its_own_probes(parked: AgentSelectionModel) -> None:
    b_until(parked, PARKED_AT + 1, FIRST_RETRY)
    for k in range(2):  # two failed probes decide "still broken"
        assert top(parked) == "a", k
        a_runs(parked, FIRST_RETRY + 1 + k, [False])
    assert parked.probation_events()[-1] == ("retry_failed", "t", "a")
    assert top(parked) == "b"
    next_retry = FIRST_RETRY + 2 + RETRY  # still failing: an outage, no backoff
    b_until(parked, FIRST_RETRY + 3, next_retry - 1)
    assert top(parked) == "b"
    b_until(parked, next_retry, next_retry)
    assert top(parked) == "a"


def test_a_short_lucky_streak_of_a_still_broken_agent_does_not_restore_it(
        parked: AgentSelectionModel) -> None:
    """Three successes in a row of an agent that still fails three runs in
    four (1.6 % of its retries) once restored it: the retry's alternative was
    estimated from the few runs since the park. It is now at least half the
    history's success rate, so the streak is not enough, and the failures
    that follow decide "still broken"."""
    b_until(parked, PARKED_AT + 1, FIRST_RETRY)
    a_runs(parked, FIRST_RETRY + 1, [True, True, True])
    assert parked.parked_pairs() == 1
    assert parked.probation_events() == [("parked", "t", "a")]
    a_runs(parked, FIRST_RETRY + 4, [False, False])
    assert parked.parked_pairs() == 1 and top(parked) == "b"
    assert parked.probation_events() == [("retry_failed", "t", "a")]


def test_a_recovered_agent_is_restored_within_a_bounded_number_of_its_runs(
        parked: AgentSelectionModel) -> None:
    """Requests of the task type go where greedy routing sends them; a
    recovered "a" is back after five of its runs, all of them probes (no
    wait for the explored share)."""
    b_until(parked, PARKED_AT + 1, FIRST_RETRY)
    t, a_count = FIRST_RETRY + 1, 0
    while parked.parked_pairs() and t < FIRST_RETRY + 100:
        chosen = top(parked)
        assert chosen == "a"  # never routed away while the retry has probes left
        a_runs(parked, t, [True])
        a_count, t = a_count + 1, t + 1
    assert parked.parked_pairs() == 0 and a_count <= 5
    assert top(parked) == "a" and parked.predict_best_agent("t")[0][1] > 0.8


def test_an_agent_still_down_is_retried_on_schedule_and_restored_soon_after_it_is_back(
        parked: AgentSelectionModel) -> None:
    """An outage ends when it ends: retries of an agent whose runs still
    fail do not back off, so a recovered agent waits at most one
    ``retry_after_seconds`` for the retry that restores it."""
    t = FIRST_RETRY
    b_until(parked, PARKED_AT + 1, t)
    assert parked.probation_events() == [("parked", "t", "a")]
    for k in range(4):  # four retries, each finding it still down, each after RETRY
        assert top(parked) == "a", k
        a_runs(parked, t + 1, [False, False])
        assert parked.probation_events() == [("retry_failed", "t", "a")], k
        assert top(parked) == "b"
        b_until(parked, t + 3, t + 2 + RETRY - 1)
        assert explore_tops(parked) == {"b"}, k
        t += 2 + RETRY
        b_until(parked, t, t)
    # It came back during the last wait: the retry that opened restores it.
    assert successes_to_restore(parked, t + 1) <= 5


@pytest.mark.parametrize(("outcomes", "wait"), [
    ([False, False], 1.0),  # fails every run: down
    ([True, False, False], 1.0),  # one run in three: down (below half of 97 %)
    ([True, True, False, False], 2.0),  # half: running, worse
    (WORSE, 2.0),  # three in five: running, worse
])
@pytest.mark.parametrize("failed_before", [0, 1])
def test_the_wait_after_a_failed_retry_depends_on_whether_the_agent_runs(
        outcomes: list[bool], wait: float, failed_before: int) -> None:
    """Runs since the park succeeding less than half as often as the
    history's (97 %) mean an outage: the next retry waits RETRY. An agent
    that runs but worse gets the backoff from its second failed retry in a
    row (2 x), its first waiting RETRY like an outage's."""
    probation = Probation(RETRY)
    probation.park((0, 0), np.array([100.0, 97.0, 0.0, 0.0, 0.0]), clock=0.0)
    probation.pairs[(0, 0)].failures = failed_before
    evidence = [np.zeros((1, 2)) for _ in range(5)]
    for k, ok in enumerate(outcomes):
        clock = RETRY + k
        probation.observe(np.array([0]), np.array([0]), np.array([True]),
                          np.array([1.0 if ok else 0.0]), np.array([clock]), np.ones(1),
                          evidence, decay=1.0, clock=clock)
    assert probation.journal == [("parked", (0, 0)), ("retry_failed", (0, 0))]
    expected = wait if failed_before else 1.0
    assert probation.pairs[(0, 0)].retry_at == clock + expected * RETRY


def test_a_retrain_that_finds_a_parked_agent_worse_again_does_not_postpone_its_retry() -> None:
    """While an outage lasts the monitor retrains once per cooldown, and each
    retrain finds the parked agent's buffered runs worse: its retry (and the
    probes of an open one) must go on as scheduled."""
    probation = Probation(RETRY)
    history = np.array([100.0, 97.0, 10.0, 9.0, 8.1])  # 97 % success, accuracy 0.9
    probation.park((0, 0), history, clock=0.0)
    probation.park((0, 0), np.array([20.0, 5.0, 0.0, 0.0, 0.0]), clock=RETRY - 1.0)
    assert probation.journal == [("parked", (0, 0))]
    scores = probation.scores(1, 2, clock=RETRY)
    assert scores is not None  # the retry opens on time, with the history parked first
    assert scores[0, 0] == pytest.approx(97.5 / 101 * 0.9)


def test_successful_retries_restore_the_history(parked: AgentSelectionModel) -> None:
    b_until(parked, PARKED_AT + 1, FIRST_RETRY)
    a_runs(parked, FIRST_RETRY + 1, [True] * 4)
    assert parked.parked_pairs() == 1 and top(parked) == "a"  # not decided yet (a probe)
    a_runs(parked, FIRST_RETRY + 5, [True])  # five successes decide "back"
    assert parked.parked_pairs() == 0
    assert top(parked) == "a"
    assert parked.predict_best_agent("t")[0][1] > 0.8


def test_failed_retries_of_a_worse_agent_back_off_from_the_second(
        parked: AgentSelectionModel) -> None:
    b_until(parked, PARKED_AT + 1, FIRST_RETRY)
    failed_at = FIRST_RETRY + len(WORSE)
    a_runs(parked, FIRST_RETRY + 1, WORSE[:-1])  # not decided yet ...
    assert parked.parked_pairs() == 1 and top(parked) == "a"
    a_runs(parked, failed_at, WORSE[-1:])  # ... now: still broken
    assert parked.probation_events()[-1] == ("retry_failed", "t", "a")
    assert parked.parked_pairs() == 1 and top(parked) == "b"
    assert explore_tops(parked) == {"b"}
    # The second retry waits as long as the first, the third twice as long,
    # the fourth four times.
    for k, wait in enumerate([1, 2, 4]):
        opens = failed_at + wait * RETRY
        b_until(parked, failed_at + 1, opens - 1)
        assert explore_tops(parked) == {"b"}, k
        b_until(parked, opens, opens)
        assert explore_tops(parked) == {"a"}, k  # the retry opens
        if k < 2:
            a_runs(parked, opens + 1, WORSE)
            assert parked.probation_events() == [("retry_failed", "t", "a")], k
            failed_at = opens + len(WORSE)
    assert successes_to_restore(parked, failed_at + 4 * RETRY + 1) <= PROBE_RUNS


def test_a_full_retrain_keeps_the_pairs_set_aside_and_their_retries(
        parked: AgentSelectionModel) -> None:
    """A fresh model fed the buffer cannot see a drop (it has nothing before
    the buffer to compare with): the candidate takes over the serving
    model's set-aside pairs, their retry schedule and parked history."""
    b_until(parked, PARKED_AT + 1, FIRST_RETRY)
    a_runs(parked, FIRST_RETRY + 1, WORSE)  # the first retry fails: next in 1 x
    second = FIRST_RETRY + len(WORSE) + RETRY
    b_until(parked, FIRST_RETRY + len(WORSE) + 1, second)
    a_runs(parked, second + 1, WORSE)  # the second fails too: next in 2 x
    failed_at = second + len(WORSE)
    # The buffer: "a" good for the 450 s before the drop, then bad; "b" throughout.
    buffer = EventBatch.from_events(history(HISTORY)[-3 * 330:] + bad_period())
    rebuilt = full_retrain(parked, buffer)
    assert rebuilt.set_aside() == [("t", "a")]
    assert top(rebuilt) == "b"  # not back to "a" on the buffer's runs from before the drop
    b_until(rebuilt, failed_at + 1, failed_at + 2 * RETRY - 1)
    assert explore_tops(rebuilt) == {"b"}  # the backoff is kept
    b_until(rebuilt, failed_at + 2 * RETRY, failed_at + 2 * RETRY)
    assert explore_tops(rebuilt) == {"a"} and top(rebuilt) == "a"  # the retry opens
    assert successes_to_restore(rebuilt, failed_at + 2 * RETRY + 1) <= PROBE_RUNS
    assert rebuilt.predict_best_agent("t")[0][1] > 0.8  # the parked history is back


def test_a_full_retrain_learns_an_agent_it_only_holds_set_aside(
        parked: AgentSelectionModel) -> None:
    """A buffer with no run of the set-aside agent: it is still set aside, by name."""
    buffer = EventBatch.from_events([e for e in bad_period() if e["agent_name"] == "b"])
    rebuilt = full_retrain(parked, buffer)
    assert rebuilt.agents == ["b", "a"] and rebuilt.set_aside() == [("t", "a")]
    assert top(rebuilt) == "b"
    b_until(rebuilt, PARKED_AT + 1, FIRST_RETRY)
    a_runs(rebuilt, FIRST_RETRY + 1, [True] * 5)
    assert rebuilt.parked_pairs() == 0
    estimates = dict(rebuilt.predict_best_agent("t", top_k=2))
    assert estimates["a"] > 0.8  # its parked history is back


def test_without_retry_the_history_is_dropped_for_good() -> None:
    _, candidate = serving_and_candidate(retry_after_seconds=None)
    assert candidate.parked_pairs() == 0 and top(candidate) == "b"
    b_until(candidate, PARKED_AT + 1, FIRST_RETRY + 10)
    assert "a" not in explore_tops(candidate)
    a_runs(candidate, FIRST_RETRY + 11, [True, True, True])
    assert top(candidate) == "b"  # three successes do not outweigh the bad period


def sums(n: float, s: float) -> list[np.ndarray]:
    return [np.array([[x]]) for x in (n, s, 0.0, 0.0, 0.0)]


@pytest.mark.parametrize(
    ("older", "buffered", "plain", "with_park_z"),
    [
        ((100, 97), (20, 14), 0.25, 0.0),  # worse by ~2.6 standard errors: parked
        ((20, 14), (100, 97), 0.25, 0.25),  # better by as much: never parked
        ((100, 97), (20, 19), 0.25, 0.25),  # consistent
        ((100, 97), (20, 2), 0.0, 0.0),  # a change point either way
    ],
)
def test_probation_lowers_the_bar_for_worse_pairs_only(
        older: tuple[float, float], buffered: tuple[float, float], plain: float,
        with_park_z: float) -> None:
    assert retrain_factors(sums(*older), sums(*buffered), 0.25, True)[0, 0] == plain
    assert retrain_factors(sums(*older), sums(*buffered), 0.25, True, park_z=2.5)[0, 0] \
        == with_park_z


def stream_bad_period(model: AgentSelectionModel) -> int:
    """Feed the bad period a second at a time; the number of "a" failures until parked."""
    failures = 0
    for event_a, event_b in zip(*[iter(bad_period())] * 2, strict=True):
        model.update(EventBatch.from_events([event_a, event_b]))
        failures += event_a["status"] == "failure"
        if model.parked_pairs():
            break
    return failures


def test_drop_detection_parks_after_a_few_failures() -> None:
    watched = AgentSelectionModel(detect_drops=True, seed=0)
    plain = AgentSelectionModel(detect_drops=False, seed=0)
    for model in (watched, plain):
        model.update(EventBatch.from_events(history()))
    failures = stream_bad_period(watched)
    assert watched.parked_pairs() == 1 and 3 <= failures <= 6
    assert top(watched) == "b"
    # Without the detector the same runs leave "a" on top (until an alert's retrain).
    plain.update(EventBatch.from_events(bad_period()[: 2 * (failures + 2)]))
    assert plain.parked_pairs() == 0 and top(plain) == "a"


def test_a_dropped_pair_is_retried_and_restored() -> None:
    model = AgentSelectionModel(detect_drops=True, seed=0)
    model.update(EventBatch.from_events(history()))
    stream_bad_period(model)
    assert model.parked_pairs() == 1
    parked_at = float(HISTORY + 5)  # the second at which "a" was parked (see above)
    b_until(model, parked_at + 1, parked_at + RETRY - 1)
    # "a" kept only a few runs of its history: uncertain, Thompson sampling
    # tries it now and then, but it is not yet retried on every request.
    assert "b" in explore_tops(model)
    b_until(model, parked_at + RETRY, parked_at + RETRY)
    assert explore_tops(model) == {"a"}
    a_runs(model, parked_at + RETRY + 1, [True] * 5)
    assert model.parked_pairs() == 0 and top(model) == "a"


def test_a_steady_pair_is_not_parked() -> None:
    rng = np.random.default_rng(0)
    model = AgentSelectionModel(detect_drops=True, seed=0)
    events = [run(f"s{i}", float(i), bool(rng.random() < 0.97), "a") for i in range(3000)]
    for i in range(0, len(events), 10):
        model.update(EventBatch.from_events(events[i : i + 10]))
    assert model.parked_pairs() == 0


def test_save_and_load_keep_the_probation(parked: AgentSelectionModel) -> None:
    loaded = AgentSelectionModel(seed=0)
    loaded.load(parked.to_arrays(), parked.metadata())
    assert loaded.parked_pairs() == parked.parked_pairs() == 1
    assert top(loaded) == "b"
    b_until(loaded, PARKED_AT + 1, FIRST_RETRY)
    assert explore_tops(loaded) == {"a"}
    a_runs(loaded, FIRST_RETRY + 1, [True] * 5)
    assert loaded.parked_pairs() == 0 and top(loaded) == "a"


def test_arrays_saved_before_probation_load_with_nothing_parked(
        parked: AgentSelectionModel) -> None:
    arrays = {k: v for k, v in parked.to_arrays().items()
              if not k.startswith(("parked_", "drop_cusum"))}
    assert len(arrays) < len(parked.to_arrays())
    loaded = AgentSelectionModel(detect_drops=True, seed=0)
    loaded.load(arrays, parked.metadata())
    assert loaded.parked_pairs() == 0
    b_until(loaded, PARKED_AT + 1, FIRST_RETRY)
    assert "a" not in explore_tops(loaded)  # nothing to retry


def test_copy_is_independent(parked: AgentSelectionModel) -> None:
    b_until(parked, PARKED_AT + 1, FIRST_RETRY)
    clone = parked.copy()
    a_runs(clone, FIRST_RETRY + 1, [True] * 5)
    assert clone.parked_pairs() == 0 and top(clone) == "a"
    assert parked.parked_pairs() == 1
    a_runs(parked, FIRST_RETRY + 1, [False, False])  # the original's retry is its own
    assert parked.parked_pairs() == 1 and top(parked) == "b"
    # ... and parking in a copy leaves the original alone.
    steady = AgentSelectionModel(detect_drops=True, seed=0)
    steady.update(EventBatch.from_events(history()))
    dropped = steady.copy()
    stream_bad_period(dropped)
    assert dropped.parked_pairs() == 1 and steady.parked_pairs() == 0 and top(steady) == "a"


def test_a_reload_in_the_middle_of_a_retry_does_not_slow_it_down(
        parked: AgentSelectionModel) -> None:
    b_until(parked, PARKED_AT + 1, FIRST_RETRY)
    a_runs(parked, FIRST_RETRY + 1, [True])
    loaded = AgentSelectionModel(seed=0)
    loaded.load(parked.to_arrays(), parked.metadata())
    for model in (parked, loaded):
        a_runs(model, FIRST_RETRY + 2, [True] * 4)
    assert parked.parked_pairs() == 0  # five successes decide "back"
    assert loaded.parked_pairs() == 0


def test_a_reload_keeps_the_probes_a_retry_has_spent(parked: AgentSelectionModel) -> None:
    b_until(parked, PARKED_AT + 1, FIRST_RETRY)
    outcomes = [True, True, True, True, False, True, True]  # undecided, one probe left
    a_runs(parked, FIRST_RETRY + 1, outcomes)
    loaded = AgentSelectionModel(seed=0)
    loaded.load(parked.to_arrays(), parked.metadata())
    for model in (parked, loaded):
        assert top(model) == "a"
        a_runs(model, FIRST_RETRY + 1 + len(outcomes), [True])
        assert model.parked_pairs() == 1 and top(model) == "b"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"retry_after_seconds": 0}, "retry_after_seconds"),
        ({"retry_after_seconds": -5.0}, "retry_after_seconds"),
        ({"retry_after_seconds": float("inf")}, "retry_after_seconds"),
        ({"retry_after_seconds": True}, "retry_after_seconds"),
        ({"detect_drops": "yes"}, "detect_drops"),
        ({"detect_drops": True, "retry_after_seconds": None}, "retry_after_seconds"),
        ({"strategy": UpdateStrategy.BAYESIAN, "detect_drops": True}, "exponential"),
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AgentSelectionModel(**kwargs)


def test_updater_exports_the_parked_pairs(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path), enable_auto_save=False,
                                   registry=registry, detect_drops=True, seed=0)
    assert registry.get_sample_value("autoretrain_model_parked_pairs") == 0.0
    updater.ingest(history(1000))
    assert registry.get_sample_value("autoretrain_model_parked_pairs") == 0.0
    for k in range(0, 20, 2):
        updater.ingest(bad_period(start=1000)[k : k + 2])
    assert registry.get_sample_value("autoretrain_model_parked_pairs") == 1.0
    assert updater.predict_best_agent("t")[0][0] == "b"


def test_the_model_reports_what_probation_did_once(parked: AgentSelectionModel) -> None:
    assert parked.probation_events() == [("parked", "t", "a")]
    assert parked.probation_events() == []  # reported once
    b_until(parked, PARKED_AT + 1, FIRST_RETRY)
    a_runs(parked, FIRST_RETRY + 1, [False, False])
    assert parked.copy().probation_events() == []  # a copy does not report again
    assert parked.probation_events() == [("retry_failed", "t", "a")]
    b_until(parked, FIRST_RETRY + 3, FIRST_RETRY + 2 + RETRY)
    a_runs(parked, FIRST_RETRY + 3 + RETRY, [True] * 5)
    assert parked.probation_events() == [("restored", "t", "a")]


def test_the_updater_logs_and_counts_probation_events(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path), enable_auto_save=False,
                                   registry=registry, detect_drops=True, seed=0)
    updater.ingest(history(1000))
    with caplog.at_level("INFO", logger="autoretrain.webhook.updater.state"):
        for k in range(0, 20, 2):
            updater.ingest(bad_period(start=1000)[k : k + 2])

    def count(event: str) -> float | None:
        return registry.get_sample_value("autoretrain_model_probation_events_total",
                                         {"event": event})

    assert (count("parked"), count("restored"), count("retry_failed"), count("given_up")) == (
        1.0, 0.0, 0.0, 0.0)
    assert "model: set aside (it got worse; retried later) a on task type t" in caplog.text


def test_a_promoted_retrain_reports_the_agents_it_parked(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path), enable_auto_save=False,
                                   registry=registry, seed=0, buffer_size=200,
                                   detect_drops=False)
    updater.ingest(history(1000))
    updater.ingest(bad_period(start=1000))
    result = updater.trigger_retraining("test: a got worse")
    assert result["promoted"], result
    assert registry.get_sample_value("autoretrain_model_probation_events_total",
                                     {"event": "parked"}) == 1.0
    assert registry.get_sample_value("autoretrain_model_parked_pairs") == 1.0
    assert updater.predict_best_agent("t")[0][0] == "b"
    stats = updater.get_metrics()
    assert stats["parked_pairs"] == 1
    assert [(e["seq"], e["event"], e["task_type"], e["agent"])
            for e in stats["recent_probation_events"]] == [(1, "parked", "t", "a")]


def test_the_backoff_survives_a_reload(parked: AgentSelectionModel) -> None:
    b_until(parked, PARKED_AT + 1, FIRST_RETRY)
    failed_at = FIRST_RETRY + len(WORSE)
    a_runs(parked, FIRST_RETRY + 1, WORSE)
    b_until(parked, failed_at + 1, failed_at + RETRY)
    second = failed_at + RETRY + len(WORSE)
    a_runs(parked, second - len(WORSE) + 1, WORSE)  # second failed retry: next waits 2 x
    loaded = AgentSelectionModel(seed=0)
    loaded.load(parked.to_arrays(), parked.metadata())
    b_until(loaded, second + 1, second + 2 * RETRY - 1)
    assert explore_tops(loaded) == {"b"}
    b_until(loaded, second + 2 * RETRY, second + 2 * RETRY)
    assert explore_tops(loaded) == {"a"}


def test_drop_detection_is_on_by_default_and_only_with_retries() -> None:
    assert AgentSelectionModel(seed=0).rule.hyperparameters()["detect_drops"] is True
    no_retries = AgentSelectionModel(retry_after_seconds=None, seed=0)
    assert no_retries.rule.hyperparameters()["detect_drops"] is False
    assert AgentSelectionModel(detect_drops=False, seed=0).rule.hyperparameters()[
        "detect_drops"] is False


def test_the_fast_path_is_counted_logged_and_named_apart_from_a_retrain(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path), enable_auto_save=False,
                                   registry=registry, seed=0)  # the defaults
    updater.ingest(history(1000))
    assert registry.get_sample_value("autoretrain_model_drops_detected_total") == 0.0
    with caplog.at_level("INFO", logger="autoretrain.webhook.updater.state"):
        for k in range(0, 20, 2):
            updater.ingest(bad_period(start=1000)[k : k + 2])
    assert registry.get_sample_value("autoretrain_model_drops_detected_total") == 1.0
    assert updater.predict_best_agent("t")[0][0] == "b"
    assert "model: drop detected: a on task type t set aside within a few" in caplog.text
    events = updater.get_metrics()["recent_probation_events"]
    assert [(e["event"], e["agent"], e.get("cause")) for e in events] == [
        ("parked", "a", "drop_detector")]


def test_set_aside_pairs_are_exported_while_set_aside(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path), enable_auto_save=False,
                                   registry=registry, seed=0, retry_after_seconds=RETRY)
    name = "autoretrain_model_pair_set_aside"
    updater.ingest(history(1000))
    assert registry.get_sample_value(name, {"task_type": "t", "agent": "a"}) is None
    for k in range(0, 20, 2):
        updater.ingest(bad_period(start=1000)[k : k + 2])
    assert registry.get_sample_value(name, {"task_type": "t", "agent": "a"}) == 1.0
    assert registry.get_sample_value(name, {"task_type": "t", "agent": "b"}) is None
    # Only "b" for the retry wait, then "a" retried and as good as before: restored.
    updater.ingest([run(f"wb{t}", float(t), b_ok(t), "b") for t in range(1020, 1020 + RETRY)])
    updater.ingest([run(f"wa{t}", float(t), True, "a") for t in range(1020 + RETRY,
                                                                       1026 + RETRY)])
    assert updater.get_metrics()["parked_pairs"] == 0
    assert registry.get_sample_value(name, {"task_type": "t", "agent": "a"}) is None


def test_a_full_retrain_leaves_set_aside_pairs_exported(tmp_path: Path) -> None:
    """The alert's ``retrain="full"`` or a scheduled one: the pair stays set
    aside (and its ``AgentSetAside`` alert firing) while the agent is broken."""
    registry = CollectorRegistry()
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path), enable_auto_save=False,
                                   registry=registry, seed=0, buffer_size=500)
    name = "autoretrain_model_pair_set_aside"
    updater.ingest(history(1000))
    for k in range(0, 2 * BAD, 2):
        updater.ingest(bad_period(start=1000)[k : k + 2])
    assert registry.get_sample_value(name, {"task_type": "t", "agent": "a"}) == 1.0
    result = updater.trigger_retraining("test: full", force_full_retrain=True)
    assert result["retrain_type"] == "full" and result["promoted"], result
    assert registry.get_sample_value(name, {"task_type": "t", "agent": "a"}) == 1.0
    assert updater.predict_best_agent("t")[0][0] == "b"


def test_a_noisy_spell_is_not_a_drop() -> None:
    """Records three times as scattered around the same median (and the same
    success rate) for 20 minutes: the drop detector does not set the pair aside."""
    rng = np.random.default_rng(1)
    model = AgentSelectionModel(seed=0)  # the defaults: drop detection on

    def records(start: int, n: int, sd: float) -> list[dict]:
        events = []
        for i in range(start, start + n):
            events.append(run(f"n{i}", float(i), bool(rng.random() < 0.97), "a"))
            z = rng.standard_normal()
            value = float(1.0 / (1.0 + np.exp(-(np.log(0.92 / 0.08) + sd * z))))
            events.append(acc(f"m{i}", float(i), value, "a"))
        return events

    steady = records(0, 1800, 0.5)  # an hour, one run and one record every 2 s
    for i in range(0, len(steady), 20):
        model.update(EventBatch.from_events(steady[i : i + 20]))
    noisy = records(1800, 600, 1.5)
    for i in range(0, len(noisy), 20):
        model.update(EventBatch.from_events(noisy[i : i + 20]))
    assert model.parked_pairs() == 0


def test_low_accuracy_records_still_decide_a_drop_within_a_few() -> None:
    model = AgentSelectionModel(seed=0)
    events = []
    for i in range(1800):
        events.append(run(f"s{i}", float(i), i % 100 >= 3, "a"))
        events.append(acc(f"c{i}", float(i), 0.9 + 0.02 * ((i % 5) - 2), "a"))
    model.update(EventBatch.from_events(events))
    # The runs still succeed; their accuracy falls to 0.55.
    for k in range(8):
        t = 1800.0 + k
        model.update(EventBatch.from_events([run(f"d{k}", t, True, "a"),
                                             acc(f"e{k}", t, 0.55, "a")]))
        if model.parked_pairs():
            break
    assert model.parked_pairs() == 1 and k + 1 <= 5


def test_a_parked_pair_gets_no_greedy_optimism(monkeypatch: pytest.MonkeyPatch) -> None:
    # After a drop "a" keeps only a few runs of its history: thin evidence
    # whose mean is still about its old level. Greedy optimism would send it
    # traffic again at once; it is left to its retry instead.
    monkeypatch.setattr(model_module, "GREEDY_OPTIMISM", 3.0)
    model = AgentSelectionModel(detect_drops=True, seed=0)
    model.update(EventBatch.from_events(history()))
    stream_bad_period(model)
    assert model.parked_pairs() == 1
    assert top(model) == "b"
    # Restored, "a" is an ordinary pair again (its bonus back, and its level).
    parked_at = float(HISTORY + 5)
    b_until(model, parked_at + 1, parked_at + RETRY)
    a_runs(model, parked_at + RETRY + 1, [True] * 5)
    assert model.parked_pairs() == 0 and top(model) == "a"
