import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import AgentMetrics


def test_exposition_parses_and_has_the_design_names():
    registry = CollectorRegistry()
    m = AgentMetrics(registry)
    m.record_run("a", "llm", "success", 0.2, 5, 0.1)
    m.record_accuracy("a", "human", 0.9)
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert {
        "agent_runs",
        "agent_run_duration_seconds",
        "agent_tokens",
        "agent_cost",
        "agent_prediction_accuracy",
        "agent_accuracy_records",
        "agent_series_collapsed",
    } <= set(families)
    assert families["agent_runs"].type == "counter"
    assert families["agent_run_duration_seconds"].type == "histogram"
    assert all(f.documentation for f in families.values())
    bounds = [
        s.labels["le"] for s in families["agent_run_duration_seconds"].samples if "le" in s.labels
    ]
    assert "5.0" in bounds and bounds[-1] == "+Inf"


def test_histogram_buckets_are_cumulative_and_le_inclusive():
    registry = CollectorRegistry()
    m = AgentMetrics(registry, duration_buckets=(1.0, 5.0))
    for d in (1.0, 3.0, 5.0, 7.0):
        m.record_run("a", "llm", "success", d)
    get = registry.get_sample_value
    labels = {"agent": "a", "agent_type": "llm"}
    assert get("agent_run_duration_seconds_bucket", {**labels, "le": "1.0"}) == 1
    assert get("agent_run_duration_seconds_bucket", {**labels, "le": "5.0"}) == 3
    assert get("agent_run_duration_seconds_bucket", {**labels, "le": "+Inf"}) == 4
    assert get("agent_run_duration_seconds_sum", labels) == 16.0


def test_tokens_and_cost_sum_over_agent_types():
    registry = CollectorRegistry()
    m = AgentMetrics(registry)
    m.record_run("a", "llm", "success", 1, 10, 1.0)
    m.record_run("a", "sql", "failure", 1, 5, 0.5)
    assert registry.get_sample_value("agent_tokens_total", {"agent": "a"}) == 15
    assert registry.get_sample_value("agent_cost_total", {"agent": "a"}) == 1.5


def test_remove_agent_drops_its_series_and_frees_the_slot():
    registry = CollectorRegistry()
    m = AgentMetrics(registry, max_agents=1)
    m.record_run("old", "llm", "success", 1)
    m.record_accuracy("old", "human", 0.5)
    m.remove_agent("old")
    assert registry.get_sample_value("agent_tokens_total", {"agent": "old"}) is None
    assert registry.get_sample_value("agent_prediction_accuracy_count", {"agent": "old"}) is None
    m.record_run("new", "llm", "success", 1)
    assert (
        registry.get_sample_value(
            "agent_runs_total", {"agent": "new", "agent_type": "llm", "status": "success"}
        )
        == 1
    )
    m.remove_agent("never-seen")  # no error


def test_feedback_source_label_is_bounded():
    registry = CollectorRegistry()
    m = AgentMetrics(registry)
    for i in range(30):
        m.record_accuracy("a", f"src{i}", 1.0)
    sources = [
        s.labels["feedback_source"]
        for f in registry.collect()
        if f.name == "agent_accuracy_records"
        for s in f.samples
    ]
    assert len(sources) == 21 and "other" in sources


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_agents": 0}, "max_agents must be an integer >= 1"),
        ({"duration_buckets": (5.0, 1.0)}, "duration_buckets must be finite, strictly increasing"),
        ({"accuracy_buckets": ()}, "accuracy_buckets"),
    ],
)
def test_constructor_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AgentMetrics(**kwargs)
