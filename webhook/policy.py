"""What to do with each alert of a notification: a pure decision.

Rules, applied to the alerts in order (a notification may repeat an alert):

1. An alert without a ``retrain`` label is acknowledged and ignored
   (``ignored_no_retrain_label``); one whose label is neither
   ``incremental`` nor ``full`` likewise (``ignored_invalid_retrain_label``).
2. An episode (fingerprint + startsAt) is acted on once. A firing alert of
   an episode already known, in any state but ``skipped``, is
   ``duplicate_episode``: this is what absorbs Alertmanager's repeats,
   retries and the firing re-sends of an episode that resolved meanwhile.
   An episode whose retrain was skipped (the updater had nothing to train
   on) has not had the retrain it asked for: a firing re-send queues it
   again, as rule 3 says.
3. A firing alert of a new episode queues a retrain: ``queued_full`` or
   ``queued_incremental`` after its label, or ``cooldown`` when the cooldown
   after the previous retrain has not ended (it is queued all the same and
   runs when the cooldown ends, unless it resolves first).
4. Queued episodes are coalesced into one retrain; it is full when any of
   them asked for full (full wins over incremental).
5. A resolved alert never retrains. If its episode is still queued, the
   queued retrain for it is cancelled (``resolved_cancelled``); otherwise it
   is ``resolved``, and the episode is remembered so that a late firing
   re-send of it does not retrain.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .alerts import EpisodeKey, Notification
from .updater.results import RetrainType

__all__ = [
    "Action",
    "Decision",
    "EpisodeState",
    "Plan",
    "QueuedEpisode",
    "decide",
    "retrain_type_of",
]

# The retrain label values an alert may carry.
_RETRAIN_LABELS = frozenset(t.value for t in RetrainType)


class Action(enum.StrEnum):
    """What the webhook did with one alert (the ``action`` label of
    ``autoretrain_webhook_alerts_total``)."""

    QUEUED_FULL = "queued_full"
    QUEUED_INCREMENTAL = "queued_incremental"
    COOLDOWN = "cooldown"
    DUPLICATE_EPISODE = "duplicate_episode"
    RESOLVED_CANCELLED = "resolved_cancelled"
    RESOLVED = "resolved"
    IGNORED_NO_RETRAIN_LABEL = "ignored_no_retrain_label"
    IGNORED_INVALID_RETRAIN_LABEL = "ignored_invalid_retrain_label"


class EpisodeState(enum.StrEnum):
    """Where an episode stands in the ledger."""

    QUEUED = "queued"        # waiting for the retrain worker
    RETRAINED = "retrained"  # claimed by a retrain (whatever its result)
    CANCELLED = "cancelled"  # resolved while queued
    RESOLVED = "resolved"    # resolved without being queued (e.g. seen first resolved)
    SKIPPED = "skipped"      # its retrain had nothing to train on: a re-send queues it again


@dataclass(frozen=True)
class QueuedEpisode:
    """An episode waiting for a retrain."""

    episode: EpisodeKey
    alertname: str
    retrain_type: str
    queued_at: float


@dataclass(frozen=True)
class Decision:
    """The action taken for the alert at ``index`` of the notification."""

    index: int
    alertname: str
    status: str
    episode: EpisodeKey
    action: Action
    retrain_type: str | None
    detail: str
    not_before: float | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "index": self.index,
            "alertname": self.alertname,
            "status": self.status,
            "fingerprint": self.episode.fingerprint,
            "startsAt": self.episode.starts_at,
            "action": self.action.value,
            "retrain_type": self.retrain_type,
            "detail": self.detail,
        }
        if self.not_before is not None:
            data["not_before"] = self.not_before
        return data


@dataclass(frozen=True)
class Plan:
    """Decisions plus the state changes they imply, for the controller to apply."""

    decisions: tuple[Decision, ...]
    queue: tuple[QueuedEpisode, ...]
    cancel: tuple[EpisodeKey, ...]
    resolve: tuple[QueuedEpisode, ...]  # first seen resolved: remembered, never queued


def retrain_type_of(queued: Iterable[QueuedEpisode]) -> RetrainType:
    """The type of one retrain serving all of ``queued``: full wins over incremental."""
    return RetrainType.of(any(q.retrain_type == RetrainType.FULL for q in queued))


def decide(
    notification: Notification,
    episodes: Mapping[EpisodeKey, EpisodeState],
    *,
    now: float,
    cooldown_until: float = 0.0,
) -> Plan:
    """Decide per alert of ``notification``.

    ``episodes`` holds the ledger state of (at least) the notification's
    episodes; ``cooldown_until`` is the Unix time before which no new
    alert-triggered retrain may start.
    """
    known: dict[EpisodeKey, EpisodeState] = dict(episodes)
    decisions: list[Decision] = []
    queue: dict[EpisodeKey, QueuedEpisode] = {}
    cancel: list[EpisodeKey] = []
    resolve: list[QueuedEpisode] = []
    for index, alert in enumerate(notification.alerts):
        key, label = alert.episode, alert.retrain
        # (action, detail, retrain_type, not_before) for this alert.
        outcome: tuple[Action, str, str | None, float | None]
        state = known.get(key)
        if label is None:
            outcome = (Action.IGNORED_NO_RETRAIN_LABEL, "no retrain label: acknowledged only",
                       None, None)
        elif label not in _RETRAIN_LABELS:
            outcome = (Action.IGNORED_INVALID_RETRAIN_LABEL,
                       f"retrain label must be incremental or full, got {label[:40]!r}",
                       None, None)
        elif alert.status == "resolved":
            if state is EpisodeState.QUEUED:
                known[key] = EpisodeState.CANCELLED
                if queue.pop(key, None) is not None:
                    # Queued and resolved in this same notification: never persisted
                    # as queued, so remember it as resolved.
                    resolve.append(QueuedEpisode(key, alert.alertname, label, now))
                else:
                    cancel.append(key)
                outcome = (Action.RESOLVED_CANCELLED, "resolved: the queued retrain is cancelled",
                           label, None)
            else:
                if state is None or state is EpisodeState.SKIPPED:
                    known[key] = EpisodeState.RESOLVED
                    resolve.append(QueuedEpisode(key, alert.alertname, label, now))
                outcome = (Action.RESOLVED, "resolved: nothing to do", None, None)
        elif state is not None and state is not EpisodeState.SKIPPED:
            outcome = (Action.DUPLICATE_EPISODE,
                       f"episode already {state.value}: not retrained again", None, None)
        else:
            known[key] = EpisodeState.QUEUED
            queue[key] = QueuedEpisode(key, alert.alertname, label, now)
            again = ("; its previous retrain was skipped (nothing to train on)"
                     if state is EpisodeState.SKIPPED else "")
            if now < cooldown_until:
                outcome = (Action.COOLDOWN, f"queued; runs when the cooldown ends{again}",
                           label, cooldown_until)
            elif label == "full":
                outcome = (Action.QUEUED_FULL, f"queued for a full retrain{again}", label,
                           None)
            else:
                outcome = (Action.QUEUED_INCREMENTAL,
                           f"queued for an incremental retrain{again}", label, None)
        action, detail, retrain_type, not_before = outcome
        decisions.append(Decision(index, alert.alertname, alert.status, key, action,
                                  retrain_type, detail, not_before))
    return Plan(tuple(decisions), tuple(queue.values()), tuple(cancel), tuple(resolve))
