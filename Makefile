# streamsync developer entry points. Everything runs from the repo root with .venv/bin/... explicitly.
#   make venv        create/update .venv (re-runs pip only when pyproject.toml changes)
#   make stack-up    start local Postgres 15 + Kafka (dev/stack up), idempotent
#   make stack-down  stop them
#   make lint        ruff + mypy
#   make test        venv, stack-up, lint, whole pytest suite against the stack
#   make demo        end-to-end demo against the stack and the bundled CRM simulator
#   make bench       benchmarks (bench/run_all.py)
#   make clean       remove caches and the venv (stack state in .local/ is kept: `make distclean`)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.stamp-pyproject
# settings pointing at the local stack, as KEY=VALUE words for `env`
STACK_ENV = $$(dev/stack env)
PYTEST_ARGS ?=

.PHONY: venv stack-up stack-down stack-status lint test test-unit demo bench clean distclean

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

stack-up:
	dev/stack up

stack-down:
	dev/stack down

stack-status:
	dev/stack status

lint: venv
	$(BIN)/ruff check streamsync tests $$(test -d bench && echo bench)
	$(BIN)/mypy streamsync

test: venv stack-up lint
	env $(STACK_ENV) $(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

demo: venv stack-up
	env $(STACK_ENV) $(BIN)/streamsync demo

bench: venv stack-up
	@if [ -f bench/run_all.py ]; then \
		env $(STACK_ENV) $(BIN)/python bench/run_all.py; \
	else \
		echo "bench/run_all.py not there yet: running each bench/*.py"; \
		found=0; \
		for f in bench/*.py; do \
			[ -e "$$f" ] || continue; \
			case "$$(basename "$$f")" in __init__.py|_*|conftest.py) continue ;; esac; \
			found=1; echo "== $$f"; env $(STACK_ENV) $(BIN)/python "$$f"; \
		done; \
		[ $$found = 1 ] || { echo "no benchmarks found in bench/" >&2; exit 1; }; \
	fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist *.egg-info
	find . -path ./.local -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	-dev/stack down
	rm -rf .local
