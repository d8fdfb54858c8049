"""The on-disk ledger of alert episodes and retrains (SQLite, standard library).

Why SQLite: every state change is one transaction (WAL journal,
``synchronous=FULL``), so a crash or SIGKILL leaves either the old or the new
state, never a torn line; and the two queries the webhook needs (the state of
a few episodes; retrains newest first, paginated) are indexed lookups.

Tables (schema version 2, in ``PRAGMA user_version``; a version 1 file gets
the ``effect`` column when it is opened):

``episodes``
    One row per alert episode that carried a valid ``retrain`` label:
    ``fingerprint, starts_at`` (the key), ``alertname``, ``retrain_type``,
    ``state`` (queued | retrained | skipped | cancelled | resolved), ``first_seen``,
    ``updated`` (Unix seconds; the last change or notification naming it) and
    ``retrain_id`` once claimed by a retrain.
``retrains``
    One row per retrain, written when it starts (``outcome`` "running") and
    completed when it ends: ``trigger`` (alert | api), ``reason``,
    ``retrain_type``, timestamps, ``outcome`` (promoted | rejected | skipped
    | failed | error | interrupted | timed_out), the updater's scores and
    version, and the episodes it served (JSON, the first
    ``MAX_ALERTS_PER_RETRAIN``). A row still "running" when the ledger is
    opened belonged to a process that died: it becomes "interrupted", and
    the episodes it had claimed are queued again (their retrain never
    finished). "timed_out" is a retrain still running past the
    controller's time limit (``finished_at`` empty): if it ever returns,
    :meth:`Ledger.finish_retrain` records what it really did in its place,
    with a note in ``error``; if the process dies first, it is interrupted
    like a running one. ``effect`` (JSON, empty until measured) is what the
    retrain did to the platform: the outcomes of a window before it and one
    after it (:mod:`webhook.effects`), written when the after-window closes.
    ``trigger`` is alert, api or schedule.

An episode is claimed (state ``retrained``) in the same transaction that
records its retrain's start, so concurrent or repeated notifications never
retrain it twice; only a retrain interrupted by a crash gives its episodes
back, to be retrained once by the next process. A retrain that ends
``skipped`` (the updater had nothing to train on) did not do what its
episodes asked for: they become ``skipped``, and the next firing
notification naming one queues it again (:mod:`webhook.policy`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from autoretrain.exporter.timefmt import utc_iso

from .alerts import EpisodeKey
from .policy import EpisodeState, Plan, QueuedEpisode
from .updater.results import RetrainStatus

__all__ = ["OUTCOMES", "Ledger", "LedgerError", "outcome_of"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
MAX_ALERTS_PER_RETRAIN = 100  # episodes listed in one retrain row's ``alerts``
#: How stale an episode's ``updated`` may get before a notification naming it
#: refreshes it: far below any retention (days), far above a burst of re-sends.
SEEN_REFRESH_SECONDS = 3600.0
OUTCOMES = ("running", *(s.value for s in RetrainStatus), "error", "interrupted", "timed_out")
# Rows whose retrain has not returned (yet): "timed_out" is still running.
_UNFINISHED = "outcome IN ('running', 'timed_out') AND finished_at IS NULL"
_STATUSES = frozenset(s.value for s in RetrainStatus)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    fingerprint  TEXT NOT NULL,
    starts_at    TEXT NOT NULL,
    alertname    TEXT NOT NULL,
    retrain_type TEXT NOT NULL,
    state        TEXT NOT NULL,
    first_seen   REAL NOT NULL,
    updated      REAL NOT NULL,
    retrain_id   INTEGER,
    PRIMARY KEY (fingerprint, starts_at)
);
CREATE INDEX IF NOT EXISTS episodes_state ON episodes (state);
CREATE INDEX IF NOT EXISTS episodes_retrain ON episodes (retrain_id);
CREATE TABLE IF NOT EXISTS retrains (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger          TEXT NOT NULL,
    reason           TEXT NOT NULL,
    retrain_type     TEXT NOT NULL,
    requested_at     REAL NOT NULL,
    started_at       REAL NOT NULL,
    finished_at      REAL,
    outcome          TEXT NOT NULL,
    success          INTEGER,
    promoted         INTEGER,
    events_processed INTEGER,
    duration_ms      REAL,
    candidate_score  REAL,
    serving_score    REAL,
    model_version    INTEGER,
    error            TEXT,
    alerts           TEXT NOT NULL,
    effect           TEXT
);
"""


