# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-slow test-fast lint format demo simulator schemas bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)   ## start the worker (embedded Temporal dev server + UI; simulator when no FULLSTORY_API_KEY)
	$(PY) worker.py

test: $(STAMP)  ## run every test but the longest fault loops (under 10 minutes on 2 cores)
	$(PY) -m pytest -q -ra -m "not slow" tests

test-slow: $(STAMP)  ## the longest fault loops (ten SIGKILLs in a row, kill-cost measurements); CI runs them too
	$(PY) -m pytest -q -ra -m slow tests

test-fast: $(STAMP)  ## every test but the end-to-end ones (dev server, worker subprocesses, fault loops): under a minute
	$(PY) -m pytest -q -ra -n 2 -m "not e2e" tests

lint: $(STAMP)  ## ruff (lint + format check) over everything, mypy over workflows/ and activities/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)  ## apply ruff's formatting and safe fixes (then check with `make lint`)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: $(STAMP)  ## start one events and one users import against the simulator and print the results
	$(PY) worker.py demo

simulator: $(STAMP)  ## run the Fullstory simulator alone
	$(PY) -m simulator

schemas: $(STAMP)  ## regenerate the checked-in JSON Schemas from the models
	$(PY) -m workflows.schemas --write

bench: $(STAMP)  ## run the benchmarks (slow; prints figures, asserts nothing)
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
