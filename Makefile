# The two commands: `make run` starts the whole stack, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest services chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# PostgreSQL and Redis, started if they are not up (a no-op where they run already).
services:
	@scripts/ensure-services

run: install services
	$(BIN)/publisher run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install services
	@scripts/ensure-test-tools
	$(BIN)/python -m pytest -q -p no:cacheprovider

test: lint typecheck pytest

# The long chaos profile: tens of thousands of posts, every fault, several minutes.
chaos: install services
	$(BIN)/publisher chaos --posts 20000 --duration 600 --workers 4 --concurrency 6 \
		--clients 32 --fault-every 8 --settle-timeout 300 --report docs/chaos-report.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache var

.PHONY: bench

# Throughput, dispatch lag, cancel latency and memory at scale, written to docs/benchmarks.md.
bench: install services
	$(BIN)/publisher bench
