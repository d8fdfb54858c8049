"""Checkpoints: load the newest intact version, save, commit offsets, roll back.

With Kafka, offsets are committed only after a saved model includes the
events before them, and the saved model carries those offsets; on
(re)assignment the consumer seeks to them, so a restart neither loses nor
re-applies events. Versions that cannot be loaded are skipped, logged,
counted and listed (``corrupt_versions``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from autoretrain.exporter.timefmt import utc_iso

from .metrics import UpdaterMetrics
from .model import AgentSelectionModel
from .results import MODEL_TYPE
from .settings import UpdaterSettings
from .state import ModelState
from .status import Counters
from .store import CorruptModel, ModelStore

__all__ = ["Checkpointer"]

log = logging.getLogger(__name__)

#: ``commit(offsets, now)``: commit on the consumer (now: from this thread).
Commit = Callable[[dict[int, int], bool], None]


class Checkpointer:
    """Saves and loads ``state`` through ``store``.

    ``hyperparameters()`` gives the settings saved with each version;
    ``on_install(model)`` is called (state lock held) when a loaded model is
    served; ``commit`` hands saved offsets to the consumer (set by the
    owner once the consumer exists; None: nothing to commit);
    ``publisher`` (None: none), told every saved version with
    ``publish(store, version)``, sends it to the model topic for followers
    (it queues and never blocks).
    """

    def __init__(self, state: ModelState, store: ModelStore, settings: UpdaterSettings,
                 metrics: UpdaterMetrics, counters: Counters, clock: Callable[[], float],
                 hyperparameters: Callable[[], dict[str, Any]],
                 on_install: Callable[[AgentSelectionModel], None]) -> None:
        self.state = state
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.counters = counters
        self.clock = clock
        self.commit: Commit | None = None
        self.publisher: Any = None
        self._hyperparameters = hyperparameters
        self._on_install = on_install
        self.corrupt_versions: list[dict[str, Any]] = []
        self.last_save = time.monotonic()
        #: True once the newest version was loaded (or found missing). A plain
        #: attribute, not a property: every prediction reads it.
        self.loaded = False
        #: Serialises retrains and rollbacks (a second caller waits).
        self.retrain_lock = threading.Lock()

    def ensure_loaded(self) -> None:
        """Load the newest intact version once (first use)."""
        if self.loaded:
            return
        with self.state.lock:
            if self.loaded:
                return
            self.loaded = True
            self._load_latest()

    def _install(self, model: AgentSelectionModel, version: int,
                 metadata: dict[str, Any]) -> None:
        self.state.install(model, version, metadata)
        self._on_install(model)

    def _load_latest(self) -> None:
        """Serve the newest intact version; report each broken one skipped on the way."""
        path = self.settings.model_storage_path
        try:
            self.store.remove_incomplete()
        except OSError as exc:  # a read-only store still loads
            log.warning("cannot clean up interrupted saves in %s: %s", path, exc)
        for version in reversed(self.store.versions()):
            try:
                stored = self.store.load(version)
                model = self.state.model.fresh()
                model.load(stored.arrays, stored.metadata)
            except (CorruptModel, ValueError, KeyError, TypeError) as exc:
                fault = exc.fault if isinstance(exc, CorruptModel) else "model_invalid"
                log.error("skipping corrupt model version %d in %s (%s): %s", version,
                          path, fault, exc)
                self.corrupt_versions.append(
                    {"version": version, "fault": fault, "error": str(exc)})
                self.metrics.corrupt_versions.labels(fault).inc()
                continue
            self._install(model, stored.version, stored.metadata)
            if self.corrupt_versions:
                log.warning("loaded model version %d after skipping %d corrupt newer "
                            "version(s)", version, len(self.corrupt_versions))
            return
        log.info("no usable model in %s; starting empty", path)
        self.state.start_empty()

    def save(self, force: bool, commit_now: bool = False, commit: bool = True) -> int | None:
        """Save the serving model if ``force`` or it changed; then hand the offsets
        it includes to the consumer to commit (unless ``commit`` is False).
        Return the version saved (None: nothing to save).

        The version number is reserved under the state lock, with the
        snapshot: two saves racing (a periodic save and a promotion) number
        their snapshots in the order they were taken, so the highest version
        is the newest model whichever write ends first."""
        state = self.state
        with state.lock:
            if not force and not state.dirty:
                return None
            version = self.store.reserve()
            arrays = state.model.to_arrays()
            metadata = state.model.metadata()
            offsets = dict(state.offsets)
            metadata.update(
                model_type=MODEL_TYPE,
                parent_version=state.version or None,
                created=utc_iso(self.clock()),
                hyperparameters=self._hyperparameters(),
                scores=state.last_scores,
                kafka=state.kafka_metadata(offsets),
            )
            state.dirty = False
            self.last_save = time.monotonic()
        try:
            self.store.save(arrays, metadata, version)
        except OSError:
            with state.lock:
                state.dirty = True
            self.metrics.save_failures.inc()
            raise
        with state.lock:
            # A snapshot taken earlier may finish writing later: the newest
            # stays the served version, and its offsets are the ones committed.
            newest = version > state.version
            if newest:
                state.version = version
            self.counters.saves += 1
        if newest:
            self.metrics.version.set(version)
            # Not a stale one: on the compacted topic the last message is what
            # a new follower gets.
            self._publish(version)
        if newest and commit and self.settings.uses_kafka and self.commit is not None:
            self.commit(offsets, commit_now)
        return version

    def save_due(self) -> bool:
        """Auto-save is on, the state changed, and the save interval has passed."""
        return (self.settings.enable_auto_save and self.state.dirty
                and time.monotonic() - self.last_save >= self.settings.save_interval_seconds)

    def rollback(self, version: int) -> int:
        """Serve the model of ``version`` again (saved as a new version; returned).

        The stream position is kept: events applied after ``version`` are not
        re-applied (rollback discards a bad model, it does not replay).
        """
        self.ensure_loaded()
        state = self.state
        with self.retrain_lock:
            with state.lock:
                stored = self.store.load(version)
                model = state.model.fresh()
                model.load(stored.arrays, stored.metadata)
                offsets = dict(state.offsets)
                kafka = state.kafka_metadata(offsets)
                reserved = self.store.reserve()
            new_version = self.store.rollback(version, {"kafka": kafka,
                                                        "created": utc_iso(self.clock())},
                                              reserved)
            with state.lock:
                self._install(model, new_version, stored.metadata)
                state.offsets = offsets
        self._publish(new_version)
        return new_version

    def publish_loaded(self) -> None:
        """Publish the version loaded at start: a follower started before this
        trainer (or after the topic lost it) gets its model."""
        if self.state.version:
            self._publish(self.state.version)

    def _publish(self, version: int) -> None:
        if self.publisher is not None:
            self.publisher.publish(self.store, version)
