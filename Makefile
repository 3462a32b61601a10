# The two commands: `make run` starts the whole stack, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest tools tsclient services chaos chaos-emulator clean

# The Python client (clients/python/, a package of its own) goes in editable too: its tests
# run with the suite.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e clients/python
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

pytest: install services tsclient
	$(BIN)/python -m pytest -q -p no:cacheprovider

# What the tests need beyond the venv (chromium, PgBouncer, Node.js, the npm folders from
# their lock files), each installed only when missing or changed.
tools:
	@scripts/ensure-test-tools

# The TypeScript client, compiled and its unit tests run; its live tests run from pytest
# against the real stack (tests/test_client_typescript.py).
TS_CLIENT := clients/typescript

tsclient: tools
	cd $(TS_CLIENT) && npm run --silent build && npm test --silent

test: lint typecheck pytest

# The long chaos profile: every fault kind (PostgreSQL restarts, partitions and a platform
# down for three minutes included) over ten minutes of load. Sized to what two cores drain:
# each three-minute outage piles up every post due in it, and 20,000 posts outran them.
chaos: install services
	$(BIN)/publisher chaos --posts 8000 --duration 600 --workers 4 --concurrency 6 \
		--clients 16 --fault-every 8 --settle-timeout 900 --faults all --outage 180 \
		--report docs/chaos-report.json

# The same on Instagram accounts of the stack's Instagram emulator (container errors too).
# Fewer posts: each holds a worker slot ~0.85 s while its container processes, so 24 slots
# publish ~28 a second at best, and 20,000 in ten minutes would outrun them.
chaos-emulator: install services
	$(BIN)/publisher chaos --adapter emulator --posts 12000 --duration 600 --workers 4 \
		--concurrency 6 --clients 32 --fault-every 8 --settle-timeout 300 \
		--report docs/chaos-report-emulator.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache var $(TS_CLIENT)/node_modules $(TS_CLIENT)/dist

.PHONY: bench

# Throughput and cancels a second against their bare comparators, scaling by worker count,
# dispatch lag, cancel latency and memory at scale, written to docs/benchmarks.md (the full
# size: 13 to 20 minutes on two cores).
bench: install services
	$(BIN)/publisher bench
