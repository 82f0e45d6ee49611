# batchsite: `make run` to try it, `make test` to run the whole suite.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install run test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## Migrate, print a demo API key, and run the web server and one worker until Ctrl-C.
run: install
	BATCHSITE_LOCAL_RUN=1 $(PY) manage.py runlocal

## Run the whole test suite (SQLite and the ORM broker unless DATABASE_URL/BATCHSITE_BROKER_URL say otherwise).
test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) var
