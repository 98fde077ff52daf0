# `make demo` and `make test` work on a fresh clone with Python 3.11 and pip: they create .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint typecheck bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,keras,onnx]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m unilstm.demo

test: setup
	$(PY) -m ruff check src tests tools benchmarks
	$(PY) -m mypy
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check src tests tools benchmarks

typecheck: setup
	$(PY) -m mypy

bench: setup
	$(PY) -m unilstm.bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
