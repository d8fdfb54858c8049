"""Metric names as the processes export them: one prefix, no ``_created``,
a build-info series, and the README's metrics table in step with them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import autoretrain
from autoretrain.exporter.build_info import register_build_info
from tests.servers.expositions import PROCESS_COLLECTOR_PREFIXES, expositions

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return expositions(tmp_path_factory.mktemp("expositions"))


def _families(text: str) -> dict[str, str]:
    """Family name as a query writes it (counters with ``_total``) -> type."""
    return {
        f.name + ("_total" if f.type == "counter" else ""): f.type
        for f in text_string_to_metric_families(text)
    }


def _readme_table() -> dict[str, set[str]]:
    """Names in the first column of the README's metrics table -> its "from" cell."""
    section = README.read_text(encoding="utf-8").split("\n## Metrics\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 4:
            continue
        sources = {s.strip() for s in cells[1].split(",")}
        for name in re.findall(r"`([a-z_:]+)`", cells[0]):
            table[name] = sources
    return table


_SOURCES = {"library": "lib", "standalone": "exp", "webhook": "wh", "selector": "sel"}


def test_every_series_starts_with_the_application_prefix(served: dict[str, str]) -> None:
    for process, text in served.items():
        names = {
            s.name for f in text_string_to_metric_families(text) for s in f.samples
        }
        assert names, process
        foreign = sorted(
            n for n in names
            if not n.startswith("autoretrain_") and not n.startswith(PROCESS_COLLECTOR_PREFIXES)
        )
        assert foreign == [], f"{process} exports {foreign}"


def test_no_created_series_are_served(served: dict[str, str]) -> None:
    for process, text in served.items():
        assert "_created" not in text, process


def test_every_process_says_its_version(served: dict[str, str]) -> None:
    line = f'autoretrain_build_info{{version="{autoretrain.__version__}"}} 1'
    for process, text in served.items():
        assert re.search("^" + re.escape(line) + r"(\.0)?$", text, re.M), process


def test_build_info_is_registered_once_per_registry() -> None:
    registry = CollectorRegistry()
    assert register_build_info(registry) is not None
    assert register_build_info(registry) is None  # a second component on the same registry
    assert registry.get_sample_value(
        "autoretrain_build_info", {"version": autoretrain.__version__}
    ) == 1


def test_accuracy_histogram_says_its_unit(served: dict[str, str]) -> None:
    families = _families(served["library"])
    assert families["autoretrain_agent_prediction_accuracy_ratio"] == "histogram"
    assert "autoretrain_agent_prediction_accuracy" not in families


def test_readme_metrics_table_lists_exactly_what_the_processes_export(
    served: dict[str, str],
) -> None:
    table = _readme_table()
    exported: dict[str, set[str]] = {}
    for process, text in served.items():
        for name in _families(text):
            if not name.startswith(PROCESS_COLLECTOR_PREFIXES):
                exported.setdefault(name, set()).add(_SOURCES[process])
    assert sorted(set(exported) - set(table)) == [], "exported but not in the README table"
    assert sorted(set(table) - set(exported)) == [], "in the README table but not exported"
    wrong = {n: (table[n], exported[n]) for n in exported if table[n] != exported[n]}
    assert wrong == {}, "README 'from' column (table, exported)"
