# encoder-serve: every task is one target. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SERVE_VENV ?= .venv-serve
PORT ?= 8000
MODEL_DIR ?= models/emotion
DATA ?= data/emotion
PYTEST_ARGS ?=
# Where pip finds torch. Empty: the default index (on our machines a CPU wheel lies on local disk). On
# another machine pip would take a multi-GB CUDA build; `make setup TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu`
# takes PyTorch's CPU wheel instead.
TORCH_INDEX_URL ?=
TORCH_PIN := $(shell grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')
# Interpreters `make test-pythons` builds the serving install on (each found on PATH, else under pyenv).
PYTHONS ?= 3.11 3.12 3.13
# The tests that need no torch: what a serving-only install can run.
SERVE_TESTS ?= tests/service tests/reliability tests/deploy tests/export/test_package_loader.py tests/test_cli.py tests/test_data.py tests/test_tokenization.py

.PHONY: help system-deps setup setup-serve data test test-all test-pythons serve model pareto bench bench-peers reliability image deploy-check audit lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(if $(TORCH_INDEX_URL),$(BIN)/pip install -q --index-url $(TORCH_INDEX_URL) '$(TORCH_PIN)')
	$(BIN)/pip install -q -e '.[serve,train,dev]'
	touch $@

# The serving venv is rebuilt when pyproject.toml changes or PYTHON names another Python version.
setup-serve: ## serving-only environment, no torch (.venv-serve; PYTHON=python3.12 picks the interpreter)
	@want=$$($(PYTHON) -c 'import sys; print(sys.version.split()[0])') || exit 1; \
	have=$$($(SERVE_VENV)/bin/python -c 'import sys; print(sys.version.split()[0])' 2>/dev/null); \
	if [ "$$want" != "$$have" ] || [ pyproject.toml -nt $(SERVE_VENV)/.installed ]; then \
	  echo "serving environment $(SERVE_VENV) on Python $$want"; \
	  rm -rf $(SERVE_VENV) && $(PYTHON) -m venv $(SERVE_VENV) \
	  && $(SERVE_VENV)/bin/pip install -q --upgrade pip \
	  && $(SERVE_VENV)/bin/pip install -q -e '.[serve]' && touch $(SERVE_VENV)/.installed; \
	fi

system-deps: ## Debian packages the tests use: Prometheus (+ promtool), wrk, Chromium
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v wrk >/dev/null \
	    && command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing prometheus, wrk and chromium (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus wrk chromium >/dev/null; \
	else echo "the tests need prometheus, promtool, wrk and chromium: sudo apt-get install prometheus wrk chromium" >&2; exit 1; fi

setup: $(BIN)/.installed ## development environment: training, export, serving and test tools (.venv)

data: ## the emotion dataset in $(DATA): copied from $$EMOTION_DATA, else downloaded from the Hugging Face hub
	@if [ -f $(DATA)/train.jsonl ] && [ -f $(DATA)/validation.jsonl ] && [ -f $(DATA)/test.jsonl ]; then :; \
	elif [ -n "$$EMOTION_DATA" ]; then $(PYTHON) scripts/get_data.py --out $(DATA); \
	else $(PYTHON) scripts/get_data.py --out $(DATA) --check-hub \
	  && $(MAKE) --no-print-directory setup && $(BIN)/pip install -q -e '.[hub]' \
	  && $(BIN)/python scripts/get_data.py --out $(DATA); fi

test: data setup system-deps ## the default test suite (< 15 min on 2 cores)
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-all: data setup system-deps ## every test, slow suites included
	$(BIN)/pytest $(PYTEST_ARGS)

test-pythons: data system-deps ## serving install on Python 3.11, 3.12 and 3.13, each running the torch-free tests
	@for v in $(PYTHONS); do \
	  py=; for c in $$(command -v python$$v) $$(ls -d $$(pyenv root 2>/dev/null)/versions/$$v*/bin/python$$v 2>/dev/null); do \
	    "$$c" --version >/dev/null 2>&1 && { py=$$c; break; }; done; \
	  [ -n "$$py" ] || { echo "test-pythons: no working python$$v on PATH or under pyenv" >&2; exit 1; }; \
	  venv=build/venv-py$$v; echo "== Python $$v ($$py): $$venv"; \
	  if [ ! -f $$venv/.installed ] || [ pyproject.toml -nt $$venv/.installed ]; then \
	    rm -rf $$venv && "$$py" -m venv $$venv && $$venv/bin/pip install -q --upgrade pip \
	    && $$venv/bin/pip install -q -e '.[serve,test]' && touch $$venv/.installed || exit 1; \
	  fi; \
	  $$venv/bin/python -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is not None)' \
	    || { echo "test-pythons: torch is installed in the serving environment $$venv" >&2; exit 1; }; \
	  $$venv/bin/pytest -m "not slow" -p no:cacheprovider $(SERVE_TESTS) $(PYTEST_ARGS) || exit 1; \
	done

serve: setup-serve ## run the service on the shipped default model (PORT, MODEL_DIR override)
	PORT=$(PORT) MODEL_DIR=$(MODEL_DIR) $(SERVE_VENV)/bin/encoder-serve serve

model: data setup ## rebuild the shipped default model package from $(DATA)
	DATA=$(DATA) bash scripts/build_default_model.sh

pareto: data setup ## accuracy/latency/size of every trained variant under runs/: benchmarks/results/pareto
	$(BIN)/python -m benchmarks.pareto --data $(DATA) runs/teacher*/ runs/student-*/ runs/table-*/

bench: data setup system-deps ## performance benchmarks: results JSON, markdown table and plots under benchmarks/results
	$(BIN)/python -m benchmarks.run --data $(DATA)

# Each peer gets its own venv under build/peers/<peer>/venv, created on first use (versions pinned in benchmarks/peers/stacks.py).
bench-peers: data setup system-deps ## encoder-serve against BentoML, MLServer and Ray Serve: benchmarks/results/peers
	$(BIN)/python -m benchmarks.peers.run --data $(DATA)

reliability: data setup system-deps ## reliability suite: fuzzing, overload, drain, soak, slow clients, bad input, security
	$(BIN)/pytest tests/reliability -m "" $(PYTEST_ARGS)

image: setup ## build the container image with podman (chroot isolation) on a local base and test it
	bash deploy/image/build_and_test.sh

deploy-check: data setup system-deps ## hadolint, kustomize + schema validation, promtool rules and tests
	$(BIN)/pytest tests/deploy -m "not slow" $(PYTEST_ARGS)

audit: setup ## vulnerability audit of the serving dependencies (pip-audit --strict + PyPI cross-check)
	bash scripts/pip_audit.sh

lint: setup ## ruff
	$(BIN)/ruff check encoder_serve tests benchmarks scripts

clean: ## remove virtual environments and caches (not data/)
	rm -rf $(VENV) $(SERVE_VENV) build/venv-py* .pytest_cache .ruff_cache
