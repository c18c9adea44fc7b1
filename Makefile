# wgpy: `make test` on a fresh machine installs what the tests need, then runs them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := wireguard-tools wireguard-go iproute2 iputils-ping iperf3 nftables postgresql \
	coturn conntrack chromium chromium-driver
STAMP := $(VENV)/.installed
# Each test stage is bounded as a whole too: a process that will not exit (a thread left
# running after the last test) fails the stage instead of stalling CI.
BOUNDED := timeout --kill-after=30

.PHONY: setup apt coturn-service-off venv oidc-provider test lint typecheck unit interop interop-slow coverage bench bench-ab bench-core bench-mesh bench-nat bench-login bench-exit bench-poll demo demo-login demo-wg demo-core clean

setup: apt venv oidc-provider

# Debian packages the tests use; apt runs only when one is missing.
apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make setup: installing$$missing needs root; run it as root or install them first." >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@$(MAKE) --no-print-directory coturn-service-off

# Debian's coturn package enables and starts coturn.service where systemd runs (without
# systemd its init script starts nothing unless /etc/default/coturn enables it); the tests
# run turnserver processes of their own on 3478 and 443, so the service must not hold the
# ports. Acts only on the service itself (systemd, or the init script's pidfile), never on
# other turnserver processes; does nothing when it is already off.
COTURN_PIDFILE := /var/run/turnserver.pid
coturn-service-off:
	@if [ -d /run/systemd/system ] && systemctl cat coturn.service >/dev/null 2>&1; then \
	  if systemctl is-enabled --quiet coturn 2>/dev/null || systemctl is-active --quiet coturn; then \
	    echo "stopping and disabling Debian's coturn service (the tests start their own turnserver)"; \
	    systemctl disable --now coturn >/dev/null 2>&1 || { \
	      echo "make setup: could not stop the coturn service; run 'systemctl disable --now coturn' as root." >&2; exit 1; }; \
	  fi; \
	elif [ -s $(COTURN_PIDFILE) ] && kill -0 "$$(cat $(COTURN_PIDFILE))" 2>/dev/null; then \
	  echo "stopping Debian's coturn service (the tests start their own turnserver)"; \
	  start-stop-daemon --stop --quiet --retry=TERM/10/KILL/5 --pidfile $(COTURN_PIDFILE) --name turnserver || { \
	    echo "make setup: could not stop the coturn service; run '/etc/init.d/coturn stop' as root." >&2; exit 1; }; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# The OpenID provider the OIDC tests run (oidc-provider from the npm registry, pinned with its
# lock file) goes into tests/oidc/node_modules (git-ignored); npm runs only when package.json
# or the lock file changed. Needs Node >= 20.19 and npm (Debian 12's nodejs is too old: use
# NodeSource's). About 2-5 s from the registry, 3.4 MB, 40 packages; no install scripts run.
OIDC_DIR := tests/oidc
OIDC_STAMP := $(OIDC_DIR)/node_modules/.installed
oidc-provider: $(OIDC_STAMP)

$(OIDC_STAMP): $(OIDC_DIR)/package.json $(OIDC_DIR)/package-lock.json
	@command -v npm >/dev/null && node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' || { \
	  echo "make setup: the OIDC tests need Node.js 20.19 or later with npm (found: $$(node --version 2>/dev/null || echo none)); install it first." >&2; exit 1; }
	cd $(OIDC_DIR) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	@touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# Unit tests under coverage; the sans-IO protocol core must keep >= 90 % branch coverage.
unit: venv
	$(BIN)/coverage erase
	$(BOUNDED) 1500 $(BIN)/coverage run -m pytest --ignore=tests/interop
	$(BIN)/coverage report --include='wgpy/protocol/*' --fail-under=90

# wgpy against wireguard-go and itself in network namespaces (root). The slow ones wait on
# real protocol timers (a rekey after 120 s, a handshake given up after 90 s) and run in
# parallel: each test makes namespaces of its own.
interop: venv
	$(BOUNDED) 1200 $(BIN)/pytest tests/interop -m "not slow"

