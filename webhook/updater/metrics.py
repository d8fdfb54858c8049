"""Prometheus metrics of the model updater (names as in docs/DESIGN.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .probation import EVENTS as PROBATION_EVENTS
from .results import MODEL_TYPES, RetrainStatus, RetrainType

__all__ = ["EVENT_RESULTS", "STORE_FAULTS", "SetAsideCollector", "UpdaterMetrics"]

EVENT_RESULTS = ("applied", "duplicate", "invalid")
#: Why a stored model version could not be loaded (``CorruptModel.fault``).
STORE_FAULTS = ("metadata_missing", "metadata_not_json", "metadata_invalid", "arrays_missing",
                "checksum_mismatch", "arrays_unreadable", "model_invalid", "corrupt")
#: ``model_type`` label of a request for a model type that does not exist
#: (the requested value is not used: labels stay bounded).
INVALID_MODEL_TYPE = "invalid"


class SetAsideCollector(Collector):
    """``autoretrain_model_pair_set_aside{task_type, agent}``: 1 for each pair
    the model holds set aside (parked), read at scrape time from ``source``.

    Only set-aside pairs have a series (a few at a time, bounded by
    ``max_agents`` x ``max_task_types``): a pair that is restored or given up
    leaves the exposition. The ``AgentSetAside`` alert reads it, so a person
    learns an agent is broken even once it gets no traffic (its rate-based
    alerts then have nothing to compute).
    """

    NAME = "autoretrain_model_pair_set_aside"

    def __init__(self, source: Callable[[], list[tuple[str, str]]] | None = None) -> None:
        self.source = source

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            self.NAME,
            "1 for each (task type, agent) pair the selection model set aside after a drop "
            "(by the drop detector or a retrain), until a retry restores it.",
            labels=["task_type", "agent"],
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for task_type, agent in sorted(set(self.source() if self.source else [])):
            family.add_metric([task_type, agent], 1.0)
        yield family


class UpdaterMetrics:
    """The updater's metrics, registered in ``registry``.

    Every label combination is created up front so that a counter reads 0,
    not "absent", before its first increment.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.retrains = Counter(
            "autoretrain_model_retrains",
            "Retrain requests by model type, retrain type and result "
            "(promoted | rejected | failed | skipped).",
            ["model_type", "retrain_type", "result"],
            registry=registry,
        )
        self.retrain_duration = Histogram(
            "autoretrain_model_retrain_duration_seconds",
            "Wall time of a retrain, candidate building and scoring included.",
            ["retrain_type"],
            # Up to 600 s: a retrain may run until the webhook's timeout (300 s by default).
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 15, 60, 300, 600),
            registry=registry,
        )
        self.retrain_events = Gauge(
            "autoretrain_model_retrain_events_processed",
            "Buffered events the last retrain processed.",
            registry=registry,
        )
        self.version = Gauge(
            "autoretrain_model_version",
            "Store version of the serving model (0 before the first save or load).",
            registry=registry,
        )
        self.last_retrain = Gauge(
            "autoretrain_model_last_retrain_timestamp_seconds",
            "Unix time of the last retrain that promoted a model.",
            registry=registry,
        )
        self.events = Counter(
            "autoretrain_model_updater_events",
            "Outcome events taken by the updater, by result (applied | duplicate | invalid).",
            ["result"],
            registry=registry,
        )
        self.probation = Counter(
            "autoretrain_model_probation_events",
            "Agents set aside on a task type (parked), restored, retried and still broken "
            "(retry_failed), or given up after their history faded, by event.",
            ["event"],
            registry=registry,
        )
        self.drops_detected = Counter(
            "autoretrain_model_drops_detected",
            "(task type, agent) pairs the drop detector set aside between retrains, within "
            "a few of their runs and without waiting for an alert (the fast path); each is "
            "also a parked probation event.",
            registry=registry,
        )
        self.set_aside = SetAsideCollector()
        registry.register(self.set_aside)
        self.parked = Gauge(
            "autoretrain_model_parked_pairs",
            "(task type, agent) pairs set aside after a drop, waiting for or on a retry.",
            registry=registry,
        )
        self.buffer = Gauge(
            "autoretrain_model_updater_buffer_events",
            "Recent events held in the retraining buffer.",
            registry=registry,
        )
        self.errors = Counter(
            "autoretrain_model_updater_errors",
            "Unexpected errors caught by the updater's consumer loop.",
            registry=registry,
        )
        self.save_failures = Counter(
            "autoretrain_model_save_failures",
            "Saves of the serving model that failed (disk full, I/O error); the model "
            "keeps serving unsaved and the next save retries.",
            registry=registry,
        )
        self.undecodable = Gauge(
            "autoretrain_model_updater_consumer_undecodable",
            "1 while the consumer cannot decode the records it reads (a compression "
            "codec is missing); it does not advance until it can.",
            registry=registry,
        )
        self.agents_evicted = Counter(
            "autoretrain_model_updater_agents_evicted",
            "Idle agents dropped from the model to admit a new one at max_agents.",
            registry=registry,
        )
        self.capacity = Gauge(
            "autoretrain_model_updater_capacity_used_ratio",
            "Known names over their bound (max_agents, max_task_types); at 1 new agents are "
            "admitted only in place of an idle one, new task types not at all.",
            ["kind"],
            registry=registry,
        )
        self.lag = Gauge(
            "autoretrain_model_updater_consumer_lag_events",
            "Events in Kafka not yet consumed by the updater (NaN when unknown).",
            registry=registry,
        )
        self.lag.set(float("nan"))
        self.corrupt_versions = Counter(
            "autoretrain_model_store_corrupt_versions_skipped",
            "Stored model versions skipped at load because they were corrupt or incomplete, "
            "by fault.",
            ["fault"],
            registry=registry,
        )
        # Cost and routing (issue 18); task types are bounded by max_task_types.
        self.task_runs = Counter(
            "autoretrain_model_task_runs",
            "Runs the updater applied, by task type.",
            ["task_type"],
            registry=registry,
        )
        self.task_cost = Counter(
            "autoretrain_model_task_cost",
            "Cost of the runs the updater applied (the platform's currency), by task type.",
            ["task_type"],
            registry=registry,
        )
        self.objective = Gauge(
            "autoretrain_model_objective_info",
            "1 for the selection objective the model ranks agents by "
            "(quality | weighted | constrained).",
            ["objective"],
            registry=registry,
        )
        for fault in STORE_FAULTS:
            self.corrupt_versions.labels(fault)
        for event in PROBATION_EVENTS:
            self.probation.labels(event)
        for model_type in MODEL_TYPES:
            for retrain_type in RetrainType:
                self.retrain_duration.labels(retrain_type.value)
                for status in RetrainStatus:
                    self.retrains.labels(model_type, retrain_type.value, status.value)
        for result in EVENT_RESULTS:
            self.events.labels(result)
