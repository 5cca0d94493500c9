# mamaroom: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench install clean help firmware soak
.DEFAULT_GOAL := help

help:
	@echo "make demo    run the whole system with 190 simulated rooms (http://127.0.0.1:8000)"
	@echo "make test    install what the tests need and run them"
	@echo "make lint    ruff + mypy"
	@echo "make bench   run the benchmarks in bench/"
	@echo "make firmware  precompile the node firmware (mpy-cross) into firmware/build/"
	@echo "make soak    the long runs (a node for 30 minutes in a 64 KB heap, ...)"

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

firmware: $(STAMP)
	$(BIN)/python -m tests.firmware.mpy firmware/build

soak: $(STAMP)
	@scripts/ensure-system-packages.sh mosquitto influxdb
	MAMAROOM_SOAK=1 $(BIN)/python -m pytest -m soak

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
