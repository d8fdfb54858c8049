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
from itertools import repeat

import numpy as np

from autoretrain.exporter.effect import Figures, Outcomes

from .batch import EventBatch

__all__ = ["OutcomeTally"]

#: Per entry: runs, successes, accuracy records, their sum, their sum of squares.
_COLUMNS = 5
#: Queued events counted together (see :meth:`OutcomeTally.observe`).
PENDING_EVENTS = 16_384


class OutcomeTally:
    """Counts of outcome events per (event-time bucket, task type); thread-safe.

    Storage: one block of :attr:`_counts` per bucket, a row per task type
    the tally knows, ``[runs, successes, accuracy records, their sum, sum
    of squares]``; an index ``bucket -> block`` in the order buckets were
    first seen (the order :meth:`outcomes` sums them in); blocks of dropped
    buckets are zeroed and reused. Batches are queued (:meth:`observe`),
    then summed together per (bucket, task type) with ``np.bincount`` and
    added to their blocks in one numpy operation: the Python work is a dict
    lookup per distinct bucket, not per event. A (bucket, task type) holds
    events exactly when its run or record count is positive. Memory:
    buckets kept x task types known x 5 floats (1,080 buckets and 10 task
    types: 0.4 MiB; at the limit of 1,000 task types, 41 MiB), and the
    queue of at most :data:`PENDING_EVENTS` events (0.5 MiB).
    """

    def __init__(self, bucket_seconds: float = 10.0, keep_seconds: float = 3 * 3600.0) -> None:
        if not (math.isfinite(bucket_seconds) and bucket_seconds > 0):
            raise ValueError(f"bucket_seconds must be a finite number > 0, got {bucket_seconds!r}")
        if not (math.isfinite(keep_seconds) and keep_seconds >= bucket_seconds):
            raise ValueError(f"keep_seconds must be >= bucket_seconds, got {keep_seconds!r}")
        self.bucket_seconds = float(bucket_seconds)
        self.keep_seconds = float(keep_seconds)
        self._lock = threading.Lock()
        self._buckets: dict[int, int] = {}  # bucket -> block of _counts, in first-seen order
        self._counts = np.zeros((16, 4, _COLUMNS))  # [block, task code, column]
        self._free: list[int] = list(range(15, -1, -1))  # zeroed blocks, taken from the end
        self._task_code: dict[str, int] = {}
        self._task_names: list[str] = []
        self._oldest: int | None = None  # no bucket before this one is kept
        # Batches not counted yet: (timestamp, tally task code, is_run, value).
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_events = 0

    def observe(self, batch: EventBatch) -> None:
        """Count the events of ``batch``.

        Queued, and counted with the batches queued before it when the
        counts are read or :data:`PENDING_EVENTS` events wait: the counts
        are read only when a retrain's effect is measured (minutes apart),
        and counting a streamed batch on its own was a fifth of the
        updater's per-batch numpy time. The queue holds four columns of at
        most that many events.
        """
        if not len(batch):
            return
        with self._lock:
            codes = self._task_codes(batch.task_names)
            self._pending.append((batch.timestamp, codes[batch.task], batch.is_run, batch.value))
            self._pending_events += len(batch)
            if self._pending_events >= PENDING_EVENTS:
                self._count_pending()

    def _count_pending(self) -> None:
        """Count the queued events (lock held; vectorised: one Python step per
        distinct bucket)."""
        pending = self._pending
        if not pending:
            return
        self._pending, self._pending_events = [], 0
        if len(pending) == 1:
            ts, task, is_run, value = pending[0]
        else:
            ts, task, is_run, value = (np.concatenate(column)
                                       for column in zip(*pending, strict=True))
        # An event without a usable time cannot be placed in a window.
        keep = np.isfinite(ts)
        if not keep.all():
            ts, task, is_run, value = ts[keep], task[keep], is_run[keep], value[keep]
            if not len(ts):
                return
        buckets = np.floor(ts / self.bucket_seconds).astype(np.int64)
        # The tally's task columns: when the events name most task types the
        # tally knows (the usual case), sum straight into the tally's column
        # order, so the add below indexes blocks only; else sum over the
        # task types named and index blocks and columns.
        n_known = len(self._task_names)
        codes = np.unique(task) if n_known > 16 else None
        if codes is None or n_known <= 2 * len(codes) + 16:
            dense, n_tasks = True, n_known
        else:
            dense, n_tasks = False, len(codes)
            task = np.searchsorted(codes, task)
        # Entries numbered bucket slot x task: the slot is the offset from
        # the first bucket when the events span few buckets, else the rank
        # among their distinct buckets.
        first, last = int(buckets.min()), int(buckets.max())
        if (last - first + 1) * n_tasks <= 4 * len(buckets) + 4096:
            slot, bucket_of_slot = buckets - first, None
            n_slots = last - first + 1
        else:
            bucket_of_slot, slot = np.unique(buckets, return_inverse=True)
            n_slots = len(bucket_of_slot)
        entry = slot * n_tasks + task
        size = n_slots * n_tasks
        sums: np.ndarray
        if is_run.all():
            # Runs only (a live stream's usual batch): the record columns
            # stay 0.0, which is what their bincounts of zero weights give.
            columns = np.zeros((size, _COLUMNS))
            columns[:, 0] = np.bincount(entry, minlength=size)
            columns[:, 1] = np.bincount(entry, weights=(value >= 1.0).astype(np.float64),
                                        minlength=size)
            sums = columns.reshape(n_slots, n_tasks, _COLUMNS)
        else:
            acc = ~is_run
            acc_values = np.where(acc, value, 0.0)
            sums = np.stack([
                np.bincount(entry, weights=is_run.astype(np.float64), minlength=size),
                np.bincount(entry, weights=(is_run & (value >= 1.0)).astype(np.float64),
                            minlength=size),
                np.bincount(entry, weights=acc.astype(np.float64), minlength=size),
                np.bincount(entry, weights=acc_values, minlength=size),
                np.bincount(entry, weights=acc_values * acc_values, minlength=size),
            ], axis=1).reshape(n_slots, n_tasks, _COLUMNS)
        # The slots that hold events, ascending (the order new buckets are
        # indexed in).
        used = np.flatnonzero(np.bincount(slot, minlength=n_slots))
        bucket_list = ((used + first) if bucket_of_slot is None
                       else bucket_of_slot[used]).tolist()
        index = self._buckets
        blocks = list(map(index.get, bucket_list, repeat(-1)))
        if -1 in blocks:
            new = [i for i, block in enumerate(blocks) if block < 0]
            fresh = self._new_blocks(len(new))
            for i, block in zip(new, fresh, strict=True):
                blocks[i] = block
            # New buckets indexed in ascending order, as they were seen.
            index.update(zip([bucket_list[i] for i in new], fresh, strict=True))
        # Distinct blocks (and task codes): a plain fancy-indexed add, each
        # (bucket, task type)'s sum added to what it held (+ 0.0 where there
        # is none, which leaves any count as it was: counts are never -0.0).
        rows = np.array(blocks, dtype=np.intp)
        if dense:
            self._counts[rows, :n_tasks] += sums[used]
        else:
            assert codes is not None
            self._counts[np.ix_(rows, codes)] += sums[used]
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
        width = self._counts.shape[1]
        if len(self._task_names) > width:
            grow = max(width, len(self._task_names) - width)
            self._counts = np.pad(self._counts, ((0, 0), (0, grow), (0, 0)))
        return np.array(out, dtype=np.intp)

    def _new_blocks(self, count: int) -> list[int]:
        """``count`` zeroed blocks of ``_counts`` (lock held), taken from the end of
        the free list (the storage doubles when it runs out)."""
        out: list[int] = []
        while count:
            if not self._free:
                size = len(self._counts)
                self._counts = np.pad(self._counts, ((0, size), (0, 0), (0, 0)))
                self._free = list(range(2 * size - 1, size - 1, -1))
            free = self._free
            take = min(count, len(free))
            out += free[: -take - 1 : -1]  # its last `take`, the last first
            del free[-take:]
            count -= take
        return out

    def _prune(self, newest: int) -> None:
        """Drop the buckets older than ``keep_seconds`` before ``newest`` (lock held);
        their blocks are zeroed for reuse."""
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
        blocks = [block for block in map(buckets.pop, dropped, repeat(-1)) if block >= 0]
        if blocks:
            self._counts[blocks] = 0.0
            self._free += blocks
        self._oldest = cutoff

    def outcomes(self, start: float, end: float) -> Outcomes:
        """The counts of the buckets wholly inside ``[start, end)``, system and per task type.

        Wholly inside: the windows before and after a retrain never share a
        bucket, so neither counts events of the other.
        """
        first = math.ceil(start / self.bucket_seconds)
        stop = math.floor(end / self.bucket_seconds)  # exclusive: bucket stop ends past end
        with self._lock:
            self._count_pending()
            counts = self._counts
            total = np.zeros(counts.shape[1:])
            for bucket, block in self._buckets.items():  # summed in first-seen order
                if first <= bucket < stop:
                    total += counts[block]
            names = list(self._task_names)
        per = total[:len(names)].tolist()
        by_task = {name: Figures(int(c[0]), int(c[1]), int(c[2]), float(c[3]), float(c[4]))
                   for name, c in sorted(zip(names, per, strict=True)) if c[0] + c[2] > 0}
        return Outcomes(sum(by_task.values(), Figures()), by_task)

    def __len__(self) -> int:
        """(bucket, task type) entries kept: those holding events."""
        with self._lock:
            self._count_pending()
            blocks = list(self._buckets.values())
            return int(np.count_nonzero(self._counts[blocks, :, 0] + self._counts[blocks, :, 2]))
