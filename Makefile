# tvdb-assets: `make dev` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install dev test lint fmt bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## dagster dev on 127.0.0.1:3000, embedded Postgres, mock mode, sample documents flowing
dev: install
	$(BIN)/tvdb dev

## the whole test suite against a throwaway embedded Postgres
test: install
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
