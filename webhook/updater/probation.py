"""Probation: retrying an agent that was set aside because it got worse.

When an incremental retrain finds that a pair's recent runs are worse than
its history (an outage, a bad model update; or, by default, when the CUSUM of
:mod:`.drops` says so between retrains), the forgetting strategy drops the
history so the model stops routing to the agent at once. Dropping it
outright has a cost the moment the agent recovers: traffic has moved to
the alternatives, so nothing observes the agent again, the system looks
healthy, no alert fires and no retrain runs; only exploration could find
out, and a pair whose evidence says "fails 75 % of the time" is almost
never drawn by Thompson sampling. A circuit
breaker has the same problem and the same answer, the half-open state:

* the history is *parked* (kept aside, still decaying with the strategy's
  half-life), not dropped;
* ``retry_after_seconds`` of event time later, probation opens: requests
  routed with ``explore=True`` rank the pair by its parked (pre-change)
  reward, so the exploration share of traffic retries it, and so do up to
  :data:`PROBE_RUNS` greedy requests of its task type (the half-open
  state's trial requests: tested on the explored share alone, a retry took
  tens of minutes to decide, and a recovered agent stayed set aside that
  long), :data:`PROBES_IN_FLIGHT` at a time: the next probe goes out once
  the runs observed since the retry opened catch up with the probes routed.
  The probes are counted where requests are routed (per model instance, so
  per serving process) and where their runs are observed, so a still-broken
  agent gets two requests at a time, and at most :data:`PROBE_RUNS`,
  however late its outcomes come back;
* each retried observation adds to a log-likelihood ratio of "as it was
  before" (the parked history) against "as it has been since it was
  parked" (the observations since then, as they stood when this retry
  opened; the pair's current evidence while there are none). The two are
  fixed for the retry, which makes it Wald's sequential probability ratio
  test. The current evidence would be a poor alternative: it is the
  retrain's buffer, which mixes runs from before and after the drop; and
  an alternative that learnt from the retried runs themselves would chase
  them and never decide. The alternative's success rate is kept at or
  above half the history's (:data:`RETRY_ALT_FLOOR`): estimated from the
  few runs since the park, it is often far below an outage's real rate,
  and a short lucky streak of a still-broken agent then looked like proof
  that it was back. At ``+PROBATION_LLR`` the agent is back: the
  parked history is merged into the current evidence and greedy routing
  returns to it; at ``-PROBATION_LLR`` it is still broken, and when the
  next retry opens depends on how. An agent that still runs but answers
  worse (a bad model or prompt update: its runs since the park succeed
  at least :data:`OUTAGE_SUCCESS_SHARE` as often as the history's) gets
  the backoff of a circuit breaker from its second failed retry in a row:
  the next retry waits as long as the first, then twice as long as the
  last (``retry_after_seconds`` x 1, 1, 2, 4, 8, then 8 again: 10, 10,
  20, 40, 80, 80 ... minutes by default), so an agent that stays worse
  costs fewer and fewer requests; a person has to change it, and nothing
  says when. One failed retry says little about whether the cause lasts:
  a shared service's bad quarter of an hour fails the first retry of
  every agent it set aside, and with the backoff from the first failure
  they waited 20 minutes more after it was fixed (the demo's systemic
  drop: recovery accuracy 0.782 with it, 0.827 without it, over the
  demo's seeds 1-12; bench.decisions: 13 of 100 runs missing a target
  either way). An agent whose runs still fail (an outage: a provider down, a
  broken deployment) is retried every ``retry_after_seconds``: an outage
  ends on its own at a time nothing predicts, and with the backoff a
  recovered agent waited up to 80 minutes for the retry that restores it
  (bench.decisions, revert with outages of 15 to 60 minutes: 78 of 100
  runs above the regret target with the backoff, 42 without it for
  outages); each such retry costs about two requests, the two failures
  that decide "still broken". If, when a retry opens, the runs since
  the park (three or more) are already within 10 % of the history's
  reward, the drop was a false alarm or is over: restored without a test;
* once the parked evidence has faded below three observations' worth
  (after a failed retry) there is nothing left to restore and the pair
  leaves probation.

A threshold of log(20) means the retried runs are twenty times likelier
under one hypothesis than the other: with a 97 % history and the floored
alternative (48.5 %), two failed runs decide "still broken" and five
successes decide "back".

Parked pairs are few, so :class:`Probation` keeps them in a dict keyed by
(task row, agent column) rather than in per-pair arrays: no memory for the
pairs that never drop. The rule that owns one is
:class:`~.strategies.ExponentialRule`; sums are in its stored form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["EVENTS", "OUTAGE_SUCCESS_SHARE", "PARK_Z", "PROBATION_LLR", "PROBES_IN_FLIGHT",
           "PROBE_RUNS", "Probation", "accuracy_moments", "log_likelihood", "success_rate",
           "sums_reward"]

#: What :attr:`Probation.journal` records: a pair set aside, restored, a
#: retry that found it still broken, and a history given up (faded).
EVENTS = ("parked", "restored", "retry_failed", "given_up")

#: An incremental retrain parks a pair whose buffered runs are worse than its
#: history by more than this many standard errors (the plain change-point
#: test asks for :data:`~.strategies.CHANGE_Z`, 4): a parked history is
#: retried and restored if the drop was noise, so a lower bar costs little,
#: while an agent that is only partly degraded in the buffer (some runs
#: before the drop, some after) is set aside at the first retrain.
PARK_Z = 2.5
#: Decision threshold of the probation's log-likelihood ratio (see module docs).
PROBATION_LLR = math.log(20.0)
#: After ``k`` failed retries in a row the next waits ``retry_after_seconds``
#: times ``min(RETRY_BACKOFF**(k - 1), RETRY_BACKOFF_CAP)``.
RETRY_BACKOFF = 2.0
RETRY_BACKOFF_CAP = 8.0
#: ... unless the pair's runs since the park succeed less than this share
#: as often as its history's (an outage rather than a worse agent): then
#: the next retry waits ``retry_after_seconds``, without backoff.
OUTAGE_SUCCESS_SHARE = 0.5
#: An open retry is also routed greedily until this many of its task type's
#: requests were routed to it, or this many of its runs observed (the
#: half-open state's trial requests, see the module docs) ...
PROBE_RUNS = 8
#: ... this many at a time: greedy routing sends the next probe once the runs
#: observed since the retry opened catch up with the probes routed. With all
#: 8 at once a retry of an agent that stays broken cost every request of
#: its task type until the first outcomes came back; one at a time decided
#: after every run and so restored a still-broken agent on a lucky pair of
#: accuracy records more often (bench.decisions: 22 runs of 100 missing a
#: target with 1 or 2, 25 with 8; one wrong restore in 20 abrupt runs with
#: 1, none with 2).
PROBES_IN_FLIGHT = 2
#: The alternative of a retry ("as since the park") has a success rate of at
#: least this share of the history's: estimated from the few runs since the
#: park (often none succeeded), it is far lower than an outage's real rate,
#: so a short lucky streak of the broken agent looked like proof it was back.
RETRY_ALT_FLOOR = 0.5
# Floors that keep one observation from deciding on its own against an
# estimate from little evidence: success probabilities are kept in
# [0.01, 0.99] and per-record accuracy variances at or above 0.01 (sd 0.1).
_P_FLOOR = 0.01
_ACC_VARIANCE_FLOOR = 0.01
# A parked history that has decayed below this much evidence (runs plus
# accuracy records; the change-point test's minimum) is not worth restoring.
_FADED = 3.0


def success_rate(n: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``(s + 1/2) / (n + 1)``, kept in [0.01, 0.99]."""
    return np.clip((s + 0.5) / (n + 1.0), _P_FLOOR, 1.0 - _P_FLOOR)


