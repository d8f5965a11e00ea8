# DICOM Lab. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

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
test: system-deps venv ## Install what the tests need, then run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)
