"""``promtool check metrics`` on the ``/metrics`` of every process (Prometheus's
own linter: counter suffixes, base units, help text, name characters)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.servers.expositions import expositions


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return expositions(tmp_path_factory.mktemp("lint"))


@pytest.mark.parametrize("process", ["library", "standalone", "webhook", "selector"])
def test_promtool_check_metrics_passes(served: dict[str, str], process: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (scripts/install-test-deps)"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=served[process], capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    # promtool writes lint problems to stdout even when it exits 0 in some versions.
    assert result.stdout.strip() == "", result.stdout
