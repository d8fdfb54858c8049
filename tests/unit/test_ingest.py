"""decode_batch and RecentEventIds: the one decode-validate-de-duplicate step of both consumers."""

import pytest

from autoretrain.exporter.events import (
    MAX_EVENT_BYTES,
    InvalidEvent,
    accuracy_event,
    encode_event,
    run_event,
)
from autoretrain.exporter.ingest import RecentEventIds, decode_batch


def run(event_id, **over):
    return {**run_event(event_id, 1.0, "a", "llm", "success", 10.0, 3, 0.5), **over}


def test_recent_event_ids_says_true_for_new_ids_and_false_for_duplicates():
    ids = RecentEventIds(capacity=4)
    added = [ids.add_if_new(x) for x in ("a", "b", "a", "c", "a")]
    assert added == [True, True, False, True, False]


def test_recent_event_ids_hold_at_most_capacity_and_at_least_the_newest_half():
    ids = RecentEventIds(capacity=6)
    for i in range(100):
        assert ids.add_if_new(f"e{i}")
        assert len(ids) <= 6
        assert all(f"e{j}" in ids for j in range(max(0, i - 2), i + 1))
    assert "e0" not in ids and ids.add_if_new("e0")  # long forgotten: new again


@pytest.mark.parametrize("capacity", [1, 0, -1, 2.5, True])
def test_recent_event_ids_refuse_a_bad_capacity(capacity):
    with pytest.raises(ValueError, match="capacity must be an integer >= 2"):
        RecentEventIds(capacity)


def test_decode_batch_keeps_order_skips_duplicates_and_names_each_fault():
    values = [
        encode_event(run("e1")),
        b"{oops",
        encode_event(run("e1")),  # duplicate
        run("e2"),  # a dict from the embedded bus
        encode_event(accuracy_event("e3", 2.0, "a", "llm", "t", 0.25, "human")),
        None,
        b"x" * (MAX_EVENT_BYTES + 1),
        encode_event(run("e4", status="ok")),
        encode_event(run("e5", duration_ms=120)).decode(),  # str, int duration: general path
        ["not", "an", "object"],
    ]
    batch = decode_batch(values, RecentEventIds(100))
    assert [e["event_id"] for e in batch.events] == ["e1", "e2", "e3", "e5"]
    assert batch.duplicates == 1
    assert batch.invalid_by_fault() == {
        "not_json": 1,
        "empty": 1,
        "too_large": 1,
        "field:status": 1,
        "not_object": 1,
    }
    assert all(isinstance(exc, InvalidEvent) and str(exc) for exc in batch.invalid)
    e5 = batch.events[3]
    assert e5["duration_ms"] == 120.0 and type(e5["duration_ms"]) is float
    assert batch.events[2]["kind"] == "accuracy" and batch.events[2]["accuracy"] == 0.25


def test_decode_batch_returns_normal_form_for_every_input_shape():
    built = run_event("e1", 1.0, "a", "llm", "success", 10.0, 3, 0.5)
    defaults = {k: v for k, v in built.items() if k not in ("task_type", "tokens_used")}
    shapes = [
        (encode_event(built), built),
        (built, built),
        ({**built, "unknown": [1]}, built),  # unknown fields are dropped
        (defaults, {**built, "tokens_used": 0}),  # defaults filled in
    ]
    for shape, expected in shapes:
        (event,) = decode_batch([shape], RecentEventIds(10)).events
        assert event == expected


def test_duplicates_are_remembered_across_batches():
    recent = RecentEventIds(100)
    first = decode_batch([encode_event(run("e1"))], recent)
    again = decode_batch([encode_event(run("e1")), encode_event(run("e2"))], recent)
    assert len(first.events) == 1
    assert [e["event_id"] for e in again.events] == ["e2"] and again.duplicates == 1


def test_admit_rejects_before_de_duplication():
    def admit(event):
        if event["agent_name"] == "full":
            raise InvalidEvent("capacity:agent_name", "too many agents")

    recent = RecentEventIds(100)
    batch = decode_batch([run("e1", agent_name="full"), run("e2")], recent, admit=admit)
    assert [e["event_id"] for e in batch.events] == ["e2"]
    assert batch.invalid_by_fault() == {"capacity:agent_name": 1}
    assert "e1" not in recent  # a rejected event may come back once there is room


# -- issue 13, item 1: event time bounded by the consumer's clock ----------------------------
NOW = 1_700_000_000.0


