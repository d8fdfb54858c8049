"""EXPONENTIAL: evidence forgotten in event time, with probation and drop detection."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from ..drops import DROP_LLR, RESTART_EVIDENCE, drop_llr, drop_llr_runs, drop_tested
from ..probation import PARK_Z, Probation, sums_reward
from .base import Observations, Rule, UpdateStrategy, check_bool, check_number
from .bayesian import BayesianRule

__all__ = ["HALF_LIFE_SECONDS", "RETRY_AFTER_SECONDS", "ExponentialRule"]

#: Default half-life: a year of event time, which over hours and days means
#: "does not forget in time". It was an hour before drop detection was on by
#: default (issue 14), then a day: forgetting had to do the adapting, and its
#: price was paid all the time, in the wider posteriors that make Thompson
#: sampling spend requests on agents known to be worse. Drops are the drop
#: detector's (a pair set aside within a few runs, and retried), systemic
#: drops and slow erosion the alert loop's (its retrain restarts the pairs
#: the recent runs contradict); the price of a year is that an erosion no
#: alert catches is followed late (BENCHMARKS.md, decision quality).
HALF_LIFE_SECONDS = 365 * 86400.0
#: Default wait before an agent set aside on a task type is retried.
RETRY_AFTER_SECONDS = 600.0


class ExponentialRule(BayesianRule):
    """Exponential forgetting in event time with half-life ``h`` seconds.

    At the model's clock ``T`` (the newest event timestamp seen) a pair's
    evidence is ``n(T) = sum_i w_i 2**(-(T - t_i)/h)``,
    ``s(T) = sum_i w_i y_i 2**(-(T - t_i)/h)`` (likewise ``m``, ``a``, ``q``),
    and the success posterior is ``Beta(1 + s(T), 1 + n(T) - s(T))``.

    Why event time and not "observations per pair": the state then depends
    only on the events, not on when they were processed, so a replay, a
    Kafka restart or a simulated clock gives the same model; out-of-order
    events are weighed by their own age; and a pair that stops receiving
    events loses certainty, so Thompson sampling retries it.

    Stored form: every array holds ``sum_i x_i 2**((t_i - t0)/h)`` for a
    reference ``t0``, so an update is order-free (one ``np.add.at``) and the
    decay to ``T`` is applied when evidence is read. ``t0`` moves forward
    (rescaling the arrays) before the factors could overflow.

    Probation (``retry_after_seconds`` not None, see :mod:`.probation`): at
    an incremental retrain, a pair that got worse has its older evidence
    parked in :attr:`probation` instead of dropped, and retried later. With
    ``detect_drops`` (the default whenever retries are on: None means "on
    with retries, off without"), a CUSUM per pair (``drop_cusum``, see
    :mod:`.drops`) also parks a pair whose runs drop between retrains, batch
    by batch: a broken agent is routed around within a few of its runs,
    without waiting for an alert. :attr:`detections` lists the pairs it set
    aside since its owner last emptied it (a copy starts with an empty one).
    """

    strategy = UpdateStrategy.EXPONENTIAL
    pair_arrays = (*BayesianRule.evidence_arrays, "drop_cusum")
    _REBASE_HALF_LIVES = 64.0

    def __init__(self, half_life_seconds: float = HALF_LIFE_SECONDS,
                 retry_after_seconds: float | None = RETRY_AFTER_SECONDS,
                 detect_drops: bool | None = None) -> None:
        half_life_seconds = check_number("half_life_seconds", half_life_seconds, 0.0)
        if retry_after_seconds is not None:
            if (isinstance(retry_after_seconds, bool)
                    or not isinstance(retry_after_seconds, int | float)
                    or not 0 < retry_after_seconds < math.inf):
                raise ValueError("retry_after_seconds must be a finite number > 0 or None, "
                                 f"got {retry_after_seconds!r}")
            retry_after_seconds = float(retry_after_seconds)
        if detect_drops is None:
            # On by default; a dropped pair is parked for a retry, so without
            # retries there is nothing to park it in.
            detect_drops = retry_after_seconds is not None
        check_bool("detect_drops", detect_drops)
        if detect_drops and retry_after_seconds is None:
            raise ValueError("detect_drops needs retry_after_seconds (a dropped pair is retried)")
        super().__init__()
        self.half_life_seconds = half_life_seconds
        self.retry_after_seconds = retry_after_seconds
        self.t0 = float("nan")  # reference time; NaN until the first event
        self.clock = float("-inf")  # newest event time seen
        self.probation = None if retry_after_seconds is None else Probation(retry_after_seconds)
        self.detect_drops = bool(detect_drops)
        self.drop_cusum = np.zeros((0, 0))
        self.detections: list[tuple[int, int]] = []

    def measure_rule(self) -> ExponentialRule:
        # Same half-life; no probation or drop detection: those judge a success
        # rate and an accuracy, not a price.
        return ExponentialRule(self.half_life_seconds, retry_after_seconds=None,
                               detect_drops=False)

    def copy(self) -> ExponentialRule:
        clone = super().copy()
        assert isinstance(clone, ExponentialRule)
        if self.probation is not None:
            clone.probation = self.probation.copy()
        clone.detections = []
        return clone

    def _scale(self, obs: Observations) -> np.ndarray:
        return obs.weight * np.exp2((obs.timestamp - self.t0) / self.half_life_seconds)

    def update(self, obs: Observations) -> None:
        if not len(obs):
            return
        self._advance(obs)
        if self.probation is None:
            self._accumulate(obs)
            return
        if self.detect_drops:
            self._detect_drops(obs)
        if self.probation:  # pairs are parked: the common case skips this
            self.probation.observe(
                obs.rows, obs.cols, obs.is_run, obs.value, obs.timestamp,
                self._scale(replace(obs, weight=np.ones(len(obs)))),
                [getattr(self, name) for name in self.evidence_arrays], self._decay(), self.clock)
        self._accumulate(obs)

    def _advance(self, obs: Observations) -> None:
        """Move the clock to the newest of ``obs``; rebase ``t0`` when due."""
        newest = float(obs.timestamp.max())
        if newest > self.clock:
            self.clock = newest
        if self.t0 != self.t0:  # first event
            self.t0 = self.clock
        elif (self.clock - self.t0) / self.half_life_seconds > self._REBASE_HALF_LIVES:
            factor = 2.0 ** (-(self.clock - self.t0) / self.half_life_seconds)
            for name in self.evidence_arrays:
                getattr(self, name)[...] *= factor
            if self.probation is not None:
                self.probation.rescale(factor)
            self.t0 = self.clock

    def _same_clock(self, other: BayesianRule) -> bool:
        return (isinstance(other, ExponentialRule) and other.t0 == self.t0
                and other.half_life_seconds == self.half_life_seconds)

    def _decay(self) -> float:
        if self.t0 != self.t0:
            return 1.0
        return float(2.0 ** (-(self.clock - self.t0) / self.half_life_seconds))

    def _sums(self, n_tasks: int, n_agents: int) -> list[np.ndarray]:
        decay = self._decay()
        return [x * decay for x in super()._sums(n_tasks, n_agents)]

    # -- probation ---------------------------------------------------------
    def _detect_drops(self, obs: Observations) -> None:
        """Advance the pairs' CUSUMs by ``obs`` (against the evidence before
        them); park the pairs that dropped, keeping a little of their history."""
        assert self.probation is not None
        stored = [getattr(self, name).reshape(-1) for name in self.evidence_arrays]
        decay = self._decay()
        # Only observations whose pair is tested on their kind move a CUSUM
        # (drop_llr is 0 for the others, and a statistic is never negative):
        # replay those alone. A full retrain (an empty model fed the buffer
        # at once) has none, a streamed batch of known pairs nearly all.
        # A statistic at the threshold is reset in the call that reached it,
        # so a pair with no tested observation here cannot have dropped.
        if obs.is_run.all():
            # Runs only (the usual streamed batch): the ratios per pair.
            ratios = drop_llr_runs(stored[0] * decay, stored[1] * decay,
                                   obs.rows * self.capacity[1] + obs.cols, obs.value)
            if ratios is None:
                return
            llr, flat = ratios
        else:
            if len(obs) > len(stored[0]):
                # More observations than pairs: first ask whether any pair at all
                # is tested (max(x) * decay == max(x * decay): decay > 0).
                runs = stored[0].max(initial=0.0) * decay
                records = stored[2].max(initial=0.0) * decay
                if not drop_tested(np.array([runs, runs]), np.array([records, records]),
                                   np.array([True, False])).any():
                    return
            flat = obs.rows * self.capacity[1] + obs.cols
            evidence = [x[flat] * decay for x in stored]
            tested = drop_tested(evidence[0], evidence[2], obs.is_run)
            if not tested.any():
                return
            is_run, value = obs.is_run, obs.value
            if not tested.all():
                flat, is_run, value = flat[tested], is_run[tested], value[tested]
                evidence = [x[tested] for x in evidence]
            llr = drop_llr(evidence, is_run, value)
        cusum = self.drop_cusum.reshape(-1)
        np.add.at(cusum, flat, llr)
        after = np.maximum(cusum[flat], 0.0)
        cusum[flat] = after
        hit = after >= DROP_LLR
        if not hit.any():
            return
        dropped = np.unique(flat[hit])
        for pair in dropped:
            key = divmod(int(pair), self.capacity[1])
            history = np.array([x[pair] for x in stored])
            if key not in self.probation.pairs:
                self.detections.append(key)
            self.probation.park(key, history, self.clock)
            runs, records = history[0] * decay, history[2] * decay
            keep_runs = min(1.0, RESTART_EVIDENCE / runs) if runs > 0 else 1.0
            keep_records = min(1.0, RESTART_EVIDENCE / records) if records > 0 else 1.0
            for k, x in enumerate(stored):
                x[pair] *= keep_runs if k < 2 else keep_records
            cusum[pair] = 0.0

    def keep_parked(self, source: Rule,
                    pairs: list[tuple[tuple[int, int], tuple[int, int]]]) -> None:
        if (self.probation is None or not isinstance(source, ExponentialRule)
                or source.probation is None):
            return
        if self.t0 != self.t0:  # nothing learnt yet: take the source's clock
            self.t0, self.clock = source.t0, source.clock
        # Source stored form to ours (same half-life: the candidate is a clone).
        factor = 2.0 ** ((source.t0 - self.t0) / self.half_life_seconds)
        for src, dst in pairs:
            for name in self.evidence_arrays:
                getattr(self, name)[dst] = getattr(source, name)[src] * factor
            self.drop_cusum[dst] = 0.0
            self.probation.pairs[dst] = source.probation.pairs[src].copy(factor)

    def _park_z(self) -> float | None:
        return None if self.probation is None else PARK_Z

    def _change_points(self, changed: np.ndarray, older: list[np.ndarray],
                       buffered: list[np.ndarray]) -> list[np.ndarray] | None:
        if self.probation is None or not changed.any():
            return None
        worse = sums_reward(*buffered) < sums_reward(*older)
        decay = self._decay()
        return self.probation.at_retrain(changed, worse, [x / decay for x in older], self.clock)

    def probation_scores(self, n_tasks: int, n_agents: int,
                         probing: bool = False) -> np.ndarray | None:
        if not self.probation:
            return None
        return self.probation.scores(n_tasks, n_agents, self.clock, probing)

    def route_probe(self, row: int, col: int) -> bool:
        return self.probation is None or self.probation.route((row, col))

    def take_detections(self) -> list[tuple[int, int]]:
        detections, self.detections = self.detections, []
        return detections

    # -- persistence -------------------------------------------------------
    def arrays(self, n_tasks: int, n_agents: int) -> dict[str, np.ndarray]:
        out = super().arrays(n_tasks, n_agents)
        out["t0"] = np.array(self.t0)
        out["clock"] = np.array(self.clock)
        if self.probation:
            out.update(self.probation.to_arrays())
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray], n_tasks: int, n_agents: int) -> None:
        if "drop_cusum" not in arrays:  # saved before the detector existed
            arrays = {**arrays, "drop_cusum": np.zeros((n_tasks, n_agents))}
        super().load_arrays(arrays, n_tasks, n_agents)
        self.t0 = float(arrays["t0"])
        self.clock = float(arrays["clock"])
        if self.probation is not None:
            self.probation.load_arrays(arrays, n_tasks, n_agents)

    def hyperparameters(self) -> dict[str, Any]:
        return {"half_life_seconds": self.half_life_seconds,
                "retry_after_seconds": self.retry_after_seconds,
                "detect_drops": self.detect_drops}
