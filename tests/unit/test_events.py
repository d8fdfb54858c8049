import json

import pytest

from autoretrain.exporter.events import (
    MAX_EVENT_BYTES,
    EventIdFactory,
    InvalidEvent,
    _validate_general,
    decode_event,
    encode_event,
    run_event,
    validate_event,
)


def good_run(**over):
    e = {
        "schema": 1,
        "event_id": "e1",
        "kind": "run",
        "timestamp": 1700000000.5,
        "agent_name": "a",
        "agent_type": "llm",
        "status": "success",
        "duration_ms": 12.5,
        "tokens_used": 3,
        "cost": 0.1,
    }
    e.update(over)
    return e


def test_round_trip_fills_defaults_and_drops_unknown_fields():
    raw = encode_event({**good_run(), "surprise": [1, 2]})
    event = decode_event(raw)
    assert event == run_event("e1", 1700000000.5, "a", "llm", "success", 12.5, 3, 0.1)
    assert event["task_type"] == "default"
    assert "surprise" not in event


def test_iso_timestamp_is_accepted_as_unix_seconds():
    event = validate_event(good_run(timestamp="2023-11-14T22:13:20Z"))
    assert event["timestamp"] == 1700000000.0


def test_accuracy_event():
    event = validate_event(
        {
            "schema": 1,
            "event_id": "x",
            "kind": "accuracy",
            "timestamp": 5,
            "agent_name": "a",
            "task_id": "t1",
            "accuracy": 0.25,
            "task_type": "forecast",
            "context": {"region": "eu"},
        }
    )
    assert event["accuracy"] == 0.25
    assert event["feedback_source"] == "unknown"
    assert event["agent_type"] == "unknown"
    assert event["context"] == {"region": "eu"}


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        (b"not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[1,2]", "not_object"),
        (None, "empty"),
        (b"x" * (MAX_EVENT_BYTES + 1), "too_large"),
        (encode_event(good_run(schema=2)), "schema"),
        (encode_event(good_run(schema=True)), "schema"),
        (encode_event(good_run(schema=1.0)), "schema"),
        (encode_event(good_run(event_id="")), "field:event_id"),
        (encode_event(good_run(event_id=7)), "field:event_id"),
        (encode_event(good_run(kind="other")), "field:kind"),
        (encode_event(good_run(status="ok")), "field:status"),
        (encode_event(good_run(duration_ms=-1)), "field:duration_ms"),
        (encode_event(good_run(duration_ms="5")), "field:duration_ms"),
        (encode_event(good_run(duration_ms=True)), "field:duration_ms"),
        (encode_event(good_run(tokens_used=1.5)), "field:tokens_used"),
        (encode_event(good_run(agent_name="")), "field:agent_name"),
        (encode_event(good_run(agent_name="a" * 201)), "field:agent_name"),
        (encode_event(good_run(timestamp="yesterday")), "field:timestamp"),
        (encode_event(good_run(timestamp=-5)), "field:timestamp"),
        (encode_event(good_run(context={"a": {"deep": 1}})), "field:context"),
        (encode_event(good_run(context=[1])), "field:context"),
        (encode_event({**good_run(kind="accuracy"), "accuracy": 1.5}), "field:accuracy"),
    ],
)
def test_invalid_events_name_their_fault(raw, fault):
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw)
    assert info.value.fault == fault
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_rejected(literal):
    raw = json.dumps(good_run()).replace("12.5", literal).encode()
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw)
    assert info.value.fault == "not_json"


def test_nan_duration_from_python_is_rejected():
    with pytest.raises(InvalidEvent, match="duration_ms"):
        validate_event(good_run(duration_ms=float("nan")))


def test_event_ids_are_unique_across_factories():
    a, b = EventIdFactory(), EventIdFactory()
    ids = {a() for _ in range(1000)} | {b() for _ in range(1000)}
    assert len(ids) == 2000


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"task_type": "sql", "agent_type": "data"},
        {"duration_ms": 120, "cost": 0, "timestamp": 1700000000},  # ints: the general path
        {"context": {"tier": "gold"}},
        {"extra": "ignored", "tokens_used": 0},
    ],
)
def test_fast_and_general_paths_normalise_alike(over):
    event = validate_event(good_run(**over))
    assert event == _validate_general(good_run(**over))
    assert type(event["duration_ms"]) is float and type(event["timestamp"]) is float
    assert list(event)[:3] == ["schema", "event_id", "kind"]
