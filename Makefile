# zenmetry: `make demo` sets up and runs the demo; `make test` sets up and runs the tests.
# The default combination is Python 3.11 with Django 5.2; `make test-django6` runs the same suite
# on Python 3.13 with Django 6.1, in a venv of its own.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
PYTHON313 ?= $(shell pyenv root 2>/dev/null)/versions/3.13.0/bin/python

.PHONY: demo test test-django6 tools lint docs bench clean

$(BIN)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) --editable '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python examples/demo.py

# promtool, prometheus and amtool for the stack's tests, from Debian (root on these machines).
tools:
	@command -v promtool >/dev/null && command -v amtool >/dev/null || { \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null; }

test: $(BIN)/.installed tools
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage combine --quiet 2>/dev/null || true  # the subprocesses' data (pyproject: patch)
	$(BIN)/coverage report --skip-covered

test-django6:
	@test -x "$(PYTHON313)" || { echo "Python 3.13 not found at '$(PYTHON313)': set PYTHON313=/path/to/python3.13"; exit 2; }
	$(MAKE) test PYTHON=$(PYTHON313) VENV=.venv-django6 CONSTRAINTS=constraints-django6.txt

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy
	$(BIN)/mkdocs build --strict --quiet

docs: $(BIN)/.installed
	$(BIN)/mkdocs build --strict

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf .venv .venv-django6 .pytest_cache .mypy_cache .ruff_cache .site
