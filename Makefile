# The two commands of README's Quick start: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup serve test lint bench-quick clean

$(BIN)/tssynth: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/tssynth

## Start the service on the demo model (trained on first start if models/ is empty).
serve: setup
	$(BIN)/tssynth serve --host $(HOST) --port $(PORT)

## Run the whole test suite.
test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy --explicit-package-bases model_core app bench

bench-quick: setup
	$(BIN)/python bench/quality.py --quick
	$(BIN)/python bench/speed.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
