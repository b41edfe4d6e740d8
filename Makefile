# Workbench — every command installs what it needs first (a venv in .venv, pinned by
# constraints.txt), so `make run` and `make test` work on a fresh clone.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint fmt migrate bench lock clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@# The Python workspace runs kernels under bubblewrap; as root, fetch it if missing
	@# (without it the server still runs and says why code execution is off).
	@command -v bwrap >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && apt-get install -y -qq bubblewrap) || true
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

run: install
	$(BIN)/workbench serve

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

migrate: install
	$(BIN)/workbench migrate

bench: install
	$(BIN)/python bench/store.py && $(BIN)/python bench/turn.py && $(BIN)/python bench/executor.py \
		&& $(BIN)/python bench/upload.py && $(BIN)/python bench/tools.py \
		&& $(BIN)/python bench/search.py

# Re-resolve every dependency to its newest allowed version and record the result.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -e ".[dev]"
	.lock-venv/bin/pip freeze --exclude-editable > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