@pytest.mark.parametrize("timestamp", [
    NOW + 301.0,                       # a producer's clock ahead by more than the skew
    NOW * 1000.0,                      # milliseconds sent as seconds
    "2999-01-01T00:00:00Z",            # ISO alike
])
def test_events_from_the_future_are_invalid(timestamp):
    batch = decode_batch([encode_event(run("e1", timestamp=timestamp))], RecentEventIds(10),
                         now=NOW)
    assert batch.events == [] and batch.invalid_by_fault() == {"field:timestamp": 1}
    assert "ahead of this consumer's clock" in str(batch.invalid[0])


def test_the_skew_is_configurable_and_past_events_pass():
    values = [encode_event(run("e1", timestamp=NOW + 299.0)),
              encode_event(run("e2", timestamp=1.0)),  # a replay: old events do no harm
              encode_event(run("e3", timestamp=NOW + 11.0))]
    batch = decode_batch(values, RecentEventIds(10), now=NOW, max_skew_seconds=10.0)
    assert [e["event_id"] for e in batch.events] == ["e2"]
    assert batch.invalid_by_fault() == {"field:timestamp": 2}
    batch = decode_batch(values, RecentEventIds(10), now=NOW)
    assert len(batch.events) == 3


@pytest.mark.parametrize("timestamp", [-1.0, "1969-12-31T23:59:59Z", "1900-01-01T00:00:00+00:00"])
def test_timestamps_before_1970_are_invalid_as_numbers_and_iso_alike(timestamp):
    batch = decode_batch([run("e1", timestamp=timestamp)], RecentEventIds(10))
    assert batch.events == [] and batch.invalid_by_fault() == {"field:timestamp": 1}


def test_decode_batch_remembers_ids_as_add_if_new_does_across_generations():
    # A batch longer than the memory: decode_batch's inline de-duplication
    # must keep and forget the same ids as RecentEventIds.add_if_new.
    ids = [f"e{i % 9}" if i % 4 else f"n{i}" for i in range(60)]
    reference = RecentEventIds(capacity=6)
    expected = [x for x in ids if reference.add_if_new(x)]
    recent = RecentEventIds(capacity=6)
    batch = decode_batch([run(x) for x in ids[:25]], recent)
    batch2 = decode_batch([encode_event(run(x)) for x in ids[25:]], recent)
    assert [e["event_id"] for e in batch.events + batch2.events] == expected
    assert batch.duplicates + batch2.duplicates == len(ids) - len(expected)
    assert len(recent) == len(reference)
    assert all((x in recent) == (x in reference) for x in set(ids))


def test_decode_batch_keeps_the_fields_of_each_run_in_normal_form_as_a_row():
    from autoretrain.exporter.events import RUN_FIELDS

    with_context = run_event("e3", 1.0, "a", "llm", "success", 10.0, 3, 0.5, context={"k": 1})
    values = [
        encode_event(run("e1")),
        run("e2", agent_name="b"),  # a dict from the embedded bus
        encode_event(with_context),  # not normal form: rebuilt, no row
        encode_event(accuracy_event("e4", 2.0, "a", "llm", "t", 0.25, "human")),
        encode_event(run("e1")),  # duplicate: no row
        b"{oops",  # invalid: no row
        encode_event(run("e5", status="failure")),
    ]
    batch = decode_batch(values, RecentEventIds(100))
    assert [e["event_id"] for e in batch.events] == ["e1", "e2", "e3", "e4", "e5"]
    assert batch.rebuilt == 2
    common = [e for e in batch.events if e["event_id"] in ("e1", "e2", "e5")]
    assert batch.rows == [tuple(e[f] for f in RUN_FIELDS) for e in common]
    only_runs = decode_batch([encode_event(run("e6")), run("e7")], RecentEventIds(10))
    assert only_runs.rebuilt == 0 and len(only_runs.rows) == len(only_runs.events) == 2


def test_known_names_pass_without_admit_and_unknown_ones_still_go_through_it():
    asked = []

    def admit(event):
        asked.append((event["agent_name"], event["task_type"]))
        if event["agent_name"] == "full":
            raise InvalidEvent("capacity:agent_name", "too many agents")

    values = [run("e1"), run("e2", agent_name="new"), run("e3", task_type="other"),
              run("e4", agent_name="full"),
              accuracy_event("e5", 2.0, "new", "llm", "t", 0.5, "human")]
    batch = decode_batch(values, RecentEventIds(100), admit=admit, known=({"a"}, {"default"}))
    assert asked == [("new", "default"), ("a", "other"), ("full", "default"), ("new", "default")]
    assert [e["event_id"] for e in batch.events] == ["e1", "e2", "e3", "e5"]
    assert batch.invalid_by_fault() == {"capacity:agent_name": 1}
