"""The Kafka compression codecs this process can decode, and telling a decode failure apart.

kafka-python decodes gzip itself; snappy, lz4 and zstd need
``python-snappy``, ``lz4`` and ``zstandard`` (dependencies in
pyproject.toml). Without one, every poll of a topic written with that codec
raises ``UnsupportedCodecError`` and the consumer stops advancing: a
producer's ``compression.type`` decides whether we can read at all. Both
consumers (the standalone exporter and the updater) check this with
:func:`undecodable` and report it on ``/readyz`` and in a gauge, instead of
retrying with only a warning.
"""

from __future__ import annotations

__all__ = ["CODECS", "missing_codecs", "undecodable"]

#: Every compression type a Kafka producer can set (besides none).
CODECS = ("gzip", "snappy", "lz4", "zstd")
_PACKAGES = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}


def missing_codecs() -> list[str]:
    """The codecs kafka-python cannot use here (normally none)."""
    from kafka import codec

    checks = {"gzip": codec.has_gzip, "snappy": codec.has_snappy, "lz4": codec.has_lz4,
              "zstd": codec.has_zstd}
    return [name for name, has in checks.items() if not has()]


def undecodable(exc: BaseException) -> str | None:
    """Why records cannot be decoded, when ``exc`` (or what it was raised from)
    is kafka-python's ``UnsupportedCodecError``; else None."""
    from kafka.errors import UnsupportedCodecError

    seen: BaseException | None = exc
    for _ in range(10):  # a bounded walk: chains are short, never cyclic in practice
        if seen is None:
            return None
        if isinstance(seen, UnsupportedCodecError):
            missing = ", ".join(_PACKAGES[c] for c in missing_codecs() if c in _PACKAGES)
            hint = f" (install {missing})" if missing else ""
            return f"{type(seen).__name__}: {seen}{hint}"
        seen = seen.__cause__ or seen.__context__
    return None
