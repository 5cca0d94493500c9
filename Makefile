# mamaroom: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench install clean help
.DEFAULT_GOAL := help

help:
	@echo "make demo    run the whole system with 190 simulated rooms (http://127.0.0.1:8000)"
	@echo "make test    install what the tests need and run them"
	@echo "make lint    ruff + mypy"
	@echo "make bench   run the benchmarks in bench/"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mamaroom needs Python >= 3.11; set PYTHON=python3.11 or newer")'
	@echo "==> creating $(VENV) and installing mamaroom with its test tools"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar on --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e '.[test]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mamaroom demo

test: $(STAMP)
	@scripts/ensure-system-packages.sh mosquitto influxdb
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	@scripts/ensure-system-packages.sh mosquitto influxdb
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# Fault injection (issue 7): kill -9 of broker, gateway, server and InfluxDB
# under the load of 100 nodes and 1,000 calls (tests/chaos). Prerequisite-only
# `chaos` rule, so other chaos suites can hang theirs on it too.
.PHONY: chaos chaos-faults
chaos: chaos-faults
chaos-faults: $(STAMP)
	@scripts/ensure-system-packages.sh mosquitto influxdb
	$(BIN)/python -m pytest -m chaos tests/chaos -s -v

# Soak (issue 7): an accelerated day of 190 rooms with calls, about an hour;
# the gateway's and the server's memory and open files must stay flat
# (bench/soak_services.py, results in bench/RESULTS-soak.md). Prerequisite-only
# `soak` rule, so the firmware nodes' soak can hang on it too.
.PHONY: soak soak-services
soak: soak-services
soak-services: $(STAMP)
	@scripts/ensure-system-packages.sh mosquitto
	$(BIN)/python -m bench.soak_services --minutes 60
