# make chapter: set up .venv (once) and execute every section into build/
# make test:    set up .venv (once) and run the tests
# make book:     set up .book-venv (once) and build the web book into
#                build/book/_build/html/ from the executed notebooks
# make book-test: build the book and test it in Chromium
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BOOK_PYTHON ?= python3.11
BOOK_VENV := .book-venv
BOOK_PY := $(BOOK_VENV)/bin/python

.PHONY: chapter test library book book-test

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

$(BOOK_VENV)/.installed: book/requirements.txt book/constraints.txt
	test -x $(BOOK_PY) || $(BOOK_PYTHON) -m venv $(BOOK_VENV)
	$(BOOK_PY) -m pip install -q -r book/requirements.txt -c book/constraints.txt
	touch $@

book: $(BOOK_VENV)/.installed
	$(BOOK_PY) book/build.py

book-test: book
	$(BOOK_PY) -m pytest book

# make assignments: set up .venv and assignments/.venv (nbgrader, once),
# check that the assignments' source notebooks match the library, then
# generate the student versions with nbgrader and autograde the reference,
# untouched and wrong solutions (assignments/README.md)
ASSIGN_VENV := assignments/.venv
ASSIGN_PY := $(ASSIGN_VENV)/bin/python

.PHONY: assignments

$(ASSIGN_VENV)/.installed: assignments/requirements.txt assignments/constraints.txt
	test -x $(ASSIGN_PY) || $(PYTHON) -m venv $(ASSIGN_VENV)
	$(ASSIGN_PY) -m pip install -q -r assignments/requirements.txt -c assignments/constraints.txt
	touch $@

assignments: $(VENV)/.installed $(ASSIGN_VENV)/.installed
	$(PY) assignments/build.py --check
	$(ASSIGN_PY) assignments/check.py --kernel-python $(PY)
