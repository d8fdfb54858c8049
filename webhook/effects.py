"""Did the retrain help? Each ledger retrain's effect, measured once its after-window closed.

:class:`RetrainEffects` reads the ledger's finished retrains that have no
``effect`` yet and whose after-window (``window_seconds`` from the finish,
then ``settle_seconds`` for late events) has closed on its injected clock;
it measures the outcomes of the window before the retrain's start and the
one after its finish (:func:`autoretrain.exporter.effect.measure`, on the
updater's :class:`~webhook.updater.outcomes.OutcomeTally`), writes the
effect on the row and exports it:

- ``autoretrain_retrain_effects_total{trigger, verdict}``;
- the last effect per trigger: ``autoretrain_retrain_effect_{before,after,delta}_ratio
  {trigger, figure}`` (removed when the figure was not measured: no made-up
  number) and ``autoretrain_retrain_effect_measured_timestamp_seconds``;
- ``autoretrain_retrains_unhelpful_streak``: measured retrains in a row that
  were unchanged or worse; the ``AutoretrainRetrainsNotHelping`` alert reads it.

The webhook runs :meth:`RetrainEffects.check` on a background loop; tests
call it after moving their clock. The ledger is the state, so a restart
loses nothing but the in-memory counts of the windows (see
:mod:`webhook.updater.outcomes`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from autoretrain.exporter.effect import (
    FIGURES,
    IMPROVED,
    NOT_ENOUGH_DATA,
    UNHELPFUL,
    VERDICTS,
    Effect,
    EffectSettings,
    Outcomes,
    measure,
)

from .ledger import Ledger
from .metrics import WebhookMetrics

__all__ = ["TRIGGERS", "RetrainEffects", "unhelpful_streak"]

log = logging.getLogger(__name__)

#: What starts a retrain (the ledger's ``trigger``); bounded label values.
TRIGGERS = ("alert", "api", "schedule")


def unhelpful_streak(verdicts: list[str]) -> int:
    """Verdicts newest first -> how many measured retrains in a row did not help
    (``not_enough_data`` neither counts nor breaks the run)."""
    streak = 0
    for verdict in verdicts:
        if verdict == NOT_ENOUGH_DATA:
            continue
        if verdict not in UNHELPFUL:
            break
        streak += 1
    return streak


class RetrainEffects:
    """Measures and records the effect of each finished retrain of ``ledger``.

    ``outcomes(start, end)``: the outcome counts of events timed in
    ``[start, end)`` (the updater's ``outcomes.outcomes``).
    """

    def __init__(
        self,
        ledger: Ledger,
        outcomes: Callable[[float, float], Outcomes],
        metrics: WebhookMetrics,
        settings: EffectSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self._outcomes = outcomes
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.restore()

    def restore(self) -> None:
        """Export the streak and the last finish per trigger as the ledger has them."""
        for trigger in TRIGGERS:
            for verdict in VERDICTS:  # at 0 from the start: increase() sees the first one
                self.metrics.effects.labels(trigger, verdict)
            last = self.ledger.last_finished(trigger=trigger)
            if last is not None:
                self.metrics.retrain_finished.labels(trigger).set(last)
        self._export_streak()

    def _export_streak(self) -> int:
        verdicts = [v for _, v in self.ledger.recent_verdicts(100)]
        streak = unhelpful_streak(verdicts)
        self.metrics.unhelpful_streak.set(streak)
        return streak

    def check(self) -> list[tuple[int, Effect]]:
        """Measure every retrain whose after-window has closed; return (id, effect)."""
        s = self.settings
        now = self.clock()
        done: list[tuple[int, Effect]] = []
        for row in self.ledger.unmeasured(now - s.window_seconds - s.settle_seconds):
            started, finished = float(row["started_at"]), float(row["finished_at"])
            effect = measure(
                self._outcomes(started - s.window_seconds, started),
                self._outcomes(finished, finished + s.window_seconds),
                s, before_start=started - s.window_seconds,
                after_end=finished + s.window_seconds, measured_at=now)
            if not self.ledger.record_effect(row["id"], effect.as_dict()):
                continue
            self._export(row["trigger"], effect, now)
            done.append((row["id"], effect))
            log.info("retrain %d (%s, %s): %s", row["id"], row["trigger"], row["retrain_type"],
                     _describe(effect))
        if done:
            streak = self._export_streak()
            if streak >= s.unhelpful_retrains and done[-1][1].verdict in UNHELPFUL:
                log.warning("the last %d measured retrains did not help (unchanged or worse): "
                            "a person should look at the agents", streak)
        return done

    def _export(self, trigger: str, effect: Effect, now: float) -> None:
        m = self.metrics
        label = trigger if trigger in TRIGGERS else "other"
        m.effects.labels(label, effect.verdict).inc()
        m.effect_measured.labels(label).set(now)
        figures: dict[str, Any] = dict(effect.figures)
        for name in FIGURES:
            values = (figures["before"][name], figures["after"][name], figures["delta"][name])
            for gauge, value in zip((m.effect_before, m.effect_after, m.effect_delta), values,
                                    strict=True):
                if value is None:
                    # Not measured: no series, rather than the previous retrain's number.
                    with contextlib.suppress(KeyError):
                        gauge.remove(label, name)
                else:
                    gauge.labels(label, name).set(value)


def _describe(effect: Effect) -> str:
    d = effect.figures
    parts = [f"{name.replace('_', ' ')} {d['before'][name]:.3f} -> {d['after'][name]:.3f}"
             for name in FIGURES if d["delta"][name] is not None]
    counts = d["events"]
    if effect.verdict == NOT_ENOUGH_DATA:
        return (f"not enough data to measure its effect ({counts['before']['success_rate']} / "
                f"{counts['after']['success_rate']} runs before / after)")
    word = "helped" if effect.verdict == IMPROVED else effect.verdict
    return f"{word}: " + ", ".join(parts)
