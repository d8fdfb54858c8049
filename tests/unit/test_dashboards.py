"""Structure of the Grafana provisioning and dashboards (grafana/).

No Grafana runs here: these checks read the JSON and YAML. That every
query returns data from a real Prometheus is tested in
tests/integration/test_dashboard_queries.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoretrain.exporter import load_thresholds

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "autoretrain.yml"
THRESHOLDS = REPO / "prometheus" / "thresholds.yml"

# Panels that only lay out others; every other panel must query something.
LAYOUT_PANELS = {"row", "text"}
# Variables Grafana defines itself (https://grafana.com/docs/grafana/latest/dashboards/variables/).
GLOBAL_VARIABLES = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s"}
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))|\[\[(\w+)\]\]")


def load(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dashboard) if p.get("type") not in LAYOUT_PANELS]


def annotations(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Annotation queries, without Grafana's built-in "Annotations & Alerts"."""
    return [a for a in dashboard.get("annotations", {}).get("list", []) if not a.get("builtIn")]


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return str(query.get("query", "") if isinstance(query, dict) else query)


def provisioned_uid() -> str:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uid: str = datasource["uid"]
    return uid


@pytest.fixture(params=DASHBOARDS, ids=lambda p: p.name)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


# -- provisioning -----------------------------------------------------------------


def test_datasource_is_prometheus_with_a_fixed_uid() -> None:
    doc = yaml.safe_load(DATASOURCES.read_text())
    assert doc["apiVersion"] == 1
    (datasource,) = doc["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["uid"] == "autoretrain-prometheus"
    assert datasource["url"] == "http://prometheus:9090"  # the docker-compose service
    assert datasource["access"] == "proxy"
    assert datasource["isDefault"] is True
    # $__rate_interval is computed from it: must equal prometheus.yml's scrape interval.
    scrape = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())["global"]
    assert datasource["jsonData"]["timeInterval"] == scrape["scrape_interval"]


def test_dashboard_provider_reads_the_mounted_dashboard_directory() -> None:
    doc = yaml.safe_load(PROVIDERS.read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    assert provider["allowUiUpdates"] is False


def test_there_are_the_two_dashboards_with_unique_uids_and_titles() -> None:
    loaded = [load(path) for path in DASHBOARDS]
    uids = [d["uid"] for d in loaded]
    titles = [d["title"] for d in loaded]
    assert {"autoretrain-agent-performance", "autoretrain-retraining"} <= set(uids)
    assert len(set(uids)) == len(uids), uids
    assert len(set(titles)) == len(titles), titles
    for uid in uids:
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid), f"uid {uid!r} is not a valid Grafana uid"


# -- each dashboard ---------------------------------------------------------------


def test_dashboard_is_bare_json_for_file_provisioning(dashboard: dict[str, Any]) -> None:
    # A provisioned dashboard has no database id and no import wrapper.
    assert dashboard["id"] is None
    assert "dashboard" not in dashboard and "__inputs" not in dashboard
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["title"] and dashboard["description"]
    assert "autoretrain" in dashboard["tags"]


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(set(ids)) == len(ids), sorted(ids)


def test_every_panel_has_a_query_a_description_and_a_unit(dashboard: dict[str, Any]) -> None:
    assert query_panels(dashboard)
    for panel in query_panels(dashboard):
        where = f"panel {panel['id']} {panel.get('title')!r}"
        assert panel.get("title"), where
        assert panel.get("description"), f"{where} has no description"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{where} has no unit"
        targets = panel.get("targets", [])
        assert targets, f"{where} has no query"
        for target in targets:
            assert isinstance(target.get("expr"), str) and target["expr"].strip(), (
                f"{where}: target {target.get('refId')} has an empty expr"
            )
        ref_ids = [t["refId"] for t in targets]
        assert len(set(ref_ids)) == len(ref_ids), f"{where}: refIds {ref_ids}"


