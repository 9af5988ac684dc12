# `make demo` and `make test` create .venv and install what they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench bench-quick install clean

$(BIN)/.installed: setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,demo,dev]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/errortriage demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Benchmarks (BENCHMARKS.md): Postgres on 127.0.0.1:5432 (user postgres) and redis-server on PATH.
bench: $(BIN)/.installed
	$(BIN)/python -m bench.run

# A smoke run for CI: small counts, prints the tables, judges no timing.
bench-quick: $(BIN)/.installed
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) .errortriage *.egg-info
