"""The pure retrain policy (webhook.policy): one decision per alert, state changes as data."""

from __future__ import annotations

from typing import Any

import pytest

from autoretrain.webhook.alerts import EpisodeKey, Notification, parse_notification
from autoretrain.webhook.policy import Action, EpisodeState, QueuedEpisode, decide, retrain_type_of

NOW = 1_700_000_000.0


def alert(name: str, fingerprint: str, retrain: str | None = "incremental",
          status: str = "firing", starts: str = "2024-05-01T10:00:00Z") -> dict[str, Any]:
    labels = {"alertname": name}
    if retrain is not None:
        labels["retrain"] = retrain
    return {"status": status, "labels": labels, "startsAt": starts, "fingerprint": fingerprint}


def notification(*alerts: dict[str, Any]) -> Notification:
    return parse_notification({"version": "4", "status": "firing", "alerts": list(alerts)})


def key(fingerprint: str, starts: str = "2024-05-01T10:00:00.000000Z") -> EpisodeKey:
    return EpisodeKey(fingerprint, starts)


def actions(plan: Any) -> list[str]:
    return [d.action.value for d in plan.decisions]


def test_new_firing_episodes_queue_retrains_of_their_type() -> None:
    plan = decide(notification(alert("Low", "a1"), alert("Critical", "b2", "full")), {}, now=NOW)
    assert actions(plan) == ["queued_incremental", "queued_full"]
    assert [(q.episode, q.alertname, q.retrain_type, q.queued_at) for q in plan.queue] == [
        (key("a1"), "Low", "incremental", NOW), (key("b2"), "Critical", "full", NOW)]
    assert plan.cancel == () and plan.resolve == ()
    assert retrain_type_of(plan.queue) == "full"  # full wins over incremental


def test_retrain_type_of_incremental_only() -> None:
    q = QueuedEpisode(key("a1"), "Low", "incremental", NOW)
    assert retrain_type_of([q, q]) == "incremental"
    assert retrain_type_of([]) == "incremental"


@pytest.mark.parametrize("state", [s for s in EpisodeState if s is not EpisodeState.SKIPPED])
def test_a_known_episode_never_queues_again(state: EpisodeState) -> None:
    plan = decide(notification(alert("Low", "a1")), {key("a1"): state}, now=NOW)
    assert actions(plan) == ["duplicate_episode"]
    assert plan.decisions[0].detail == f"episode already {state.value}: not retrained again"
    assert plan.queue == ()


def test_an_episode_whose_retrain_was_skipped_queues_again() -> None:
    # Issue 13 item 2: a retrain that had nothing to train on did not do what
    # the alert asked for; the next firing re-send asks again.
    plan = decide(notification(alert("Low", "a1", "full")), {key("a1"): EpisodeState.SKIPPED},
                  now=NOW)
    assert actions(plan) == ["queued_full"]
    assert plan.decisions[0].detail == ("queued for a full retrain; its previous retrain was "
                                        "skipped (nothing to train on)")
    assert [(q.episode, q.retrain_type) for q in plan.queue] == [(key("a1"), "full")]
    cooled = decide(notification(alert("Low", "a1")), {key("a1"): EpisodeState.SKIPPED},
                    now=NOW, cooldown_until=NOW + 60)
    assert actions(cooled) == ["cooldown"] and len(cooled.queue) == 1


def test_a_skipped_episode_that_resolves_is_remembered_as_resolved() -> None:
    plan = decide(notification(alert("Low", "a1", status="resolved")),
                  {key("a1"): EpisodeState.SKIPPED}, now=NOW)
    assert actions(plan) == ["resolved"] and plan.queue == ()
    assert [q.episode for q in plan.resolve] == [key("a1")]


def test_same_fingerprint_new_start_is_a_new_episode() -> None:
    plan = decide(notification(alert("Low", "a1", starts="2024-05-02T00:00:00Z")),
                  {key("a1"): EpisodeState.RETRAINED}, now=NOW)
    assert actions(plan) == ["queued_incremental"]


