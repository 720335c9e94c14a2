# Two entry points: `make demo` (install + launch the explorer) and `make test` (install + run the tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: demo test install bench clean tmux

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

# the tests also cover the optional [sd] extra (TRACER through carvekit, on a random-init model)
$(TSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,sd]'
	touch $(STAMP) $(TSTAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ldm-explore

# the smoke test drives the installed app in a real terminal (tmux); as root on Debian/Ubuntu it is installed
tmux:
	@command -v tmux >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && apt-get install -y -qq tmux >/dev/null; } || \
	  echo "tmux is not installed: the terminal smoke test will be skipped (apt-get install tmux)"

# two xdist workers (one compute thread each: tests/conftest.py); the 10 slowest tests are listed at the end
test: $(TSTAMP) tmux
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=10

bench: $(TSTAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/recording_overhead.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/recording_overhead.py --model toyworld
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/tui_latency.py
	HF_HUB_OFFLINE=1 $(BIN)/ldm-explore toyworld evaluate --json

clean:
	rm -rf $(VENV) build *.egg-info
