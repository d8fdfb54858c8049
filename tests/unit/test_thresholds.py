from pathlib import Path

import pytest

from autoretrain.exporter import Thresholds, ThresholdsConfig, load_thresholds

REPO = Path(__file__).resolve().parents[2]


def test_committed_file_holds_the_design_defaults():
    config = load_thresholds(REPO / "prometheus" / "thresholds.yml")
    assert config == ThresholdsConfig()
    t = config.thresholds
    assert (t.accuracy_min, t.success_rate_min, t.error_rate_max, t.latency_p95_max_ms) == (
        0.70,
        0.80,
        0.15,
        5000,
    )


def test_partial_file_merges_over_defaults(tmp_path):
    f = tmp_path / "t.yml"
    f.write_text("thresholds:\n  accuracy_min: 0.9\nmonitor:\n  cooldown_seconds: 5\n")
    config = load_thresholds(f)
    assert config.thresholds.accuracy_min == 0.9
    assert config.thresholds.success_rate_min == 0.80
    assert config.monitor.cooldown_seconds == 5
    assert config.alerts.for_ == "2m"


def test_empty_file_is_all_defaults(tmp_path):
    f = tmp_path / "t.yml"
    f.write_text("")
    assert load_thresholds(f) == ThresholdsConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "thresholds:\n  accuracy_min: 1.5\n",
            r"thresholds.accuracy_min must be a number in \[0, 1\], got 1.5",
        ),
        ("thresholds:\n  accuracy_min: high\n", "thresholds.accuracy_min"),
        ("thresholds:\n  acuracy_min: 0.5\n", "unknown key.*acuracy_min.*allowed: accuracy_min"),
        (
            "thresholds:\n  latency_p95_max_ms: 0\n",
            "latency_p95_max_ms must be a finite number > 0",
        ),
        (
            "thresholds:\n  accuracy_critical: 0.8\n",
            "accuracy_critical .* must not exceed accuracy_min",
        ),
        ("alerts:\n  for: soon\n", "alerts.for must be a Prometheus duration"),
        ("monitor:\n  min_runs: 0\n", "monitor.min_runs must be an integer >= 1"),
        ("hysteresis:\n  accuracy: -1\n", "hysteresis.accuracy"),
        ("surprise: 1\n", "unknown key.*surprise"),
        ("scope:\n  exporter: autoretrain\n", "scope.exporter must be PromQL label matchers"),
        ("scope:\n  webhook: '{job=\"w\"}'\n", "scope.webhook must be PromQL label matchers"),
        ("scope:\n  keep_labels: env\n", "scope.keep_labels must be a list of label names"),
        ("scope:\n  keep_labels: [env-name]\n", "scope.keep_labels must be a list"),
        ("scope:\n  keep_labels: [agent]\n", "not one of the rules' own labels"),
        ("scope:\n  keep_labels: [env, env]\n", "must be distinct"),
        ("scope:\n  namespace: ml\n", "scope: unknown key.*namespace"),
        ("loop:\n  for: later\n", "loop.for must be a Prometheus duration"),
        ("loop:\n  no_events_for: 30\n", "loop.no_events_for must be a Prometheus duration"),
        ("loop:\n  consumer_lag_max_events: 0\n", "loop.consumer_lag_max_events"),
        ("loop:\n  lag: 5\n", "loop: unknown key.*lag"),
        ("alerts:\n  runbook_url: https://x/runbook\n", "alerts.runbook_url must be a URL pattern"),
        ("alerts:\n  runbook_url: 'https://x/{name}/{alertname}'\n", "no other placeholder"),
        ("- a\n- b\n", "must be a mapping"),
        ("thresholds: [\n", "not valid YAML"),
    ],
)
def test_bad_files_name_file_key_and_allowed_values(tmp_path, text, message):
    f = tmp_path / "bad.yml"
    f.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_thresholds(f)
    assert str(f) in str(info.value)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        load_thresholds("/nonexistent/thresholds.yml")


def test_thresholds_from_mapping_rejects_bools():
    with pytest.raises(ValueError, match="accuracy_min"):
        Thresholds.from_mapping({"accuracy_min": True})


def test_scope_from_the_file(tmp_path):
    f = tmp_path / "t.yml"
    f.write_text(
        "scope:\n  exporter: 'job=\"agents\", namespace=~\"ml-.*\"'\n"
        "  webhook: ''\n  keep_labels: [region]\n"
    )
    scope = load_thresholds(f).scope
    assert scope.exporter == 'job="agents", namespace=~"ml-.*"'
    assert scope.keep_labels == ("region",)
    assert scope.matchers("exporter", 'status="success"') == (
        '{job="agents", namespace=~"ml-.*", status="success"}'
    )
    assert scope.matchers("webhook") == ""
    assert scope.matchers("webhook", 'reason="unauthorized"') == '{reason="unauthorized"}'


def test_committed_scope_reads_the_autoretrain_jobs_and_keeps_cluster_and_env():
    scope = load_thresholds(REPO / "prometheus" / "thresholds.yml").scope
    assert scope.exporter == 'job="autoretrain-exporter"'
    assert scope.webhook == 'job="autoretrain-webhook"'
    assert scope.keep_labels == ("cluster", "env")


def test_loop_settings_from_the_file(tmp_path):
    f = tmp_path / "t.yml"
    f.write_text("loop:\n  for: 1m\n  no_events_for: 2h\n  consumer_lag_max_events: 50\n")
    loop = load_thresholds(f).loop
    assert (loop.for_, loop.no_events_for, loop.failures_window) == ("1m", "2h", "15m")
    assert loop.consumer_lag_max_events == 50
