# Every target honours MLOPS_DATA_ROOT, MLFLOW_TRACKING_URI, AIRFLOW_HOME and MLOPS_SOURCE_URL from the
# environment (defaults: git-ignored folders in this repo; see scripts/env.sh).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= $(CURDIR)/.venv
ENV := export MLOPS_VENV=$(VENV); . scripts/env.sh &&
STAMP := $(VENV)/.lock-installed

.PHONY: help setup lock init seed demo up down test test-integration lint format bench clean reliability security

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

setup: $(STAMP) ## create/refresh the venv from requirements.lock (idempotent)

$(STAMP): requirements.lock
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --no-deps -r requirements.lock
	$(VENV)/bin/pip check
	@touch $(STAMP)

lock: ## regenerate requirements.lock from requirements.txt (fresh throw-away venv)
	bash scripts/lock.sh

init: setup ## migrate the Airflow metadata DB and create the data folders
	@$(ENV) bash scripts/init.sh

seed: setup ## (re)seed source tables from each spec's source.seed (DATASET=<name> for one; MLOPS_SOURCE_URL)
	@$(ENV) python -m include.mlops seed-source $(if $(DATASET),--dataset $(DATASET))

demo: init ## set up, seed, replay a dataset end to end through Airflow, print a summary (DATASET=flights)
	@$(ENV) MLOPS_DEMO_DATASET=$(or $(DATASET),flights) python scripts/demo.py

up: init ## Airflow (UI 127.0.0.1:8080) + MLflow UI (:5000), replaying DATASET (flights) one day per 2 min; Ctrl-C stops
	@$(ENV) MLOPS_UP_DATASETS=$${MLOPS_UP_DATASETS:-$(or $(DATASET),flights)} bash scripts/up.sh

down: ## stop the stack make up runs (from another shell)
	@$(ENV) bash scripts/down.sh

.PHONY: serve
serve: setup ## online scoring of the champion on 127.0.0.1:5001 (DATASET=flights, PORT=5001; README "Online serving")
	@$(ENV) python -m include.mlops.serving --dataset $(or $(DATASET),flights) --port $(or $(PORT),5001)

test: setup ## run the test suite (unit, dags, e2e); needs no services
	@$(ENV) bash scripts/test.sh -m "not integration"

test-integration: setup ## production topology natively: Postgres + Redis + 2 Celery workers + MLflow server (~5 min)
	@$(ENV) bash scripts/test.sh tests/integration -m integration

reliability: setup ## whole reliability suite + slow part on the native topology: outage, SIGKILLs, backfill of MLOPS_BACKFILL_DAYS (365; ~80 min)
	@$(ENV) bash scripts/test.sh tests/reliability -m "reliability or slow_reliability"

security: setup ## bandit + secret scan (both in CI) + pip-audit where its service answers (docs/security.md)
	@$(ENV) bandit -q -c pyproject.toml -r include dags plugins scripts -b docs/bandit-baseline.json \
		&& python scripts/secret_scan.py && python scripts/pip_audit.py

lint: setup ## ruff lint + format check
	@$(ENV) ruff check . && ruff format --check .

format: setup ## apply ruff fixes and formatting
	@$(ENV) ruff check --fix . && ruff format .

bench: setup ## benchmarks, each figure a ratio against a baseline measured in the same run (bench/README.md)
	@$(ENV) python -m bench

clean: ## remove local state (.data, .airflow); keeps the venv
	rm -rf .data .airflow
