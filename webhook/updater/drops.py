"""Online detection of a pair's drop: a CUSUM per (task type, agent) pair.

An alert needs the whole system to degrade for the monitor's window (five
minutes in production) before a retrain sets an agent aside; meanwhile
every task routed to a broken agent is lost. The model can see the drop
sooner, pair by pair, from the runs it learns anyway. Page's CUSUM is the
quickest detector of a change from a known level to a given alternative:

* the level of a pair is its current evidence (success rate ``p0``, mean
  accuracy ``mu0`` with the variance of its records, floored at 0.01);
* the alternative is the same pair :data:`DROP` (20 %) worse:
  ``p1 = (1 - DROP) p0``, ``mu1 = (1 - DROP) mu0``;
* each observation adds its log-likelihood ratio (alternative over level)
  to the pair's statistic ``S = max(0, S + llr)``, summed per batch; an
  accuracy record adds at most :data:`DROP_RECORD_LLR_MAX` (a failed run's
  worth), so a healthy pair whose records scatter is not "dropped" by one
  outlier;
* at ``S >= DROP_LLR`` (log 1000) the pair has dropped: the rule parks its
  history for a retry (:mod:`.probation`) and keeps only
  :data:`RESTART_EVIDENCE` observations' worth of it, so its new runs
  decide its rank at once.

A pair with less than :data:`DROP_MIN_EVIDENCE` of a kind is not tested on
that kind (its level is not known well enough to fall from). With a 97 %
level and a 25 % present, each failed run adds 2.0 and each success takes
0.2 away: about four failures decide. False alarms are rare but not
impossible (a steady 97 % pair, 5,000 runs, ten seeds: one false alarm),
and cheap: the pair keeps its recent runs, and when its retry opens its
runs since the park, if they look like its history, restore it.
"""

from __future__ import annotations

import math

import numpy as np

from .probation import accuracy_moments, success_rate

__all__ = ["DROP", "DROP_LLR", "DROP_MIN_EVIDENCE", "DROP_RECORD_LLR_MAX", "RESTART_EVIDENCE",
           "drop_llr", "drop_llr_runs", "drop_tested"]

#: Relative drop of the success rate or the mean accuracy the CUSUM looks for.
DROP = 0.2
#: Decision threshold of the CUSUM statistic.
DROP_LLR = math.log(1000.0)
#: Effective observations of a kind a pair needs before it is tested on it.
DROP_MIN_EVIDENCE = 10.0
#: Observations' worth of its history a pair keeps (per kind) after a drop.
RESTART_EVIDENCE = 3.0
#: Most one accuracy record may add to the statistic: as much as a failed run
#: against a 97 % level. The accuracy term is Gaussian with the level's
#: variance, so without a cap one outlier record of a healthy pair whose
#: records scatter (a noisy spell: same median, wider spread) would decide a
#: drop on its own; with it a drop needs several low records, as it needs
#: several failed runs.
DROP_RECORD_LLR_MAX = 2.0


def drop_tested(runs: np.ndarray, records: np.ndarray, is_run: np.ndarray) -> np.ndarray:
    """Per observation, whether its pair is tested on its kind: the effective
    ``runs`` (for a run) or accuracy ``records`` (for a record) of its pair
    reach :data:`DROP_MIN_EVIDENCE`. Where not, :func:`drop_llr` is 0, so the
    detector's replay skips those observations (a full retrain starts from
    an empty model: none is tested)."""
    return np.where(is_run, runs >= DROP_MIN_EVIDENCE, records >= DROP_MIN_EVIDENCE)


def drop_llr(evidence: list[np.ndarray], is_run: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per observation, the log-likelihood ratio "dropped" over "as known".

    ``evidence``: effective ``[n, s, m, a, q]`` of each observation's pair
    (gathered, same length as ``is_run``). 0 where the pair has too little
    evidence of the observation's kind.
    """
    n, s, m, a, q = evidence
    up, down = _run_ratios(n, s)
    run = np.where(value > 0.5, up, down)
    mu0, var = accuracy_moments(m, a, q)
    mu1 = (1.0 - DROP) * mu0
    acc = np.minimum(((value - mu0) ** 2 - (value - mu1) ** 2) / (2.0 * var),
                     DROP_RECORD_LLR_MAX)
    enough = drop_tested(n, m, is_run)
    return np.where(enough, np.where(is_run, run, acc), 0.0)


def drop_llr_runs(runs: np.ndarray, successes: np.ndarray, pair: np.ndarray,
                  value: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`drop_llr` of a batch of runs only, computed per pair and gathered.

    ``runs``, ``successes``: effective evidence of every pair (flat);
    ``pair``, ``value``: each run's pair and outcome. Returns the ratios of
    the runs whose pair is tested and those runs' pairs, or None when no
    run's pair is tested. A run's ratio takes one of two values of its pair
    (success or not), each the same elementwise arithmetic as
    :func:`drop_llr` on the same evidence, so the ratios are equal; per
    pair, the batch costs a dozen numpy calls on small arrays instead of
    thirty on the batch's length.
    """
    tested = runs >= DROP_MIN_EVIDENCE
    if not tested.any():
        return None
    gathered = tested[pair]
    if not gathered.all():
        if not gathered.any():
            return None
        pair, value = pair[gathered], value[gathered]
    up, down = _run_ratios(runs, successes)
    return np.where(value > 0.5, up[pair], down[pair]), pair


def _run_ratios(runs: np.ndarray, successes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A run's log-likelihood ratio "dropped" over "as known", elementwise on
    the evidence: (for a success, for a failure)."""
    p0 = success_rate(runs, successes)
    p1 = (1.0 - DROP) * p0
    return np.log(p1 / p0), np.log((1.0 - p1) / (1.0 - p0))
