# semilabel: `make run` does a full run on the embedded default; `make test` runs the tests.
# Both create .venv and install the project (with test tools) on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/semilabel retrain

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.ssl --quick
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.weak_labeling

clean:
	rm -rf .semilabel
