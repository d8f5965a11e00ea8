# DICOM Lab. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: venv
venv: $(VENV)/.installed ## Create the Python environment with every package of the lab

$(VENV)/.installed: common/pyproject.toml pacs/pyproject.toml requirements-test.txt $(wildcard ct-simulator/pyproject.toml admin-api/pyproject.toml)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-test.txt -e common -e pacs $(foreach p,ct-simulator admin-api,$(if $(wildcard $(p)/pyproject.toml),-e $(p)))
	touch $@

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
FUZZ_ENGINES ?= socket,loops,stock
FUZZ_ARGS ?=

.PHONY: fuzz
fuzz: venv ## Structural fuzzing of a live PACS (FUZZ_CASES=10000 per engine, FUZZ_ENGINES=socket,loops,stock)
	$(PY) -m fuzz.run --cases $(FUZZ_CASES) --engines $(FUZZ_ENGINES) $(FUZZ_ARGS)

# -- running the lab: scripts/lab.py does the work, in either runtime ------------------------------
# LAB_RUNTIME=docker|local chooses; unset, Docker where an engine answers, local processes otherwise.
LAB_PY = $(if $(wildcard $(PY)),$(PY),python3)

# The local runtime's own requirements, added to the venv.
venv: $(VENV)/.lab-runtime
$(VENV)/.lab-runtime: requirements-lab.txt $(VENV)/.installed
	$(PIP) install -q -r requirements-lab.txt
	touch $@
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
soak: system-deps venv $(VENV)/.bench ## Crash soak (root): 5 modalities under faults for SOAK_SECONDS (600); fails if anything acknowledged is lost (build/soak/)
	$(PY) -m soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

# -- performance: bench/run.py; results in build/bench/ (results.json, results.md, pacs-profile.svg) ----
BENCH_ARGS ?=

$(VENV)/.bench: bench/requirements.txt $(VENV)/.installed
	$(PIP) install -q -r bench/requirements.txt
	touch $@

.PHONY: bench
bench: venv $(VENV)/.bench ## Performance beside DCMTK and Orthanc, one table (BENCH_SLICES=300, BENCH_REPEAT=5, BENCH_ARGS=..., e.g. "--only hostile")
	$(PY) -m bench.run $(BENCH_ARGS)
