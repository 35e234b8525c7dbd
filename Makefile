# Two commands do everything (each creates .venv if it is missing and installs only when pyproject.toml or this
# file changed since the last install):
#   make run    the core install, then the main job (extra arguments: make run ARGS="--config=configs/mnist.py")
#   make test   the core plus the test, plots and tensorboard extras, then the tests (make test PYTEST_ARGS=...)
#   make lint   the formatter and linter check (ruff, configured in pyproject.toml); make format applies them
PYTHON ?= python3
VENV ?= .venv
ARGS ?=
PYTEST_ARGS ?=
TEST_EXTRAS ?= test,plots,tensorboard

PY := $(VENV)/bin/python

.PHONY: run test lint format

run: $(VENV)/.core-installed
	$(PY) -m dcvae_jax.main $(ARGS)

test: $(VENV)/.test-installed
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.test-installed
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: $(VENV)/.test-installed
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core-installed: pyproject.toml Makefile | $(PY)
	$(PY) -m pip install -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml Makefile | $(PY)
	$(PY) -m pip install -e ".[$(TEST_EXTRAS)]"
	touch $@ $(VENV)/.core-installed
