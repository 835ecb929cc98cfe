# evse-agent: MicroPython firmware agent for AC EV chargers, and its host tools.
# `make test` sets everything up itself (virtualenv, pinned packages, lib/).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MP     := $(BIN)/micropython
STAMP  := $(VENV)/.installed

.PHONY: all venv deps mosquitto test bench demo deploy clean help

all: test

help:
	@echo "make test    set up (venv, pinned packages, lib/) and run the whole suite"
	@echo "make bench   print the benchmark table"
	@echo "make demo    run the fleet demo"
	@echo "make deps    fill lib/ with the third-party MicroPython libraries"
	@echo "make mosquitto  install mosquitto for the MQTT tests when missing (root + apt), else say so"

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(STAMP)

lib/umqtt/simple.py: tools/fetch_deps.py
	$(PYTHON) tools/fetch_deps.py lib

deps: lib/umqtt/simple.py

# 3 workers, one test file each at a time (a device module's lanes and its test
# server stay together); TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 3
test: venv deps mosquitto
	$(BIN)/python -m pytest -q tests $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# The MQTT tests run on mosquitto where it is installed, else on the pinned
# amqtt (tests/prep/broker.py; EVSE_TEST_BROKER=mosquitto|amqtt forces one).
# As root with apt, a missing mosquitto is installed first; tests that need
# mosquitto itself (ACLs, TLS client certificates) fail with this command.
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || [ "$$EVSE_TEST_BROKER" = amqtt ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing mosquitto (apt-get install mosquitto) for the MQTT tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto >/dev/null 2>&1; } || \
	    echo "make: could not install mosquitto: the MQTT tests run on amqtt"; \
	else \
	    echo "make: mosquitto not installed: the MQTT tests run on amqtt (for mosquitto: sudo apt-get install mosquitto)"; \
	fi

bench: venv deps
	$(BIN)/python -m tools.bench

demo: venv deps
	$(BIN)/python -m tools.demo

# make deploy PORT=/dev/ttyUSB0 RELEASE=build/evse-esp32-1.0.0.json KEY=keys/release.pub ID=charger-1 [BOARD=esp32] [BROKER=host:1883]
deploy: venv deps
	@test -n "$(PORT)" -a -n "$(RELEASE)" -a -n "$(KEY)" -a -n "$(ID)" || \
	    { echo "usage: make deploy PORT=... RELEASE=... KEY=... ID=... [BOARD=...] [BROKER=...]"; exit 2; }
	$(BIN)/evsectl deploy --yes --port $(PORT) --release $(RELEASE) --key-pub $(KEY) --id $(ID) \
	    $(if $(BOARD),--board $(BOARD)) $(if $(BROKER),--broker $(BROKER))

clean:
	rm -rf $(VENV) .pytest_cache build
	find lib -mindepth 1 ! -name README.md -exec rm -rf {} +