def test_duplicates_within_one_notification() -> None:
    plan = decide(notification(alert("Low", "a1"), alert("Low", "a1")), {}, now=NOW)
    assert actions(plan) == ["queued_incremental", "duplicate_episode"]
    assert len(plan.queue) == 1


def test_resolved_cancels_a_queued_episode() -> None:
    plan = decide(notification(alert("Low", "a1", status="resolved")),
                  {key("a1"): EpisodeState.QUEUED}, now=NOW)
    assert actions(plan) == ["resolved_cancelled"]
    assert plan.cancel == (key("a1"),) and plan.queue == ()


def test_firing_then_resolved_in_one_notification_queues_nothing() -> None:
    plan = decide(notification(alert("Low", "a1"), alert("Low", "a1", status="resolved"),
                               alert("Low", "a1")), {}, now=NOW)
    assert actions(plan) == ["queued_incremental", "resolved_cancelled", "duplicate_episode"]
    assert plan.queue == () and plan.cancel == ()
    assert [q.episode for q in plan.resolve] == [key("a1")]  # remembered, never retrained


@pytest.mark.parametrize("state", [None, EpisodeState.RETRAINED, EpisodeState.CANCELLED,
                                   EpisodeState.RESOLVED])
def test_resolved_never_retrains(state: EpisodeState | None) -> None:
    known = {} if state is None else {key("a1"): state}
    plan = decide(notification(alert("Low", "a1", status="resolved")), known, now=NOW)
    assert actions(plan) == ["resolved"] and plan.queue == () and plan.cancel == ()
    # First seen resolved: remembered, so a late firing re-send is a duplicate.
    assert [q.episode for q in plan.resolve] == ([key("a1")] if state is None else [])


def test_alerts_without_or_with_a_bad_retrain_label_are_ignored() -> None:
    plan = decide(notification(alert("Watchdog", "c3", retrain=None),
                               alert("Odd", "d4", retrain="sometimes"),
                               alert("Watchdog", "c3", retrain=None, status="resolved")),
                  {}, now=NOW)
    assert actions(plan) == ["ignored_no_retrain_label", "ignored_invalid_retrain_label",
                             "ignored_no_retrain_label"]
    assert plan.decisions[1].detail == "retrain label must be incremental or full, got 'sometimes'"
    assert plan.queue == () and plan.resolve == ()


def test_cooldown_queues_with_a_start_time() -> None:
    plan = decide(notification(alert("Low", "a1")), {}, now=NOW, cooldown_until=NOW + 60)
    assert actions(plan) == ["cooldown"]
    assert plan.decisions[0].not_before == NOW + 60
    assert plan.decisions[0].as_json()["not_before"] == NOW + 60
    assert [q.episode for q in plan.queue] == [key("a1")]


def test_cooldown_over_means_queued() -> None:
    plan = decide(notification(alert("Low", "a1", retrain="full")), {}, now=NOW,
                  cooldown_until=NOW)
    assert actions(plan) == ["queued_full"]


def test_decision_json() -> None:
    plan = decide(notification(alert("Low", "a1")), {}, now=NOW)
    assert plan.decisions[0].as_json() == {
        "index": 0, "alertname": "Low", "status": "firing", "fingerprint": "a1",
        "startsAt": "2024-05-01T10:00:00.000000Z", "action": "queued_incremental",
        "retrain_type": "incremental", "detail": "queued for an incremental retrain"}


def test_decide_does_not_mutate_its_input() -> None:
    known = {key("a1"): EpisodeState.QUEUED}
    decide(notification(alert("Low", "a1", status="resolved"), alert("Low", "b2")), known,
           now=NOW)
    assert known == {key("a1"): EpisodeState.QUEUED}


def test_action_values_are_the_documented_ones() -> None:
    assert {a.value for a in Action} == {
        "queued_full", "queued_incremental", "cooldown", "duplicate_episode",
        "resolved_cancelled", "resolved", "ignored_no_retrain_label",
        "ignored_invalid_retrain_label"}
