# Set-up and everyday commands. `make demo` and `make test` create .venv when absent.
PYTHON ?= python3
VENV ?= .venv
# GPU users: make TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>" ...
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install demo test lint bench clean

$(BIN)/medfuse: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/medfuse

install: $(BIN)/medfuse

demo: install
	$(BIN)/medfuse demo --out runs/demo

test: install
	MPLCONFIGDIR=$${MPLCONFIGDIR:-$$(mktemp -d)} $(BIN)/python -m pytest -q -n 2 tests

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_prepare.py

clean:
	rm -rf runs .pytest_cache
