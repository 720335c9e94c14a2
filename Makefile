# Two entry points: `make demo` (install + launch the explorer) and `make test` (install + run the tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ldm-explore

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/recording_overhead.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/recording_overhead.py --model toyworld
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/tui_latency.py
	HF_HUB_OFFLINE=1 $(BIN)/ldm-explore toyworld evaluate --json

clean:
	rm -rf $(VENV) build *.egg-info
