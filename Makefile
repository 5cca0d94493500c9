# mamaroom: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench install clean help vendor
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

# The pages' JS libraries from npm (dashboard/package-lock.json) into dashboard/vendor/.
VENDOR := dashboard/vendor/.built
$(VENDOR): dashboard/package.json dashboard/package-lock.json | $(STAMP)
	scripts/build-dashboard.sh $(VENV)

vendor: $(VENDOR)

demo: $(STAMP) $(VENDOR)
	$(BIN)/mamaroom demo

test: $(STAMP) $(VENDOR)
	@scripts/ensure-system-packages.sh mosquitto influxdb chromium fonts-noto-cjk
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