class LedgerError(ValueError):
    """The ledger file cannot be used (not a database, newer schema, unwritable)."""


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else utc_iso(timestamp)


def outcome_of(result: Mapping[str, Any]) -> str:
    """The outcome of an updater result dict (``autoretrain_model_retrains_total``'s ``result``).

    The updater reports it as ``result``. An updater object that does not
    (any object with ``trigger_retraining`` may be passed to ``create_app``)
    is read by its documented flags only: ``success`` and ``promoted`` give
    promoted or rejected, anything else is "failed".
    """
    reported = result.get("result")
    if reported in _STATUSES:
        return str(reported)
    if result.get("success"):
        return RetrainStatus.PROMOTED.value if result.get("promoted") else \
            RetrainStatus.REJECTED.value
    return RetrainStatus.FAILED.value


class Ledger:
    """Episodes and retrains in the SQLite file ``path`` (thread-safe).

    ``clock`` returns Unix seconds (tests pass a fake one).

    ``retention_seconds``: finished retrains, and episodes no longer queued,
    last changed longer ago than this are deleted when the ledger opens and
    after each retrain finishes (None: kept forever). Queued episodes and
    running retrains are never deleted. Each notification naming an
    episode refreshes its ``updated`` (:meth:`record_plan`), so an alert
    that keeps firing (re-sent every ``repeat_interval``, shorter than the
    retention) keeps its episode and is never retrained again; only an
    episode not heard of for the whole retention is forgotten.
    """

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time,
                 retention_seconds: float | None = None) -> None:
        if retention_seconds is not None and not retention_seconds > 0:
            raise ValueError(f"retention_seconds must be > 0 or None, got {retention_seconds!r}")
        self.path = Path(path)
        self.clock = clock
        self.retention_seconds = retention_seconds
        # A short retention (tests, experiments) refreshes more often, so that a
        # firing episode is always refreshed well before it could be pruned.
        self._seen_refresh = (SEEN_REFRESH_SECONDS if retention_seconds is None
                              else min(SEEN_REFRESH_SECONDS, retention_seconds / 4))
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"ledger_path {str(self.path)!r} cannot be opened: {exc}") from None
        try:
            self._setup()
        except sqlite3.Error as exc:
            self._conn.close()
            raise LedgerError(f"ledger_path {str(self.path)!r} is not a usable ledger: {exc}"
                              ) from None

    def _setup(self) -> None:
        conn = self._conn
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this webhook's {SCHEMA_VERSION}")
        # Idempotent DDL, outside a transaction: executescript commits first anyway.
        conn.executescript(_SCHEMA)
        columns = {r["name"] for r in conn.execute("PRAGMA table_info(retrains)")}
        if "effect" not in columns:  # a version 1 ledger: every retrain unmeasured
            conn.execute("ALTER TABLE retrains ADD COLUMN effect TEXT")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        now = self.clock()
        with self._transaction():
            # The episodes an interrupted retrain had claimed never got their
            # retrain: queued again (in the same transaction), so the restarted
            # worker runs it; re-sends until then stay duplicates of a queued
            # episode. The alert cooldown, restored from the interrupted row's
            # finish (now), spaces out retries of a retrain that keeps crashing.
            requeued = conn.execute(
                "UPDATE episodes SET state=?, updated=?, retrain_id=NULL WHERE state=? AND "
                f"retrain_id IN (SELECT id FROM retrains WHERE {_UNFINISHED})",
                (EpisodeState.QUEUED.value, now, EpisodeState.RETRAINED.value)).rowcount
            interrupted = conn.execute(
                "UPDATE retrains SET outcome='interrupted', finished_at=?, "
                "error=CASE WHEN outcome='timed_out' THEN error || "
                "'; then the webhook stopped during it' "
                f"ELSE 'the webhook stopped during this retrain' END WHERE {_UNFINISHED}",
                (now,)).rowcount
        if interrupted:
            log.warning("ledger: %d retrain(s) were interrupted by a stop or crash; %d alert "
                        "episode(s) they served are queued again", interrupted, requeued)
        self._prune()

    def _prune(self) -> None:
        """Delete what is older than the retention (lock held by the caller or unneeded)."""
        if self.retention_seconds is None:
            return
        cutoff = self.clock() - self.retention_seconds
        with self._transaction():
            retrains = self._conn.execute(
                "DELETE FROM retrains WHERE finished_at < ?",  # NULL (unfinished): kept
                (cutoff,)).rowcount
            episodes = self._conn.execute(
                "DELETE FROM episodes WHERE state != ? AND updated < ?",
                (EpisodeState.QUEUED.value, cutoff)).rowcount
        if retrains or episodes:
            log.info("ledger: deleted %d retrain(s) and %d episode(s) older than the retention "
                     "(%g days)", retrains, episodes, self.retention_seconds / 86400)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception (lock held by the caller)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- episodes -----------------------------------------------------------------
    def episode_states(self, keys: Iterable[EpisodeKey]) -> dict[EpisodeKey, EpisodeState]:
        """The recorded state of each of ``keys`` that is known."""
        states: dict[EpisodeKey, EpisodeState] = {}
        with self._lock:
            for key in set(keys):
                row = self._conn.execute(
                    "SELECT state FROM episodes WHERE fingerprint=? AND starts_at=?",
                    (key.fingerprint, key.starts_at)).fetchone()
                if row is not None:
                    states[key] = EpisodeState(row["state"])
        return states

    def record_plan(self, plan: Plan) -> None:
        """Persist the episode changes of ``plan`` in one transaction.

        Every episode the notification names is marked as seen now
        (``updated``), also a duplicate: Alertmanager re-sends a firing alert
        every ``repeat_interval``, so an episode that still fires is never
        older than the retention, is never pruned, and its repeats stay
        duplicates however long it fires. The mark is refreshed at most every
        :data:`SEEN_REFRESH_SECONDS` (a quarter of a shorter retention): a
        duplicate within that time writes
        nothing, so a burst of re-sends costs no disk write each.
        """
        now = self.clock()
        with self._lock, self._transaction():
            self._conn.executemany(
                "UPDATE episodes SET updated=? WHERE fingerprint=? AND starts_at=? "
                "AND updated < ?",
                [(now, k.fingerprint, k.starts_at, now - self._seen_refresh)
                 for k in {d.episode for d in plan.decisions}])
            for q in plan.queue:
                self._insert_episode(q, EpisodeState.QUEUED, now)
            for q in plan.resolve:
                self._insert_episode(q, EpisodeState.RESOLVED, now)
            for key in plan.cancel:
                self._conn.execute(
                    "UPDATE episodes SET state=?, updated=? "
                    "WHERE fingerprint=? AND starts_at=? AND state=?",
                    (EpisodeState.CANCELLED.value, now, key.fingerprint, key.starts_at,
                     EpisodeState.QUEUED.value))

    def _insert_episode(self, q: QueuedEpisode, state: EpisodeState, now: float) -> None:
        # An episode is recorded once; a concurrent duplicate changes nothing.
        # Only a skipped episode (its retrain had no data) changes: queued
        # again by a firing alert, resolved by a resolved one.
        self._conn.execute(
            "INSERT INTO episodes (fingerprint, starts_at, alertname, retrain_type, "
            "state, first_seen, updated) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (fingerprint, starts_at) DO UPDATE SET state=excluded.state, "
            "retrain_type=excluded.retrain_type, updated=excluded.updated, retrain_id=NULL "
            "WHERE episodes.state=?",
            (q.episode.fingerprint, q.episode.starts_at, q.alertname, q.retrain_type,
             state.value, q.queued_at, now, EpisodeState.SKIPPED.value))

    def queued(self) -> list[QueuedEpisode]:
        """Episodes still waiting for a retrain, oldest first (restored after a restart)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM episodes WHERE state=? ORDER BY first_seen, fingerprint",
                (EpisodeState.QUEUED.value,)).fetchall()
        return [QueuedEpisode(EpisodeKey(r["fingerprint"], r["starts_at"]), r["alertname"],
                              r["retrain_type"], r["first_seen"]) for r in rows]

    # -- retrains --------------------------------------------------------------------
    def start_retrain(
        self,
        *,
        trigger: str,
        reason: str,
        retrain_type: str,
        requested_at: float,
        episodes: Sequence[QueuedEpisode] = (),
    ) -> int:
        """Record a retrain as running and claim ``episodes`` for it; return its id.

        Episodes no longer queued (cancelled meanwhile) are not claimed.
        """
        now = self.clock()
        # The row lists at most MAX_ALERTS_PER_RETRAIN episodes: it is served by
        # the unauthenticated GET /api/performance/retraining, and one retrain
        # may serve thousands of queued episodes. Every episode still records
        # this retrain's id in the episodes table.
        alerts = json.dumps([
            {"alertname": q.alertname, "fingerprint": q.episode.fingerprint,
             "startsAt": q.episode.starts_at, "retrain_type": q.retrain_type}
            for q in episodes[:MAX_ALERTS_PER_RETRAIN]])
        with self._lock, self._transaction():
            cursor = self._conn.execute(
                "INSERT INTO retrains (trigger, reason, retrain_type, requested_at, started_at, "
                "outcome, alerts) VALUES (?, ?, ?, ?, ?, 'running', ?)",
                (trigger, reason, str(retrain_type), requested_at, now, alerts))
            retrain_id = cursor.lastrowid
            assert retrain_id is not None
            for q in episodes:
                self._conn.execute(
                    "UPDATE episodes SET state=?, updated=?, retrain_id=? "
                    "WHERE fingerprint=? AND starts_at=? AND state=?",
                    (EpisodeState.RETRAINED.value, now, retrain_id, q.episode.fingerprint,
                     q.episode.starts_at, EpisodeState.QUEUED.value))
        return retrain_id

    def time_out_retrain(self, retrain_id: int, message: str) -> bool:
        """Record running retrain ``retrain_id`` as ``timed_out`` with ``message``
        (it still runs); False if it is no longer running."""
        with self._lock, self._transaction():
            return self._conn.execute(
                "UPDATE retrains SET outcome='timed_out', error=? "
                "WHERE id=? AND outcome='running'", (message, retrain_id)).rowcount == 1

    def finish_retrain(
        self, retrain_id: int, result: Mapping[str, Any] | None, error: str | None = None,
        note: str | None = None,
    ) -> str:
        """Complete retrain ``retrain_id`` with the updater's ``result`` (None and
        ``error`` when the updater raised); return the outcome recorded.

        A retrain recorded as ``timed_out`` gets the outcome it really had
        (a late promotion did swap the serving model); ``note`` (why it is
        late) is kept in ``error``, after the error if there is one.
        """
        outcome = "error" if result is None else outcome_of(result)
        result = result or {}
        if error is None:
            error = result.get("error")
        if note is not None:
            error = note if error is None else f"{error}; {note}"

        def num(key: str) -> Any:
            value = result.get(key)
            return value if isinstance(value, int | float) and not isinstance(value, bool) \
                else None

        with self._lock, self._transaction():
            if outcome == RetrainStatus.SKIPPED.value:
                # Nothing was trained: the episodes did not get what they asked for.
                self._conn.execute(
                    "UPDATE episodes SET state=?, updated=? WHERE retrain_id=? AND state=?",
                    (EpisodeState.SKIPPED.value, self.clock(), retrain_id,
                     EpisodeState.RETRAINED.value))
            self._conn.execute(
                "UPDATE retrains SET finished_at=?, outcome=?, success=?, promoted=?, "
                "events_processed=?, duration_ms=?, candidate_score=?, serving_score=?, "
                "model_version=?, error=? WHERE id=?",
                (self.clock(), outcome,
                 None if not result else int(bool(result.get("success"))),
                 None if not result else int(bool(result.get("promoted"))),
                 num("events_processed"), num("duration_ms"), num("candidate_score"),
                 num("serving_score"), num("model_version"),
                 error, retrain_id))
        with self._lock:
            self._prune()
        return outcome

    def last_finished(self, trigger: str | None = None) -> float | None:
        """Unix time the newest finished retrain (of ``trigger``, if given) ended."""
        query = "SELECT MAX(finished_at) FROM retrains WHERE outcome != 'running'"
        args: tuple[Any, ...] = ()
        if trigger is not None:
            query += " AND trigger=?"
            args = (trigger,)
        with self._lock:
            value = self._conn.execute(query, args).fetchone()[0]
        return None if value is None else float(value)

    def unmeasured(self, finished_before: float, limit: int = 100) -> list[dict[str, Any]]:
        """Finished retrains without an effect that finished at or before
        ``finished_before``, oldest first: ``id, trigger, started_at, finished_at``
        (Unix seconds)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, trigger, retrain_type, started_at, finished_at FROM retrains "
                "WHERE effect IS NULL AND finished_at IS NOT NULL AND finished_at <= ? "
                f"AND NOT ({_UNFINISHED}) ORDER BY finished_at, id LIMIT ?",
                (finished_before, limit)).fetchall()
        return [dict(r) for r in rows]

    def record_effect(self, retrain_id: int, effect: Mapping[str, Any]) -> bool:
        """Store the measured ``effect`` of retrain ``retrain_id`` once; False if it
        already has one (or is gone)."""
        text = json.dumps(effect, allow_nan=False)
        with self._lock, self._transaction():
            return self._conn.execute(
                "UPDATE retrains SET effect=? WHERE id=? AND effect IS NULL",
                (text, retrain_id)).rowcount == 1

    def recent_verdicts(self, limit: int = 20) -> list[tuple[str, str]]:
        """(trigger, verdict) of the newest ``limit`` measured retrains, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT trigger, json_extract(effect, '$.verdict') AS verdict FROM retrains "
                "WHERE effect IS NOT NULL ORDER BY finished_at DESC, id DESC LIMIT ?",
                (limit,)).fetchall()
        return [(r["trigger"], str(r["verdict"])) for r in rows]

    def list_retrains(self, limit: int = 20, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Retrains newest first (``limit`` from ``offset``), and the total count."""
        with self._lock:
            total = self._conn.execute("SELECT COUNT(*) FROM retrains").fetchone()[0]
            # alerts_total: every episode the retrain served (the row lists
            # at most MAX_ALERTS_PER_RETRAIN of them).
            rows = self._conn.execute(
                "SELECT r.*, (SELECT COUNT(*) FROM episodes e WHERE e.retrain_id = r.id) "
                "AS alerts_total FROM retrains r ORDER BY r.id DESC LIMIT ? OFFSET ?",
                (limit, offset)).fetchall()
        return [self._retrain_json(r) for r in rows], int(total)

    @staticmethod
    def _retrain_json(row: sqlite3.Row) -> dict[str, Any]:
        def flag(value: Any) -> bool | None:
            return None if value is None else bool(value)

        return {
            "id": row["id"],
            "trigger": row["trigger"],
            "reason": row["reason"],
            "retrain_type": row["retrain_type"],
            "requested_at": _iso(row["requested_at"]),
            "started_at": _iso(row["started_at"]),
            "finished_at": _iso(row["finished_at"]),
            "outcome": row["outcome"],
            "success": flag(row["success"]),
            "promoted": flag(row["promoted"]),
            "events_processed": row["events_processed"],
            "duration_ms": row["duration_ms"],
            "candidate_score": row["candidate_score"],
            "serving_score": row["serving_score"],
            "model_version": row["model_version"],
            "error": row["error"],
            "alerts": json.loads(row["alerts"]),
            "alerts_total": row["alerts_total"],
            # What it did to the platform; null until its after-window closed.
            "effect": None if row["effect"] is None else json.loads(row["effect"]),
        }
