# batchsite: `make run` to try it, `make check` and `make test-fast` while working, `make test`
# to run the whole suite.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Settings refuse to load without a key; the checks never serve a request with it.
CHECK_SECRET_KEY ?= $${DJANGO_SECRET_KEY:-checks-only-not-secret}

.PHONY: install run test test-fast check lint typecheck clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps -e ./clients/python
	touch $@

install: $(VENV)/.installed

## Migrate, print a demo API key, and run the web server and one worker until Ctrl-C.
run: install
	BATCHSITE_LOCAL_RUN=1 $(PY) manage.py runlocal

## Run the whole test suite (SQLite and the ORM broker unless DATABASE_URL/BATCHSITE_BROKER_URL say otherwise).
test: install
	$(PY) -m pytest

## Without the cluster, browser, load and slow tests, on both CPUs (one SQLite file and data dir each).
test-fast: install
	$(PY) -m pytest -q -n 2 -m "not cluster and not browser and not load and not slow"

## The fast checks, in order, stopping at the first failure: lint, Django's checks, migrations, types.
check: lint
	DJANGO_SECRET_KEY=$(CHECK_SECRET_KEY) $(PY) manage.py check --fail-level WARNING
	DJANGO_SECRET_KEY=$(CHECK_SECRET_KEY) $(PY) manage.py makemigrations --check --dry-run
	$(MAKE) typecheck

typecheck: install
	DJANGO_SECRET_KEY=$(CHECK_SECRET_KEY) $(VENV)/bin/mypy

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) var
