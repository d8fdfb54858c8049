"""The retrain controller: applies policy decisions and runs retrains on one worker thread.

``handle()`` is called by ``POST /alerts``: it reads the ledger state of the
notification's episodes, asks :func:`~webhook.policy.decide`, records the
plan in the ledger and returns at once (Alertmanager gets its 202 before any
retrain runs). The worker thread then runs what is queued:

- API requests (``retrain_now``, the synchronous endpoint) first, in order;
- otherwise, once the cooldown has ended, every queued episode in one
  coalesced retrain (full when any of them asked for full);
- then, once the cooldown has ended, a scheduled full retrain when the
  optional schedule (:mod:`webhook.schedule`) is due. A due time that
  passes while one is already waiting or running adds nothing (never two
  at once); like an alert retrain it starts the cooldown.

Every retrain, whatever triggered it, runs on this one thread, so retrains
are serialised. The alert cooldown is measured from the end of the previous
*alert* (or scheduled) retrain: API retrains neither wait for it nor restart it (a client
calling the API could otherwise hold alert retrains off for good); they have
their own rate limit instead (``api_min_interval_seconds``, from one accepted
API request to the next; :class:`RateLimited`). Queued episodes live in the
ledger too, so a restart resumes them, and the cooldown resumes from the
ledger's last finished alert retrain, clamped to now (a finish time recorded
while the wall clock was ahead must not hold retrains off after a restart).
Inside the process both intervals run on a monotonic clock, so a wall-clock
step neither extends nor ends them.

A retrain has a time limit (``time_limit_seconds``). A Python thread cannot
be killed, so past it nothing is stopped: a watchdog records the retrain as
``timed_out`` in the ledger and counts it, the running retrain's age is
exported (``autoretrain_webhook_retrain_running_seconds``) and the app's readiness fails
naming it; what is queued keeps waiting behind it. If it returns after all,
its real outcome replaces ``timed_out`` (with a note): a late promotion did
swap the serving model, and the ledger must say so.

After a start (a restart, a standby taking over) the updater's retrain
buffer is empty until its consumer has re-read its source; a retrain before
then has nothing to train on. So alert retrains (episodes restored from the
ledger included) wait until ``source_ready()`` (the updater's
``caught_up``) is True, for at most ``catch_up_seconds`` from ``start()``;
then they run whatever the updater has, and the ledger records what really
happened. A retrain ``skipped`` for lack of data does not use its episodes
up (see :mod:`webhook.ledger`). API retrains, operator overrides, do not
wait.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from autoretrain.exporter.background import BackgroundLoop
from autoretrain.exporter.timefmt import utc_iso

from .alerts import EpisodeKey, Notification
from .ledger import Ledger
from .metrics import WebhookMetrics
from .policy import Plan, QueuedEpisode, decide, retrain_type_of
from .schedule import RetrainSchedule
from .updater.results import MODEL_TYPE, RetrainType

__all__ = ["ControllerUnavailable", "RateLimited", "RetrainController", "RunningRetrain",
           "Updater"]

log = logging.getLogger(__name__)

_MAX_BACKOFF = 5.0


class Updater(Protocol):
    """What the controller needs of a :class:`~webhook.RealTimeModelUpdater`."""

    def trigger_retraining(
        self, reason: str = ..., force_full_retrain: bool = ..., model_type: str = ...
    ) -> dict[str, Any]: ...


class ControllerUnavailable(RuntimeError):
    """The worker is not running (stopped, or not started)."""


class RateLimited(RuntimeError):
    """An API retrain came sooner than ``api_min_interval_seconds`` after the previous one.

    ``retry_after`` is the number of seconds until one is accepted again.
    """

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"an API retrain was accepted less than the minimum interval ago; "
                         f"retry in {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass
class _Job:
    trigger: str  # "alert" | "api" | "schedule"
    reason: str
    retrain_type: RetrainType
    requested_at: float
    model_type: str = MODEL_TYPE
    episodes: tuple[QueuedEpisode, ...] = ()
    future: Future[tuple[int, dict[str, Any]]] | None = None
    retrain_id: int | None = field(default=None)


@dataclass(frozen=True)
class RunningRetrain:
    """The retrain on the worker thread now, as :meth:`RetrainController.running_retrain`
    reports it."""

    retrain_id: int
    trigger: str
    retrain_type: str
    seconds: float  # its age on the monotonic clock
    timed_out: bool  # past the time limit


def _wall(t: float) -> str:
    return utc_iso(t, timespec="seconds")


def _printable(text: str, limit: int = 100) -> str:
    # Alert names end up in log lines and the ledger: no control characters.
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def _summary(plan: Plan, shown: int = 10) -> str:
    """The decisions of one notification for the log: bounded whatever the group's size.

    One entry per distinct (alertname, status, action), with a count when it
    repeats; at most ``shown`` entries, then how many more.
    """
    counts: dict[tuple[str, str, str], int] = {}
    for d in plan.decisions:
        key = (_printable(d.alertname), d.status, d.action.value)
        counts[key] = counts.get(key, 0) + 1
    entries = [f"{name}/{status}: {action}" + (f" x{n}" if n > 1 else "")
               for (name, status, action), n in list(counts.items())[:shown]]
    if len(counts) > shown:
        entries.append(f"and {len(counts) - shown} more")
    return ", ".join(entries)


def _alert_reason(episodes: tuple[QueuedEpisode, ...]) -> str:
    names = sorted({_printable(q.alertname) or "(no alertname)" for q in episodes})
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    noun = "episode" if len(episodes) == 1 else "episodes"
    return f"alertmanager: {shown} ({len(episodes)} {noun})"


class RetrainController:
    """Serialises retrains for alerts and API calls; see the module docstring.

    Parameters
    ----------
    updater
        Has ``trigger_retraining(reason, force_full_retrain, model_type)``.
    ledger, metrics
        Where episodes and retrains are recorded and counted.
    cooldown_seconds
        Minimum time from the end of one alert-triggered retrain to the start
        of the next (API calls are operator overrides: not delayed, and they
        do not restart it).
    api_min_interval_seconds
        Minimum time from one accepted API retrain request to the next
        (0: none); sooner ones raise :class:`RateLimited`.
    time_limit_seconds
        Age past which a running retrain counts as hung (see the module
        docstring); checked by a watchdog every ``watchdog_interval`` seconds
        and by :meth:`check_time_limit`.
    source_ready, catch_up_seconds
        ``source_ready()`` is True once the updater has caught up with its
        source after a start; alert retrains wait for it, at most
        ``catch_up_seconds`` after :meth:`start` (None: no waiting).
    clock
        Unix seconds, for what is recorded and reported; tests pass a fake one
        and call :meth:`wake` after moving it.
    monotonic
        The clock the cooldown and the rate limit run on. Default:
        ``time.monotonic`` when ``clock`` is the real wall clock, else
        ``clock`` itself (a test's fake clock then drives both).
    schedule
        Periodic full retrains (None: none). Due times are on ``clock``
        (wall time, as cron expressions are); an interval counts from the
        last scheduled retrain in the ledger, or from the start.
    """

    def __init__(
        self,
        updater: Updater,
        ledger: Ledger,
        metrics: WebhookMetrics,
        *,
        cooldown_seconds: float = 600.0,
        api_min_interval_seconds: float = 0.0,
        time_limit_seconds: float = 600.0,
        watchdog_interval: float = 1.0,
        source_ready: Callable[[], bool] | None = None,
        catch_up_seconds: float = 120.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] | None = None,
        schedule: RetrainSchedule | None = None,
    ) -> None:
        if not cooldown_seconds >= 0:
            raise ValueError(f"cooldown_seconds must be >= 0, got {cooldown_seconds!r}")
        if not api_min_interval_seconds >= 0:
            raise ValueError("api_min_interval_seconds must be >= 0, got "
                             f"{api_min_interval_seconds!r}")
        if not time_limit_seconds > 0 or not math.isfinite(time_limit_seconds):
            raise ValueError(f"time_limit_seconds must be a finite number > 0, got "
                             f"{time_limit_seconds!r}")
        if not catch_up_seconds >= 0 or not math.isfinite(catch_up_seconds):
            raise ValueError(f"catch_up_seconds must be a finite number >= 0, got "
                             f"{catch_up_seconds!r}")
        self.updater = updater
        self.ledger = ledger
        self.metrics = metrics
        self.cooldown_seconds = float(cooldown_seconds)
        self.api_min_interval_seconds = float(api_min_interval_seconds)
        self.time_limit_seconds = float(time_limit_seconds)
        self.source_ready = source_ready
        self.catch_up_seconds = float(catch_up_seconds)
        self.clock = clock
        self.monotonic = monotonic or (time.monotonic if clock is time.time else clock)
        self._cond = threading.Condition()
        self._pending: dict[EpisodeKey, QueuedEpisode] = {}
        self._api_jobs: deque[_Job] = deque()
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._cooldown_until = -math.inf  # on the monotonic clock
        self._api_not_before = -math.inf  # on the monotonic clock
        self._current: _Job | None = None  # the job on the worker thread
        self._current_since = 0.0  # when it started, on the monotonic clock
        self._timed_out = False  # the current job passed the time limit
        self.schedule = schedule
        self._next_scheduled = math.inf  # wall time the schedule is next due
        self._schedule_due = False  # a scheduled retrain waits (for the cooldown)
        self._schedule_due_since = 0.0  # wall time it became due (its requested_at)
        self._caught_up = source_ready is None  # alert retrains may run (see the docstring)
        self._catch_up_until = math.inf  # on the monotonic clock; set by start()
        self._watchdog = BackgroundLoop("retrain-watchdog", self.check_time_limit,
                                        interval=watchdog_interval)
        metrics.retrain_running.set_function(self.running_seconds)
        self.errors = 0
        self.last_error: str | None = None

    # -- lifecycle --------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Restore queued episodes and the cooldown from the ledger; start the worker."""
        if self.running:
            return
        with self._cond:
            self._stopping = False
            self._caught_up = self.source_ready is None
            self._catch_up_until = self.monotonic() + self.catch_up_seconds
            for q in self.ledger.queued():
                self._pending[q.episode] = q
            finishes = [t for t in (self.ledger.last_finished(trigger=trigger)
                                    for trigger in ("alert", "schedule")) if t is not None]
            last = max(finishes) if finishes else None
            if last is not None:
                # Clamped: a finish "in the future" (the clock was ahead when it
                # was recorded) counts as now, never as a longer cooldown.
                elapsed = max(0.0, self.clock() - last)
                self._set_cooldown(self.monotonic() + self.cooldown_seconds - elapsed)
            self.metrics.queued.set(len(self._pending))
            if self.schedule is not None:
                previous = self.ledger.last_finished(trigger="schedule")
                self._next_scheduled = self.schedule.next_after(
                    self.clock() if previous is None else min(previous, self.clock()))
                log.info("scheduled full retrains %s; next at %s", self.schedule.describe(),
                         _wall(self._next_scheduled))
        if self._pending:
            log.info("resuming %d queued alert episode(s) from the ledger", len(self._pending))
        self._thread = threading.Thread(target=self._run, name="retrain-worker", daemon=True)
        self._thread.start()
        self._watchdog.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the retrain in progress (if any); queued episodes stay in the ledger."""
        with self._cond:
            self._stopping = True
            jobs, self._api_jobs = list(self._api_jobs), deque()
            self._cond.notify_all()
        self._watchdog.stop(timeout)
        for job in jobs:
            assert job.future is not None
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(ControllerUnavailable("the webhook is stopping"))
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("retrain worker did not stop within %.1f s", timeout)
                return
            self._thread = None

    def wake(self) -> None:
        """Re-evaluate the queue now (after a fake clock moved)."""
        with self._cond:
            self._cond.notify_all()

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot of the controller."""
        with self._cond:
            return {
                "worker_running": self.running,
                "busy": self._busy,
                "running_retrain_id": None if self._current is None
                else self._current.retrain_id,
                "running_seconds": self._age(),
                "time_limit_seconds": self.time_limit_seconds,
                "queued_episodes": len(self._pending),
                "queued_api_requests": len(self._api_jobs),
                "cooldown_seconds": self.cooldown_seconds,
                "cooldown_until": self._cooldown_until_wall(),
                "waiting_for_source": not self._caught_up,
                "errors": self.errors,
                "last_error": self.last_error,
                "schedule": None if self.schedule is None else self.schedule.describe(),
                "next_scheduled_retrain": (None if not math.isfinite(self._next_scheduled)
                                           else _wall(self._next_scheduled)),
                "scheduled_retrain_waiting": self._schedule_due,
            }

    def _age(self) -> float:
        """Age of the current job (condition held); 0 when none runs."""
        if self._current is None:
            return 0.0
        return max(0.0, self.monotonic() - self._current_since)

    def running_seconds(self) -> float:
        """How long the retrain in progress has run (0: none); the gauge reads it."""
        with self._cond:
            return self._age()

    def running_retrain(self) -> RunningRetrain | None:
        """The retrain in progress, its age and whether it passed the time limit."""
        with self._cond:
            job = self._current
            if job is None or job.retrain_id is None:
                return None
            age = self._age()
            return RunningRetrain(job.retrain_id, job.trigger, job.retrain_type.value, age,
                                  age > self.time_limit_seconds)

    def check_time_limit(self) -> bool:
        """Record the running retrain as ``timed_out`` once it passes the time limit
        (idempotent); True while one is past it."""
        with self._cond:
            job, age = self._current, self._age()
            if job is None or job.retrain_id is None or age <= self.time_limit_seconds:
                return False
            if self._timed_out:
                return True
            self._timed_out = True
        message = (f"timed out: no result within the time limit of "
                   f"{self.time_limit_seconds:g} s; the retrain cannot be stopped and still "
                   "runs, what is queued waits behind it")
        # False: it returned meanwhile and _finish recorded the real outcome.
        if self.ledger.time_out_retrain(job.retrain_id, message):
            self.metrics.retrains_timed_out.inc()
            log.error("retrain %d (%s, %s) has run for %.0f s, past the time limit of %g s; "
                      "it cannot be stopped: the webhook is not ready until it returns",
                      job.retrain_id, job.trigger, job.retrain_type.value, age,
                      self.time_limit_seconds)
        return True

    def idle(self) -> bool:
        """Nothing queued and no retrain running."""
        with self._cond:
            return not (self._busy or self._pending or self._api_jobs or self._schedule_due)

    # -- the two ways in ------------------------------------------------------------
    def handle(self, notification: Notification) -> Plan:
        """Decide on every alert of ``notification``, record it, queue retrains; no waiting."""
        with self._cond:
            # Under the lock: two concurrent deliveries of one episode must see
            # each other, and the worker must not claim between decide and record.
            states = self.ledger.episode_states(a.episode for a in notification.alerts)
            plan = decide(notification, states, now=self.clock(),
                          cooldown_until=self._cooldown_until_wall() or 0.0)
            self.ledger.record_plan(plan)
            for q in plan.queue:
                self._pending[q.episode] = q
            for key in plan.cancel:
                self._pending.pop(key, None)
            self.metrics.queued.set(len(self._pending))
            if plan.queue:
                self._cond.notify_all()
        for d in plan.decisions:
            self.metrics.alert(d.alertname, d.status, d.action)
        if notification.truncated_alerts:
            log.warning("notification %r left out %d alert(s) (Alertmanager max_alerts); "
                        "decided on the %d received", _printable(notification.group_key),
                        notification.truncated_alerts, len(notification.alerts))
        log.info("alerts: %s", _summary(plan))
        return plan

    def submit(
        self, reason: str, force_full_retrain: bool = False,
        model_type: str = MODEL_TYPE,
    ) -> Future[tuple[int, dict[str, Any]]]:
        """Queue an API retrain ahead of alert retrains; the future gives (ledger id, result).

        Cancel the future to withdraw the request if it has not started.
        Raises :class:`RateLimited` within ``api_min_interval_seconds`` of the
        previous accepted request.
        """
        future: Future[tuple[int, dict[str, Any]]] = Future()
        job = _Job("api", reason, RetrainType.of(force_full_retrain), self.clock(), model_type,
                   future=future)
        with self._cond:
            if self._stopping or not self.running:
                raise ControllerUnavailable("the retrain worker is not running")
            now = self.monotonic()
            if now < self._api_not_before:
                raise RateLimited(self._api_not_before - now)
            self._api_not_before = now + self.api_min_interval_seconds
            self._api_jobs.append(job)
            self._cond.notify_all()
        return future

    # -- the worker ------------------------------------------------------------------
    def _set_cooldown(self, until: float) -> None:
        """End the cooldown at ``until`` on the monotonic clock (condition held)."""
        self._cooldown_until = until
        self.metrics.cooldown_until.set(self._cooldown_until_wall() or 0.0)

    def _cooldown_until_wall(self) -> float | None:
        """The cooldown's end as Unix time for reports (None: no cooldown running)."""
        remaining = self._cooldown_until - self.monotonic()
        return self.clock() + remaining if remaining > 0 else None

    def _next_job(self) -> _Job | None:
        """Block until there is a job (claimed in the ledger) or a stop; None on stop."""
        with self._cond:
            while not self._stopping:
                while self._api_jobs:
                    job = self._api_jobs.popleft()
                    assert job.future is not None
                    if job.future.set_running_or_notify_cancel():  # False: caller gave up
                        try:
                            job.retrain_id = self.ledger.start_retrain(
                                trigger="api", reason=job.reason,
                                retrain_type=job.retrain_type,
                                requested_at=job.requested_at)
                        except Exception as exc:
                            # Whatever failed (SQLite, or a value it cannot store), the
                            # caller must not wait in vain for a job that never runs.
                            job.future.set_exception(exc)
                            raise
                        self._claimed(job)
                        return job
                now = self.monotonic()
                if (self._pending and now >= self._cooldown_until
                        and self._source_caught_up(now)):
                    episodes = tuple(sorted(self._pending.values(), key=lambda q: q.queued_at))
                    retrain_type = retrain_type_of(episodes)
                    job = _Job("alert", _alert_reason(episodes), retrain_type,
                               episodes[0].queued_at, episodes=episodes)
                    # Claim first: if the ledger write fails, the episodes stay queued.
                    job.retrain_id = self.ledger.start_retrain(
                        trigger="alert", reason=job.reason, retrain_type=retrain_type,
                        requested_at=job.requested_at, episodes=episodes)
                    self._pending.clear()
                    self.metrics.queued.set(0)
                    self._claimed(job)
                    return job
                wall = self.clock()
                if wall >= self._next_scheduled:
                    assert self.schedule is not None
                    if self._schedule_due:
                        log.warning("scheduled retrain due at %s skipped: the previous one "
                                    "still waits", _wall(self._next_scheduled))
                    if not self._schedule_due:
                        self._schedule_due_since = wall
                    self._schedule_due = True
                    # From now: a schedule missed while the webhook was down (or
                    # the clock jumped) runs once, not once per missed time.
                    self._next_scheduled = self.schedule.next_after(wall)
                if self._schedule_due and now >= self._cooldown_until:
                    assert self.schedule is not None
                    job = _Job("schedule", f"schedule: {self.schedule.describe()}",
                               RetrainType.FULL, self._schedule_due_since)
                    job.retrain_id = self.ledger.start_retrain(
                        trigger="schedule", reason=job.reason, retrain_type=job.retrain_type,
                        requested_at=job.requested_at)
                    self._schedule_due = False
                    self._claimed(job)
                    return job
                # Wake for the cooldown's end or the schedule; capped so a clock
                # jump (or a test's fake clock) is noticed.
                timeout = (min(self._cooldown_until - now, 1.0)
                           if self._pending or self._schedule_due else None)
                if math.isfinite(self._next_scheduled):
                    timeout = min(timeout if timeout is not None else 1.0,
                                  max(0.0, self._next_scheduled - wall), 1.0)
                # Alert retrains waiting for the source's catch-up: poll it.
                if self._pending and not self._caught_up and timeout is not None:
                    timeout = min(timeout, 0.2) if timeout > 0 else 0.2
                self._cond.wait(timeout)
            return None

    def _source_caught_up(self, now: float) -> bool:
        """May alert retrains run, as far as the updater's source goes? (condition held)

        True once ``source_ready()`` was True, or ``catch_up_seconds`` after
        :meth:`start` (then they run on what the updater has); latched.
        """
        if self._caught_up:
            return True
        assert self.source_ready is not None
        if self.source_ready():
            log.info("the updater caught up with its source: alert retrains may run")
            self._caught_up = True
        elif now >= self._catch_up_until:
            log.warning("the updater has not caught up with its source within %g s of the "
                        "start; alert retrains run on what it has (a retrain without data "
                        "is recorded as skipped and does not use its episodes up)",
                        self.catch_up_seconds)
            self._caught_up = True
        return self._caught_up

    def _claimed(self, job: _Job) -> None:
        """``job`` runs now (condition held)."""
        self._busy = True
        self._current, self._current_since, self._timed_out = job, self.monotonic(), False

    def _finish(self, job: _Job, result: dict[str, Any] | None, error: str | None) -> None:
        assert job.retrain_id is not None
        with self._cond:
            # _timed_out is set before the ledger says so: a late note is never lost.
            note = (f"finished {self._age():.0f} s after it started, past the time limit "
                    f"of {self.time_limit_seconds:g} s (it was recorded as timed_out)"
                    if self._timed_out else None)
        outcome = self.ledger.finish_retrain(job.retrain_id, result, error, note=note)
        self.metrics.retrain_finished.labels(job.trigger).set(self.clock())
        with self._cond:
            self._busy = False
            self._current = None
            if job.trigger in ("alert", "schedule"):
                self._set_cooldown(self.monotonic() + self.cooldown_seconds)
        log.info("retrain %d (%s, %s) finished: %s", job.retrain_id, job.trigger,
                 job.retrain_type.value, outcome)

    def _run(self) -> None:
        # Not exporter.background.BackgroundLoop: this loop blocks on the
        # condition that queues jobs, and its backoff after an error waits on
        # that condition too, so a new job, wake() or stop() ends the wait at
        # once; BackgroundLoop's backoff waits on its stop event only and
        # would hold an operator's retrain request for up to _MAX_BACKOFF.
        backoff = 0.1
        while True:
            job: _Job | None = None
            try:
                job = self._next_job()
                if job is None:
                    return
                result = self.updater.trigger_retraining(
                    reason=job.reason, force_full_retrain=job.retrain_type is RetrainType.FULL,
                    model_type=job.model_type)
                self._finish(job, result, None)
                if job.future is not None:
                    assert job.retrain_id is not None
                    job.future.set_result((job.retrain_id, result))
                backoff = 0.1
            except Exception as exc:  # the outermost loop: log, count, keep serving
                log.exception("retrain worker: %s", "retrain failed" if job else "loop failed")
                with self._cond:
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self._busy = False
                self.metrics.controller_errors.inc()
                if job is not None and job.retrain_id is not None:
                    try:
                        self._finish(job, None, self.last_error)
                    except Exception:  # the ledger itself failing: already logged above
                        log.exception("retrain worker: cannot record the failure")
                with self._cond:
                    self._current = None  # also when recording it failed
                if job is not None and job.future is not None and not job.future.done():
                    job.future.set_exception(exc)
                with self._cond:
                    if not self._stopping:
                        self._cond.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
