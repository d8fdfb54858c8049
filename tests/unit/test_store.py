"""ModelStore: round trip, atomic writes, corrupt versions skipped, rollback, pruning."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoretrain.webhook.updater.store import CorruptModel, ModelStore


def arrays(x: float) -> dict[str, np.ndarray]:
    return {"runs": np.full((2, 3), x), "clock": np.array(x)}


def test_round_trip(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    version = store.save(arrays(1.5), {"strategy": "bayesian", "kafka": {"offsets": {"0": 7}}})
    assert version == 1 and store.versions() == [1]
    loaded = store.load_latest()
    assert loaded is not None and loaded.version == 1
    np.testing.assert_array_equal(loaded.arrays["runs"], np.full((2, 3), 1.5))
    assert float(loaded.arrays["clock"]) == 1.5
    meta = loaded.metadata
    assert meta["strategy"] == "bayesian" and meta["kafka"] == {"offsets": {"0": 7}}
    assert meta["version"] == 1 and meta["created"].endswith("Z")
    assert len(meta["arrays_sha256"]) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-00000001.json",
                                                          "model-00000001.npz"]


def test_empty_store(tmp_path: Path) -> None:
    assert ModelStore(tmp_path / "missing").load_latest() is None


def test_never_pickles(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ModelStore(tmp_path).save({"bad": np.array([{"a": 1}], dtype=object)}, {})


def test_partial_temp_file_and_uncommitted_arrays_do_not_break_loading(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save(arrays(1.0), {})
    # A crash while writing version 2: a half-written temp file and an array
    # file whose metadata (the commit marker) was never written.
    (tmp_path / ".tmp-model-00000002.npz-abc").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "model-00000002.npz").write_bytes(b"PK\x03\x04 also truncated")
    loaded = store.load_latest()
    assert loaded is not None and loaded.version == 1
    # The next save does not reuse the number of the stray array file.
    assert store.save(arrays(3.0), {}) == 3


def test_crash_before_metadata_rename_leaves_previous_version(tmp_path: Path,
                                                              monkeypatch) -> None:
    store = ModelStore(tmp_path)
    store.save(arrays(1.0), {})
    real_replace = os.replace

    def crash_on_metadata(src, dst):
        if str(dst).endswith(".json"):
            raise OSError("disk died")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_metadata)
    with pytest.raises(OSError):
        store.save(arrays(2.0), {})
    monkeypatch.undo()
    assert not list(tmp_path.glob(".tmp-*"))  # the temp file was cleaned up
    loaded = store.load_latest()
    assert loaded is not None and loaded.version == 1


def test_corrupt_newest_version_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    store = ModelStore(tmp_path)
    store.save(arrays(1.0), {})
    store.save(arrays(2.0), {})
    store.save(arrays(3.0), {})
    npz = tmp_path / "model-00000003.npz"
    npz.write_bytes(npz.read_bytes()[:-10])  # truncated: SHA-256 mismatch
    (tmp_path / "model-00000002.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="autoretrain.webhook.updater.store"):
        loaded = store.load_latest()
    assert loaded is not None and loaded.version == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "version 3" in messages and "SHA-256" in messages
    assert "version 2" in messages and "not JSON" in messages
    with pytest.raises(CorruptModel, match="SHA-256"):
        store.load(3)


def test_mismatched_version_number_is_skipped(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save(arrays(1.0), {})
    store.save(arrays(2.0), {})
    meta = tmp_path / "model-00000002.json"
    record = json.loads(meta.read_text())
    record["version"] = 5
    meta.write_text(json.dumps(record))
    loaded = store.load_latest()
    assert loaded is not None and loaded.version == 1


def test_rollback_saves_the_old_version_as_newest(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save(arrays(1.0), {"events_seen": 10, "kafka": {"offsets": {"0": 10}}})
    store.save(arrays(2.0), {"events_seen": 20, "kafka": {"offsets": {"0": 20}}})
    new = store.rollback(1, {"kafka": {"offsets": {"0": 25}}})
    assert new == 3
    loaded = store.load_latest()
    assert loaded is not None and loaded.version == 3
    np.testing.assert_array_equal(loaded.arrays["runs"], np.full((2, 3), 1.0))
    assert loaded.metadata["parent_version"] == 1
    assert loaded.metadata["rolled_back_from"] == 2
    assert loaded.metadata["events_seen"] == 10
    assert loaded.metadata["kafka"] == {"offsets": {"0": 25}}
    with pytest.raises(CorruptModel):
        store.rollback(99)


def test_keeps_last_k_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, keep_last=2)
    for x in range(5):
        store.save(arrays(float(x)), {})
    assert store.versions() == [4, 5]
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["model-00000004.npz",
                                                               "model-00000005.npz"]


def test_rejects_bad_keep_last(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        ModelStore(tmp_path, keep_last=0)


def test_racing_saves_number_versions_in_snapshot_order(tmp_path: Path) -> None:
    # Issue 13, item 13: a snapshot taken first but written last must not get the
    # higher number (the newest version must be the newest model).
    import threading

    from servers.models import teach

    from autoretrain.webhook import RealTimeModelUpdater

    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path / "m"), seed=0)
    store = updater.store
    real_save = store.save
    entered, release = threading.Event(), threading.Event()
    first = [True]

    def slow_first_save(*args: Any, **kwargs: Any) -> int:
        if first[0]:
            first[0] = False
            entered.set()
            assert release.wait(30)
        return real_save(*args, **kwargs)

    store.save = slow_first_save  # type: ignore[method-assign]
    teach(updater, "a1", n=50)
    saved: list[int] = []
    periodic = threading.Thread(target=lambda: saved.append(updater.save()))
    periodic.start()
    assert entered.wait(30)  # the older snapshot is taken and is being written
    teach(updater, "a1", n=50, seed=1, start=5000.0)
    newer = updater.save()  # the newer snapshot is written first
    release.set()
    periodic.join(30)
    (older,) = saved
    assert newer > older
    newest = store.load(store.versions()[-1])
    assert newest.version == newer and newest.metadata["events_seen"] == 100
    assert store.load(older).metadata["events_seen"] == 50
    assert updater.version == newer
    updater.stop()
