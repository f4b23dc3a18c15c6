# plateau-lstm: every target bootstraps what it needs, so a fresh checkout needs only `make run`
# and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed

.PHONY: help install run test bench lint airflow services clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with the exact versions of requirements.lock (no-op when up to date)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

services: ## install the Debian services the tests need (Prometheus, promtool, Pushgateway)
	@bash scripts/install-services.sh

run: install ## run the nightly job end to end on the bundled data (local launcher, file:// artifacts)
	@bash scripts/run-local.sh

test: install services ## run the whole test suite with the real services it needs
	$(BIN)/python -m pytest

bench: install ## run the benchmarks and print their ratios
	@bash bench/run_all.sh

lint: install ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lock: ## re-resolve requirements.lock from pyproject.toml (on purpose only)
	$(BIN)/uv pip compile pyproject.toml --extra train --extra airflow --extra dev \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --no-header --annotation-style line -o requirements.lock

clean: ## remove local artifacts (keeps .venv)
	rm -rf artifacts .airflow .pytest_cache
