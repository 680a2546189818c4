# burrow: the two commands.
#   make run   installs what is missing, migrates the database and serves on 127.0.0.1:8080
#   make test  installs what is missing and runs ruff, mypy --strict, import-linter and pytest
# A second run installs nothing that is already there.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.burrow-installed

APT_RUN := wireguard-go wireguard-tools nftables iproute2 ca-certificates unbound dnsmasq-base
APT_TEST := $(APT_RUN) postgresql iperf3 chromium nsd dnsutils

export BURROW_POLICY_PATH ?= examples/policies/strict-no-logs.toml
# make run is a complete VPN provider on one machine: the control plane plus a node in-process.
RUN_EMBEDDED_NODE ?= true

.PHONY: run test install-run install-test lint typecheck contracts pytest bench clean

run: install-run
	$(BIN)/burrow db upgrade
	BURROW_EMBEDDED_NODE=$(RUN_EMBEDDED_NODE) $(BIN)/burrow serve

test: install-test lint typecheck contracts pytest

install-run: $(STAMP)
	@scripts/ensure-apt.sh $(APT_RUN)

install-test: $(STAMP)
	@scripts/ensure-apt.sh $(APT_TEST)

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || scripts/ensure-apt.sh python3-venv
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

lint:
	$(BIN)/ruff check src tests bench migrations
	$(BIN)/ruff format --check src tests bench migrations

typecheck:
	$(BIN)/mypy

contracts:
	$(BIN)/lint-imports

pytest:
	$(BIN)/pytest -q

bench: install-test
	$(BIN)/python bench/desired_state.py

clean:
	rm -rf $(VENV) var test-output
