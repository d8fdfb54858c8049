"""docker-compose.yml and the Dockerfile: checked by docker-compose itself, then by structure.

``docker-compose config`` (Debian's docker-compose 1.29, installed by
scripts/install-test-deps) validates and normalises the file without an
engine; test_compose_smoke.py runs it. The checks below read that
normalised output, and cross-check the compose file against the
configuration it mounts (Prometheus targets, the Alertmanager token path,
the Grafana datasource), so renaming a service or a port breaks a test
rather than the stack.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
PYTHON_SERVICES = {"exporter": "autoretrain.exporter", "webhook": "autoretrain.webhook",
                   "selector": "autoretrain.selector", "platform": "examples.platform_feed"}
SERVICES = {"kafka", "kafka-init", "prometheus", "alertmanager", "grafana", *PYTHON_SERVICES}
# Services that run until stopped: each needs a health check, except the
# platform, which serves no port (documented in the file).
HEALTH_CHECKED = SERVICES - {"kafka-init", "platform"}


def _docker_compose(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed; run scripts/install-test-deps", pytrace=False)
    return subprocess.run([binary, "-f", str(COMPOSE), *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={"PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The file as docker-compose normalises it (paths absolute, defaults applied)."""
    result = _docker_compose("config")
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    data: dict[str, Any] = yaml.safe_load(result.stdout)
    return data


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_docker_compose_config_passes_quietly() -> None:
    result = _docker_compose("config", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr


def test_every_service_is_there(config: dict[str, Any]) -> None:
    assert set(config["services"]) == SERVICES


def test_images_are_pinned(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        image = service.get("image", "")
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: image {image!r}"
    assert config["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert config["services"]["prometheus"]["image"].startswith("prom/prometheus:")
    assert config["services"]["alertmanager"]["image"].startswith("prom/alertmanager:")
    assert config["services"]["grafana"]["image"].startswith("grafana/grafana:")


def test_python_services_share_one_image_built_here(config: dict[str, Any]) -> None:
    images = set()
    for name, module in PYTHON_SERVICES.items():
        service = config["services"][name]
        assert Path(service["build"]["context"]) == REPO, name
        images.add(service["image"])
        assert service["command"] == ["python", "-m", module], name
        # The module the command runs exists in the tree the image is built from
        # (autoretrain.exporter and .webhook live at the top level: package-dir).
        parts = module.split(".")
        if parts[:2] in (["autoretrain", "exporter"], ["autoretrain", "webhook"]):
            parts = parts[1:]
        path = REPO / Path(*parts)
        assert (path / "__main__.py").is_file() or path.with_suffix(".py").is_file(), module
    assert len(images) == 1


def test_health_checks(config: dict[str, Any]) -> None:
    for name in HEALTH_CHECKED:
        check = config["services"][name].get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
        assert check.get("retries", 0) >= 3, name
    for name in ("exporter", "webhook", "selector"):
        test = " ".join(config["services"][name]["healthcheck"]["test"])
        port = {"exporter": 9108, "webhook": 9109, "selector": 9110}[name]
        assert f"127.0.0.1:{port}/healthz" in test, test


def test_start_order_waits_for_health(config: dict[str, Any]) -> None:
    services = config["services"]

    def needs(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    assert needs("kafka-init") == {"kafka": "service_healthy"}
    for name in ("exporter", "webhook", "selector"):
        assert needs(name) == {"kafka-init": "service_completed_successfully"}, name
    assert needs("platform") == {"kafka-init": "service_completed_successfully",
                                 "webhook": "service_healthy", "exporter": "service_healthy"}
    assert needs("prometheus") == {"alertmanager": "service_healthy"}
    assert needs("grafana") == {"prometheus": "service_healthy"}
    # Every dependency that must be healthy has a health check.
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"


def _named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Named volume -> mount point (bind mounts left out)."""
    out = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if not source.startswith("/"):
            out[source] = target
    return out


def test_named_volumes_for_prometheus_data_and_the_model_store(config: dict[str, Any]) -> None:
    services = config["services"]
    declared = set(config["volumes"])
    assert {"prometheus-data", "models"} <= declared
    assert _named_volumes(services["prometheus"])["prometheus-data"] == "/prometheus"
    store = _named_volumes(services["webhook"])["models"]
    assert services["webhook"]["environment"]["AUTORETRAIN_WEBHOOK_MODEL_STORAGE_PATH"] == store
    # The platform and the selector follow the webhook's model over the model
    # topic (the webhook publishes every saved version), not the store.
    topic = services["webhook"]["environment"]["AUTORETRAIN_WEBHOOK_MODEL_TOPIC"]
    assert services["platform"]["environment"]["AUTORETRAIN_PLATFORM_MODEL_TOPIC"] == topic
    assert services["selector"]["environment"]["AUTORETRAIN_SELECTOR_MODEL_TOPIC"] == topic
    for name in ("platform", "selector"):
        assert "models" not in _named_volumes(services[name]), name
    for service in services.values():
        assert set(_named_volumes(service)) <= declared


def test_every_mounted_repo_path_exists(config: dict[str, Any]) -> None:
    mounts = [(name, spec.split(":")[0]) for name, service in config["services"].items()
              for spec in service.get("volumes", []) if spec.startswith("/")]
    assert mounts
    for name, source in mounts:
        path = Path(source)
        assert path.is_relative_to(REPO), f"{name} mounts {source}, outside the repository"
        assert path.exists(), f"{name} mounts {source}, which does not exist"
    for name, secret in config["secrets"].items():
        assert Path(secret["file"]).is_file(), f"secret {name}: {secret['file']} missing"


def _flags(command: list[str]) -> dict[str, str]:
    """``--name=value`` (or a bare ``--name``, value "") of a command line."""
    return {name: value for name, _, value in (arg.partition("=") for arg in command)}


def test_prometheus_flags_survive_the_command_override(config: dict[str, Any]) -> None:
    prom = config["services"]["prometheus"]
    flags = _flags(prom["command"])
    mounted = {target.removesuffix(":ro"): source for source, target in
               (v.split(":", 1) for v in prom["volumes"])}
    assert mounted[flags["--config.file"]] == str(REPO / "prometheus" / "prometheus.yml")
    assert _named_volumes(prom)["prometheus-data"] == flags["--storage.tsdb.path"]
    # Rule files resolve relative to the config file: the rules directory is next to it.
    prometheus_yml = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    config_dir = Path(flags["--config.file"]).parent
    for rule_file in prometheus_yml["rule_files"]:
        in_container = config_dir / rule_file
        source = mounted[str(in_container.parent)]
        assert (Path(source) / in_container.name).is_file(), rule_file

    am = config["services"]["alertmanager"]
    am_flags = _flags(am["command"])
    am_mounts = {target.removesuffix(":ro"): source for source, target in
                 (v.split(":", 1) for v in am["volumes"])}
    assert am_mounts[am_flags["--config.file"]] == str(REPO / "prometheus" / "alertmanager.yml")
    assert "--storage.path" in am_flags


def test_the_webhook_token_comes_from_a_file(config: dict[str, Any], raw: dict[str, Any]) -> None:
    webhook = config["services"]["webhook"]
    env = webhook["environment"]
    assert "AUTORETRAIN_WEBHOOK_TOKEN" not in env  # never an inline value
    assert env["AUTORETRAIN_WEBHOOK_TOKEN_FILE"] == "/run/secrets/webhook-token"
    assert webhook["secrets"] == [{"source": "webhook-token"}] or webhook["secrets"] == [
        "webhook-token"]
    # Alertmanager gets the same secret where alertmanager.yml reads it.
    am_yml = yaml.safe_load((REPO / "prometheus" / "alertmanager.yml").read_text())
    hooks = [h for r in am_yml["receivers"] for h in r.get("webhook_configs", [])]
    (expected,) = {h["http_config"]["authorization"]["credentials_file"] for h in hooks}
    assert {"source": "webhook-token", "target": expected} in config["services"][
        "alertmanager"]["secrets"]
    # No service passes a token inline.
    for name, service in config["services"].items():
        for key, value in (service.get("environment") or {}).items():
            assert not (key.endswith("TOKEN") and value), f"{name}: {key} is inline"
    # The default token file is a valid webhook token, overridable by the variable.
    assert "${AUTORETRAIN_WEBHOOK_TOKEN_FILE:-" in raw["secrets"]["webhook-token"]["file"]
    token = Path(config["secrets"]["webhook-token"]["file"]).read_text().rstrip("\r\n")
    assert re.fullmatch(r"[\x21-\x7e]{16,4096}", token)


def test_configs_name_the_compose_services(config: dict[str, Any]) -> None:
    """Targets in the mounted configs are service:port pairs that exist and are exposed."""
    services = config["services"]
    container_ports = {"exporter": 9108, "webhook": 9109, "selector": 9110, "alertmanager": 9093,
                       "prometheus": 9090, "grafana": 3000}
    for name, port in container_ports.items():
        published = {str(p).split(":")[-1].split("/")[0] for p in services[name]["ports"]}
        assert str(port) in published, f"{name} should publish {port}"
    prom = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    targets += [t for am in prom["alerting"]["alertmanagers"] for sc in am["static_configs"]
                for t in sc["targets"]]
    for target in targets:
        host, port = target.rsplit(":", 1)
        if host == "localhost":  # Prometheus itself
            assert int(port) == container_ports["prometheus"]
            continue
        assert container_ports.get(host) == int(port), f"prometheus.yml target {target}"
    am_yml = yaml.safe_load((REPO / "prometheus" / "alertmanager.yml").read_text())
    for receiver in am_yml["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            url = urlsplit(hook["url"])
            assert (url.hostname, url.port) == ("webhook", container_ports["webhook"])
    datasources = yaml.safe_load(
        (REPO / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    for ds in datasources["datasources"]:
        url = urlsplit(ds["url"])
        assert (url.hostname, url.port) == ("prometheus", container_ports["prometheus"])
    # Kafka: the containers use the advertised in-network listener.
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "PLAINTEXT://kafka:9092" in advertised
    for name, var in (("exporter", "AUTORETRAIN_EXPORTER_KAFKA_SERVERS"),
                      ("webhook", "AUTORETRAIN_WEBHOOK_KAFKA_SERVERS"),
                      ("selector", "AUTORETRAIN_SELECTOR_KAFKA_SERVERS"),
                      ("platform", "AUTORETRAIN_PLATFORM_KAFKA_SERVERS")):
        assert services[name]["environment"][var] == "kafka:9092", name


def test_grafana_is_provisioned_with_an_anonymous_viewer(config: dict[str, Any]) -> None:
    grafana = config["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = {target.removesuffix(":ro"): source for source, target in
              (v.split(":", 1) for v in grafana["volumes"])}
    assert mounts["/etc/grafana/provisioning"] == str(REPO / "grafana" / "provisioning")
    provider = yaml.safe_load(
        (REPO / "grafana" / "provisioning" / "dashboards" / "autoretrain.yml").read_text())
    (path,) = {p["options"]["path"] for p in provider["providers"]}
    assert mounts[path] == str(REPO / "grafana" / "dashboards")
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (Path(mounts[str(Path(home).parent)]) / Path(home).name).is_file()


def test_published_ports_are_local_and_documented(config: dict[str, Any]) -> None:
    header = "\n".join(line for line in COMPOSE.read_text().splitlines()
                       if line.startswith("#"))
    for name, service in config["services"].items():
        for spec in service.get("ports", []):
            host_ip, host_port = str(spec).split(":")[:2]
            assert host_ip == "127.0.0.1", f"{name} publishes {spec} beyond this machine"
            assert re.search(rf"^#\s+{host_port}\s", header, re.M), (
                f"{name}: port {host_port} is not in the header comment")


def test_dockerfile_builds_one_slim_non_root_image() -> None:
    text = (REPO / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines()
                    if line.strip() and not line.startswith((" ", "#"))]
    froms = [rest for op, rest in instructions if op == "FROM"]
    assert froms == ["python:3.11-slim"]
    users = [rest.strip() for op, rest in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # What the image copies must exist and must not be excluded by .dockerignore.
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for op, rest in instructions:
        if op == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert f"!{source.rstrip('/')}" in {i.rstrip('/') for i in ignore}, (
                    f"{source} is copied but not let through .dockerignore")
    assert ".cache" not in text
