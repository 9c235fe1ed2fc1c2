# Two commands for a fresh machine with Python 3.11 and make: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint install clean bench

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade 'pip>=24'
	# requirements.lock pins every transitive version; torch==2.13.0 is the CPU wheel.
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP)
	bash tests/support/ensure_postgres.sh
	bash tests/support/ensure_nginx.sh
	bash tests/support/ensure_chromium.sh
	$(MAKE) lint
	# Two workers, one module per work unit (tests/conftest.py): the federation tests spend much
	# of their time waiting on Flower processes, so two at once fill the two cores.
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=25

demo: $(STAMP)
	bash tests/support/ensure_nginx.sh
	$(BIN)/fedrisk demo

# Each prints a side-by-side ratio; see the README's benchmark section for the latest figures.
bench: $(STAMP)
	$(BIN)/python benchmarks/he_overhead.py
	$(BIN)/python benchmarks/scoring.py
	$(BIN)/python benchmarks/deployment.py
	$(BIN)/python benchmarks/scale.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
