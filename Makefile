# fedgrpo — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedgrpo-installed
MODELS_DIR ?= models
SCENARIO ?= scenarios/quickstart.yaml
# the slowest tests are listed at the end of every run, so a creeping suite is seen in CI
PYTEST_ARGS ?= --durations=15
# two test processes (pytest-xdist), one test file each at a time: many tests wait on
# subprocesses, servers and sockets, so two workers fill the two cores CI has
PYTEST_PAR ?= -n 2 --dist loadfile

.PHONY: venv demo test test-fast test-all lint bench clean-venv

venv: $(STAMP)

# Reinstall only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[fedgrpo] installing into $(VENV) (CPU torch, all extras)..."
	$(PY) -m pip install -q -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install -q -c constraints.txt -e ".[all]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fedgrpo demo --scenario $(SCENARIO) --models-dir $(MODELS_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check fedgrpo/__init__.py fedgrpo/errors.py edge rounds selection sim server scenarios experiments tests benchmarks
	$(VENV)/bin/mypy -p fedgrpo
	$(VENV)/bin/lint-imports --no-cache

# What CI runs: lint + type check + the suite, slow end-to-end tests included (one SmolLM2
# scenario round among them). The SmolLM2 ONNX export test (export vs torch, minutes more on
# 2 cores) runs in `make test-all`. `make test-fast` skips the slow ones too.
test: lint
	FEDGRPO_SLOW=1 $(PY) -m pytest -q $(PYTEST_PAR) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_PAR) $(PYTEST_ARGS)

test-all: lint
	FEDGRPO_SLOW=1 FEDGRPO_REAL_MODEL=1 $(PY) -m pytest -q $(PYTEST_PAR) $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/edge_scoring.py
	$(PY) benchmarks/sim_scale.py

clean-venv:
	rm -rf $(VENV)
