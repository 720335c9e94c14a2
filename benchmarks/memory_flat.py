"""Peak resident memory of ``ldm-explore generate`` against the number of prompts (it must stay flat).

    python benchmarks/memory_flat.py [--counts 4 16 64] [--model PATH]

Each count runs in a fresh process (GNU time's maximum resident set size), every self-attention layer
recorded and stored. Without --model it builds the tests' small random-init SD-shaped pipeline.
"""

import sys
import tempfile
from pathlib import Path

from _gnu_time import timed
from ldm_explore.backend.cli import OneLineParser  # argparse's own errors: one line, exit 2


def main():
    ap = OneLineParser()
    ap.add_argument("--counts", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=15)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    if a.model is None:
        from ldm_explore.backend.pipeline.fixtures import build_tiny_pipeline

        build_tiny_pipeline(tmp / "model", sample_size=16, channels=(32, 64, 64))
        a.model = str(tmp / "model")
    exe = Path(sys.executable).with_name("ldm-explore")
    print(f"model: {a.model}; {a.steps} steps; all self-attention layers recorded and stored")
    for n in a.counts:
        f = tmp / f"p{n}.csv"
        f.write_text("prompts,seeds,prompt_inds\n" + "".join(f"prompt number {i},{i},{i}\n" for i in range(n)))
        rss, wall, _ = timed([exe, "generate", "--model", a.model, "--prompts", f, "--cache", tmp / f"store{n}",
                              "--steps", a.steps, "--layers", "self-attention"])
        print(f"  {n:5d} prompts: peak RSS {rss:7.1f} MiB, wall {wall}")


if __name__ == "__main__":
    main()
