# bse-predict: `make demo` and `make test` each run `make setup` first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done

.PHONY: setup demo demo-live test test-fast chaos services-up services-down bench clean

setup: $(STAMP)

# -qq: errors only; setuptools' editable build otherwise prints a BuildBackendWarning (folders that share the
# package's name may shadow it: not the case here) into every first `make demo`.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -qq --editable ".[dev]"
	touch $(STAMP)

services-up: setup
	$(BIN)/bse-predict services up

services-down: setup
	$(BIN)/bse-predict services down

demo: services-up
	$(BIN)/bse-predict demo

# The live path: candles from an exchange (the simulator of tests/support/exchange_sim.py, Binance's formats,
# one hour every 2 s) through `bse-predict ingest` and a worker; stops after 30 predictions or Ctrl-C.
demo-live: services-up
	$(BIN)/bse-predict demo --live

test: services-up
	$(BIN)/pytest

# The unit and contract layers without the `slow` tests (those reading ../shared/data, training real
# versions or running thousands of examples: tests/conftest.py, pyproject's markers); under a minute on
# 2 cores. Needs Redis up (make services-up) for the contract suites' Redis half, and promtool for the rules'
# tests (Debian's prometheus, installed with apt-get when missing); `make test` runs everything.
test-fast: setup
	$(BIN)/pytest tests/unit tests/contract -m 'not integration and not slow'

# Real faults (kills, restarts, pauses, wipes) in the suite's own Kafka and Redis: docs/reliability.md
chaos: setup
	$(BIN)/pytest tests/chaos -m chaos -v

bench: services-up
	$(BIN)/bse-predict bench

clean:
	rm -rf $(VENV) var artifacts .pytest_cache .hypothesis
