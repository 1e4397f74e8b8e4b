# tvdb-assets: `make dev` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install chromium dev test lint fmt bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The UI test reads the Dagster UI in Debian's headless Chromium.
chromium:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

## dagster dev on 127.0.0.1:3000, embedded Postgres, mock mode, sample documents flowing
dev: install
	$(BIN)/tvdb dev

## the whole test suite against a throwaway embedded Postgres
test: install chromium
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## benchmarks: JSON lines on stdout, a table in bench/results/
bench: install
	$(BIN)/python -m bench

clean:
	rm -rf .tvdb $(VENV)
