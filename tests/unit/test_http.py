"""``/metrics`` negotiates format and compression as prometheus_client's make_wsgi_app does,
and the fast collector's series equal the library's encoding of the same registry."""

import gzip

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from autoretrain.exporter.http import metrics_app
from autoretrain.exporter.metrics import AgentMetrics

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.fixture
def registry():
    registry = CollectorRegistry()
    m = AgentMetrics(registry)
    m.record_run("planner", "llm", "success", 1.2, 150, 0.02)
    m.record_run("planner", "llm", "timeout", 6.0, 50, 0.01)
    m.record_accuracy("planner", "human", 0.75)
    Counter("other_thing", 'A plain "counter".', registry=registry).inc(7)
    registry.fast = m  # the test's handle on the fast collector
    return registry


def get(app, path="/metrics", **headers):
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""}
    if "query" in headers:
        environ["QUERY_STRING"] = headers.pop("query")
    environ.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
    got = {}

    def start_response(status, response_headers):
        got["status"], got["headers"] = status, dict(response_headers)

    body = b"".join(app(environ, start_response))
    assert int(got["headers"]["Content-Length"]) == len(body)
    return got["status"], got["headers"], body


def samples(families):
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value) for f in families for s in f.samples
    )


def without_created(found):
    """What /metrics serves of a reference exposition: no ``_created`` samples."""
    assert any(name.endswith("_created") for name, _, _ in found)  # the reference has them
    return [s for s in found if not s[0].endswith("_created")]


def test_plain_text_by_default_with_every_series(registry):
    status, headers, body = get(metrics_app(registry, fast=[registry.fast]))
    assert status == "200 OK"
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Content-Encoding" not in headers
    text = body.decode()
    assert samples(text_string_to_metric_families(text)) == without_created(
        samples(text_string_to_metric_families(generate_latest(registry).decode()))
    )
    got = {(n, labels): v for n, labels, v in samples(text_string_to_metric_families(text))}
    labels = (("agent", "planner"), ("agent_type", "llm"), ("status", "timeout"))
    assert got[("autoretrain_agent_runs_total", labels)] == 1
    assert got[("autoretrain_agent_tokens_total", (("agent", "planner"),))] == 200
    assert got[("autoretrain_agent_prediction_accuracy_ratio_count", (("agent", "planner"),))] == 1
    assert got[("other_thing_total", ())] == 7
    assert text.count("# TYPE autoretrain_agent_runs_total counter") == 1  # served once, not twice


def test_gzip_when_the_client_accepts_it(registry):
    app = metrics_app(registry, fast=[registry.fast])
    _, headers, body = get(app, accept_encoding="gzip, deflate")
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == get(app)[2]
    _, headers, _ = get(
        metrics_app(registry, fast=[registry.fast], disable_compression=True),
        accept_encoding="gzip",
    )
    assert "Content-Encoding" not in headers


def test_openmetrics_when_the_client_asks_for_it(registry):
    _, headers, body = get(metrics_app(registry, fast=[registry.fast]), accept=OPENMETRICS)
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    families = {f.name: f for f in parse_openmetrics(text)}  # the strict parser accepts it
    assert families["autoretrain_agent_runs"].type == "counter"
    assert families["autoretrain_agent_run_duration_seconds"].type == "histogram"
    assert samples(families.values()) == without_created(
        samples(parse_openmetrics(generate_openmetrics(registry).decode()))
    )


def test_prometheus_accept_header_gets_openmetrics(registry):
    accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    _, headers, body = get(metrics_app(registry, fast=[registry.fast]), accept=accept)
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_name_filter_serves_only_the_named_series(registry):
    _, _, body = get(
        metrics_app(registry, fast=[registry.fast]),
        query="name[]=autoretrain_agent_tokens_total&name[]=other_thing_total",
    )
    names = {s[0] for s in samples(text_string_to_metric_families(body.decode()))}
    assert names == {"autoretrain_agent_tokens_total", "other_thing_total"}


def test_without_fast_collectors_the_library_serves_everything(registry):
    fast_body = get(metrics_app(registry, fast=[registry.fast]))[2].decode()
    plain_body = get(metrics_app(registry))[2].decode()
    assert samples(text_string_to_metric_families(fast_body)) == samples(
        text_string_to_metric_families(plain_body)
    )


def test_health_ready_and_unknown_paths(registry):
    app = metrics_app(registry, ready=lambda: (False, "Kafka not reachable"))
    assert get(app, "/healthz")[0] == "200 OK"
    status, _, body = get(app, "/readyz")
    assert status == "503 Service Unavailable" and b"Kafka not reachable" in body
    assert get(app, "/nope")[0] == "404 Not Found"


# -- the server's connection bounds (issue 13, item 11) -----------------------------------------
def test_slow_clients_neither_block_health_nor_hold_a_thread_each(registry):
    import threading

    from servers.slow import get_status, half_open_connections

    from autoretrain.exporter.http import ServerLimits, serve

    server, _ = serve(metrics_app(registry), "127.0.0.1", 0, ServerLimits(threads=2))
    try:
        before = threading.active_count()
        with half_open_connections(server.server_port, 200):
            assert get_status(server.server_port, "/healthz") == 200
            # wsgiref's threading server spent a thread per connection (201 here).
            assert threading.active_count() <= before + 2
    finally:
        server.shutdown()


def test_an_idle_half_request_is_closed_after_the_channel_timeout(registry):
    import socket

    from servers.slow import half_open_connections

    from autoretrain.exporter.http import ServerLimits, serve

    server, _ = serve(metrics_app(registry), "127.0.0.1", 0,
                      ServerLimits(channel_timeout_seconds=1))
    try:
        with half_open_connections(server.server_port, 1) as (sock,):
            sock.settimeout(60)  # generous: waitress looks for idle channels every second
            try:
                data = sock.recv(1024)
            except ConnectionResetError:
                data = b""
            assert data == b"" or data.startswith(b"HTTP/1.1 4"), data
    finally:
        server.shutdown()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.server_port), timeout=5).close()


def test_serve_metrics_binds_loopback_unless_told_otherwise():
    from autoretrain.exporter import PerformanceMonitor

    monitor = PerformanceMonitor(registry=CollectorRegistry())
    server = monitor.serve_metrics(port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        monitor.close()


def test_server_limits_are_validated():
    from autoretrain.exporter.http import ServerLimits

    with pytest.raises(ValueError, match="connection_limit must be an integer >= 1"):
        ServerLimits(connection_limit=0)


def test_servers_started_and_stopped_at_once_never_see_each_others_bytes():
    """In-process servers come and go (tests, an orchestrator's restarts): stopping one
    never writes its wake-up byte into another's connection, nor fails on a closed pipe."""
    import threading
    import urllib.request

    from autoretrain.exporter.http import serve

    failures: list[str] = []

    def cycle() -> None:
        for _ in range(25):
            registry = CollectorRegistry()
            Counter("cycles", "Cycles.", registry=registry).inc()
            server, _ = serve(metrics_app(registry), "127.0.0.1", 0)
            try:
                base = f"http://127.0.0.1:{server.server_port}"
                for path in ("/metrics", "/healthz"):
                    with urllib.request.urlopen(base + path, timeout=30) as response:
                        if response.status != 200:
                            failures.append(f"{path}: {response.status}")
                        response.read()
            except Exception as exc:  # every failure is reported, not just the first
                failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                try:
                    server.shutdown()
                except Exception as exc:
                    failures.append(f"shutdown: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=cycle) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
