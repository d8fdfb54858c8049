"""The versions README's "Tested versions" table states are the ones
docker-compose.yml runs, pinned to exact releases; the Prometheus and
Alertmanager files stay within what the tested (2.42 / 0.25) and the
composed (3.x / 0.35) versions both accept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.servers.expositions import content_types

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
README = (REPO / "README.md").read_text(encoding="utf-8")
_RELEASE = re.compile(r"^v?\d+\.\d+\.\d+$")
_THIRD_PARTY = {"Prometheus": "prometheus", "Alertmanager": "alertmanager",
                "Grafana": "grafana", "Kafka": "kafka"}


def _table() -> dict[str, tuple[str, str]]:
    section = README.split("\n### Tested versions\n", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in _THIRD_PARTY:
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_readme_states_what_compose_runs() -> None:
    table = _table()
    assert set(table) == set(_THIRD_PARTY)
    for component, service in _THIRD_PARTY.items():
        image = COMPOSE["services"][service]["image"]
        assert f"`{image}`" in table[component][1], (component, image, table[component])


@pytest.mark.parametrize("service", sorted(_THIRD_PARTY.values()))
def test_compose_pins_exact_releases(service: str) -> None:
    image = COMPOSE["services"][service]["image"]
    name, _, tag = image.partition("@")[0].rpartition(":")
    assert name and _RELEASE.match(tag), f"{service}: {image!r} is not pinned to a release"


def test_readme_states_the_tested_versions_of_the_tools_installed_here() -> None:
    table = _table()
    assert table["Prometheus"][0].startswith("2.42.0")
    assert table["Alertmanager"][0].startswith("0.25.0")


def test_prometheus_config_uses_nothing_prometheus_3_removed() -> None:
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    for am in config["alerting"]["alertmanagers"]:
        assert am.get("api_version", "v2") == "v2"  # v1 is gone in Prometheus 3
    for job in config["scrape_configs"]:
        # renamed always_scrape_classic_histograms in 3.0
        assert "scrape_classic_histograms" not in job
    rules = (REPO / "prometheus" / "rules" / "autoretrain.rules.yml").read_text(encoding="utf-8")
    assert "holt_winters" not in rules  # renamed in 3.0
    assert 'le="' not in rules  # le values are normalised to floats in 3.0


def test_every_metrics_endpoint_sends_a_content_type_prometheus_3_accepts(
    tmp_path: Path,
) -> None:
    accepted = ("text/plain; version=0.0.4", "application/openmetrics-text")
    for process, content_type in content_types(tmp_path).items():
        assert content_type.startswith(accepted), (process, content_type)
