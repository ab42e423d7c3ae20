# The two commands a newcomer needs (see README):  make run   and   make test
# Both create or reuse the virtual environment .venv/ with everything installed from pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/microstream run --simulate

test: $(STAMP) lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/ring_bench.py

clean:
	$(BIN)/microstream shm gc || true
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
