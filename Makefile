# The two set-up commands of the README: `make demo` and `make test` (each installs first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test typecheck

install: $(VENV)/.installed

# torch 2.13.0 is pinned first so pip takes the CPU build instead of a multi-GB CUDA one.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[eval,dev,ray]"
	touch $@

demo: install
	$(PY) scripts/demo.py samples demo-out

# mypy checks `nmc` as one package: a tree of links lays codec/, cli/ and models/ out as the
# installed nmc.codec, nmc.cli and nmc.models (setuptools' package-dir mapping, which mypy cannot read).
MYPY_TREE := build/mypy
typecheck: install
	rm -rf $(MYPY_TREE) && mkdir -p $(MYPY_TREE)/nmc
	ln -s $(CURDIR)/nmc/__init__.py $(CURDIR)/nmc/py.typed $(CURDIR)/codec $(CURDIR)/cli $(CURDIR)/models $(MYPY_TREE)/nmc/
	MYPYPATH=$(MYPY_TREE) $(PY) -m mypy -p nmc

test: typecheck
	$(PY) -m pytest