def accuracy_moments(m: np.ndarray, a: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (1.0 without records, the model's accuracy prior) and floored variance."""
    has = m > 1e-12
    safe = np.where(has, m, 1.0)
    mean = np.where(has, a / safe, 1.0)
    var = np.where(has, q / safe - mean**2, 0.0)
    return mean, np.maximum(var, _ACC_VARIANCE_FLOOR)


def sums_reward(n: np.ndarray, s: np.ndarray, m: np.ndarray, a: np.ndarray,
                q: np.ndarray) -> np.ndarray:
    """Expected reward (success rate x mean accuracy) of evidence sums.

    The sums may carry any common scale (the stored, undecayed form of
    EXPONENTIAL): only ratios enter.
    """
    return success_rate(n, s) * accuracy_moments(m, a, q)[0]


def log_likelihood(sums: list[np.ndarray], is_run: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Log-likelihood of each observation under the evidence ``sums``.

    ``sums`` are ``[n, s, m, a, q]`` gathered per observation (same length
    as ``is_run``). A run (``value`` 1 success, 0 not) is Bernoulli with the
    evidence's success rate; an accuracy record is Normal with its mean and
    variance (the Normal's constant cancels in a ratio and is left out).
    """
    n, s, m, a, q = sums
    p = success_rate(n, s)
    run_ll = value * np.log(p) + (1.0 - value) * np.log1p(-p)
    mean, var = accuracy_moments(m, a, q)
    acc_ll = -0.5 * ((value - mean) ** 2 / var + np.log(var))
    return np.where(is_run, run_ll, acc_ll)


def _observation_sums(is_run: np.ndarray, value: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """``[n, s, m, a, q]`` of observations each counted once (``unit``: the
    stored-form weight of one observation)."""
    run, acc = unit * is_run, unit * ~is_run
    return np.array([run.sum(), (run * value).sum(), acc.sum(), (acc * value).sum(),
                     (acc * value * value).sum()])


def _as_good(since: np.ndarray, history: np.ndarray) -> bool:
    """The runs since the park (``since``, effective; at least :data:`_FADED`
    of them) are within 10 % of the history's reward: the drop was a false
    alarm or is over."""
    return bool(since[0] >= _FADED and sums_reward(*since) >= 0.9 * sums_reward(*history))


def _failing(since: np.ndarray, history: np.ndarray) -> bool:
    """The runs since the park (effective sums) succeed less than
    :data:`OUTAGE_SUCCESS_SHARE` as often as the history's: the agent is
    down rather than worse."""
    return bool(success_rate(since[0], since[1])
                < OUTAGE_SUCCESS_SHARE * success_rate(history[0], history[1]))


@dataclass
class _Parked:
    history: np.ndarray  # [n, s, m, a, q] set aside at the drop
    since: np.ndarray  # [n, s, m, a, q] of the observations since then
    retry_at: float  # event time probation (re)opens
    llr: float = 0.0  # of the observations since probation opened
    alt: np.ndarray | None = None  # the alternative of the open retry
    failures: int = 0  # failed retries in a row (a worse agent's next one waits longer)
    probes: int = 0  # retried runs of the open retry (observed)
    routed: int = 0  # greedy requests this process routed to the open retry

    def copy(self, factor: float = 1.0) -> _Parked:
        """An independent copy, its sums times ``factor`` (another stored form)."""
        return _Parked(self.history * factor, self.since * factor, self.retry_at, self.llr,
                       None if self.alt is None else self.alt * factor, self.failures,
                       self.probes, self.routed)

    def probing(self) -> bool:
        """Whether greedy routing should send the open retry its next probe."""
        return (max(self.probes, self.routed) < PROBE_RUNS
                and self.routed - self.probes < PROBES_IN_FLIGHT)


class Probation:
    """The parked pairs of one model and their retries (see module docs).

    ``retry_after_seconds``: event time from a park to the first retry
    (failed retries back off, see the module docs). :attr:`journal` lists
    ``(event, key)`` of what happened since its owner last emptied it (one
    of :data:`EVENTS`); a copy starts with an empty one, so a candidate
    model's events are not reported twice.
    """

    def __init__(self, retry_after_seconds: float) -> None:
        self.retry_after_seconds = float(retry_after_seconds)
        self.pairs: dict[tuple[int, int], _Parked] = {}
        self.journal: list[tuple[str, tuple[int, int]]] = []

    def __len__(self) -> int:
        return len(self.pairs)

    def copy(self) -> Probation:
        clone = Probation(self.retry_after_seconds)
        clone.pairs = {key: parked.copy() for key, parked in self.pairs.items()}
        return clone

    def rescale(self, factor: float) -> None:
        """The owner moved its stored-form reference time."""
        for parked in self.pairs.values():
            parked.history *= factor
            parked.since *= factor
            if parked.alt is not None:
                parked.alt *= factor

    def at_retrain(self, changed: np.ndarray, worse: np.ndarray, older: list[np.ndarray],
                   clock: float) -> list[np.ndarray] | None:
        """An incremental retrain drops the older evidence ``older`` (stored
        form) of the ``changed`` pairs. Those that got ``worse`` are parked
        (a parked one keeps its history: what is dropped now is from the bad
        period); a parked pair that got better is back. Returns the histories
        to add back after the drop (None if none)."""
        restored: list[np.ndarray] | None = None
        for r, c in zip(*np.nonzero(changed), strict=True):
            key = (int(r), int(c))
            if worse[r, c]:
                self.park(key, np.array([x[r, c] for x in older], dtype=float), clock)
            elif key in self.pairs:
                if restored is None:
                    restored = [np.zeros(changed.shape) for _ in range(5)]
                for k in range(5):
                    restored[k][r, c] = self.pairs[key].history[k]
                del self.pairs[key]
                self.journal.append(("restored", key))
        return restored

    def park(self, key: tuple[int, int], history: np.ndarray, clock: float) -> None:
        """Set ``history`` (stored-form ``[n, s, m, a, q]``) of pair ``key``
        aside and schedule its retry. A pair already parked is left as it is:
        the evidence it is losing now is from after its drop, and "worse than
        its history" is what the park already says. Restarting its retry here
        let every retrain during an outage (the monitor retrains once per
        cooldown while the system looks degraded) push the retry back by a
        full wait and throw away an open one's probes, so a recovered agent
        was restored hundreds of decisions late."""
        if key in self.pairs:
            return
        self.pairs[key] = _Parked(np.asarray(history, dtype=float).copy(), np.zeros(5),
                                  clock + self.retry_after_seconds)
        self.journal.append(("parked", key))

    def observe(self, rows: np.ndarray, cols: np.ndarray, is_run: np.ndarray,
                value: np.ndarray, timestamp: np.ndarray, unit: np.ndarray,
                evidence: list[np.ndarray], decay: float, clock: float) -> None:
        """Account a batch of observations (before the owner adds them to
        ``evidence``, its stored-form ``[n, s, m, a, q]`` arrays); restore into
        ``evidence`` the pairs whose retries decide they are back.

        ``unit``: each observation's stored-form weight when counted once;
        ``decay``: stored form to effective evidence now.
        """
        # Group the batch by pair once; only parked pairs' observations are
        # looked at (a batch is mostly other pairs, and parked pairs are few).
        width = int(cols.max()) + 1 if len(cols) else 1
        flat = rows * width + cols
        wanted = [r * width + c for r, c in self.pairs if c < width]
        mine = np.flatnonzero(np.isin(flat, wanted))
        if not len(mine):
            return
        order = mine[np.argsort(flat[mine], kind="stable")]  # batch order within a pair
        pairs, starts = np.unique(flat[order], return_index=True)
        for pair, sel in zip(pairs, np.split(order, starts[1:]), strict=True):
            key = divmod(int(pair), width)
            parked = self.pairs[key]
            run, val = is_run[sel], value[sel]
            probing = timestamp[sel] >= parked.retry_at
            if probing.any():
                if parked.alt is None:  # the retry opens
                    if _as_good(parked.since * decay, parked.history):
                        self._restore(key, evidence)  # a false alarm, or back already
                        continue
                    now = np.array([x[key] for x in evidence])
                    alt = parked.since.copy()
                    if alt[0] <= 0:  # no run observed since the park
                        alt[:2] = now[:2]
                    if alt[2] <= 0:  # no accuracy record since
                        alt[2:] = now[2:]
                    eff = alt * decay
                    p_min = RETRY_ALT_FLOOR * float(success_rate(*(parked.history * decay)[:2]))
                    if float(success_rate(eff[0], eff[1])) < p_min:
                        alt[1] = (p_min * (eff[0] + 1.0) - 0.5) / decay
                    parked.alt = alt
                p, v = run[probing], val[probing]
                ratio = (log_likelihood([np.full(len(p), x * decay) for x in parked.history], p, v)
                         - log_likelihood([np.full(len(p), x * decay) for x in parked.alt], p, v))
                parked.llr += float(ratio.sum())
                parked.probes += int(p.sum())
            parked.since += _observation_sums(run, val, unit[sel])
            if parked.llr >= PROBATION_LLR:
                self._restore(key, evidence)
            elif parked.llr <= -PROBATION_LLR:
                history = parked.history * decay
                if history[0] + history[2] < _FADED:
                    del self.pairs[key]  # nothing worth restoring is left
                    self.journal.append(("given_up", key))
                else:
                    parked.failures += 1
                    if _failing(parked.since * decay, history):
                        wait = 1.0  # an outage: it ends when it ends, retry on schedule
                    else:
                        wait = min(RETRY_BACKOFF ** (parked.failures - 1), RETRY_BACKOFF_CAP)
                    parked.retry_at = clock + self.retry_after_seconds * wait
                    parked.llr, parked.alt, parked.probes, parked.routed = 0.0, None, 0, 0
                    self.journal.append(("retry_failed", key))

    def _restore(self, key: tuple[int, int], evidence: list[np.ndarray]) -> None:
        for k, array in enumerate(evidence):
            array[key] += self.pairs[key].history[k]
        del self.pairs[key]
        self.journal.append(("restored", key))

    def route(self, key: tuple[int, int]) -> bool:
        """Greedy routing sent a request to the open retry of ``key``; True when
        greedy routing should stop trying it for now (its probes are spent, or
        :data:`PROBES_IN_FLIGHT` await their outcomes)."""
        parked = self.pairs.get(key)
        if parked is None:
            return True
        parked.routed += 1
        return not parked.probing()

    def scores(self, n_tasks: int, n_agents: int, clock: float,
               probing: bool = False) -> np.ndarray | None:
        """Per pair, the parked reward of pairs whose retry is open (``probing``:
        and should get its next probe now, see :meth:`_Parked.probing`), NaN
        elsewhere."""
        out: np.ndarray | None = None
        for (r, c), parked in self.pairs.items():
            if probing and not parked.probing():
                continue
            if parked.retry_at <= clock and r < n_tasks and c < n_agents:
                if out is None:
                    out = np.full((n_tasks, n_agents), np.nan)
                out[r, c] = float(sums_reward(*parked.history))
        return out

    def parked_columns(self, row: int) -> list[int]:
        """Agent columns of task row ``row`` whose pair is parked (on probation
        or waiting for its retry)."""
        return [c for r, c in self.pairs if r == row]

    # -- persistence --------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        keys = list(self.pairs)
        values = [self.pairs[k] for k in keys]
        return {
            "parked_pairs": np.array(keys, dtype=np.int64).reshape(-1, 2),
            "parked_history": np.array([p.history for p in values]).reshape(-1, 5),
            "parked_since": np.array([p.since for p in values]).reshape(-1, 5),
            "parked_retry": np.array([(p.retry_at, p.llr) for p in values]).reshape(-1, 2),
            # The open retry's alternative (NaN: none open). Rebuilding it at
            # load from the runs since the park would fold the retried runs
            # into it, and the test would then chase them.
            "parked_alt": np.array([np.full(5, np.nan) if p.alt is None else p.alt
                                    for p in values]).reshape(-1, 5),
            "parked_failures": np.array([p.failures for p in values], dtype=np.int64),
            "parked_probes": np.array([p.probes for p in values], dtype=np.int64),
        }

    def load_arrays(self, arrays: dict[str, np.ndarray], n_tasks: int, n_agents: int) -> None:
        """Restore :meth:`to_arrays` (absent: nothing parked); ValueError when it does not fit."""
        self.pairs = {}
        if "parked_pairs" not in arrays:
            return
        keys = np.asarray(arrays["parked_pairs"])
        k = keys.shape[0] if keys.ndim == 2 else -1
        shapes = {"parked_pairs": (k, 2), "parked_history": (k, 5), "parked_since": (k, 5),
                  "parked_retry": (k, 2)}
        for name, shape in shapes.items():
            array = arrays.get(name)
            got = None if array is None else np.shape(array)
            if got != shape:
                raise ValueError(f"array {name!r} has shape {got}, expected {shape}")
        if k and not ((keys >= 0).all() and (keys[:, 0] < n_tasks).all()
                      and (keys[:, 1] < n_agents).all()):
            raise ValueError("array 'parked_pairs' names pairs the model does not have")
        alts = arrays.get("parked_alt")
        if alts is not None and np.shape(alts) != (k, 5):
            raise ValueError(f"array 'parked_alt' has shape {np.shape(alts)}, expected {(k, 5)}")
        failures = arrays.get("parked_failures")
        if failures is not None and np.shape(failures) != (k,):
            raise ValueError(
                f"array 'parked_failures' has shape {np.shape(failures)}, expected {(k,)}")
        probes = arrays.get("parked_probes")
        if probes is not None and np.shape(probes) != (k,):
            raise ValueError(
                f"array 'parked_probes' has shape {np.shape(probes)}, expected {(k,)}")
        for i in range(k):
            retry_at, llr = (float(x) for x in arrays["parked_retry"][i])
            alt = None if alts is None or np.isnan(alts[i]).any() else np.array(alts[i], float)
            if alt is None:
                llr = 0.0  # without its alternative the open retry starts again
            self.pairs[(int(keys[i, 0]), int(keys[i, 1]))] = _Parked(
                np.array(arrays["parked_history"][i], dtype=float),
                np.array(arrays["parked_since"][i], dtype=float), retry_at, llr, alt,
                0 if failures is None else int(failures[i]),
                0 if probes is None else int(probes[i]))
