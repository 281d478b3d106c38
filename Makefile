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

# Debian packages the offline pipeline and the tests run: espeak-ng speaks, sox measures audio.
APT_PACKAGES := espeak-ng sox

.PHONY: run test bench check lint typecheck install system-packages livekit-server clean

run: install system-packages livekit-server
	$(PY) -m voicebot serve

test: install system-packages livekit-server check
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
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || printf '%s ' $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make: installing Debian packages: $$missing"; \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

livekit-server: $(LIVEKIT_SERVER_STAMP)

# `go install` names the binary after its package directory (`server`); the project looks for livekit-server.
$(LIVEKIT_SERVER_STAMP):
	@command -v go >/dev/null || { echo "make: Go is needed to build livekit-server (https://go.dev/doc/install)"; exit 1; }
	mkdir -p $(BIN)
	GOBIN=$(abspath $(BIN)) GOFLAGS=-trimpath go install github.com/livekit/livekit-server/cmd/server@$(LIVEKIT_SERVER_VERSION)
	mv $(BIN)/server $(LIVEKIT_SERVER)
	rm -f $(BIN)/.livekit-server-*
	touch $@

clean:
	rm -rf $(VENV) $(CACHE) .mypy_cache .ruff_cache .pytest_cache
