# Everything a newcomer needs: `make demo`, then `make test`. Each target installs what it
# needs from nothing (uv into the system Python if missing, then the locked .venv).
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export MLPLAT_DATA ?= $(CURDIR)/.data

.PHONY: install demo ui test test-fast lint format snapshot bench quotas clean \
	services-up services-demo services-down

$(BIN)/dagster: pyproject.toml uv.lock
	$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: $(BIN)/dagster $(DAGSTER_HOME)/dagster.yaml

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install
	$(BIN)/mlplat demo

ui: install
	$(BIN)/dagster dev -w workspace.yaml

test: install
	$(BIN)/pytest -n 2 --dist loadfile -q

test-fast: install
	$(BIN)/pytest -q -m "not materialize and not slow and not services"

lint: install
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

snapshot: install
	MLPLAT_UPDATE_SNAPSHOT=1 $(BIN)/pytest -q tests/test_graph_snapshot.py

bench: install
	$(BIN)/python -m bench.pit_bench
	$(BIN)/python -m bench.scale_bench
	$(BIN)/python -m bench.promotion_bench
	$(BIN)/python -m bench.budget_bench

quotas: install
	$(BIN)/mlplat quotas write

# The services deployment on this machine (docs/deployment.md): state in .services/.
services-up: install
	$(BIN)/mlplat services up

services-demo: install
	$(BIN)/mlplat services demo

services-down: install
	$(BIN)/mlplat services down

clean:
	rm -rf $(DAGSTER_HOME) .data
