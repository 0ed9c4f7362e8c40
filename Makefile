# A thin Makefile: the policy (lint, markers, import contracts) lives in pyproject.toml.
# `make demo` and `make test` each create .venv and install when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-unit test-integration test-e2e lint types demo bench clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install driftloop with its dev tools

binaries:  ## install Prometheus and Alertmanager (Debian packages) when missing and possible
	@bash .ci/ensure-binaries

test: install binaries lint types  ## lint, import contracts, types, then every test tier
	$(BIN)/pytest -q tests

test-unit: install  ## fakes only, seconds
	$(BIN)/pytest -q tests/unit

test-integration: install  ## real MLflow sqlite, real apps, real Evidently
	$(BIN)/pytest -q tests/integration

test-e2e: install binaries  ## real processes on loopback with Prometheus and Alertmanager
	$(BIN)/pytest -q tests/e2e

lint: install  ## ruff and import-linter
	$(BIN)/ruff check .
	$(BIN)/lint-imports

types: install  ## mypy on the six packages (settings in pyproject.toml)
	$(BIN)/mypy

demo: install  ## the whole loop on the embedded default (./.driftloop-demo)
	$(BIN)/driftloop demo

bench: install  ## benchmarks side by side with their peers; results in docs/benchmarks.md
	$(BIN)/python -m bench

clean:  ## remove the venv and local state
	rm -rf $(VENV) .driftloop .driftloop-demo .pytest_cache .mypy_cache
