# Two commands do everything (each creates .venv if it is missing and installs only when pyproject.toml or this
# file changed since the last install):
#   make run    the core install, then the main job (extra arguments: make run ARGS="--config=configs/mnist.py")
#   make test   the core plus the test, plots and tensorboard extras, then the tests (make test PYTEST_ARGS=...)
#   make test-fast  the same without the tests marked slow (subprocesses, wheels, end-to-end training)
#   make lint   the formatter and linter check (ruff) and the type check (mypy dcvae_jax), configured in
#               pyproject.toml; make format applies ruff's fixes
#   make mutate mutation testing (mutmut, [tool.mutmut] in pyproject.toml) of the losses' and scores' modules; long
#               (about 2,000 mutants, hours on 2 busy cores; anomaly_scores alone ~25 min, estimators ~18 min):
#               MUTATE_ARGS='"dcvae_jax.evaluators.anomaly_scores*"' runs one module's mutants, MUTATE_CHILDREN the
#               parallel workers. Results stay in mutants/ (git-ignored) and a rerun only tests what changed
#               (rm -rf mutants to start over); compiled programs are cached in mutants/.jax_cache
#   make mutate-objectives  objectives.py's mutants (about 660) against its known-answer tests alone: the tests
#               that pytest -k "$(MUTATE_OBJECTIVES_K)" keeps of the selection (through PYTEST_ADDOPTS), one
#               worker, so a mutant costs seconds, not the minutes of the full selection's jitted training steps.
#               MUTATE_ARGS names mutants (default all of objectives'). Its verdicts and test map are the narrow
#               selection's: rm -rf mutants before a full make mutate, and after it
PYTHON ?= python3
VENV ?= .venv
ARGS ?=
PYTEST_ARGS ?=
MUTATE_ARGS ?=
MUTATE_CHILDREN ?= 2
MUTATE_OBJECTIVES_K ?= test_objectives.py
TEST_EXTRAS ?= test,plots,tensorboard

PY := $(VENV)/bin/python

.PHONY: run test test-fast lint format mutate mutate-objectives

run: $(VENV)/.core-installed
	$(PY) -m dcvae_jax.main $(ARGS)

test: $(VENV)/.test-installed
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.test-installed
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(VENV)/.test-installed
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy dcvae_jax

format: $(VENV)/.test-installed
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

MUTMUT_RUN = JAX_COMPILATION_CACHE_DIR=$(CURDIR)/mutants/.jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
  $(VENV)/bin/mutmut run

mutate: $(VENV)/.test-installed
	$(MUTMUT_RUN) --max-children $(MUTATE_CHILDREN) $(MUTATE_ARGS)
	$(VENV)/bin/mutmut results

mutate-objectives: $(VENV)/.test-installed
	PYTEST_ADDOPTS='-k "$(MUTATE_OBJECTIVES_K)"' \
	  $(MUTMUT_RUN) --max-children 1 $(or $(MUTATE_ARGS),"dcvae_jax.models.objectives*")
	$(VENV)/bin/mutmut results

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core-installed: pyproject.toml Makefile | $(PY)
	$(PY) -m pip install -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml Makefile | $(PY)
	$(PY) -m pip install -e ".[$(TEST_EXTRAS)]"
	touch $@ $(VENV)/.core-installed
