"""EventBatch built column by column from decoded rows equals the one built event by event."""

from __future__ import annotations

import numpy as np

from autoretrain.exporter.events import EventIdFactory, encode_event, run_event
from autoretrain.exporter.ingest import RecentEventIds, decode_batch
from autoretrain.webhook.updater.batch import EventBatch

COLUMNS = ("task", "agent", "is_run", "value", "timestamp", "context", "cost", "duration")


def _values(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    ids = EventIdFactory()
    return [encode_event(run_event(
        ids(), 1_700_000_000.0 + float(rng.random() * 1e4), f"agent-{rng.integers(7)}", "llm",
        str(rng.choice(["success", "failure", "error", "timeout"])),
        float(rng.random() * 9_000), int(rng.integers(0, 5_000)), float(rng.random()),
        task_type=f"task-{rng.integers(4)}")) for _ in range(n)]


def test_a_batch_from_rows_equals_the_batch_from_the_same_events() -> None:
    for seed in range(5):
        decoded = decode_batch(_values(300, seed), RecentEventIds(1_000))
        assert decoded.rebuilt == 0
        fast = EventBatch.from_run_rows(decoded.rows)
        slow = EventBatch.from_events(decoded.events)
        # Names numbered in order of first appearance in both.
        assert fast.task_names == slow.task_names and fast.agent_names == slow.agent_names
        for name in COLUMNS:
            a, b = getattr(fast, name), getattr(slow, name)
            assert a.dtype == b.dtype and a.shape == b.shape, name
            assert np.array_equal(a, b), name


def test_a_batch_from_no_rows_is_empty() -> None:
    batch = EventBatch.from_run_rows([])
    assert len(batch) == 0 and batch.task_names == () and batch.agent_names == ()
