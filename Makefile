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

run: install ## run the nightly DAG end to end on the bundled data (airflow dags test, local launcher)
	@bash scripts/run-local.sh

airflow: install ## start Airflow standalone on 127.0.0.1 with the DAG, for the UI and the REST API
	@bash scripts/airflow-standalone.sh

test: install services scanners ## run the whole test suite with the real services it needs
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

# --- scanners for k8s/ and the Dockerfile (tests/k8s) ------------------------------------------
# checkov pins boto3 and packaging older than requirements.lock, so it lives in its own venv,
# installed from its own lock. kubectl (kustomize) and hadolint come with the dev extra in .venv.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: scanners lock-checkov lock-cuda

scanners: $(CHECKOV_STAMP) ## create .venv-checkov from requirements-checkov.lock (no-op when up to date)

$(CHECKOV_STAMP): requirements-checkov.lock | $(STAMP)
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(BIN)/uv pip install --quiet --python $(CHECKOV_VENV)/bin/python -r requirements-checkov.lock
	@touch $@

lock-checkov: install ## re-resolve requirements-checkov.lock for CHECKOV_VERSION (on purpose only)
	echo "checkov==$(CHECKOV_VERSION)" | $(BIN)/uv pip compile - \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --no-header --annotation-style line -o requirements-checkov.lock

lock-cuda: install ## re-resolve requirements-cuda.lock: the image's CUDA wheels for the locked TensorFlow
	set -o pipefail; echo "tensorflow[and-cuda]" | $(BIN)/uv pip compile - \
	  --constraint requirements.lock --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --no-header --annotation-style line | grep -E '^nvidia-' > requirements-cuda.lock.new
	mv requirements-cuda.lock.new requirements-cuda.lock
