# deltahub: `make run` (install, migrate, serve) and `make test` (install, lint, type-check, test).
VENV ?= .venv
PYTHON ?= python3
# The CPU build (a plain `torch` pulls gigabytes of CUDA packages). On a GPU machine,
# install your CUDA build of torch into the venv first, or: make install TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run migrate test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/deltahub db upgrade

run: migrate
	$(BIN)/deltahub serve

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/bitdelta_bench.py
	$(BIN)/python benchmarks/lora_bench.py
	$(BIN)/python benchmarks/kernel_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
