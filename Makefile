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

lint: $(BIN)/orderbus
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache *.egg-info
