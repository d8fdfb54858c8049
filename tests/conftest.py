"""Fixtures that start real Kafka, Prometheus and Alertmanager processes on 127.0.0.1.

Policy: a server that cannot start is a test ERROR (never a skip), with a message
that says to run ``scripts/install-test-deps``. Tests that use these fixtures are
marked ``integration`` automatically, so ``-m "not integration"`` deselects them.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from servers import (
    AlertmanagerFactory,
    AlertmanagerServer,
    KafkaServer,
    PrometheusFactory,
    PrometheusServer,
    ServerProcess,
    ServerStartError,
)
from servers.common import ConfiguredHTTPServer
from servers.webhook import FIGURES_DIR_ENV

# Fixtures whose users need a real server (directly or through another fixture).
SERVER_FIXTURES = frozenset(
    {"kafka_server", "kafka_topic", "prometheus_factory", "alertmanager_factory"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # fixturenames is the closure, so indirect use through other fixtures counts.
        # Everything under tests/integration/ needs an installed tool (promtool,
        # amtool, java) even without a server fixture.
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())) or (
            "integration" in item.path.parts
        ):
            item.add_marker(pytest.mark.integration)


S = TypeVar("S", bound=ServerProcess)


@pytest.fixture(scope="session", autouse=True)
def figures_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where tests write reliability figures unless ``make reliability`` asks for the
    tracked files (AUTORETRAIN_RECORD_FIGURES=1; see servers.webhook.figures_file)."""
    path = tmp_path_factory.mktemp("reliability")
    previous = os.environ.get(FIGURES_DIR_ENV)
    os.environ[FIGURES_DIR_ENV] = str(path)
    yield path
    if previous is None:
        os.environ.pop(FIGURES_DIR_ENV, None)
    else:
        os.environ[FIGURES_DIR_ENV] = previous


def _start(server: S) -> S:
    try:
        return server.start()
    except ServerStartError as exc:
        message = str(exc)  # names scripts/install-test-deps and holds the log tail
    # pytest.fail in a fixture reports the test as an ERROR, never a skip. Called
    # outside the except block so the report is not a doubled exception chain.
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    """One KRaft broker for the whole session (a JVM start costs seconds).

    Jars come from $AUTORETRAIN_KAFKA_LIBS or <repo>/.cache/kafka/libs, as in
    scripts/install-kafka. Tests may ``kill()`` and ``restart()`` it; teardown
    stops whatever state it is in. A failed start is cached by pytest for the
    session, so it costs the start timeout once, not per test.
    """
    server = KafkaServer(tmp_path_factory.mktemp("kafka"))
    try:
        yield _start(server)
    finally:
        server.stop()


@pytest.fixture
def kafka_topic(kafka_server: KafkaServer, request: pytest.FixtureRequest) -> str:
    """A fresh topic with 2 partitions, created and with leaders, on the session broker."""
    # Unique per test so tests never see each other's messages; the test name
    # (sanitized to Kafka's legal characters) helps when reading broker logs.
    stem = re.sub(r"[^a-zA-Z0-9._-]", "-", request.node.name)[:60]
    name = f"test-{stem}-{uuid.uuid4().hex[:8]}"
    if not kafka_server.running():
        # A fault test killed it and failed before restarting: heal here so one
        # failure does not turn every later Kafka test into an error.
        _start(kafka_server)
    kafka_server.create_topic(name, partitions=2)
    return name


def _config_file(config: str | os.PathLike[str], workdir: Path, filename: str) -> Path:
    # A path is used as is (its relative rule files keep working); a str is YAML text.
    if isinstance(config, os.PathLike):
        return Path(config)
    if not isinstance(config, str):
        raise TypeError(f"config must be YAML text (str) or a path (os.PathLike), got {config!r}")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / filename
    path.write_text(config)
    return path


H = TypeVar("H", bound=ConfiguredHTTPServer)


def _server_factory(
    tmp_path: Path, server_class: type[H], stem: str
) -> tuple[Callable[..., H], list[H]]:
    """``factory(config, port=None)`` starting ``server_class`` in its own workdir,
    and the list of what it started (stopped by the fixture at teardown)."""
    started: list[H] = []

    def factory(config: str | os.PathLike[str], port: int | None = None) -> H:
        workdir = tmp_path / f"{stem}-{len(started)}"
        path = _config_file(config, workdir, f"{stem}.yml")
        server = server_class(workdir, path, port=port)
        started.append(server)
        return _start(server)

    return factory, started


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[PrometheusFactory]:
    """``prometheus_factory(config, port=None)`` starts a Prometheus and returns it.

    ``config`` is YAML text (str) or a path (``pathlib.Path``). Pass ``port``
    (e.g. from ``servers.free_port()``) when the config must name Prometheus'
    own address. All servers are stopped at teardown.
    """
    factory, started = _server_factory(tmp_path, PrometheusServer, "prometheus")
    yield factory
    for server in reversed(started):
        server.stop()


@pytest.fixture
def alertmanager_factory(tmp_path: Path) -> Iterator[AlertmanagerFactory]:
    """``alertmanager_factory(config, port=None)`` starts an Alertmanager and returns it.

    ``config`` is YAML text (str) or a path (``pathlib.Path``). All servers are
    stopped at teardown.
    """
    factory, started = _server_factory(tmp_path, AlertmanagerServer, "alertmanager")
    yield factory
    for server in reversed(started):
        server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test fails the run: no real-server test may vanish silently."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and exitstatus == 0:
        names = ", ".join(r.nodeid for r in skipped[:10])
        print(f"\nCI: {len(skipped)} test(s) skipped ({names}); skips are failures in CI")
        session.exitstatus = 1
