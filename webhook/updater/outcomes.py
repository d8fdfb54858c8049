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
from collections.abc import Iterable

import numpy as np

from autoretrain.exporter.effect import Figures, Outcomes

from .batch import EventBatch

__all__ = ["OutcomeTally"]

#: Per entry: runs, successes, accuracy records, their sum, their sum of squares.
_COLUMNS = 5


class OutcomeTally:
    """Counts of outcome events per (event-time bucket, task type); thread-safe.

    Storage: one row of :attr:`_counts` per (bucket, task type) entry,
    ``[runs, successes, accuracy records, their sum, sum of squares]``; an
    index ``bucket -> {task code: row}`` in bucket order; rows of dropped
    buckets are reused. A batch is summed per entry with ``np.bincount`` and
    added to its rows in one numpy operation, so the per-batch Python work is
    one dict lookup per distinct (bucket, task type), not per event.
    """

    def __init__(self, bucket_seconds: float = 10.0, keep_seconds: float = 3 * 3600.0) -> None:
        if not (math.isfinite(bucket_seconds) and bucket_seconds > 0):
            raise ValueError(f"bucket_seconds must be a finite number > 0, got {bucket_seconds!r}")
        if not (math.isfinite(keep_seconds) and keep_seconds >= bucket_seconds):
            raise ValueError(f"keep_seconds must be >= bucket_seconds, got {keep_seconds!r}")
        self.bucket_seconds = float(bucket_seconds)
        self.keep_seconds = float(keep_seconds)
        self._lock = threading.Lock()
        # bucket -> task code -> row of _counts (insertion order: the order
        # outcomes() sums buckets in).
        self._buckets: dict[int, dict[int, int]] = {}
        self._counts = np.zeros((64, _COLUMNS))
        self._free: list[int] = list(range(63, -1, -1))  # zeroed rows, taken from the end
        self._task_code: dict[str, int] = {}
        self._task_names: list[str] = []
        self._oldest: int | None = None  # no bucket before this one is kept

    def observe(self, batch: EventBatch) -> None:
        """Count the events of ``batch`` (vectorised: one Python step per distinct
        bucket and task type)."""
        if not len(batch):
            return
        # An event without a usable time cannot be placed in a window.
        ts, task, is_run, value = batch.timestamp, batch.task, batch.is_run, batch.value
        keep = np.isfinite(ts)
        if not keep.all():
            ts, task, is_run, value = ts[keep], task[keep], is_run[keep], value[keep]
            if not len(ts):
                return
        buckets = np.floor(ts / self.bucket_seconds).astype(np.int64)
        n_tasks = len(batch.task_names)
        # Entries numbered bucket slot x task: the slot is the offset from the
        # batch's first bucket when the batch spans few buckets, else the rank
        # among its distinct buckets.
        first, last = int(buckets.min()), int(buckets.max())
        if (last - first + 1) * n_tasks <= 4 * len(buckets) + 4096:
            slot, bucket_of_slot = buckets - first, None
            n_slots = last - first + 1
        else:
            bucket_of_slot, slot = np.unique(buckets, return_inverse=True)
            n_slots = len(bucket_of_slot)
        entry = slot * n_tasks + task
        size = n_slots * n_tasks
        acc = ~is_run
        acc_values = np.where(acc, value, 0.0)
        sums = np.stack([
            np.bincount(entry, weights=is_run.astype(np.float64), minlength=size),
            np.bincount(entry, weights=(is_run & (value >= 1.0)).astype(np.float64),
                        minlength=size),
            np.bincount(entry, weights=acc.astype(np.float64), minlength=size),
            np.bincount(entry, weights=acc_values, minlength=size),
            np.bincount(entry, weights=acc_values * acc_values, minlength=size),
        ], axis=1)
        # Every event is a run or an accuracy record: an entry holds events
        # exactly when one of the two counts is positive.
        present = np.flatnonzero(sums[:, 0] + sums[:, 2])
        slots, tasks = np.divmod(present, n_tasks)
        # The entries come bucket by bucket: where each bucket's run starts.
        starts = np.flatnonzero(np.diff(slots, prepend=-1)).tolist()
        bucket_list = ((slots[starts] + first) if bucket_of_slot is None
                       else bucket_of_slot[slots[starts]]).tolist()
        with self._lock:
            task_list = self._task_codes(batch.task_names)[tasks].tolist()
            all_buckets = self._buckets
            ends = [*starts[1:], len(task_list)]
            # New buckets (time moves on) take their rows from one allocation.
            is_new = [b not in all_buckets for b in bucket_list]
            pool = self._new_rows(sum(e - s for e, s, new in zip(ends, starts, is_new,
                                                                 strict=True) if new))
            rows: list[int] = []
            used = 0
            for bucket, start, end, new in zip(bucket_list, starts, ends, is_new, strict=True):
                if new:
                    taken = pool[used:used + end - start]
                    used += end - start
                    all_buckets[bucket] = dict(zip(task_list[start:end], taken, strict=True))
                    rows += taken
                    continue
                per_task = all_buckets[bucket]
                for code in task_list[start:end]:
                    row = per_task.get(code)
                    if row is None:
                        row = per_task[code] = self._new_rows(1)[0]
                    rows.append(row)
            # Distinct rows: a plain fancy-indexed add, each entry's batch sum
            # added to what it held.
            self._counts[rows] += sums[present]
            self._prune(bucket_list[-1])

    def _task_codes(self, names: tuple[str, ...]) -> np.ndarray:
        """The tally's codes of a batch's task names (lock held)."""
        table = self._task_code
        out = []
        for name in names:
            code = table.get(name)
            if code is None:
                code = table[name] = len(self._task_names)
                self._task_names.append(name)
            out.append(code)
        return np.array(out, dtype=np.intp)

    def _new_rows(self, k: int) -> list[int]:
        """``k`` zeroed rows of ``_counts`` (lock held)."""
        if k <= 0:
            return []
        free = self._free
        if len(free) < k:
            size = len(self._counts)
            grow = max(size, k)
            self._counts = np.concatenate([self._counts, np.zeros((grow, _COLUMNS))])
            free[:0] = range(size + grow - 1, size - 1, -1)
        rows = free[-k:]
        del free[-k:]
        return rows

    def _prune(self, newest: int) -> None:
        """Drop the buckets older than ``keep_seconds`` before ``newest`` (lock held);
        their rows are zeroed for reuse."""
        cutoff = newest - int(self.keep_seconds // self.bucket_seconds)
        oldest = self._oldest
        if oldest is not None and oldest >= cutoff:
            return
        buckets = self._buckets
        dropped: Iterable[int]
        if oldest is None or cutoff - oldest > len(buckets):
            # A first batch, or a jump in event time: look at what is kept.
            dropped = [b for b in buckets if b < cutoff]
        else:
            dropped = range(oldest, cutoff)
        rows: list[int] = []
        for b in dropped:
            per_task = buckets.pop(b, None)
            if per_task:
                rows += per_task.values()
        if rows:
            self._counts[rows] = 0.0
            self._free += rows
        self._oldest = cutoff

    def outcomes(self, start: float, end: float) -> Outcomes:
        """The counts of the buckets wholly inside ``[start, end)``, system and per task type.

        Wholly inside: the windows before and after a retrain never share a
        bucket, so neither counts events of the other.
        """
        first = math.ceil(start / self.bucket_seconds)
        stop = math.floor(end / self.bucket_seconds)  # exclusive: bucket stop ends past end
        per: dict[int, list[float]] = {}
        with self._lock:
            counts = self._counts
            for bucket, per_task in self._buckets.items():
                if first <= bucket < stop:
                    for code, row in per_task.items():
                        p = per.setdefault(code, [0, 0, 0, 0.0, 0.0])
                        c = counts[row].tolist()
                        for j in range(_COLUMNS):
                            p[j] += c[j]
            names = self._task_names
        by_task = {names[k]: Figures(int(c[0]), int(c[1]), int(c[2]), float(c[3]),
                                     float(c[4]))
                   for k, c in sorted(per.items(), key=lambda kc: names[kc[0]])}
        return Outcomes(sum(by_task.values(), Figures()), by_task)

    def __len__(self) -> int:
        """(bucket, task type) entries kept."""
        with self._lock:
            return sum(len(per_task) for per_task in self._buckets.values())
