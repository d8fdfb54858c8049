"""GET /api/model/ranking on the webhook app and on the selector app; the selector's ops routes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from servers.models import teach

from autoretrain.webhook import RealTimeModelUpdater, create_app
from autoretrain.webhook.app import EXTENSION
from autoretrain.webhook.serving import ModelFollower
from autoretrain.webhook.serving.selector import (
    EXTENSION as SELECTOR,
)
from autoretrain.webhook.serving.selector import (
    create_selector_app,
    load_selector_config,
)

TOKEN = "test-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"
URL = "/api/model/ranking"


@pytest.fixture
def trainer(tmp_path: Path) -> Iterator[RealTimeModelUpdater]:
    updater = RealTimeModelUpdater(model_storage_path=str(tmp_path / "models"), seed=3)
    teach(updater, "a1")
    updater.save()
    yield updater
    updater.stop()


@pytest.fixture
def make_webhook(tmp_path: Path, trainer: RealTimeModelUpdater
                 ) -> Iterator[Callable[..., tuple[FlaskClient, Any]]]:
    apps: list[Flask] = []

    def make(**config: Any) -> tuple[FlaskClient, Any]:
        # One webhook per store at a time (a second one would be a standby).
        for previous in apps:
            previous.extensions[EXTENSION].close()
        app = create_app({"token": TOKEN, "ledger_path": str(tmp_path / f"l{len(apps)}.db"),
                          **config}, updater=trainer)
        apps.append(app)
        return app.test_client(), trainer

    yield make
    for app in apps:
        app.extensions[EXTENSION].close()


@pytest.fixture
def make_selector(trainer: RealTimeModelUpdater) -> Callable[..., tuple[FlaskClient, Any]]:
    def make(**config: Any) -> tuple[FlaskClient, Any]:
        follower = ModelFollower(trainer.model_storage_path, seed=3)
        follower.refresh()
        app = create_selector_app({"model_storage_path": trainer.model_storage_path, **config},
                                  follower=follower)
        return app.test_client(), follower

    return make


@pytest.fixture(params=["webhook", "selector"])
def make_client(request: pytest.FixtureRequest) -> Callable[..., tuple[FlaskClient, Any]]:
    maker: Callable[..., tuple[FlaskClient, Any]] = request.getfixturevalue(
        f"make_{request.param}")
    return maker


def test_results_equal_predict_best_agent(make_client: Callable[..., Any],
                                          trainer: RealTimeModelUpdater) -> None:
    client, served = make_client()
    for task in ("t0", "t1"):
        for k in (1, 2, 3, 100):
            response = client.get(f"{URL}?task_type={task}&top_k={k}")
            assert response.status_code == 200, response.get_json()
            expected = served.predict_best_agent(task, top_k=k)
            body = response.get_json()
            # The ranking's (agent, score) pairs are predict_best_agent's; the
            # estimates and the objective come with them (issue 18).
            assert {k: v for k, v in body.items() if k != "objective"} | {
                "ranking": [{"agent": e["agent"], "score": e["score"]}
                            for e in body["ranking"]]} == {
                "model_version": trainer.version, "task_type": task,
                "ranking": [{"agent": a, "score": s} for a, s in expected]}
            assert body["objective"]["mode"] == "quality"
            assert all(set(e) == {"agent", "score", "quality", "cost", "latency_seconds"}
                       for e in body["ranking"])
    body = client.get(f"{URL}?task_type=t0").get_json()
    assert len(body["ranking"]) == 3 and body["ranking"][0]["agent"] == "a1"


def test_explore_samples(make_client: Callable[..., Any]) -> None:
    client, _ = make_client()
    rankings = [client.get(f"{URL}?task_type=t0&explore=true").get_json()["ranking"]
                for _ in range(5)]
    scores = {tuple(r["score"] for r in ranking) for ranking in rankings}
    assert len(scores) > 1  # Thompson draws differ from call to call
    for value in ("false", "0", "FALSE"):
        assert client.get(f"{URL}?task_type=t0&explore={value}").status_code == 200


@pytest.mark.parametrize(("query", "status", "error", "message"), [
    ("", 400, "invalid_request", "task_type is required"),
    ("?task_type=", 400, "invalid_request", "task_type is required"),
    ("?top_k=2", 400, "invalid_request", "task_type is required"),
    ("?task_type=nope", 404, "unknown_task_type", "does not know task type 'nope'"),
    ("?task_type=t0&top_k=0", 400, "invalid_request", "top_k must be an integer in [1, 100]"),
    ("?task_type=t0&top_k=101", 400, "invalid_request", "top_k must be an integer in [1, 100]"),
    ("?task_type=t0&top_k=99999999999999999999", 400, "invalid_request", "top_k must be"),
    ("?task_type=t0&top_k=three", 400, "invalid_request", "got 'three'"),
    ("?task_type=t0&top_k=-1", 400, "invalid_request", "top_k must be"),
    ("?task_type=t0&top_k=1.5", 400, "invalid_request", "top_k must be"),
    ("?task_type=t0&explore=yes", 400, "invalid_request", "explore must be true or false"),
    ("?task_type=t0&explore=", 400, "invalid_request", "explore must be true or false"),
    ("?task_type=t0&task_type=t1", 400, "invalid_request", "task_type must be given at most"),
    ("?task_type=t0&context=x", 400, "invalid_request", "unknown query parameter 'context'"),
    ("?task_type=%07bell", 400, "invalid_request", "printable"),
])
def test_bad_parameters(make_client: Callable[..., Any], query: str, status: int, error: str,
                        message: str) -> None:
    client, _ = make_client()
    response = client.get(URL + query)
    assert response.status_code == status
    body = response.get_json()
    assert body["error"] == error
    assert message in body["message"]


@pytest.mark.parametrize(("header", "status"), [
    (None, 401), ("Bearer wrong-token-0000000000", 401), (f"Basic {READ}", 401),
    (f"Bearer {TOKEN}", 401), (f"Bearer {READ}", 200), (f"bearer {READ}", 200),
])
def test_read_token(make_client: Callable[..., Any], header: str | None, status: int) -> None:
    client, _ = make_client(read_token=READ)
    headers = {"Authorization": header} if header else {}
    response = client.get(f"{URL}?task_type=t0", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.get_json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # Without a read token the ranking is open.
    open_client, _ = make_client()
    assert open_client.get(f"{URL}?task_type=t0").status_code == 200


def test_ranking_metrics(make_client: Callable[..., Any]) -> None:
    client, _ = make_client()
    client.get(f"{URL}?task_type=t0")
    client.get(f"{URL}?task_type=t0&top_k=0")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'autoretrain_ranking_requests_total{result="ok"} 1.0' in text
    assert 'autoretrain_ranking_requests_total{result="invalid_request"} 1.0' in text


# -- the selector's own routes -------------------------------------------------------------------
def test_selector_not_ready_until_a_model_then_ready(tmp_path: Path,
                                                     trainer: RealTimeModelUpdater) -> None:
    store = tmp_path / "later"
    registry = CollectorRegistry()
    follower = ModelFollower(store, registry=registry)
    client = create_selector_app({"model_storage_path": str(store)}, follower=follower,
                                 registry=registry).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["reason"] == "no model has been loaded yet"
    response = client.get(f"{URL}?task_type=t0")
    assert response.status_code == 503 and response.get_json()["error"] == "no_model"
    assert client.get("/healthz").status_code == 200
    store.mkdir()
    for name in trainer.store.path.iterdir():
        (store / name.name).write_bytes(name.read_bytes())
    assert follower.refresh()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"]["model"] == f"loaded (version {trainer.version})"
    assert client.get(f"{URL}?task_type=t0").status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f"autoretrain_follower_model_version {float(trainer.version)}" in metrics


def test_selector_errors_are_json(make_selector: Callable[..., Any]) -> None:
    client, _ = make_selector()
    response = client.get("/nowhere")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    response = client.post(URL)
    assert response.status_code == 405 and "GET" in response.headers["Allow"]


@pytest.mark.parametrize("path", [f"/{URL}", "//metrics", "//readyz"])
def test_selector_refuses_a_leading_double_slash(make_selector: Callable[..., Any],
                                                 path: str) -> None:
    # The fast path and the router would both serve //x as /x (issue 13, item 9).
    client, _ = make_selector()
    response = client.get("/x", query_string={"task_type": "code"},
                          environ_overrides={"PATH_INFO": path})
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


def _selector_document() -> dict[str, Any]:
    path = Path(__file__).parents[2] / "webhook" / "serving" / "openapi-selector.yaml"
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def test_selector_openapi_is_valid_served_and_complete(make_selector: Callable[..., Any]) -> None:
    from openapi_spec_validator import validate

    document = _selector_document()
    validate(document)
    client, _ = make_selector()
    assert yaml.safe_load(client.get("/openapi.yaml").get_data(as_text=True)) == document
    assert client.get("/openapi.json").get_json() == document
    app = client.application
    implemented = {(rule.rule, method.lower()) for rule in app.url_map.iter_rules()
                   for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert implemented == documented


@pytest.mark.parametrize(("environ", "message"), [
    ({}, "set exactly one of"),
    ({"AUTORETRAIN_SELECTOR_KAFKA_SERVERS": "k:9092",
      "AUTORETRAIN_SELECTOR_MODEL_STORAGE_PATH": "/m"}, "set exactly one of"),
    ({"AUTORETRAIN_SELECTOR_KAFKA_SERVERS": "k:9092", "AUTORETRAIN_SELECTOR_PORT": "x"},
     "port (from AUTORETRAIN_SELECTOR_PORT) must be an integer"),
    ({"AUTORETRAIN_SELECTOR_KAFKA_SERVERS": "k:9092", "AUTORETRAIN_SELECTOR_READ_TOKEN": "short"},
     "read_token must be 16 to 4096"),
    ({"AUTORETRAIN_SELECTOR_KAFKA_SERVERS": "k:9092", "AUTORETRAIN_SELECTOR_TOKEN": "x"},
     "unknown environment variable AUTORETRAIN_SELECTOR_TOKEN"),
])
def test_selector_config_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_selector_config(None, environ)


def test_selector_config_reads_the_token_file(tmp_path: Path) -> None:
    path = tmp_path / "read-token"
    path.write_text(READ + "\n")
    config = load_selector_config({"read_token_file": str(path)},
                                  {"AUTORETRAIN_SELECTOR_KAFKA_SERVERS": "k:9092"})
    assert config.read_token == READ and READ not in repr(config)


def test_selector_owns_a_follower_it_builds(tmp_path: Path, trainer: RealTimeModelUpdater) -> None:
    app = create_selector_app({"model_storage_path": trainer.model_storage_path,
                               "poll_interval_seconds": 0.02})
    follower = app.extensions[SELECTOR]
    try:
        assert follower.running
    finally:
        follower.stop()