def test_every_datasource_reference_is_the_datasource_variable(
    dashboard: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """No hard-wired uid: the dashboards work against any Prometheus data source."""
    refs: list[tuple[str, Any]] = []
    for panel in query_panels(dashboard):
        refs.append((f"panel {panel['id']}", panel.get("datasource")))
        refs += [
            (f"panel {panel['id']} {t['refId']}", t.get("datasource")) for t in panel["targets"]
        ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            refs.append((f"variable {variable['name']}", variable.get("datasource")))
    for annotation in annotations(dashboard):
        refs.append((f"annotation {annotation['name']}", annotation.get("datasource")))
    bad = [(w, ref) for w, ref in refs if ref != {"type": "prometheus", "uid": "${datasource}"}]
    assert bad == []
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    assert provisioned_uid() not in json.dumps(dashboard)


# Series the dashboards read, by where they come from, and the matchers each must carry.
_SCOPES = [
    (re.compile(r"^(system|agent):"), 'cluster=~"$cluster"'),
    (re.compile(r"^ALERTS$"), 'app="autoretrain", cluster=~"$cluster"'),
    (re.compile(r"^autoretrain_(agent|monitor|exporter)_"), 'job=~"$job", cluster=~"$cluster"'),
    (re.compile(r"^autoretrain_(model|webhook)_"), 'job=~"$webhook_job", cluster=~"$cluster"'),
    # Retrain effects and the last finish per trigger: the webhook's (autoretrain_retrain*).
    (re.compile(r"^autoretrain_retrain"), 'job=~"$webhook_job", cluster=~"$cluster"'),
    (re.compile(r"^up$"), 'job=~"$job|$webhook_job", cluster=~"$cluster"'),
]
_NOT_SERIES = {"sum", "max", "min", "count", "rate", "increase", "changes", "histogram_quantile",
               "by", "or", "and", "unless", "vector", "label_values", "without", "on",
               "bool", "avg", "clamp_min", "time", "absent", "scalar"}  # fmt: skip


def test_every_query_is_scoped_to_autoretrain_by_job_cluster_and_app(
    dashboard: dict[str, Any],
) -> None:
    """In a shared Prometheus, no panel may read another application's series."""
    exprs = [t["expr"] for p in query_panels(dashboard) for t in p["targets"]]
    exprs += [a["expr"] for a in annotations(dashboard)]
    checked = 0
    for expr in exprs:
        raw = dict(_series_selectors(expr))
        assert raw, expr
        for name, selector in raw.items():
            (required,) = [m for pattern, m in _SCOPES if pattern.search(name)] or [None]
            assert required is not None, f"{expr!r}: unexpected series {name}"
            assert selector.startswith("{" + required), f"{expr!r}: {name} not scoped"
            checked += 1
    assert checked >= len(exprs)


# A series name (recording rules have colons) and its {matchers}, quoted values skipped over.
_SELECTOR = re.compile(
    r'(?<![\w:$"{,=~ ])([a-zA-Z_]\w*(?::\w+)*)'
    r'(\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})?'
)


def _series_selectors(expr: str) -> list[tuple[str, str]]:
    """(name, matchers) of every series an expression reads; grouping labels left out."""
    stripped = re.sub(r"\b(by|without|on)\s*\([^)]*\)", "", expr)
    stripped = re.sub(r"\[[^]]*\]", "", stripped)
    out = []
    for match in _SELECTOR.finditer(stripped):
        name, selector = match.group(1), match.group(2) or ""
        if name not in _NOT_SERIES and not re.fullmatch(r"[0-9.e]+", name):
            out.append((name, selector))
    return out


def test_cost_panels_have_a_currency_unit(dashboard: dict[str, Any]) -> None:
    costs = [p for p in query_panels(dashboard) if "cost" in p["title"].lower()]
    for panel in costs:
        assert panel["fieldConfig"]["defaults"]["unit"] == "currencyUSD", panel["title"]


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    boxes = [(p["id"], p["gridPos"]) for p in dashboard["panels"]]
    for pid, g in boxes:
        assert g["x"] >= 0 and g["w"] >= 1 and g["x"] + g["w"] <= 24, (pid, g)
        assert g["y"] >= 0 and g["h"] >= 1, (pid, g)
    for (a, g), (b, h) in combinations(boxes, 2):
        apart = (
            g["x"] + g["w"] <= h["x"]
            or h["x"] + h["w"] <= g["x"]
            or g["y"] + g["h"] <= h["y"]
            or h["y"] + h["h"] <= g["y"]
        )
        assert apart, f"panels {a} and {b} overlap: {g} {h}"


def test_queries_use_only_defined_variables_and_balanced_brackets(
    dashboard: dict[str, Any],
) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]} | GLOBAL_VARIABLES
    exprs = [t["expr"] for p in query_panels(dashboard) for t in p["targets"]]
    exprs += [a["expr"] for a in annotations(dashboard)]
    exprs += [variable_query(v) for v in dashboard["templating"]["list"]]
    for expr in exprs:
        used = {next(filter(None, m)) for m in VARIABLE.findall(expr)}
        assert used <= defined, f"{expr!r} uses undefined variable(s) {used - defined}"
        # PromQL is parsed by Prometheus in the integration test; this catches
        # an unbalanced edit early. Label values here never contain brackets.
        stack: list[str] = []
        for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
            if char in "([{":
                stack.append({"(": ")", "[": "]", "{": "}"}[char])
            elif char in ")]}":
                assert stack and stack.pop() == char, f"unbalanced {char!r} in {expr!r}"
        assert not stack, f"unclosed bracket(s) in {expr!r}"


