# semilabel: `make run` does a full run on the embedded default; `make test` runs the tests.
# Both create .venv and install the project (with test tools) on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

LS_VENV := .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed

.PHONY: install labelstudio run test lint docs bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Label Studio pins its own Django stack: it gets its own venv, used only by the tests
# that run a real Label Studio (they skip, saying so, when it could not be installed).
$(LS_STAMP):
	@( test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV) ) && \
	  $(LS_VENV)/bin/python -m pip install --quiet --upgrade pip && \
	  $(LS_VENV)/bin/python -m pip install --quiet "label-studio==1.23.2" && touch $(LS_STAMP) \
	  || echo "Label Studio could not be installed: the Label Studio round-trip tests will skip"

labelstudio: $(LS_STAMP)

run: $(STAMP)
	$(BIN)/semilabel retrain

test: $(STAMP) $(LS_STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The documentation site (mkdocs.yml, docs/): warnings, such as a broken link, are errors.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.ssl --quick
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.inference
	$(BIN)/python -m bench.weak_labeling
	$(BIN)/python -m bench.active_learning
	$(BIN)/python -m bench.scale --sizes 10000 100000
	$(BIN)/python -m bench.gate

clean:
	rm -rf .semilabel
