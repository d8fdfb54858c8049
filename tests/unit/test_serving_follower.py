"""ModelFollower following a model store directory, and the model topic codec."""

from __future__ import annotations

import json
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from servers.common import wait_until
from servers.models import TASKS, teach

from autoretrain import ModelFollower as ExportedFollower
from autoretrain.webhook import RealTimeModelUpdater
from autoretrain.webhook.serving import (
    InvalidModelMessage,
    ModelFollower,
    decode_model,
    encode_model,
)
from autoretrain.webhook.serving.model_topic import MAGIC
from autoretrain.webhook.updater.store import ModelStore


@pytest.fixture
def trainer(tmp_path: Path) -> RealTimeModelUpdater:
    return RealTimeModelUpdater(model_storage_path=str(tmp_path / "models"), seed=1)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_exported_from_autoretrain() -> None:
    assert ExportedFollower is ModelFollower


def test_before_any_model_it_says_so_without_raising(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    follower = ModelFollower(tmp_path / "empty", registry=registry)
    assert follower.refresh() is False
    assert follower.version is None and follower.promoted_at is None and not follower.loaded
    assert follower.predict_best_agent("t0") == []
    assert follower.predict_best_agent("t0", explore=True) == []
    assert sample(registry, "autoretrain_follower_model_version") == 0
    with pytest.raises(ValueError, match="top_k"):
        follower.predict_best_agent("t0", top_k=0)  # a caller's bug, as on the updater


def test_picks_up_each_new_version_and_answers_as_the_updater(
        trainer: RealTimeModelUpdater) -> None:
    registry = CollectorRegistry()
    follower = ModelFollower(trainer.model_storage_path, registry=registry)
    teach(trainer, "a0")
    v1 = trainer.save()
    assert follower.refresh() is True and follower.version == v1
    assert follower.refresh() is False  # nothing newer
    for task in (*TASKS, "unknown", None):
        for k in (1, 3):
            assert follower.predict_best_agent(task, top_k=k) == trainer.predict_best_agent(
                task, top_k=k)
    assert follower.predict_best_agent("t0", top_k=1)[0][0] == "a0"
    teach(trainer, "a2", n=2000, seed=1)
    v2 = trainer.save()
    assert follower.refresh() is True and follower.version == v2 > v1
    assert follower.predict_best_agent("t0") == trainer.predict_best_agent("t0")
    assert sample(registry, "autoretrain_follower_model_version") == v2
    assert sample(registry, "autoretrain_follower_loads_total") == 2
    age = sample(registry, "autoretrain_follower_model_age_seconds")
    assert age is not None and 0 <= age < 3600
    assert follower.promoted_at is not None


def _npz(store: ModelStore, version: int) -> Path:
    return store.path / f"model-{version:08d}.npz"


def _meta(store: ModelStore, version: int) -> Path:
    return store.path / f"model-{version:08d}.json"


@pytest.mark.parametrize(("damage", "reason"), [
    ("checksum", "corrupt"),
    ("metadata_garbage", "corrupt"),
    ("arrays_missing", "partial"),
    ("foreign_format", "foreign"),
    ("foreign_model_type", "foreign"),
    ("wrong_strategy_arrays", "corrupt"),
])
def test_a_broken_newer_version_is_skipped_counted_and_the_last_good_keeps_serving(
        trainer: RealTimeModelUpdater, damage: str, reason: str) -> None:
    registry = CollectorRegistry()
    follower = ModelFollower(trainer.model_storage_path, registry=registry)
    teach(trainer, "a0")
    good = trainer.save()
    assert follower.refresh()
    expected = follower.predict_best_agent("t0")
    teach(trainer, "a2", n=500, seed=3)
    bad = trainer.save()
    store = trainer.store
    if damage == "checksum":
        _npz(store, bad).write_bytes(_npz(store, bad).read_bytes()[:-7] + b"garbage")
    elif damage == "metadata_garbage":
        _meta(store, bad).write_text("{not json")
    elif damage == "arrays_missing":
        _npz(store, bad).unlink()
    else:
        meta = json.loads(_meta(store, bad).read_text())
        if damage == "foreign_format":
            meta["format"] = "someone.else/7"
        elif damage == "foreign_model_type":
            meta["model_type"] = "ranking_model"
        else:
            meta["strategy"] = "gradient"
        _meta(store, bad).write_text(json.dumps(meta))
    assert follower.refresh() is False
    assert follower.version == good
    assert follower.predict_best_agent("t0") == expected
    assert follower.failures[reason] == 1
    assert sample(registry, "autoretrain_follower_load_failures_total", reason=reason) == 1
    assert follower.refresh() is False  # counted once, not at every poll
    assert follower.failures[reason] == 1
    newer = trainer.save()  # a good version after the broken one is served
    assert follower.refresh() is True and follower.version == newer


def test_an_uncommitted_save_is_invisible(trainer: RealTimeModelUpdater) -> None:
    teach(trainer, "a0")
    v1 = trainer.save()
    # Arrays of version 2 without their metadata: a save in progress (or crashed).
    _npz(trainer.store, v1 + 1).write_bytes(_npz(trainer.store, v1).read_bytes())
    follower = ModelFollower(trainer.model_storage_path)
    assert follower.refresh() and follower.version == v1
    assert sum(follower.failures.values()) == 0


def test_the_background_thread_follows(trainer: RealTimeModelUpdater) -> None:
    import time

    follower = ModelFollower(trainer.model_storage_path, poll_interval_seconds=0.02)
    follower.start()
    try:
        teach(trainer, "a0")
        version = trainer.save()
        deadline = time.monotonic() + 10
        while follower.version != version and time.monotonic() < deadline:
            time.sleep(0.01)
        assert follower.version == version
    finally:
        assert follower.stop()
    assert not follower.running


def test_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ModelFollower()
    with pytest.raises(ValueError, match="exactly one"):
        ModelFollower("models", kafka_servers="localhost:9092")


# -- the model topic codec -------------------------------------------------------------------
@pytest.fixture
def message(trainer: RealTimeModelUpdater) -> bytes:
    teach(trainer, "a0")
    version = trainer.save()
    npz, metadata = trainer.store.read(version)
    return encode_model("agent_selection", version, npz, metadata)


def test_codec_round_trip(trainer: RealTimeModelUpdater, message: bytes) -> None:
    decoded = decode_model(message)
    stored = trainer.store.load(trainer.version)
    assert (decoded.model_type, decoded.version) == ("agent_selection", trainer.version)
    assert decoded.metadata == stored.metadata
    assert decoded.arrays.keys() == stored.arrays.keys()
    for name, array in stored.arrays.items():
        np.testing.assert_array_equal(decoded.arrays[name], array)


def _rewrap(message: bytes, edit: object) -> bytes:
    body = zlib.decompress(message[len(MAGIC) + 1:])
    n = int.from_bytes(body[:4], "big")
    header = json.loads(body[4:4 + n])
    npz = body[4 + n:]
    header, npz = edit(header, npz)  # type: ignore[operator]
    raw = json.dumps(header).encode()
    return message[:len(MAGIC) + 1] + zlib.compress(len(raw).to_bytes(4, "big") + raw + npz)


def _set(path: str, value: object) -> object:
    def edit(header: dict, npz: bytes) -> tuple[dict, bytes]:
        node = header
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
        return header, npz
    return edit


@pytest.mark.parametrize(("make", "fault"), [
    (lambda m: b"", "not_a_model"),
    (lambda m: b"hello, not a model", "not_a_model"),
    (lambda m: m[:4] + b"\x09" + m[5:], "unsupported_format"),
    (lambda m: m[: len(m) // 2], "truncated"),
    (lambda m: m[:5] + b"\x00" * 40, "corrupt"),
    (lambda m: m + b"tail", "corrupt"),
    (lambda m: _rewrap(m, _set("format", "x/2")), "unsupported_format"),
    (lambda m: _rewrap(m, _set("version", 0)), "metadata_invalid"),
    (lambda m: _rewrap(m, _set("version", 99)), "metadata_invalid"),
    (lambda m: _rewrap(m, _set("model_type", "")), "metadata_invalid"),
    (lambda m: _rewrap(m, _set("metadata.format", "other/1")), "foreign_format"),
    (lambda m: _rewrap(m, lambda h, npz: (h, npz[:-1] + b"x")), "checksum_mismatch"),
])
def test_codec_names_the_fault(message: bytes, make: object, fault: str) -> None:
    with pytest.raises(InvalidModelMessage) as info:
        decode_model(make(message))  # type: ignore[operator]
    assert info.value.fault == fault, str(info.value)


def test_codec_refuses_oversized(message: bytes) -> None:
    with pytest.raises(InvalidModelMessage, match="more than the 100 accepted") as info:
        decode_model(message, max_bytes=100)
    assert info.value.fault == "too_large"
    bomb = MAGIC + b"\x01" + zlib.compress(b"\x00" * 10_000_000)
    with pytest.raises(InvalidModelMessage, match="decompresses") as info:
        decode_model(bomb, max_decompressed_bytes=1_000_000)
    assert info.value.fault == "too_large"


class _StuckConsumer:
    """A Kafka consumer whose metadata lookup never answers, as kafka-python's
    ``partitions_for_topic`` can wait without a bound."""

    def __init__(self, **config: object) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        _StuckConsumer.last = self

    last: _StuckConsumer

    def partitions_for_topic(self, topic: str) -> set[int]:
        self.entered.set()
        self.release.wait()
        return set()

    def close(self) -> None:
        pass


def test_stop_returns_while_a_load_is_stuck_in_kafka() -> None:
    """An orchestrator shutting down is not held by a follower whose load hangs in
    a Kafka call: stop() gives up after its timeout and says the thread did not stop."""
    follower = ModelFollower(kafka_servers="127.0.0.1:1", topic="agent-models",
                             consumer_factory=_StuckConsumer)
    follower.start()
    try:
        assert wait_until(lambda: hasattr(_StuckConsumer, "last")
                          and _StuckConsumer.last.entered.is_set())
        result: list[bool] = []
        stopper = threading.Thread(target=lambda: result.append(follower.stop(timeout=0.2)),
                                   daemon=True)
        stopper.start()
        stopper.join(30)  # generous: a hang, not a slow stop, is what fails here
        assert result == [False]
    finally:
        _StuckConsumer.last.release.set()
    assert wait_until(lambda: not follower.running)
