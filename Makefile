# doorphoned: `make run` and `make test` each do the whole set-up first (idempotent, ~1 s when done).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test unit e2e lint bench bench-smoke chaos soak docs clean

setup:
	@bash scripts/setup.sh

run: setup
	@bash scripts/run-sim.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Lint first so that pytest's summary is the last line CI prints.
test: setup lint
	$(PY) -m pytest -q -n 2 tests

unit: setup
	$(PY) -m pytest -q tests/unit

e2e: setup
	$(PY) -m pytest -q tests/e2e

bench: setup
	$(PY) bench/relay_latency.py --opens 200
	$(PY) bench/startup.py --runs 10
	$(PY) bench/access.py
	$(PY) bench/cloud.py
	$(PY) bench/sip.py

bench-smoke: setup
	$(PY) -m pytest -q tests/e2e/test_bench_smoke.py

# The reliability suite (docs/reliability.md): 100 kill -9 under mixed load (as root: the state dir on a tmpfs
# that gets filled), and an hour of mixed load watching for growth. SEED=n replays a chaos run.
chaos: setup
	$(PY) bench/chaos.py --rounds 100 $(if $(SEED),--seed $(SEED))

soak: setup
	$(PY) bench/soak.py --minutes 60

# Regenerate the generated part of docs/configuration.md from the schema.
docs: setup
	$(PY) -m doorphoned.config --update docs/configuration.md

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
