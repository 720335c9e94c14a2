"""Generation time with every self-attention layer recorded, over the stock pipeline without hooks.

    python benchmarks/recording_overhead.py [--model PATH] [--steps 15] [--repeats 5]

Without --model it builds the small random-init SD-shaped pipeline of the tests (backend/tiny.py) in a
temporary folder. Both arms run the same seeds through the same stock pipeline; "recorded" adds the
Recorder (hooks on every *attn1.to_out.0, the UNet and the step callback), moving activations to the
CPU as float16; a middle arm keeps only the per-step x_t, noise prediction and x0. Decoding of intermediate steps is excluded from both arms: it is optional work, not
recording overhead. Prints the medians and their ratio (target: at most 1.10).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from ldm_explore.backend.pipeline.generate import GenerationSettings, generate
from ldm_explore.backend.pipeline.loading import load_pipeline
from ldm_explore.backend.prompts import Prompt
from ldm_explore.backend.pipeline.recorder import SELF_ATTENTION_PATTERN, match_layers
from ldm_explore.backend.cli import OneLineParser  # argparse's own errors: one line, exit 2


def main() -> None:
    ap = OneLineParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sample-size", type=int, default=16, help="latent size of the built pipeline")
    ap.add_argument("--size", type=int, default=None, help="image height and width (default: the model's)")
    a = ap.parse_args()
    tmp = None
    if a.model is None:
        from ldm_explore.backend.pipeline.fixtures import build_tiny_pipeline

        tmp = tempfile.TemporaryDirectory()
        build_tiny_pipeline(tmp.name, sample_size=a.sample_size, channels=(32, 64, 64))
        a.model = tmp.name
    from ldm_explore.backend.bundles import resolve_model

    pipe = load_pipeline(resolve_model(a.model), device=a.device)
    layers = tuple(match_layers(pipe.unet, [SELF_ATTENTION_PATTERN]))
    prompt = [Prompt(0, "a red cube left of a blue sphere, lit from the left", 1234)]
    plain = GenerationSettings(steps=a.steps, height=a.size, width=a.size)
    rec = GenerationSettings(steps=a.steps, layers=layers, height=a.size, width=a.size)

    def stock():
        pipe([p.prompt for p in prompt], num_inference_steps=a.steps, guidance_scale=7.5, height=a.size, width=a.size,
             generator=[torch.Generator().manual_seed(p.seed) for p in prompt], output_type="np")

    arms = {
        "stock pipeline": stock,
        "x_t, eps, x0 only": lambda: generate(pipe, prompt, plain, record=False, decode=False),
        "all self-attention recorded": lambda: generate(pipe, prompt, rec, decode=False),
    }
    for f in arms.values():
        f()  # warm up
    times = {k: [] for k in arms}
    for _ in range(a.repeats):  # interleaved, so drift hits every arm alike
        for k, f in arms.items():
            if pipe.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            f()
            if pipe.device.type == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"model: {a.model if tmp is None else 'random-init SD-shaped pipeline, latent %d' % a.sample_size}; "
          f"{len(layers)} self-attention layers; {a.steps} steps; device {pipe.device}; "
          f"torch threads {torch.get_num_threads()}; median of {a.repeats}")
    for k, v in med.items():
        print(f"  {k:30s} {v * 1000:8.1f} ms")
    ratio = med["all self-attention recorded"] / med["stock pipeline"]
    print(f"recording overhead ratio (all self-attention recorded / stock pipeline): {ratio:.3f}  (target <= 1.10)")
    print(f"  of which x_t, eps, x0 bookkeeping alone: {med['x_t, eps, x0 only'] / med['stock pipeline']:.3f}")


if __name__ == "__main__":
    main()
