# `make demo` and `make test` work on a fresh clone with Python 3.11 and pip: they create .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint typecheck docs dist bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,keras,keras3,onnx]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m unilstm.demo

test: setup
	$(PY) -m ruff check src tests tools benchmarks
	$(PY) -m mypy
	$(PY) -m mkdocs build --strict --quiet --site-dir .site
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check src tests tools benchmarks

typecheck: setup
	$(PY) -m mypy

docs: setup
	$(PY) -m mkdocs build --strict --site-dir .site
	@echo "the site is in .site/ (index.html); make docs-serve would be: $(PY) -m mkdocs serve"

dist: setup
	$(PY) -m build --no-isolation

bench: setup
	$(PY) -m unilstm.bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis .site dist build
