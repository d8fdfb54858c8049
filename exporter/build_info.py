"""``autoretrain_build_info{version}``: which release a target runs.

The usual ``<app>_build_info`` gauge (always 1), so a dashboard or a query
such as ``count by (version) (autoretrain_build_info)`` shows a rollout, and
``group_left(version)`` can add the version to any series of the same target.
Every process registers it once in the registry its ``/metrics`` serves.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["NAME", "BuildInfo", "register_build_info"]

NAME = "autoretrain_build_info"
_HELP = "autoretrain's version; always 1."


def _version() -> str:
    from autoretrain import __version__  # the root package is imported already

    return __version__


class BuildInfo(Collector):
    """One sample, ``autoretrain_build_info{version="..."} 1``."""

    def __init__(self, version: str | None = None) -> None:
        self.version = _version() if version is None else version

    def describe(self) -> list[Metric]:
        # Names at registration: a registry then refuses a second BuildInfo.
        return [GaugeMetricFamily(NAME, _HELP, labels=("version",))]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(NAME, _HELP, labels=("version",))
        family.add_metric((self.version,), 1)
        yield family


def register_build_info(registry: CollectorRegistry) -> BuildInfo | None:
    """Register a :class:`BuildInfo` in ``registry`` unless it has one already.

    Several components may share one registry (an orchestrator passing its
    monitor's registry to the webhook): the first one registers the series,
    the others find it there. Returns the collector registered, or ``None``.
    """
    collector = BuildInfo()
    try:
        registry.register(collector)
    except ValueError:  # "Duplicated timeseries": already registered
        return None
    return collector
