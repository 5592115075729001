# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-cluster lint typecheck install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/orchestrator demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q --durations=15 -m "not cluster" tests
	# Multi-node Ray clusters of their own (one Ray per pytest process): tests/multinode, ~2-4 min.
	$(BIN)/python -m pytest -q -m multinode tests/multinode

# The `ray up` end-to-end test of the existing-host path (root; 2.5-6.5 min). Not in `make test`: with it the
# whole CI run (install + suite, ~15 min of tests) would come too close to its 20-minute budget.
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -q -m cluster tests/cluster

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .orchestrator .pytest_cache .mypy_cache .ruff_cache
