"""Parsing Alertmanager webhook messages into typed objects (webhook.alerts)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from autoretrain.webhook.alerts import EpisodeKey, InvalidPayload, parse_alert, parse_notification

ALERT: dict[str, Any] = {
    "status": "firing",
    "labels": {"alertname": "SystemAccuracyLow", "retrain": "incremental"},
    "annotations": {"summary": "accuracy 62% < 70%"},
    "startsAt": "2024-05-01T10:00:00.123Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prometheus/graph",
    "fingerprint": "1A2B3C4D5E6F7081",
}
MESSAGE: dict[str, Any] = {
    "receiver": "autoretrain-webhook",
    "status": "firing",
    "alerts": [ALERT],
    "groupLabels": {"model_type": "agent_selection"},
    "commonLabels": {"alertname": "SystemAccuracyLow"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager",
    "version": "4",
    "groupKey": "{}:{model_type=\"agent_selection\"}",
    "truncatedAlerts": 0,
}


def test_parses_a_firing_message() -> None:
    n = parse_notification(MESSAGE)
    assert n.status == "firing" and n.receiver == "autoretrain-webhook"
    assert n.group_labels == {"model_type": "agent_selection"} and n.truncated_alerts == 0
    (a,) = n.alerts
    assert a.alertname == "SystemAccuracyLow" and a.retrain == "incremental"
    assert a.starts_at == datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert a.ends_at is None  # Alertmanager's zero time while firing
    assert a.fingerprint == "1a2b3c4d5e6f7081"  # normalised to lower case
    assert a.episode == EpisodeKey("1a2b3c4d5e6f7081", "2024-05-01T10:00:00.123000Z")


def test_episode_key_is_the_same_instant_whatever_the_spelling() -> None:
    a = parse_alert({**ALERT, "startsAt": "2024-05-01T12:00:00.123000000+02:00"})
    assert a.episode == parse_alert(ALERT).episode
    assert str(a.episode) == "1a2b3c4d5e6f7081@2024-05-01T10:00:00.123000Z"


def test_resolved_alert_keeps_its_end_time() -> None:
    a = parse_alert({**ALERT, "status": "resolved", "endsAt": "2024-05-01T10:20:00Z"})
    assert a.status == "resolved" and a.ends_at == datetime(2024, 5, 1, 10, 20, tzinfo=UTC)


def test_optional_fields_may_be_absent_or_null() -> None:
    n = parse_notification({"version": "4", "status": "resolved", "alerts": [
        {"status": "resolved", "labels": {}, "startsAt": "2024-05-01T10:00:00Z",
         "fingerprint": "ab", "annotations": None, "endsAt": None}]})
    assert n.receiver == "" and n.common_labels == {} and n.alerts[0].annotations == {}
    assert n.alerts[0].alertname == "" and n.alerts[0].retrain is None


def test_unknown_fields_are_ignored() -> None:
    n = parse_notification({**MESSAGE, "newField": [1], "alerts": [{**ALERT, "x": {}}]})
    assert len(n.alerts) == 1


def _with(path: str, value: Any) -> dict[str, Any]:
    """MESSAGE with ``path`` (dotted; ``alerts.0.labels``) set to ``value`` (or removed)."""
    data = copy.deepcopy(MESSAGE)
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    index: Any = int(last) if isinstance(node, list) else last
    if value is _DELETE:
        del node[index]
    else:
        node[index] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "message"), [
    ("version", "3", 'version must be "4", got \'3\''),
    ("version", 4, 'version must be "4", got 4'),
    ("version", _DELETE, "version is required"),
    ("status", "pending", 'status must be "firing" or "resolved", got \'pending\''),
    ("alerts", _DELETE, "alerts is required"),
    ("alerts", {}, "alerts must be an array, got an object"),
    ("alerts", [], "alerts must not be empty"),
    ("alerts.0", "x", "alerts[0] must be an object, got a string"),
    ("alerts.0.status", None, 'alerts[0].status must be "firing" or "resolved", got None'),
    ("alerts.0.labels", None, "alerts[0].labels must be an object, got null"),
    ("alerts.0.labels.retrain", 1, "alerts[0].labels.retrain must be a string, got a number"),
    ("alerts.0.labels.retrain", True,
     "alerts[0].labels.retrain must be a string, got a boolean"),
    ("alerts.0.labels.a-b", "x", "alerts[0].labels has an invalid name 'a-b'"),
    ("alerts.0.annotations", [], "alerts[0].annotations must be an object, got an array"),
    ("alerts.0.startsAt", _DELETE, "alerts[0].startsAt is required"),
    ("alerts.0.startsAt", "yesterday",
     "alerts[0].startsAt must be an RFC 3339 timestamp, got 'yesterday'"),
    ("alerts.0.startsAt", "2024-05-01", "alerts[0].startsAt must be an RFC 3339 timestamp"),
    ("alerts.0.startsAt", "2024-05-01T10:00:00", "must be an RFC 3339 timestamp"),  # no zone
    ("alerts.0.startsAt", "2024-02-30T10:00:00Z",
     "alerts[0].startsAt is not a valid date and time, got '2024-02-30T10:00:00Z'"),
    ("alerts.0.startsAt", 1714557600, "alerts[0].startsAt must be a string, got a number"),
    ("alerts.0.endsAt", "soon", "alerts[0].endsAt must be an RFC 3339 timestamp"),
    ("alerts.0.fingerprint", _DELETE, "alerts[0].fingerprint is required"),
    ("alerts.0.fingerprint", "../../etc/passwd",
     "alerts[0].fingerprint must be 1 to 64 hexadecimal digits, got '../../etc/passwd'"),
    ("alerts.0.fingerprint", "", "alerts[0].fingerprint must be 1 to 64 hexadecimal digits"),
    ("alerts.0.fingerprint", "a" * 65, "must be 1 to 64 hexadecimal digits"),
    ("alerts.0.generatorURL", 5, "alerts[0].generatorURL must be a string, got a number"),
    ("truncatedAlerts", -1, "truncatedAlerts must be an integer >= 0, got -1"),
    ("truncatedAlerts", "2", "truncatedAlerts must be an integer >= 0, got '2'"),
    ("truncatedAlerts", False, "truncatedAlerts must be an integer >= 0, got False"),
    ("receiver", ["x"], "receiver must be a string, got an array"),
    ("groupLabels", "x", "groupLabels must be an object, got a string"),
    ("commonLabels.x", None, "commonLabels.x must be a string, got null"),
])
def test_invalid_messages_name_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_notification(_with(path, value))
    assert message in str(info.value)


@pytest.mark.parametrize("data", [None, [], "firing", 4, True])
def test_the_payload_must_be_an_object(data: Any) -> None:
    with pytest.raises(InvalidPayload, match=r"^the payload must be an object"):
        parse_notification(data)


def test_long_bad_values_are_shortened_in_messages() -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_notification(_with("alerts.0.startsAt", "x" * 10_000))
    assert len(str(info.value)) < 200 and str(info.value).endswith("...")


def test_invalid_payload_is_a_value_error() -> None:
    assert issubclass(InvalidPayload, ValueError)


# Found by the HTTP fuzz (tests/integration/test_fuzz_http.py); pinned here.
@pytest.mark.parametrize(("path", "value", "message"), [
    ("alerts.0.labels.retrain", "\ud800", "alerts[0].labels.retrain"),
    ("alerts.0.labels.alertname", "x\udfff", "alerts[0].labels.alertname"),
    ("alerts.0.startsAt", "9999-12-31T23:59:59-01:00", "alerts[0].startsAt"),
])
def test_values_the_fuzz_found_are_client_errors(path: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_notification(_with(path, value))
    assert message in str(info.value)


def test_a_deeply_nested_bad_value_gives_a_short_message() -> None:
    nested: Any = "x"
    for _ in range(500):
        nested = [nested]
    with pytest.raises(InvalidPayload) as info:
        parse_notification(_with("alerts.0.labels.retrain", nested))
    assert len(str(info.value)) < 300


# -- size bounds (issue 13, item 6) -------------------------------------------------------------
def _with_alert(**changes: Any) -> dict[str, Any]:
    alert = copy.deepcopy(ALERT)
    for key, value in changes.items():
        alert[key] = value
    message = copy.deepcopy(MESSAGE)
    message["alerts"] = [alert]
    return message


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        (_with_alert(labels={"alertname": "A" * 1_000_000, "retrain": "full"}),
         "alerts[0].labels.alertname is longer than the limit of 1024 characters"),
        (_with_alert(labels={"retrain": "full", "n" * 200: "x"}),
         "alerts[0].labels has a name longer than the limit of 128 characters"),
        (_with_alert(labels={f"l{i}": "x" for i in range(65)}),
         "alerts[0].labels has more than the limit of 64 entries"),
        (_with_alert(annotations={"description": "d" * 5000}),
         "alerts[0].annotations.description is longer than the limit of 4096 characters"),
        (_with_alert(generatorURL="http://p/" + "g" * 5000),
         "alerts[0].generatorURL is longer than the limit of 4096 characters"),
        ({**MESSAGE, "commonLabels": {"alertname": "A" * 2000}},
         "commonLabels.alertname is longer than the limit of 1024 characters"),
        ({**MESSAGE, "alerts": [ALERT] * 7000},
         "alerts has more than the limit of 1000 alerts per notification"),
    ],
)
def test_sizes_are_bounded_and_the_message_names_the_bound(
    message: dict[str, Any], needle: str
) -> None:
    with pytest.raises(InvalidPayload) as caught:
        parse_notification(message)
    assert needle in str(caught.value)
    assert len(str(caught.value)) < 300


def test_a_notification_at_the_bounds_is_accepted() -> None:
    from autoretrain.webhook.alerts import LIMITS

    labels = {"alertname": "A" * LIMITS.max_label_value_chars, "retrain": "full"}
    labels.update({f"l{i}": "x" for i in range(LIMITS.max_labels - 2)})
    alert = {**ALERT, "labels": labels,
             "annotations": {"d" * LIMITS.max_name_chars: "v" * LIMITS.max_annotation_value_chars}}
    n = parse_notification({**MESSAGE, "alerts": [alert] * LIMITS.max_alerts})
    assert len(n.alerts) == LIMITS.max_alerts


def test_alertmanager_config_truncates_at_the_same_alert_count() -> None:
    from pathlib import Path

    import yaml

    from autoretrain.webhook.alerts import LIMITS

    root = Path(__file__).resolve().parents[2]
    for name in ("alertmanager.yml", "alertmanager.test.yml"):
        config = yaml.safe_load((root / "prometheus" / name).read_text())
        webhooks = [w for r in config["receivers"] for w in r.get("webhook_configs", [])]
        assert webhooks and all(w["max_alerts"] == LIMITS.max_alerts for w in webhooks), name
