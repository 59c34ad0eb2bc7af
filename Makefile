# aqpipe: `make run` (services up, pipeline on a simulated feed) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_DIR ?= run

.PHONY: run test test-unit test-integration test-faults screenshots bench deps venv servers-up servers-down clean

deps:
	@bash scripts/install-deps.sh

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

run: deps venv
	@bash scripts/run.sh

test: deps venv
	$(PY) -m pytest -q

test-unit: venv
	$(PY) -m pytest -q tests/unit

test-integration: deps venv
	$(PY) -m pytest -q tests/integration

test-faults: deps venv
	$(PY) -m pytest -q -m faults

# Refresh the README's pictures of each page (taken by the browser tests).
screenshots: deps venv
	AQPIPE_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/browser

bench: deps venv
	$(PY) bench/ingest.py
	$(PY) bench/hj212.py
	$(PY) bench/aqi.py
	$(PY) bench/outage.py
	$(PY) bench/alerts.py

servers-up: deps
	$(PYTHON) scripts/servers.py up --dir $(RUN_DIR) mosquitto influxdb

servers-down:
	$(PYTHON) scripts/servers.py down --dir $(RUN_DIR) mosquitto influxdb alertmanager victoriametrics prometheus postgresql

clean: servers-down
	rm -rf $(RUN_DIR) data .pytest_cache