def test_variables_datasource_job_cluster_and_agent() -> None:
    dashboard = load(GRAFANA / "dashboards" / "agent-performance.json")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "webhook_job", "cluster", "agent"]
    assert variable_query(variables["job"]) == "label_values(autoretrain_agent_runs_total, job)"
    assert (
        variable_query(variables["webhook_job"])
        == "label_values(autoretrain_model_retrains_total, job)"
    )
    # Optional: "All" (.*) also matches series without a cluster label.
    assert variables["cluster"]["includeAll"] is True and variables["cluster"]["allValue"] == ".*"
    variable = variables["agent"]
    assert variable["type"] == "query"
    assert variable_query(variable) == (
        'label_values(autoretrain_agent_runs_total{job=~"$job", cluster=~"$cluster"}, agent)'
    )
    assert variable["multi"] is True and variable["includeAll"] is True
    per_agent = [
        t["expr"]
        for p in query_panels(dashboard)
        for t in p["targets"]
        if re.search(r"\bagent:|by \((?:[^)]*, )?agent\b", t["expr"])
    ]
    assert len(per_agent) >= 8, per_agent
    for expr in per_agent:
        assert 'agent=~"$agent"' in expr, f"per-agent query ignores $agent: {expr!r}"


def test_operations_row_shows_the_health_of_the_loop_itself() -> None:
    dashboard = load(GRAFANA / "dashboards" / "retraining.json")
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    assert rows[-1]["title"].startswith("Operations")
    below = [p for p in dashboard["panels"] if p["gridPos"]["y"] > rows[-1]["gridPos"]["y"]]
    exprs = " ".join(t["expr"] for p in below for t in p["targets"])
    for series in (
        'up{job=~"$job|$webhook_job"',
        "autoretrain_webhook_request_duration_seconds_count{",
        "autoretrain_webhook_requests_rejected_total{",
        "autoretrain_model_updater_consumer_lag_events{",
        "sum by (fault) (rate(autoretrain_exporter_invalid_events_total{",
        "autoretrain_exporter_kafka_connected{",
    ):
        assert series in exprs, series


def test_retrains_are_annotated_by_result() -> None:
    dashboard = load(GRAFANA / "dashboards" / "retraining.json")
    (annotation,) = [a for a in annotations(dashboard) if a["name"] == "Retrains by result"]
    assert 'result=~"promoted|rejected|failed"' in annotation["expr"]
    assert "by (result, retrain_type)" in annotation["expr"]
    assert "{{result}}" in annotation["titleFormat"]


# -- thresholds drawn on the panels ------------------------------------------------

# Series (recording rule suffix) -> (thresholds.yml keys whose values the
# panel's threshold steps must hold, True when low values are bad).
THRESHOLD_SERIES = {
    "autoretrain_agent_runs_success:ratio_rate": (("success_rate_min",), True),
    "autoretrain_agent_prediction_accuracy_ratio:mean": (
        ("accuracy_min", "accuracy_critical"), True
    ),
    "autoretrain_agent_runs_error:ratio_rate": (("error_rate_max",), False),
    "autoretrain_agent_run_duration_seconds:p95": (("latency_p95_max_ms",), False),
}


def _threshold_value(key: str) -> float:
    value = load_thresholds(THRESHOLDS).thresholds.as_dict()[key]
    return value / 1000 if key.endswith("_ms") else value  # panels show seconds


@pytest.mark.parametrize("series", THRESHOLD_SERIES)
def test_threshold_panels_draw_the_thresholds_of_the_thresholds_file(series: str) -> None:
    """A threshold changed in prometheus/thresholds.yml but not on the panels fails here."""
    keys, low_is_bad = THRESHOLD_SERIES[series]
    expected = sorted(_threshold_value(k) for k in keys)
    dashboard = load(GRAFANA / "dashboards" / "agent-performance.json")
    showing = [p for p in query_panels(dashboard) if any(series in t["expr"] for t in p["targets"])]
    # A system-wide stat and a per-agent timeseries at least.
    assert {p["type"] for p in showing} >= {"stat", "timeseries"}, [p["title"] for p in showing]
    for panel in showing:
        where = f"panel {panel['id']} {panel['title']!r}"
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[0]["value"] is None, f"{where}: the first step is the base (value null)"
        values = [s["value"] for s in steps[1:]]
        assert values == pytest.approx(expected), f"{where}: thresholds {values} != {expected}"
        # The bad side is red: below the lowest step for a minimum, above it for a maximum.
        bad = steps[0] if low_is_bad else steps[-1]
        assert bad["color"] == "red", f"{where}: steps {steps}"
        if panel["type"] == "timeseries":
            mode = panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"]
            assert mode != "off", f"{where} does not draw its thresholds"
        unit = panel["fieldConfig"]["defaults"]["unit"]
        assert unit == ("s" if series.endswith("p95") else "percentunit"), f"{where}: {unit}"


def test_threshold_check_would_catch_a_changed_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above reads the thresholds file, not a copy of its values."""
    changed = tmp_path / "thresholds.yml"
    changed.write_text(THRESHOLDS.read_text().replace("accuracy_min: 0.70", "accuracy_min: 0.75"))
    assert load_thresholds(changed).thresholds.accuracy_min == 0.75
    monkeypatch.setitem(globals(), "THRESHOLDS", changed)
    with pytest.raises(AssertionError, match="thresholds"):
        test_threshold_panels_draw_the_thresholds_of_the_thresholds_file(
            "autoretrain_agent_prediction_accuracy_ratio:mean"
        )
