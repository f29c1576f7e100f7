# The two commands of the README: `make run` and `make test`. CONTRIBUTING.md lists the others.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test test-fast test-unit test-integration test-e2e bench system-deps lint clean

run: $(VENV)/.installed
	$(PY) -m sfu $(ARGS)

test: $(VENV)/.installed-test system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the browser and network-namespace tests (marker e2e, set in tests/e2e/conftest.py).
test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

test-unit: $(VENV)/.installed-test
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: $(VENV)/.installed-test
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: $(VENV)/.installed-test system-deps
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(PY) bench/forward_bench.py --subscribers 1,2,4,8 --repeat 3

# ruff (lint and format) over sfu tests bench scripts, mypy --strict over sfu/, the client's JS.
lint: $(VENV)/.installed-test
	VENV=$(VENV) ./scripts/lint.sh

system-deps:
	./scripts/install-system-deps.sh

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache

# Long fuzz run (the bounded run is part of `make test`): SFU_FUZZ_EXAMPLES mutants per mutation
# target, SFU_FUZZ_PROPERTY_EXAMPLES generated inputs per Hypothesis property, and
# SFU_FUZZ_SERVER_EXAMPLES rounds per running-server target (each crosses a real socket).
.PHONY: fuzz
fuzz: $(VENV)/.installed-test
	SFU_FUZZ_EXAMPLES=$${SFU_FUZZ_EXAMPLES:-1000000} \
	SFU_FUZZ_PROPERTY_EXAMPLES=$${SFU_FUZZ_PROPERTY_EXAMPLES:-10000} \
	SFU_FUZZ_SERVER_EXAMPLES=$${SFU_FUZZ_SERVER_EXAMPLES:-20000} \
	$(PY) -m pytest tests/fuzz -q -s --durations=0 $(PYTEST_ARGS)
