#!/usr/bin/env bash
# Retrain the toyworld bundle from scratch on one GPU in a single short session, then evaluate it.
#
#   scripts/toyworld-gpu.sh [MINUTES] [OUT]
#
# MINUTES (default 8) bounds the training stages; each stage resumes from its checkpoint, so running the
# script again continues. The bundle is exported to OUT (default: a folder beside the workdir); copy it
# over backend/bundles/toyworld (or pass --out backend/bundles/toyworld) once its figures beat the shipped
# ones. Step targets are far above what the 2-core CPU box can afford: a longer VAE phase for colours and
# edges (vae_classifier_top1) and ~20x the CPU run's UNet steps (gen_class_match).
set -euo pipefail
MIN=${1:-8}
WORK=${WORKDIR:-${OUT:-.}/toyworld-gpu-work}
DEST=${2:-${OUT:-.}/toyworld-gpu-bundle}
export HF_HUB_OFFLINE=1
ldm-explore toyworld train --device cuda --workdir "$WORK" --n-train 40000 --procs "$(nproc)" \
    --stage data --stage vae --stage estimators --stage classifier --stage unet --stage decoder \
    --steps vae=6000 --steps estimators=3000 --steps classifier=1500 --steps unet=40000 --steps decoder=4000 --minutes "$MIN"
ldm-explore toyworld train --workdir "$WORK" --n-train 40000 --stage export --out "$DEST"
ldm-explore toyworld evaluate --json --bundle-dir "$DEST" | tee "$DEST/EVALUATE.json"
