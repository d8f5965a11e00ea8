# DICOM Lab. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
# uv reads the system CA bundle (where a proxy re-signs PyPI's certificate) and never downloads Python.
export UV_SYSTEM_CERTS := 1
export UV_PYTHON_DOWNLOADS := never
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# One lock, uv.lock, for the venv, the images and CI: the four packages (editable here) and the
# dependency groups of pyproject.toml (test, lab, bench, dev). `--locked` fails when a pyproject.toml
# changed without `make lock`.
.PHONY: venv
venv: $(VENV)/.installed ## Create the Python environment with every package of the lab, from uv.lock

$(VENV)/.installed: uv.lock pyproject.toml common/pyproject.toml pacs/pyproject.toml admin-api/pyproject.toml ct-simulator/pyproject.toml
	test -x $(UV) || { python3 -m venv $(VENV) && $(VENV)/bin/pip install -q "uv==$(UV_VERSION)"; }
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync -q --locked --all-packages --all-groups
	touch $@

.PHONY: lock
lock: ## Refresh uv.lock from the pyproject.toml files (then `make venv` installs it)
	test -x $(UV) || { python3 -m venv $(VENV) && $(VENV)/bin/pip install -q "uv==$(UV_VERSION)"; }
	$(UV) lock

# ruff on everything; mypy --strict (settings in pyproject.toml) on the shared package and the PACS.
LINT_TYPED ?= common/src/dicomlab pacs/src/pacs

.PHONY: lint
lint: venv ## ruff on the whole tree, mypy --strict on common/ and pacs/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy $(LINT_TYPED)

.PHONY: system-deps
system-deps: ## Install the Debian packages the tests use (when root and missing)
	@bash scripts/system-deps.sh

.PHONY: test
test: system-deps venv ## Install what the tests need, then run the whole test suite (both engines)
	$(PY) -m pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-stock

# The policy, store, fault and hostile-peer tests (marker `engines`, tests/pacs/conftest.py) once more
# with the PACS on stock pynetdicom loops: `make test` runs both engines.
.PHONY: test-stock
test-stock: system-deps venv ## The PACS tests marked `engines` again, on stock pynetdicom loops (PACS_FASTPATH=0)
	PACS_FASTPATH=0 $(PY) -m pytest -m engines tests/pacs $(PYTEST_ARGS)

# -- fuzzing: fuzz/run.py against a live PACS, each engine; findings and failed batches in build/fuzz/ -----
FUZZ_CASES ?= 10000
FUZZ_ENGINES ?= socket,loops
FUZZ_ARGS ?=

.PHONY: fuzz
fuzz: venv ## Structural fuzzing of a live PACS (FUZZ_CASES=10000 per engine, FUZZ_ENGINES=socket,loops; stock: FUZZ_ENGINES=stock FUZZ_ARGS=--keep-going)
	$(PY) -m fuzz.run --cases $(FUZZ_CASES) --engines $(FUZZ_ENGINES) $(FUZZ_ARGS)

# -- running the lab: scripts/lab.py does the work, in either runtime ------------------------------
# LAB_RUNTIME=docker|local chooses; unset, Docker where an engine answers, local processes otherwise.
LAB_PY = $(if $(wildcard $(PY)),$(PY),python3)

SLICES ?= 16

.PHONY: up
up: venv ## Start the lab; returns when every service is healthy, prints the web URL and token
	@$(PY) scripts/lab.py up

.PHONY: down
down: ## Stop what `make up` started (either runtime)
	@$(LAB_PY) scripts/lab.py down

.PHONY: logs
logs: ## Follow the aggregated logs of every service
	@$(LAB_PY) scripts/lab.py logs

.PHONY: ps
ps: ## The lab's services and their health
	@$(LAB_PY) scripts/lab.py ps

.PHONY: send
send: ## The CT simulator sends one study (SLICES=16) to the PACS
	@$(LAB_PY) scripts/lab.py send --slices $(SLICES)

.PHONY: reset
reset: ## Stop the lab and remove its stored settings, nodes and studies: the next make up is a first start
	@$(LAB_PY) scripts/lab.py reset

# The misconfiguration catalogue (ct-simulator scenarios), against the lab `make up` started.
# SCENARIOS=name1 name2 runs only those; the JUnit XML goes to SCENARIOS_JUNIT.
SCENARIOS ?=
SCENARIOS_JUNIT ?= build/scenarios/junit.xml

.PHONY: scenarios
scenarios: venv ## Run the misconfiguration catalogue against the running lab: expected vs observed (SCENARIOS=..., JUnit in build/scenarios/)
	@$(VENV)/bin/ct-simulator scenarios run $(SCENARIOS) --junit $(SCENARIOS_JUNIT)

.PHONY: base-images
base-images: ## Build stand-in base images from Debian packages (for networks without an image registry)
	@bash scripts/base-images.sh --print-env

# The Compose end-to-end test needs a Docker engine: when root, `make test` installs and starts one.
test: docker-engine

.PHONY: docker-engine
docker-engine: ## Install Docker from Debian and start dockerd (root), for the Compose runtime
	@bash scripts/docker-engine.sh

# -- crash soak: soak/ (root: it mounts a tmpfs); summary in build/soak/ --------------------------------
SOAK_SECONDS ?= 600
SOAK_ARGS ?=

.PHONY: soak
soak: system-deps venv ## Crash soak (root): 5 modalities under faults for SOAK_SECONDS (600); fails if anything acknowledged is lost (build/soak/)
	$(PY) -m soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

# -- performance: bench/run.py; results in build/bench/ (results.json, results.md, pacs-profile.svg) ----
BENCH_ARGS ?=

.PHONY: bench
bench: venv ## Performance beside DCMTK and Orthanc, one table (BENCH_SLICES=300, BENCH_REPEAT=5, BENCH_ARGS=..., e.g. "--only hostile")
	$(PY) -m bench.run $(BENCH_ARGS)
