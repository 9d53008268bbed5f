# make chapter: set up .venv (once) and execute every section into build/
# make test:    set up .venv (once) and run the tests
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: chapter test library

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

chapter: $(VENV)/.installed
	$(PY) tools/chapter.py execute

test: $(VENV)/.installed
	$(PY) -m pytest

library: $(VENV)/.installed
	$(PY) tools/chapter.py library
