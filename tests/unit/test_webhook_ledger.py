"""The SQLite ledger of episodes and retrains: persistence, crash recovery, pagination."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from servers.common import FakeClock

from autoretrain.webhook.alerts import EpisodeKey
from autoretrain.webhook.ledger import Ledger, LedgerError, outcome_of
from autoretrain.webhook.policy import EpisodeState, Plan, QueuedEpisode


def q(fp: str, retrain_type: str = "incremental", at: float = 1_700_000_000.0) -> QueuedEpisode:
    return QueuedEpisode(EpisodeKey(fp, "2024-05-01T10:00:00.000000Z"), f"Alert{fp}",
                         retrain_type, at)


def plan(queue: tuple[QueuedEpisode, ...] = (), cancel: tuple[EpisodeKey, ...] = (),
         resolve: tuple[QueuedEpisode, ...] = ()) -> Plan:
    return Plan((), queue, cancel, resolve)


RESULT = {"success": True, "promoted": True, "model_type": "agent_selection",
          "retrain_type": "full", "events_processed": 120, "duration_ms": 12.5,
          "candidate_score": 0.8, "serving_score": 0.7, "model_version": 3}


def test_episodes_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.sqlite3"  # parent directories are created
    ledger = Ledger(path)
    ledger.record_plan(plan(queue=(q("a1"), q("b2", "full", 1_700_000_001.0)),
                            resolve=(q("c3"),)))
    ledger.close()
    ledger = Ledger(path)
    keys = [q(fp).episode for fp in ("a1", "b2", "c3", "d4")]
    assert ledger.episode_states(keys) == {keys[0]: EpisodeState.QUEUED,
                                           keys[1]: EpisodeState.QUEUED,
                                           keys[2]: EpisodeState.RESOLVED}
    assert ledger.queued() == [q("a1"), q("b2", "full", 1_700_000_001.0)]


def test_cancel_only_touches_queued_episodes(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    ledger.record_plan(plan(queue=(q("a1"), q("b2"))))
    ledger.start_retrain(trigger="alert", reason="r", retrain_type="incremental",
                         requested_at=0.0, episodes=(q("b2"),))
    ledger.record_plan(plan(cancel=(q("a1").episode, q("b2").episode)))
    assert ledger.episode_states([q("a1").episode, q("b2").episode]) == {
        q("a1").episode: EpisodeState.CANCELLED, q("b2").episode: EpisodeState.RETRAINED}
    assert ledger.queued() == []


def test_recording_an_episode_twice_keeps_the_first(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    ledger.record_plan(plan(queue=(q("a1"),)))
    ledger.record_plan(plan(resolve=(q("a1"),)))
    assert ledger.episode_states([q("a1").episode]) == {q("a1").episode: EpisodeState.QUEUED}


def test_retrain_lifecycle_and_json(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = Ledger(tmp_path / "l.db", clock=clock)
    ledger.record_plan(plan(queue=(q("a1", "full"),)))
    rid = ledger.start_retrain(trigger="alert", reason="alertmanager: Alerta1 (1 episode)",
                               retrain_type="full", requested_at=clock.now - 2,
                               episodes=(q("a1", "full"),))
    (running,), total = ledger.list_retrains()
    assert total == 1 and running["outcome"] == "running" and running["finished_at"] is None
    assert ledger.last_finished() is None
    clock.now += 1.5
    assert ledger.finish_retrain(rid, RESULT) == "promoted"
    (row,), _ = ledger.list_retrains()
    assert row == {
        "id": rid, "trigger": "alert", "reason": "alertmanager: Alerta1 (1 episode)",
        "retrain_type": "full", "requested_at": "2023-11-14T22:13:18.000Z",
        "started_at": "2023-11-14T22:13:20.000Z", "finished_at": "2023-11-14T22:13:21.500Z",
        "outcome": "promoted", "success": True, "promoted": True, "events_processed": 120,
        "duration_ms": 12.5, "candidate_score": 0.8, "serving_score": 0.7, "model_version": 3,
        "error": None,
        "alerts": [{"alertname": "Alerta1", "fingerprint": "a1",
                    "startsAt": "2024-05-01T10:00:00.000000Z", "retrain_type": "full"}],
        "alerts_total": 1, "effect": None}  # measured once its after-window has closed
    assert ledger.last_finished() == clock.now and ledger.last_finished("api") is None


def test_a_retrain_running_at_a_crash_becomes_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = Ledger(path)
    ledger.record_plan(plan(queue=(q("a1"),)))
    ledger.start_retrain(trigger="alert", reason="r", retrain_type="incremental",
                         requested_at=0.0, episodes=(q("a1"),))
    # No close(): the process died. The episode was claimed before the retrain ran.
    reopened = Ledger(path)
    (row,), _ = reopened.list_retrains()
    assert row["outcome"] == "interrupted" and row["finished_at"] is not None
    assert row["error"] == "the webhook stopped during this retrain"
    # Issue 13, item 2: the retrain the episode asked for never finished, so the
    # episode is queued again (it used to stay "retrained": the retrain was lost).
    assert reopened.episode_states([q("a1").episode]) == {q("a1").episode:
                                                          EpisodeState.QUEUED}
    assert reopened.queued() == [q("a1")]
    # Retrained by the next process, it is settled for good.
    reopened.finish_retrain(reopened.start_retrain(
        trigger="alert", reason="r", retrain_type="incremental", requested_at=0.0,
        episodes=reopened.queued()), RESULT)
    reopened.close()
    again = Ledger(path)
    assert again.episode_states([q("a1").episode]) == {q("a1").episode:
                                                       EpisodeState.RETRAINED}
    assert again.queued() == []


def test_pagination_newest_first(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    ids = [ledger.start_retrain(trigger="api", reason=f"r{i}", retrain_type="incremental",
                                requested_at=float(i)) for i in range(7)]
    page, total = ledger.list_retrains(limit=3, offset=0)
    assert total == 7 and [r["id"] for r in page] == ids[::-1][:3]
    page, _ = ledger.list_retrains(limit=3, offset=6)
    assert [r["id"] for r in page] == [ids[0]]
    assert ledger.list_retrains(limit=3, offset=7) == ([], 7)


@pytest.mark.parametrize("result, outcome", [
    (RESULT, "promoted"),
    ({**RESULT, "promoted": False}, "rejected"),
    # Without the updater's word, only the documented flags count: no guessing
    # "skipped" from the other fields.
    ({"success": False, "events_processed": 0, "model_type": "agent_selection"}, "failed"),
    ({"success": False, "events_processed": 0, "model_type": "other"}, "failed"),
    ({"success": False, "events_processed": 5, "model_type": "agent_selection"}, "failed"),
    # The updater's own word wins over the derivation.
    ({"success": False, "events_processed": 0, "model_type": "agent_selection",
      "result": "failed"}, "failed"),
    ({**RESULT, "result": "rejected"}, "rejected"),
])
def test_outcome_of(result: dict[str, object], outcome: str) -> None:
    assert outcome_of(result) == outcome


def test_an_updater_exception_is_recorded(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    rid = ledger.start_retrain(trigger="api", reason="r", retrain_type="full", requested_at=0)
    assert ledger.finish_retrain(rid, None, "RuntimeError: boom") == "error"
    (row,), _ = ledger.list_retrains()
    assert (row["outcome"], row["success"], row["error"]) == ("error", None, "RuntimeError: boom")


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="is not a usable ledger"):
        Ledger(path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(LedgerError, match="schema version 99 is newer"):
        Ledger(path)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="cannot be opened"):
        Ledger(tmp_path)


DAY = 86_400.0


def test_retention_deletes_old_settled_rows_and_keeps_queued_ones(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "l.db"
    ledger = Ledger(path, clock=clock, retention_seconds=30 * DAY)
    ledger.record_plan(plan(queue=(q("old"), q("waiting")), resolve=(q("settled"),)))
    old = ledger.start_retrain(trigger="alert", reason="old", retrain_type="incremental",
                               requested_at=clock.now, episodes=(q("old"),))
    ledger.finish_retrain(old, RESULT)
    clock.now += 31 * DAY
    recent = ledger.start_retrain(trigger="api", reason="recent", retrain_type="full",
                                  requested_at=clock.now)
    ledger.finish_retrain(recent, RESULT)  # prunes what finished 31 days ago
    rows, total = ledger.list_retrains()
    assert total == 1 and [r["reason"] for r in rows] == ["recent"]
    keys = [q(fp).episode for fp in ("old", "waiting", "settled")]
    # The queued episode stays however old it is; the retrained and resolved ones go.
    assert ledger.episode_states(keys) == {keys[1]: EpisodeState.QUEUED}
    assert ledger.queued() == [q("waiting")]
    ledger.close()
    # Opening prunes too: nothing else has expired yet, then the recent retrain has.
    clock.now += 29 * DAY
    assert Ledger(path, clock=clock, retention_seconds=30 * DAY).list_retrains()[1] == 1
    clock.now += 2 * DAY
    assert Ledger(path, clock=clock, retention_seconds=30 * DAY).list_retrains()[1] == 0


def test_without_retention_nothing_is_deleted(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = Ledger(tmp_path / "l.db", clock=clock)
    first = ledger.start_retrain(trigger="api", reason="r", retrain_type="full",
                                 requested_at=clock.now)
    ledger.finish_retrain(first, RESULT)
    clock.now += 3650 * DAY
    second = ledger.start_retrain(trigger="api", reason="r", retrain_type="full",
                                  requested_at=clock.now)
    ledger.finish_retrain(second, RESULT)
    assert ledger.list_retrains()[1] == 2


@pytest.mark.parametrize("retention", [0, -1.0])
def test_a_retention_must_be_positive(tmp_path: Path, retention: float) -> None:
    with pytest.raises(ValueError, match="retention_seconds must be > 0"):
        Ledger(tmp_path / "l.db", retention_seconds=retention)


def test_an_alert_firing_longer_than_the_retention_never_retrains_again(
        tmp_path: Path) -> None:
    # Duplicates must refresh `updated`, or retention deletes the
    # retrained episode while Alertmanager still re-sends it and the next repeat
    # counts as a new episode (a second retrain for one episode).
    from autoretrain.webhook.alerts import parse_notification
    from autoretrain.webhook.policy import Action, decide

    clock = FakeClock()
    day = 86400.0
    ledger = Ledger(tmp_path / "l.db", clock=clock, retention_seconds=90 * day)
    firing = parse_notification({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "Low", "retrain": "full"},
         "startsAt": "2024-05-01T10:00:00Z", "fingerprint": "f1"}]})
    key = firing.alerts[0].episode

    def deliver() -> Action:
        p = decide(firing, ledger.episode_states([key]), now=clock())
        ledger.record_plan(p)
        return p.decisions[0].action

    assert deliver() is Action.QUEUED_FULL
    retrain_id = ledger.start_retrain(trigger="alert", reason="r", retrain_type="full",
                                      requested_at=clock(), episodes=ledger.queued())
    ledger.finish_retrain(retrain_id, RESULT)
    for _ in range(120):  # Alertmanager's repeat_interval, shortened to a day
        clock.advance(day)
        assert deliver() is Action.DUPLICATE_EPISODE
        ledger.finish_retrain(ledger.start_retrain(
            trigger="api", reason="prune", retrain_type="full", requested_at=clock()), RESULT)
    ledger.close()
    ledger = Ledger(tmp_path / "l.db", clock=clock, retention_seconds=90 * day)
    assert ledger.episode_states([key]) == {key: EpisodeState.RETRAINED}
    # Once the alert is no longer sent, the retention forgets it (bounded ledger).
    clock.advance(91 * day)
    ledger.close()
    ledger = Ledger(tmp_path / "l.db", clock=clock, retention_seconds=90 * day)
    assert ledger.episode_states([key]) == {}


def test_a_retrain_row_lists_a_bounded_number_of_episodes(tmp_path: Path) -> None:
    # One retrain may serve thousands of queued episodes; the row is served by
    # the unauthenticated GET /api/performance/retraining.
    from autoretrain.webhook.ledger import MAX_ALERTS_PER_RETRAIN

    ledger = Ledger(tmp_path / "l.db")
    many = tuple(q(f"{i:04x}") for i in range(MAX_ALERTS_PER_RETRAIN * 3))
    ledger.record_plan(plan(queue=many))
    ledger.start_retrain(trigger="alert", reason="r", retrain_type="incremental",
                         requested_at=1.0, episodes=many)
    (row,), total = ledger.list_retrains()
    assert total == 1
    assert [a["fingerprint"] for a in row["alerts"]] == [
        e.episode.fingerprint for e in many[:MAX_ALERTS_PER_RETRAIN]]
    assert row["alerts_total"] == len(many)
    # Every episode is still claimed: none retrains again.
    assert ledger.queued() == []
    assert set(ledger.episode_states([e.episode for e in many]).values()) == {
        EpisodeState.RETRAINED}


def test_a_timed_out_retrain_gets_its_late_outcome_with_a_note(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    rid = ledger.start_retrain(trigger="api", reason="r", retrain_type="incremental",
                               requested_at=0.0)
    assert ledger.time_out_retrain(rid, "timed out: no result within 600 s")
    assert not ledger.time_out_retrain(rid, "again")  # once
    (row,), _ = ledger.list_retrains()
    assert row["outcome"] == "timed_out" and row["finished_at"] is None
    assert ledger.last_finished() is None  # still running: no cooldown counts from it
    # The late promotion did swap the model: the row says so, and why it is late.
    assert ledger.finish_retrain(rid, RESULT, note="finished 742 s after it started") == \
        "promoted"
    (row,), _ = ledger.list_retrains()
    assert row["outcome"] == "promoted" and row["promoted"] is True
    assert row["error"] == "finished 742 s after it started"
    assert not ledger.time_out_retrain(rid, "too late")  # finished rows are never timed out


def test_a_timed_out_retrain_at_a_crash_is_interrupted_and_requeued(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = Ledger(path)
    ledger.record_plan(plan(queue=(q("a1"),)))
    rid = ledger.start_retrain(trigger="alert", reason="r", retrain_type="incremental",
                               requested_at=0.0, episodes=(q("a1"),))
    ledger.time_out_retrain(rid, "timed out")
    # No close(): the process died while the hung retrain still ran.
    reopened = Ledger(path)
    (row,), _ = reopened.list_retrains()
    assert row["outcome"] == "interrupted" and row["finished_at"] is not None
    assert row["error"] == "timed out; then the webhook stopped during it"
    assert reopened.queued() == [q("a1")]
