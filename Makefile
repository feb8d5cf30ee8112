# tradectl — everything a fresh machine needs is installed by these targets.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint bench backtest clean

run: $(STAMP)
	$(BIN)/tradectl run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,tune]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

backtest: $(STAMP)
	$(BIN)/tradectl backtest

bench: $(STAMP)
	$(BIN)/python bench/replay_throughput.py
	$(BIN)/python bench/policy_latency.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/broker_latency.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info
