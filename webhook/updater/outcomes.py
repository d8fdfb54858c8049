"""Outcome counts by event time, kept for measuring what a retrain did to the platform.

The updater applies every validated, de-duplicated outcome event to the
model; :class:`OutcomeTally` also counts them in buckets of event time
(``bucket_seconds``) per task type: runs, successful runs, accuracy records
and their sum. :meth:`OutcomeTally.outcomes` sums the buckets that start in
a span, so a span is measured to within one bucket at each end. Buckets
older than ``keep_seconds`` before the newest event are dropped, so the
tally is bounded (buckets x task types) however long the stream runs.

The counts live in memory only: after a restart they start empty (Kafka
re-delivers the events after the last saved model, which are counted again
once), so a retrain measured across a restart counts fewer events and may
honestly end as ``not_enough_data``.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from autoretrain.exporter.effect import Figures, Outcomes

from .batch import EventBatch

__all__ = ["OutcomeTally"]


class OutcomeTally:
    """Counts of outcome events per (event-time bucket, task type); thread-safe."""

    def __init__(self, bucket_seconds: float = 10.0, keep_seconds: float = 3 * 3600.0) -> None:
        if not (math.isfinite(bucket_seconds) and bucket_seconds > 0):
            raise ValueError(f"bucket_seconds must be a finite number > 0, got {bucket_seconds!r}")
        if not (math.isfinite(keep_seconds) and keep_seconds >= bucket_seconds):
            raise ValueError(f"keep_seconds must be >= bucket_seconds, got {keep_seconds!r}")
        self.bucket_seconds = float(bucket_seconds)
        self.keep_seconds = float(keep_seconds)
        self._lock = threading.Lock()
        # bucket -> task type -> [runs, successes, accuracy records, their sum, sum of squares]
        self._buckets: dict[int, dict[str, list[float]]] = {}
        self._oldest: int | None = None  # no bucket before this one is kept

    def observe(self, batch: EventBatch) -> None:
        """Count the events of ``batch`` (vectorised: one pass per distinct bucket and task)."""
        if not len(batch):
            return
        # An event without a usable time cannot be placed in a window.
        keep = np.isfinite(batch.timestamp)
        ts, task, is_run, value = (column[keep] for column in (
            batch.timestamp, batch.task, batch.is_run, batch.value))
        if not len(ts):
            return
        buckets = np.floor(ts / self.bucket_seconds).astype(np.int64)
        n_tasks = len(batch.task_names)
        keys, inverse = np.unique(buckets * n_tasks + task, return_inverse=True)
        n = len(keys)
        acc = ~is_run
        acc_values = np.where(acc, value, 0.0)
        columns = [
            np.bincount(inverse, weights=is_run.astype(np.float64), minlength=n).tolist(),
            np.bincount(inverse, weights=(is_run & (value >= 1.0)).astype(np.float64),
                        minlength=n).tolist(),
            np.bincount(inverse, weights=acc.astype(np.float64), minlength=n).tolist(),
            np.bincount(inverse, weights=acc_values, minlength=n).tolist(),
            np.bincount(inverse, weights=acc_values * acc_values, minlength=n).tolist(),
        ]
        names = batch.task_names
        with self._lock:
            all_buckets = self._buckets
            for i, key in enumerate(keys.tolist()):
                bucket, code = divmod(key, n_tasks)
                per_task = all_buckets.get(bucket)
                if per_task is None:
                    per_task = all_buckets[bucket] = {}
                c = per_task.get(names[code])
                if c is None:
                    c = per_task[names[code]] = [0, 0, 0, 0.0, 0.0]
                for j in range(5):
                    c[j] += columns[j][i]
            self._prune(int(keys[-1]) // n_tasks)

    def _prune(self, newest: int) -> None:
        """Drop the buckets older than ``keep_seconds`` before ``newest`` (lock held)."""
        cutoff = newest - int(self.keep_seconds // self.bucket_seconds)
        oldest = self._oldest
        if oldest is not None and oldest >= cutoff:
            return
        buckets = self._buckets
        if oldest is None or cutoff - oldest > len(buckets):
            # A first batch, or a jump in event time: look at what is kept.
            for b in [b for b in buckets if b < cutoff]:
                del buckets[b]
        else:
            for b in range(oldest, cutoff):
                buckets.pop(b, None)
        self._oldest = cutoff

    def outcomes(self, start: float, end: float) -> Outcomes:
        """The counts of the buckets wholly inside ``[start, end)``, system and per task type.

        Wholly inside: the windows before and after a retrain never share a
        bucket, so neither counts events of the other.
        """
        first = math.ceil(start / self.bucket_seconds)
        stop = math.floor(end / self.bucket_seconds)  # exclusive: bucket stop ends past end
        per: dict[str, list[float]] = {}
        with self._lock:
            for bucket, per_task in self._buckets.items():
                if first <= bucket < stop:
                    for task, c in per_task.items():
                        p = per.setdefault(task, [0, 0, 0, 0.0, 0.0])
                        for j in range(5):
                            p[j] += c[j]
        by_task = {k: Figures(int(c[0]), int(c[1]), int(c[2]), float(c[3]), float(c[4]))
                   for k, c in sorted(per.items())}
        return Outcomes(sum(by_task.values(), Figures()), by_task)

    def __len__(self) -> int:
        """(bucket, task type) entries kept."""
        with self._lock:
            return sum(len(per_task) for per_task in self._buckets.values())
