"""Versioned, crash-safe model files: numpy arrays plus JSON metadata.

Version ``v`` is two files in the store directory: ``model-{v:08d}.npz``
(``np.savez``; loaded with ``allow_pickle=False``) and
``model-{v:08d}.json`` (metadata, including the SHA-256 of the ``.npz``).
Each file is written to a temporary name, fsynced and renamed; the JSON is
written last and is the commit marker, so a crash leaves either a complete
version or files that :meth:`ModelStore.load_latest` ignores. Nothing is
ever pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoretrain.exporter.timefmt import utc_iso

__all__ = ["FORMAT", "CorruptModel", "ForeignModel", "ModelStore", "StoredModel", "read_arrays"]

log = logging.getLogger(__name__)

FORMAT = "autoretrain.agent_selection/1"
_NAME = re.compile(r"^model-(\d{8})\.json$")


class CorruptModel(ValueError):
    """A stored version that is missing, partial or does not match its metadata.

    ``fault`` is a short category for counting and logging:
    ``metadata_missing``, ``metadata_not_json``, ``metadata_invalid``,
    ``arrays_missing``, ``checksum_mismatch``, ``arrays_unreadable`` or
    ``model_invalid`` (intact files whose content the model rejects).
    """

    def __init__(self, message: str, fault: str = "corrupt") -> None:
        super().__init__(message)
        self.fault = fault


class ForeignModel(CorruptModel):
    """Intact metadata of another format (another model, or a newer release):
    counted as ``metadata_invalid`` by the updater, told apart by followers."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "metadata_invalid")


