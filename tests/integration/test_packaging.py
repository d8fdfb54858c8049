"""The wheel as a user installs it: one ``autoretrain`` import root, nothing bare."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _declared() -> tuple[set[str], dict[str, str]]:
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(tool["packages"]), tool["package-dir"]


def test_every_package_folder_is_declared() -> None:
    packages, package_dir = _declared()
    found = set()
    for root, folder in package_dir.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([root, *rel.parts]))
    assert found == packages


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools builds in the source folder (build/, *.egg-info): build a copy,
    # so the checkout is left as it was.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    for folder in ("autoretrain", "exporter", "webhook"):
        shutil.copytree(REPO / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(out), str(source)], check=True, timeout=300)
    (built,) = out.glob("autoretrain-*.whl")
    return built


def test_wheel_has_one_import_root(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"autoretrain"}
    for needed in ("autoretrain/__init__.py", "autoretrain/exporter/monitor.py",
                   "autoretrain/webhook/updater/model.py", "autoretrain/webhook/openapi.yaml",
                   "autoretrain/py.typed", "autoretrain/selector.py",
                   "autoretrain/webhook/serving/follower.py",
                   "autoretrain/webhook/serving/openapi-selector.yaml"):
        assert needed in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "autoretrain-webhook = autoretrain.webhook.__main__:main" in text
    assert "autoretrain-exporter = autoretrain.exporter.__main__:main" in text
    assert "autoretrain-selector = autoretrain.selector:main" in text


def test_installed_wheel_imports_from_autoretrain_only(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # The installed layout alone on the path, run from an empty directory, as
    # a user's project would: the source checkout must play no part.
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    check = (
        "import autoretrain, importlib.util as u\n"
        "from autoretrain import PerformanceMonitor, RealTimeModelUpdater, UpdateStrategy\n"
        "from autoretrain import create_app\n"
        f"assert autoretrain.__file__.startswith({str(site)!r}), autoretrain.__file__\n"
        "import autoretrain.exporter as e\n"
        f"assert e.__file__.startswith({str(site)!r}), e.__file__\n"
        "assert u.find_spec('exporter') is None and u.find_spec('webhook') is None\n"
        "from autoretrain import create_app\n"
        "app = create_app({'model_storage_path': 'models', 'ledger_path': 'l.sqlite3',"
        " 'token': 'secret-token-for-the-packaging-test'},"
        " start=False)\n"
        "assert b'openapi' in app.test_client().get('/openapi.yaml').data\n"
        "from autoretrain.webhook.__main__ import main\n"
        "main(['--help'])\n"
    )
    result = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
