"""Where the benchmarks write their results (bench/harness.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import harness


@pytest.fixture
def results_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tracked = tmp_path / "results"
    monkeypatch.setattr(harness, "RESULTS_DIR", tracked)
    monkeypatch.delenv("AUTORETRAIN_BENCH_RESULTS", raising=False)
    return tracked


def test_a_full_run_writes_the_tracked_results(results_dir: Path) -> None:
    path = harness.write_results("loop", {"figure": 1})
    assert path == results_dir / "loop.json"
    assert json.loads(path.read_text())["figure"] == 1


def test_a_quick_run_leaves_the_tracked_results_alone(results_dir: Path) -> None:
    results_dir.mkdir()
    (results_dir / "loop.json").write_text('{"figure": "full run"}\n')
    path = harness.write_results("loop", {"figure": "quick"}, quick=True)
    assert path.parent != results_dir and path.name == "loop.json"
    assert json.loads(path.read_text())["figure"] == "quick"
    assert json.loads((results_dir / "loop.json").read_text()) == {"figure": "full run"}


def test_the_environment_chooses_the_directory_for_any_run(
    results_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = tmp_path / "chosen"
    monkeypatch.setenv("AUTORETRAIN_BENCH_RESULTS", str(chosen))
    assert harness.write_results("a", {}, quick=True) == chosen / "a.json"
    assert harness.write_results("b", {}) == chosen / "b.json"
    assert not results_dir.exists()
