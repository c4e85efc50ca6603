# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CONFIG ?= config/model_config.json
TEST_WORKERS ?= auto

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export GIT_PYTHON_REFRESH ?= quiet
export MLFLOW_DISABLE_TELEMETRY ?= true
# The library's warnings in the run's logs in the UI, not only on the console; those it
# logs outside any run stay on the console (see flows/library_logs.py).
export PREFECT_LOGGING_EXTRA_LOGGERS ?= modelferry
export PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW ?= ignore

.PHONY: demo test services lint typecheck install install-dev serve server blocks clean

# Core install: what the flows need. Versions come from constraints.txt (tested together).
$(VENV)/.core: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[orchestrator]'
	touch $@

# Core plus the Azure SDKs (their backends are tested at the SDK boundary) and the test
# and lint tools.
$(VENV)/.dev: $(VENV)/.core
	$(PY) -m pip install --quiet -c constraints.txt -e '.[orchestrator,edge,azure,dev]'
	touch $@

install: $(VENV)/.core
install-dev: $(VENV)/.dev

## Run the nightly retrain-and-deliver job once, end to end, on the embedded default.
demo: $(VENV)/.core
	$(PY) -m flows.retrain_and_deliver --config $(CONFIG) --rollout-step-seconds 2 --demo-traffic

## Lint, type-check and run the whole test suite (unit, integration, e2e).
# `services` comes first: a machine without what the tests need stops before the install.
# The unit and fuzz layers run on every core (pytest-xdist; TEST_WORKERS=0 runs them in
# this process); the integration and e2e layers share one Prefect test server and service
# ports, so they run in one process.
test: services $(VENV)/.dev lint typecheck
	$(PY) -m pytest -n $(TEST_WORKERS) tests/unit tests/fuzz
	$(PY) -m pytest tests/integration tests/e2e

## Check what the tests talk to (PostgreSQL, Chromium, Mosquitto, NATS, Node.js, Azurite);
## as root install or start what is missing, otherwise name the commands that would.
services:
	$(PYTHON) scripts/test_services.py

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

## Serve the deployments in prefect.yaml from this machine (needs PREFECT_API_URL).
serve: $(VENV)/.core
	$(PY) -m deployments.serve

## Start the team servers: Prefect (UI on :4200) and MLflow tracking (:5000); Ctrl-C stops both.
server: $(VENV)/.core
	$(PY) -m deployments.servers

## Register modelferry's block types with the Prefect server at PREFECT_API_URL.
blocks: $(VENV)/.dev
	$(PY) -m blocks

## Remove local state, including cached task results (also MODELFERRY_TASK_RESULTS if set).
clean:
	rm -rf .modelferry .pytest_cache .mypy_cache .ruff_cache
	$(if $(MODELFERRY_TASK_RESULTS),rm -rf "$(MODELFERRY_TASK_RESULTS)")
