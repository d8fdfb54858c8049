import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoretrain.exporter import AgentMetrics


def test_exposition_parses_and_has_the_design_names():
    registry = CollectorRegistry()
    m = AgentMetrics(registry)
    m.record_run("a", "llm", "success", 0.2, 5, 0.1)
    m.record_accuracy("a", "human", 0.9)
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert {
        "autoretrain_agent_runs",
        "autoretrain_agent_run_duration_seconds",
        "autoretrain_agent_tokens",
        "autoretrain_agent_cost",
        "autoretrain_agent_prediction_accuracy_ratio",
        "autoretrain_agent_accuracy_records",
        "autoretrain_agent_series_collapsed",
    } <= set(families)
    assert families["autoretrain_agent_runs"].type == "counter"
    assert families["autoretrain_agent_run_duration_seconds"].type == "histogram"
    assert all(f.documentation for f in families.values())
    bounds = [
        s.labels["le"]
        for s in families["autoretrain_agent_run_duration_seconds"].samples
        if "le" in s.labels
    ]
    assert "5.0" in bounds and bounds[-1] == "+Inf"


def test_histogram_buckets_are_cumulative_and_le_inclusive():
    registry = CollectorRegistry()
    m = AgentMetrics(registry, duration_buckets=(1.0, 5.0))
    for d in (1.0, 3.0, 5.0, 7.0):
        m.record_run("a", "llm", "success", d)
    get = registry.get_sample_value
    labels = {"agent": "a", "agent_type": "llm"}
    assert get("autoretrain_agent_run_duration_seconds_bucket", {**labels, "le": "1.0"}) == 1
    assert get("autoretrain_agent_run_duration_seconds_bucket", {**labels, "le": "5.0"}) == 3
    assert get("autoretrain_agent_run_duration_seconds_bucket", {**labels, "le": "+Inf"}) == 4
    assert get("autoretrain_agent_run_duration_seconds_sum", labels) == 16.0


def test_tokens_and_cost_sum_over_agent_types():
    registry = CollectorRegistry()
    m = AgentMetrics(registry)
    m.record_run("a", "llm", "success", 1, 10, 1.0)
    m.record_run("a", "sql", "failure", 1, 5, 0.5)
    assert registry.get_sample_value("autoretrain_agent_tokens_total", {"agent": "a"}) == 15
    assert registry.get_sample_value("autoretrain_agent_cost_total", {"agent": "a"}) == 1.5


def test_remove_agent_drops_its_series_and_frees_the_slot():
    registry = CollectorRegistry()
    m = AgentMetrics(registry, max_agents=1)
    m.record_run("old", "llm", "success", 1)
    m.record_accuracy("old", "human", 0.5)
    m.remove_agent("old")
    assert registry.get_sample_value("autoretrain_agent_tokens_total", {"agent": "old"}) is None
    assert (
        registry.get_sample_value(
            "autoretrain_agent_prediction_accuracy_ratio_count", {"agent": "old"}
        )
        is None
    )
    m.record_run("new", "llm", "success", 1)
    assert (
        registry.get_sample_value(
            "autoretrain_agent_runs_total",
            {"agent": "new", "agent_type": "llm", "status": "success"},
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
        if f.name == "autoretrain_agent_accuracy_records"
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


def _samples(text):
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
    )


def test_render_equals_generate_latest_sample_for_sample():
    import random

    registry = CollectorRegistry()
    m = AgentMetrics(registry, max_agents=40)
    rng = random.Random(3)
    names = [f"agent-{i}" for i in range(45)] + ['quote"back\\slash\nnewline']
    # render() formats with %-templates: a "%" in a label value is text, not a placeholder.
    m.record_run("per%cent %d%%", "type %s", "success", 1.0)
    for i in range(2000):
        agent = rng.choice(names)
        m.record_run(
            agent,
            rng.choice(["llm", "sql"]),
            rng.choice(["success", "error", "timeout", "failure"]),
            rng.random() * 400,
            rng.randrange(50),
            rng.random(),
        )
        if i % 3 == 0:
            m.record_accuracy(agent, rng.choice(["human", "ground_truth", 'we"ird']), rng.random())
    rendered = m.render()
    assert _samples(rendered) == _samples(generate_latest(registry).decode())
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

    def om_samples(text):
        return sorted(
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for f in parse_om(text)
            for s in f.samples
        )

    assert om_samples(m.render(openmetrics=True) + "# EOF\n") == om_samples(
        generate_openmetrics(registry).decode()
    )
    assert m.render() == rendered  # cached prefixes give the same text again
    families = {f.name: f for f in text_string_to_metric_families(rendered)}
    assert families["autoretrain_agent_run_duration_seconds"].type == "histogram"
    assert families["autoretrain_agent_runs"].documentation == "Agent runs by final status."


def test_render_metrics_serves_fast_and_generic_collectors_alike():
    from prometheus_client import Counter

    from autoretrain.exporter.http import render_metrics

    registry = CollectorRegistry()
    m = AgentMetrics(registry)
    m.record_run("a", "llm", "success", 1.0, 3, 0.5)
    Counter("other_thing", "A plain counter.", registry=registry).inc(7)
    other = CollectorRegistry()
    Counter("second_registry", "Another.", registry=other).inc()
    body = render_metrics(registry, other, fast=[m]).decode()
    expected = generate_latest(registry).decode() + generate_latest(other).decode()
    # Everything but prometheus_client's _created series, which /metrics leaves out.
    assert "_created" not in body and "other_thing_created" in expected
    assert _samples(body) == [s for s in _samples(expected) if not s[0].endswith("_created")]


def test_agent_type_is_bounded_per_agent_and_the_collapse_is_counted():
    # One agent reporting 5,000 agent types once gave 115,003 sample lines.
    from autoretrain.exporter.metrics import MAX_AGENT_TYPES

    registry = CollectorRegistry()
    m = AgentMetrics(registry)
    for i in range(5000):
        m.record_run("a", f"type-{i}", "success", 0.1, 1, 0.0)
    for i in range(MAX_AGENT_TYPES + 5):
        m.record_accuracy("a", f"source-{i}", 0.5)
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    types = {s.labels["agent_type"] for s in families["autoretrain_agent_runs"].samples}
    assert len(types) == MAX_AGENT_TYPES + 1 and "other" in types
    get = registry.get_sample_value
    other = {"agent": "a", "agent_type": "other", "status": "success"}
    assert get("autoretrain_agent_runs_total", other) == (
        5000 - MAX_AGENT_TYPES
    )
    assert get("autoretrain_agent_tokens_total", {"agent": "a"}) == 5000
    assert get("autoretrain_agent_label_values_collapsed_total", {"label": "agent_type"}) == (
        5000 - MAX_AGENT_TYPES
    )
    assert get("autoretrain_agent_label_values_collapsed_total", {"label": "feedback_source"}) == 5
    # The fast rendering has the same samples.
    fast = {
        f.name: f for f in text_string_to_metric_families(m.render())
    }
    assert len(fast["autoretrain_agent_runs"].samples) == len(
        families["autoretrain_agent_runs"].samples
    )
    assert fast["autoretrain_agent_label_values_collapsed"].samples == (
        families["autoretrain_agent_label_values_collapsed"].samples
    )
