# The two set-up commands of the README: `make demo` and `make test` (each installs first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test

install: $(VENV)/.installed

# torch 2.13.0 is pinned first so pip takes the CPU build instead of a multi-GB CUDA one.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[eval,dev]"
	touch $@

demo: install
	$(PY) scripts/demo.py samples demo-out

test: install
	$(PY) -m mypy codec cli models --ignore-missing-imports --explicit-package-bases
	$(PY) -m pytest