@dataclass(frozen=True, eq=False)
class StoredModel:
    """One loaded version."""

    version: int
    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_arrays(data: bytes, what: str) -> dict[str, np.ndarray]:
    """The arrays of ``.npz`` bytes (never unpickled); :class:`CorruptModel`
    (``arrays_unreadable``) naming ``what`` when they cannot be read."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            return {name: f[name] for name in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CorruptModel(f"{what}: cannot read arrays: {exc}", "arrays_unreadable") from None


class ModelStore:
    """The model versions under ``path``.

    Parameters
    ----------
    path
        Directory (created when missing).
    keep_last
        Versions kept; older ones are deleted after each save.
    """

    def __init__(self, path: str | os.PathLike[str], keep_last: int = 10) -> None:
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last must be an integer >= 1, got {keep_last!r}")
        self.path = Path(path)
        self.keep_last = keep_last
        self._lock = threading.Lock()
        self._reserved = 0  # the highest number handed out by reserve() or save()

    def _files(self, version: int) -> tuple[Path, Path]:
        stem = f"model-{version:08d}"
        return self.path / f"{stem}.npz", self.path / f"{stem}.json"

    def versions(self) -> list[int]:
        """Committed versions (those with metadata), oldest first."""
        if not self.path.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.path.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def _next_number(self) -> int:
        """A number never used before (store lock held)."""
        self.path.mkdir(parents=True, exist_ok=True)
        # Never reuse a number, even one whose metadata was lost, or one
        # reserved by a save still in progress (or that failed).
        stray = [int(p.stem[6:]) for p in self.path.glob("model-*.npz")
                 if p.stem[6:].isdigit()]
        self._reserved = max([self._reserved, *self.versions(), *stray]) + 1
        return self._reserved

    def reserve(self) -> int:
        """Hand out the number of a version to be saved later with ``save(version=)``.

        The caller reserves while it holds the lock under which it takes the
        snapshot, so the numbers follow the order in which snapshots were
        taken, not the order in which their (slower, unlocked) writes end:
        the highest number is always the newest model. A reserved number
        that is never saved is skipped, never reused.
        """
        with self._lock:
            return self._next_number()

    def save(self, arrays: dict[str, np.ndarray], metadata: dict[str, Any],
             version: int | None = None) -> int:
        """Write a new version (numbered now, or ``version`` from :meth:`reserve`);
        return its number.

        ``metadata`` must be JSON-serialisable; the store adds ``format``,
        ``version``, ``created``, ``arrays_file`` and ``arrays_sha256``.
        """
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        data = buffer.getvalue()
        with self._lock:
            if version is None:
                version = self._next_number()
            elif not 0 < version <= self._reserved:
                raise ValueError(f"version {version} was not reserved")
            versions = self.versions()
            npz, meta = self._files(version)
            record = dict(metadata)
            record.update(
                format=FORMAT,
                version=version,
                created=record.get("created") or utc_iso(time.time()),
                arrays_file=npz.name,
                arrays_sha256=hashlib.sha256(data).hexdigest(),
            )
            text = json.dumps(record, indent=1, sort_keys=True, allow_nan=False)
            _atomic_write(npz, data)
            _atomic_write(meta, text.encode())  # the commit marker, last
            _fsync_dir(self.path)
            self._prune([*versions, version])
        log.info("saved model version %d (%d bytes)", version, len(data))
        return version

    def _prune(self, versions: list[int]) -> None:
        for old in sorted(versions)[: -self.keep_last]:
            npz, meta = self._files(old)
            # Metadata first: a half-deleted version must look uncommitted.
            meta.unlink(missing_ok=True)
            npz.unlink(missing_ok=True)

    def remove_incomplete(self) -> list[str]:
        """Delete what crashed saves left behind; return the file names removed.

        That is temporary files, and array files without metadata that are
        older than the newest committed version (a save never reuses their
        number, so they can never be committed). Call it only while no save
        is in progress: one process owns a store directory.
        """
        if not self.path.is_dir():
            return []
        removed = []
        with self._lock:
            newest = max(self.versions(), default=0)
            for p in self.path.iterdir():
                stem = p.name[6:-4] if p.name.startswith("model-") and p.suffix == ".npz" else ""
                stray = (stem.isdigit() and int(stem) < newest
                         and not p.with_suffix(".json").exists())
                if p.name.startswith(".tmp-model-") or stray:
                    p.unlink(missing_ok=True)
                    removed.append(p.name)
        if removed:
            log.info("removed %d files of interrupted saves from %s: %s", len(removed),
                     self.path, ", ".join(sorted(removed)))
        return removed

    def load(self, version: int) -> StoredModel:
        """Load ``version``; raise :class:`CorruptModel` when it is not intact."""
        data, metadata = self.read(version)
        return StoredModel(version, read_arrays(data, f"version {version}"), metadata)

    def read(self, version: int) -> tuple[bytes, dict[str, Any]]:
        """The ``.npz`` bytes of ``version`` (checked against their SHA-256) and its
        metadata, as stored: what the model topic publishes; :class:`CorruptModel`
        when the version is not intact."""
        npz, meta = self._files(version)
        try:
            metadata = json.loads(meta.read_bytes())
        except FileNotFoundError:
            raise CorruptModel(f"version {version}: no metadata file {meta.name}",
                               "metadata_missing") from None
        except ValueError as exc:
            raise CorruptModel(f"version {version}: metadata is not JSON: {exc}",
                               "metadata_not_json") from None
        if not isinstance(metadata, dict):
            raise CorruptModel(f"version {version}: metadata is not a JSON object",
                               "metadata_invalid")
        if metadata.get("format") != FORMAT:
            raise ForeignModel(f"version {version}: metadata format is "
                               f"{str(metadata.get('format'))[:80]!r}, not {FORMAT!r}")
        if metadata.get("version") != version:
            raise CorruptModel(
                f"version {version}: metadata says version {metadata.get('version')!r}",
                "metadata_invalid")
        try:
            data = npz.read_bytes()
        except FileNotFoundError:
            raise CorruptModel(f"version {version}: no array file {npz.name}",
                               "arrays_missing") from None
        if hashlib.sha256(data).hexdigest() != metadata.get("arrays_sha256"):
            raise CorruptModel(f"version {version}: {npz.name} does not match its SHA-256",
                               "checksum_mismatch")
        return data, metadata

    def load_latest(self) -> StoredModel | None:
        """The newest intact version, or None; broken versions are logged and skipped."""
        for version in reversed(self.versions()):
            try:
                return self.load(version)
            except CorruptModel as exc:
                log.warning("skipping model version: %s", exc)
        return None

    def rollback(self, version: int, metadata: dict[str, Any] | None = None,
                 new_version: int | None = None) -> int:
        """Make ``version`` the newest again by saving a copy of it; return the new number.

        ``metadata`` entries (e.g. the current Kafka offsets) override the
        copied ones. History is kept: the copy's ``parent_version`` is the
        version it restores and ``rolled_back_from`` the one it replaces.
        ``new_version``: a number from :meth:`reserve` (None: numbered now).
        """
        stored = self.load(version)
        latest = self.versions()
        record = {k: v for k, v in stored.metadata.items()
                  if k not in ("format", "version", "created", "arrays_file", "arrays_sha256")}
        record.update(metadata or {})
        record["parent_version"] = version
        record["rolled_back_from"] = latest[-1] if latest else None
        return self.save(stored.arrays, record, new_version)
