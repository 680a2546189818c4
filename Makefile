# burrow: the two commands.
#   make run   installs what is missing, migrates the database and serves on 127.0.0.1:8080;
#              BURROW_PUBLIC_HOST=vpn.example.net make run names that host in customers'
#              configurations. Stopped (Ctrl-C), it puts back what it changed on this host
#              (IP forwarding it switched on, the WireGuard interface, burrow's nftables table).
#   make test  installs what is missing and runs ruff, mypy --strict, import-linter and pytest
# A second run installs nothing that is already there.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.burrow-installed

# unbound and dnsmasq-base: the node's resolver (the agent runs its own instances; Debian's
# unbound package also starts a system resolver on 127.0.0.1:53, which they do not touch).
APT_RUN := wireguard-go wireguard-tools nftables iproute2 ca-certificates unbound dnsmasq-base
# IKEv2: charon, its vici plugin (swanctl's package), kernel-libipsec (extra), EAP-MSCHAPv2
# (extauth), openssl (standard) and gcrypt (extra: MD4/DES for MSCHAPv2). The agent runs its
# own charon with its own /run; Debian's strongswan-starter service is not used.
APT_RUN += strongswan-charon strongswan-swanctl libcharon-extra-plugins libcharon-extauth-plugins \
	libstrongswan-standard-plugins libstrongswan-extra-plugins
# OpenVPN 2.6: the agent runs one server process per transport itself (no Debian unit is used).
APT_RUN += openvpn
# The HTTPS end-to-end test: caddy (deploy/'s proxy; not in APT_RUN, as Debian starts it on
# port 80 at install), libnss3-tools (certutil: chromium trusts caddy's CA), curl.
# nsd, dnsutils: the lab's authoritative DNS server and dig, for the DNS tests.
APT_TEST := $(APT_RUN) postgresql iperf3 chromium caddy libnss3-tools curl nsd dnsutils
# redis-server, haproxy: the cluster's live store and load balancer (deploy/cluster/); the
# tests start their own instances.
APT_TEST += redis-server haproxy
# charon-cmd: the IKEv2 client closest to Windows' built-in one (driver tests; bsdutils'
# `script` gives it the terminal it reads the EAP password from).
APT_TEST += charon-cmd bsdutils

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
	$(BIN)/pytest -q --durations=30

bench: install-test
	$(BIN)/python bench/desired_state.py

NODE_STATE_DIR = $(or $(BURROW_NODE_STATE_DIR),/var/lib/burrow-node)

clean:
	rm -rf $(VENV) var test-output
	@echo "make clean leaves the node's identity in $(NODE_STATE_DIR): its WireGuard key is in every customer's configuration, so keeping it keeps their configurations working. Delete it by hand only to give the node a new key (customers then download new configurations)."
