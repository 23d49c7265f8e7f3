# encoder-serve: every task is one target. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SERVE_VENV ?= .venv-serve
PORT ?= 8000
MODEL_DIR ?= models/emotion
DATA ?= ../shared/data/emotion
PYTEST_ARGS ?=

.PHONY: help system-deps setup setup-serve test test-all serve model pareto bench reliability image deploy-check audit lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[serve,train,dev]'
	touch $@

$(SERVE_VENV)/bin/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q --upgrade pip
	$(SERVE_VENV)/bin/pip install -q -e '.[serve]'
	touch $@

system-deps: ## Debian packages the tests use: a real Prometheus server (+ promtool) and wrk
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v wrk >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing prometheus and wrk (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus wrk >/dev/null; \
	else echo "the tests need prometheus, promtool and wrk: sudo apt-get install prometheus wrk" >&2; exit 1; fi

setup: $(BIN)/.installed ## development environment: training, export, serving and test tools (.venv)

setup-serve: $(SERVE_VENV)/bin/.installed ## serving-only environment, no torch (.venv-serve)

test: setup system-deps ## the default test suite (< 15 min on 2 cores)
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-all: setup system-deps ## every test, slow suites included
	$(BIN)/pytest $(PYTEST_ARGS)

serve: setup-serve ## run the service on the shipped default model (PORT, MODEL_DIR override)
	PORT=$(PORT) MODEL_DIR=$(MODEL_DIR) $(SERVE_VENV)/bin/encoder-serve serve

model: setup ## rebuild the shipped default model package from $(DATA)
	DATA=$(DATA) bash scripts/build_default_model.sh

pareto: setup ## accuracy/latency/size of every trained variant under runs/: benchmarks/results/pareto
	$(BIN)/python -m benchmarks.pareto --data $(DATA) runs/teacher*/ runs/student-*/ runs/table-*/

bench: setup system-deps ## performance benchmarks: results JSON, markdown table and plots under benchmarks/results
	$(BIN)/python -m benchmarks.run

reliability: setup system-deps ## reliability suite: fuzzing, overload, drain, soak, slow clients, bad input, security
	$(BIN)/pytest tests/reliability -m "" $(PYTEST_ARGS)

image: setup ## build the container image with podman (chroot isolation) on a local base and test it
	bash deploy/image/build_and_test.sh

deploy-check: setup system-deps ## hadolint, kustomize + schema validation, promtool rules and tests
	$(BIN)/pytest tests/deploy -m "not slow" $(PYTEST_ARGS)

audit: setup ## vulnerability audit of the serving dependencies (pip-audit --strict + PyPI cross-check)
	bash scripts/pip_audit.sh

lint: setup ## ruff
	$(BIN)/ruff check encoder_serve tests benchmarks

clean: ## remove virtual environments and caches
	rm -rf $(VENV) $(SERVE_VENV) .pytest_cache .ruff_cache
