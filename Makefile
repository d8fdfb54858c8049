# The README's two commands are `make demo` and `make test`; each sets up
# what it needs on a fresh machine. `.ci/run` calls `make test`.
# Everything runs in the project's own virtual environment (scripts/venv
# makes it): Debian's python3 refuses pip installs into itself (PEP 668).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
export VENV

.PHONY: demo test install install-test lint unit integration bench rules stack-demo reliability compose-smoke help

help:
	@echo "make demo   - run the closed-loop demo on the embedded bus (no servers needed)"
	@echo "make test   - install Prometheus, Alertmanager, Kafka jars and Python deps, lint, run every test"
	@echo "make stack-demo - the same loop against real Kafka, Prometheus, Alertmanager, exporter and webhook processes"
	@echo "make compose-smoke - docker compose up of docker-compose.yml on a local Docker engine, the loop checked (part of make test)"
	@echo "make lint   - ruff, mypy, and a check that the generated Prometheus rules are current"
	@echo "make rules  - regenerate prometheus/rules/ from prometheus/thresholds.yml"
	@echo "make bench  - benchmarks (bench/), figures for BENCHMARKS.md"
	@echo "make reliability - fault and load tests that rewrite reliability/*.json (RELIABILITY.md)"

install:
	scripts/venv

install-test:
	scripts/install-test-deps
	scripts/venv dev

demo: install
	$(PYTHON) examples/autonomous_retraining_example.py $(ARGS)

lint:
	$(PYTHON) -m ruff check .
	PYTHON=$(PYTHON) scripts/typecheck
	$(PYTHON) -m autoretrain.exporter.rules --check

rules:
	$(PYTHON) -m autoretrain.exporter.rules

test: install-test lint
	$(PYTHON) -m pytest $(PYTEST_ARGS)

unit:
	$(PYTHON) -m pytest -m "not integration" $(PYTEST_ARGS)

integration:
	$(PYTHON) -m pytest -m integration $(PYTEST_ARGS)

# Only the compose smoke test (tests/integration/test_compose_smoke.py). `make
# test` runs it as one of its tests, so it is not a prerequisite of `test`
# (that would run it twice).
compose-smoke: install-test
	PYTHON=$(PYTHON) scripts/compose-smoke $(PYTEST_ARGS)

stack-demo: install-test
	PYTHON=$(PYTHON) scripts/stack-demo $(ARGS)

bench: install
	$(PYTHON) -m bench $(ARGS)

# The only run that rewrites reliability/*.json: every other test run writes
# its figures to pytest's temporary directory.
RELIABILITY_TESTS := tests/integration/test_faults_kafka.py tests/integration/test_faults_updater.py \
	tests/integration/test_faults_webhook.py tests/integration/test_fuzz_http.py \
	tests/integration/test_load_alerts.py tests/integration/test_load_exporter.py

reliability: install-test
	AUTORETRAIN_RECORD_FIGURES=1 $(PYTHON) -m pytest $(RELIABILITY_TESTS) $(PYTEST_ARGS)
