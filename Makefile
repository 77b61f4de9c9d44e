# orderbus: the two commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests drive: the mosquitto CLIs (real MQTT clients), Chromium (driven by
# Playwright, which is told to use /usr/bin/chromium: no browser download), Mosquitto for benchmarks.
APT_PACKAGES := mosquitto-clients mosquitto chromium

.PHONY: demo test setup system-deps lint clean

demo: $(BIN)/orderbus  ## run everything on embedded defaults with demo data
	$(BIN)/orderbus up --demo

test: setup  ## set everything up and run the whole test suite
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

setup: system-deps $(BIN)/orderbus

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(BIN)/orderbus: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

lint: $(BIN)/orderbus  ## style, types, and imports that point down (the contracts in pyproject.toml)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy && $(BIN)/lint-imports --no-cache --no-logo

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache .mypy_cache *.egg-info

# The browser bundle of MQTT.js that the dashboard imports, vendored (running orderbus needs no Node).
# `make vendor-mqtt` fetches the pinned release with npm in a temporary directory and refreshes
# api/static/vendor/; `make vendor-mqtt MQTT_JS_VERSION=5.x.y` moves the pin.
MQTT_JS_VERSION ?= $(shell cat api/static/vendor/mqtt.version 2>/dev/null || echo 5.16.0)
.PHONY: vendor-mqtt
vendor-mqtt:  ## refresh api/static/vendor/mqtt.esm.js and its licence from npm (mqtt@MQTT_JS_VERSION)
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; out="$(CURDIR)/api/static/vendor"; \
	(cd "$$tmp" && npm pack --json mqtt@$(MQTT_JS_VERSION) > pack.json && tar -xzf mqtt-$(MQTT_JS_VERSION).tgz); \
	integrity=$$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["integrity"])' "$$tmp/pack.json"); \
	mkdir -p "$$out"; \
	cp "$$tmp/package/dist/mqtt.esm.js" "$$out/mqtt.esm.js"; \
	cp "$$tmp/package/LICENSE.md" "$$out/mqtt.LICENSE.md"; \
	echo "$(MQTT_JS_VERSION)" > "$$out/mqtt.version"; \
	{ echo "# Vendored browser libraries"; echo; \
	  echo "| file | package | version | npm tarball integrity | sha256 of the file |"; \
	  echo "|---|---|---|---|---|"; \
	  echo "| mqtt.esm.js (dist/mqtt.esm.js) | [mqtt](https://www.npmjs.com/package/mqtt) | $(MQTT_JS_VERSION) | $$integrity | $$(sha256sum "$$out/mqtt.esm.js" | cut -d' ' -f1) |"; \
	  echo; echo "Licence: mqtt.LICENSE.md (MIT; the bundle's own header lists the licences of what it bundles)."; \
	  echo "Refreshed by \`make vendor-mqtt\` (npm pack in a temporary directory; no node_modules in the repository)."; \
	} > "$$out/README.md"; \
	echo "vendored mqtt@$(MQTT_JS_VERSION) into $$out"
