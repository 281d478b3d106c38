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

.PHONY: run test check lint typecheck unit install livekit-server clean

run: install livekit-server
	$(PY) -m voicebot serve

test: install livekit-server check
	$(PY) -m pytest

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
