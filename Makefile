# Quick start: `make run` (demo) and `make test` (everything). Both set themselves up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard proto/sluice/wire/v1/*.proto)
WIRE   := xds/_wire/wire_pb2.py

.PHONY: install run test lint typecheck unit integration bench bench-storm bench-analysis bench-routing clean \
	prometheus chromium fuzz soak

install: $(STAMP) $(WIRE)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The xDS envelope views (see DESIGN §4) are generated from our own .proto.
$(WIRE): $(PROTOS) $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=xds/_wire --pyi_out=xds/_wire \
		proto/sluice/wire/v1/wire.proto
	mv xds/_wire/sluice/wire/v1/wire_pb2.py $(WIRE)
	mv xds/_wire/sluice/wire/v1/wire_pb2.pyi xds/_wire/wire_pb2.pyi
	rm -rf xds/_wire/sluice

# Integration tests scrape with a real Prometheus: Debian's package (/usr/bin/prometheus),
# installed only when missing (needs root, as on CI; about 10 s).
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			prometheus >/dev/null; }

# The status page test drives Debian's Chromium (/usr/bin/chromium) with Playwright;
# installed only when missing (needs root, as on CI). Playwright never downloads a browser.
chromium:
	@test -x /usr/bin/chromium || { \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium >/dev/null; }

# `sluice demo`: a whole canary on this machine. Other scenarios:
# make run DEMO="--scenario errors" (errors | latency | ttft; --fast for a short run).
run: install
	$(VENV)/bin/sluice demo $(DEMO)

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(VENV)/bin/pytest -q tests/unit tests/kube

integration: install prometheus chromium
	$(VENV)/bin/pytest -q tests/integration

test: install prometheus chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q

bench: install
	$(PY) -m bench.xds_convergence

# Connect storm: every simulated proxy opens its stream at once (bench/XDS.md).
bench-storm: install
	$(PY) -m bench.xds_convergence --clients 2000,3000 --no-envoy --changes 1

bench-analysis: install
	$(PY) -m bench.calibration

# Routing policies through a real Envoy and simulated GPU pods, plus the DES (~16 min).
bench-routing: install
	$(PY) -m bench.routing

# Every fuzz target for FUZZ_SECONDS each (fresh seeds): inputs tried and crashes found.
# make fuzz FUZZ="--engine atheris" drives the same targets from libFuzzer (pip install atheris).
FUZZ_SECONDS ?= 60
fuzz: install
	$(PY) -m tests.fuzz --seconds $(FUZZ_SECONDS) $(FUZZ)

# Chaos soak (loopback only): faults at random times for SOAK_MINUTES while an experiment
# runs under load; prints the figures and exits 1 when an invariant breaks.
SOAK_MINUTES ?= 20
soak: install prometheus
	$(PY) -m tests.soak --minutes $(SOAK_MINUTES) $(SOAK)

clean:
	rm -rf $(VENV) $(WIRE) xds/_wire/wire_pb2.pyi .mypy_cache .ruff_cache .pytest_cache
