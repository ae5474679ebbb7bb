# bse-predict: `make demo` and `make test` each run `make setup` first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done

.PHONY: setup demo test services-up services-down bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable ".[dev]"
	touch $(STAMP)

services-up: setup
	$(BIN)/bse-predict services up

services-down: setup
	$(BIN)/bse-predict services down

demo: services-up
	$(BIN)/bse-predict demo

test: services-up
	$(BIN)/pytest

bench: services-up
	$(BIN)/bse-predict bench

clean:
	rm -rf $(VENV) var artifacts .pytest_cache .hypothesis