interop-slow: venv
	$(BOUNDED) 1200 $(BIN)/pytest tests/interop -m slow -n 4

test: setup lint typecheck unit interop interop-slow

bench-core: venv
	$(BIN)/python benchmarks/core.py

# The coordination server with 1,000 simulated nodes (registrations, fan-out, CPU, RSS).
bench-mesh: venv
	$(BIN)/python benchmarks/mesh_scale.py

# wgpy beside wireguard-go through real tunnels in namespaces (root): throughput, latency,
# CPU per GB, RSS, with ratios from the same run; writes benchmarks/results/.
# WIREGUARD_GO_NEWEST=/path/to/wireguard-go (one built from source) adds it beside Debian's.
bench: setup
	$(BIN)/python benchmarks/tunnel.py

# A data-path change judged against a git revision (BASE, default HEAD), interleaved in one
# run with wireguard-go beside them: make bench-ab BASE=HEAD~1 TESTS=latency,tcp1
# MUX=1 runs both with the STUN demux on their binds (as mesh nodes have it); MUX=compare
# runs the working tree without and with it (what the demux costs the data path).
# WIREGUARD_GO_NEWEST=/path/to/wireguard-go adds it as a second reference beside Debian's.
bench-ab: setup
	$(BIN)/python benchmarks/ab.py --base $(or $(BASE),HEAD) --tests $(or $(TESTS),latency,tcp1) \
	  $(if $(MUX),--mux $(if $(filter 1 on yes,$(MUX)),on,$(MUX)))

# Mesh nodes behind the NAT lab's routers with coturn and a real `wgpy server` (root): time to
# first packet, to direct, the share that ends direct, relayed and direct throughput, and a
# direct path cut; TRIALS per cell (default 10), CELLS to pick some; writes benchmarks/results/.
bench-nat: setup
	$(BIN)/python benchmarks/nat.py --trials $(or $(TRIALS),10) $(if $(CELLS),--cells $(CELLS))

# How long joining takes by each way (root): password + TOTP on the pages, OIDC through the
# real provider, an admin's approval, an auth key with a machine certificate; TRIALS fresh
# nodes each (default 5): URL printed, `wgpy up` returned, first ping; writes benchmarks/results/.
bench-login: setup
	$(BIN)/python benchmarks/login.py --trials $(or $(TRIALS),5)

# TCP throughput through an exit node against node to node direct (root): a real `wgpy server`,
# an approved exit node and a node using it; median of ROUNDS (default 3); writes benchmarks/results/.
bench-exit: setup
	$(BIN)/python benchmarks/exit_node.py --rounds $(or $(ROUNDS),3)

# The ping latency wgpy adds for several WGPY_POLL_US (the poll after a lone packet), pairs
# interleaved in ROUNDS (default 6); LOAD spinning processes beside (default 0) (root).
bench-poll: setup
	$(BIN)/python benchmarks/poll_latency.py --rounds $(or $(ROUNDS),6) --load $(or $(LOAD),0) \
	  $(if $(SETTINGS),--settings $(SETTINGS))

# The main job: a coordination server and three nodes in network namespaces join a mesh
# and ping each other (needs root).
demo: setup
	$(BIN)/python examples/mesh_demo.py

# Interactive login (needs root): a server and two nodes in network namespaces; one runs
# `wgpy up --login-server URL` without an auth key and prints a URL: open it in a browser on
# this machine and sign in as the user the demo shows. AUTO=1: the demo walks the pages itself.
demo-login: setup
	$(BIN)/python examples/login_demo.py $(if $(filter 1 yes on,$(AUTO)),--auto)

# wgpy interfaces beside wireguard-go from wg-quick configs, in network namespaces (root).
demo-wg: setup
	$(BIN)/python examples/demo.py

# The sans-IO core alone, in memory: no root needed.
demo-core: venv
	$(BIN)/python examples/in_memory_pair.py

clean:
	rm -rf $(VENV) $(OIDC_DIR)/node_modules .mypy_cache .ruff_cache .pytest_cache .coverage .hypothesis
