# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test demo simulator schemas bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)   ## start the worker (embedded Temporal dev server + UI; simulator when no FULLSTORY_API_KEY)
	$(PY) worker.py

test: $(STAMP)  ## run every test
	$(PY) -m pytest -q -ra tests

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
