#!/usr/bin/env bash
# SD v1.4 at its real size on one GPU, on the random-weight fixture: the figures BENCHMARKS.md asks of a GPU.
#   scripts/sd14-gpu.sh [FIXTURE_DIR] [PROMPTS_PER_SPLIT]
# Builds the full-size fixture (about 4 GB; skipped when it is there), then, each printed with its command:
#   1. one prompt at 512x512 through every stage (generation with recording, decodes, labels, off-the-shelf
#      models on every step, probe statistics), fp16;
#   2. recording overhead: all 16 self-attention layers recorded vs the stock pipeline;
#   3. peak host RSS and peak GPU memory of the train-split statistics at batch 1, 4, 10;
#   4. the studies' experiment on their two prompt files (617 prompts unless PROMPTS_PER_SPLIT is given),
#      wall time and rate.
# Random weights: these are figures of memory and speed, not of what SD v1.4 knows.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-$PWD/.sd14-fixture}
PER_SPLIT=${2:-}
make install >/dev/null
PY=.venv/bin/python
.venv/bin/pip install -q '.[sd]'
[ -f "$ROOT/.built" ] || { .venv/bin/ldm-explore fixture sd14 --root "$ROOT" && touch "$ROOT/.built"; }
eval "$($PY -c "from ldm_explore.backend.bundles.fixture import environment, export_lines; print(export_lines(environment('$ROOT')))")"
export HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
set -x
$PY benchmarks/sd14_resources.py --root "$ROOT" stages --size 512 --device cuda
$PY benchmarks/recording_overhead.py --model CompVis/stable-diffusion-v1-4 --device cuda --repeats 5
$PY benchmarks/sd14_resources.py --root "$ROOT" rss --size 512 --batches 1 4 10 --prompts 10 --device cuda
/usr/bin/time -v .venv/bin/ldm-explore experiment run --bundle sd14 --device cuda --batch-size 10 \
    ${PER_SPLIT:+--per-split $PER_SPLIT} --out report-sd14-gpu --cache "$ROOT/store"
