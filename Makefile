# Two commands: `make run` starts voicebot with its own LiveKit; `make test` installs what is missing and runs
# every check. Everything built lands in .venv and .cache (both git-ignored).

PYTHON ?= python3
VENV := .venv
CACHE := .cache
BIN := $(CACHE)/bin
PY := $(VENV)/bin/python

LIVEKIT_SERVER_VERSION := v1.13.5
LIVEKIT_SERVER := $(BIN)/livekit-server
LIVEKIT_SERVER_STAMP := $(BIN)/.livekit-server-$(LIVEKIT_SERVER_VERSION)

# The test page's LiveKit SDK, fetched from the npm registry and checked against the integrity npm published.
LIVEKIT_CLIENT_VERSION := 2.23.0
LIVEKIT_CLIENT_INTEGRITY := sha512-j9Kg86nJjBjNFUD+ukp2jwMCGa0k+YD5gU//RzAM+ZY3pbG631QCte7fQjwqWMmtBzhDJL9nKYuOLMv/9IbAxg==
LIVEKIT_CLIENT := static/vendor/livekit-client-$(LIVEKIT_CLIENT_VERSION).umd.js

# Debian packages the offline pipeline runs (espeak-ng speaks), and those only the tests need
# (sox measures audio, chromium drives the test page).
APT_PACKAGES := espeak-ng
TEST_APT_PACKAGES := sox chromium

.PHONY: run test bench check lint typecheck install system-packages test-system-packages apt-install livekit-server vendor clean

run: install system-packages livekit-server vendor
	$(PY) -m voicebot serve

test: install system-packages test-system-packages livekit-server vendor check
	$(PY) -m pytest

# Benchmarks print their tables and write bench/results/*.json; they take a few minutes.
bench: install system-packages livekit-server
	$(PY) -m bench.join_latency
	$(PY) -m bench.memory
	$(PY) -m bench.voice_latency

check: lint typecheck

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Installs only what is missing; as root directly (CI), otherwise through sudo.
system-packages:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(APT_PACKAGES)"

test-system-packages:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(TEST_APT_PACKAGES)"

apt-install:
	@missing=$$(for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || printf '%s ' $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make: installing Debian packages: $$missing"; \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

livekit-server: $(LIVEKIT_SERVER_STAMP)

vendor: $(LIVEKIT_CLIENT)

$(LIVEKIT_CLIENT):
	@command -v npm >/dev/null || { echo "make: npm is needed to fetch livekit-client (https://nodejs.org)"; exit 1; }
	mkdir -p $(CACHE)/npm static/vendor
	cd $(CACHE)/npm && npm pack --silent livekit-client@$(LIVEKIT_CLIENT_VERSION) >/dev/null
	@tarball=$(CACHE)/npm/livekit-client-$(LIVEKIT_CLIENT_VERSION).tgz; \
	actual="sha512-$$(openssl dgst -sha512 -binary $$tarball | base64 -w0)"; \
	[ "$$actual" = "$(LIVEKIT_CLIENT_INTEGRITY)" ] || { echo "make: livekit-client tarball integrity mismatch: $$actual"; exit 1; }; \
	tar -xzf $$tarball -O package/dist/livekit-client.umd.js > $@.tmp
	rm -f static/vendor/livekit-client-*.umd.js
	mv $@.tmp $@

# `go install` names the binary after its package directory (`server`); the project looks for livekit-server.
$(LIVEKIT_SERVER_STAMP):
	@command -v go >/dev/null || { echo "make: Go is needed to build livekit-server (https://go.dev/doc/install)"; exit 1; }
	mkdir -p $(BIN)
	GOBIN=$(abspath $(BIN)) GOFLAGS=-trimpath go install github.com/livekit/livekit-server/cmd/server@$(LIVEKIT_SERVER_VERSION)
	mv $(BIN)/server $(LIVEKIT_SERVER)
	rm -f $(BIN)/.livekit-server-*
	touch $@

clean:
	rm -rf $(VENV) $(CACHE) static/vendor .mypy_cache .ruff_cache .pytest_cache
