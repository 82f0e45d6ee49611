# batchsite: `make run` to try it, `make check` and `make test-fast` while working, `make test`
# to run the whole suite.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# `make run HOST=0.0.0.0 PORT=8001` serves on another address.
HOST ?= 127.0.0.1
PORT ?= 8000
# Settings refuse to load without a key; the checks never serve a request with it.
CHECK_SECRET_KEY ?= $${DJANGO_SECRET_KEY:-checks-only-not-secret}
# The Python client lives in its own package; installed beside the server when it is there.
CLIENT := $(wildcard clients/python/pyproject.toml)
# requirements.txt (runtime) and requirements-dev.txt (runtime + the dev extra) pin every
# package with its hashes; `make lock` writes them from pyproject.toml. No package source, link
# or path of the machine that wrote them goes in.
LOCK_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links --no-emit-trusted-host

.PHONY: install install-runtime lock run test test-fast check lint typecheck clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The project and the client go in as editable installs without dependencies: every
# dependency comes from the lock, checked against its hashes.
define install_project
	$(PIP) install --quiet --no-deps -e .
	$(if $(CLIENT),$(PIP) install --quiet --no-deps -e ./clients/python)
endef

# What `make run` needs (no test tools); `make install` adds the dev extra.
$(VENV)/.installed-runtime: requirements.txt pyproject.toml $(CLIENT) | $(PY)
	$(PIP) install --quiet --require-hashes -r requirements.txt
	$(install_project)
	touch $@

$(VENV)/.installed: requirements-dev.txt requirements.txt pyproject.toml $(CLIENT) | $(PY)
	$(PIP) install --quiet --require-hashes -r requirements-dev.txt
	$(install_project)
	touch $@ $(VENV)/.installed-runtime

install: $(VENV)/.installed

install-runtime: $(VENV)/.installed-runtime

## Rewrite requirements.txt and requirements-dev.txt from pyproject.toml: pins already in them
## stay, a new dependency gets its newest release (LOCK_FLAGS+=--upgrade moves every pin).
lock: | $(PY)
	$(PY) -c "import piptools" 2>/dev/null || $(PIP) install --quiet "pip-tools>=7.5"
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile $(LOCK_FLAGS) \
		--output-file requirements.txt pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile $(LOCK_FLAGS) --extra dev \
		--constraint requirements.txt --output-file requirements-dev.txt pyproject.toml

## Migrate, print a demo API key, and run the web server and one worker until Ctrl-C.
run: install-runtime
	BATCHSITE_LOCAL_RUN=1 $(PY) manage.py runlocal --host $(HOST) --port $(PORT)

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
