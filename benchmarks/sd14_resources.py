"""SD v1.4 at its real size, on the random-weight fixture: memory, disk and time of the studies' experiment.

    ldm-explore fixture sd14 --root FIX                      # once: the full-size fixture (about 4 GB)
    python benchmarks/sd14_resources.py --root FIX rss [--size 256] [--batches 1 4 10] [--prompts 10 20]
    python benchmarks/sd14_resources.py --root FIX stages [--size 512]
    python benchmarks/sd14_resources.py --root FIX experiment [--size 256] [--per-split 3]

rss         peak host RSS (GNU time) of accumulating the train split's probe statistics, all 16 layers x 15
            LMS steps, for each batch size at a fixed number of prompts, then for each number of prompts at the
            largest batch; each in a fresh process. Also prints the activations a run produces, the disk one run
            takes with --keep-activations, and the checkpoint size.
stages      one prompt through every stage of the experiment, each timed: generation with recording, decoding
            every step (x_t and x0), labels on the final image, off-the-shelf models and the classifier on every
            step's image, probe statistics of all layers and steps.
experiment  ``ldm-explore experiment run --bundle sd14`` on the studies' two prompt files, a few prompts per
            split, under GNU time.

The fixture's weights are random: these figures are about shapes, memory and compute, never about results.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _gnu_time import timed
from ldm_explore.backend.cli import OneLineParser  # argparse's own errors: one line, exit 2

HERE = Path(__file__).resolve()


def worker_rss(a) -> None:
    """In a fresh process: the train split's statistics for ``a.n`` prompts at batch ``a.batch``."""
    import torch

    from ldm_explore.backend.bundles import load_bundle
    from ldm_explore.backend.experiment.engine import Config, Experiment
    from ldm_explore.backend.prompts import PromptSet
    from ldm_explore.cache.store import RunStore

    b = load_bundle("sd14", device=a.device)
    ps = b.read_prompts()
    train = [p for p in ps if p.split == "train"][: a.n]
    test = [p for p in ps if p.split == "test"][:1]
    out = Path(tempfile.mkdtemp())
    cfg = Config(steps=15, batch=a.batch, height=a.size, width=a.size, baselines=False, checkpoint_every=10 ** 6)
    notes = []
    ex = Experiment(b, PromptSet(train + test, "bench"), out / "r", RunStore(out / "s"), cfg=cfg, notify=notes.append)
    t = time.perf_counter()
    st = ex._stats("train")
    wall = time.perf_counter() - t
    ck = sum(f.stat().st_size for f in (out / "r" / "checkpoint").glob("*.safetensors"))
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print(json.dumps({"runs": st["real"].images, "seconds": wall, "checkpoint_bytes": ck,
                      "stats_bytes": st["real"].nbytes(), "keep_bytes_per_run": ex.activation_bytes_per_run(),
                      "device": str(b.pipe.unet.device), "peak_gpu_mib": peak_gpu, "notes": notes}))


def rss(a) -> None:
    print(f"SD v1.4 fixture, {a.size}x{a.size}, 16 self-attention layers x 15 LMS steps, train-split statistics "
          f"(float64), baselines off; fresh process each, peak RSS by GNU time")
    seen: dict = {}  # a configuration in both series is measured once
    for label, runs in (("batch size", [(b, a.prompts[0]) for b in a.batches]),
                        ("number of prompts", [(a.batches[-1], n) for n in a.prompts])):
        print(f"-- against the {label}")
        for batch, n in runs:
            if (batch, n) not in seen:
                mib, wall, r = timed([sys.executable, HERE, "--root", a.root, "worker-rss", "--size", a.size,
                                      "--batch", batch, "--n", n, "--device", a.device])
                if r.returncode:
                    raise SystemExit(r.stderr[-3000:])
                seen[(batch, n)] = mib, wall, json.loads(r.stdout.strip().splitlines()[-1])
            mib, wall, d = seen[(batch, n)]
            print(f"  batch {batch:3d}, {n:3d} prompts: peak RSS {mib:8.0f} MiB, wall {wall}; "
                  f"{d['seconds'] / max(d['runs'], 1):.1f} s per run; statistics {d['stats_bytes'] / 2**30:.2f} GiB, "
                  f"checkpoint {d['checkpoint_bytes'] / 2**30:.2f} GiB; --keep-activations would take "
                  f"{d['keep_bytes_per_run'] / 2**20:.0f} MiB per run" +
                  (f"; peak GPU {d['peak_gpu_mib']:.0f} MiB" if d["peak_gpu_mib"] else ""))


def stages(a) -> None:
    import numpy as np
    import torch

    from ldm_explore.backend.bundles import load_bundle
    from ldm_explore.backend.experiment.buffer import ActivationBuffer
    from ldm_explore.backend.pipeline.generate import GenerationSettings, decode_latents, generate
    from ldm_explore.backend.probing.labels import per_step, targets_many
    from ldm_explore.backend.probing.stats import ProbeStats, area_average

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    t = time.perf_counter()
    b = load_bundle("sd14", device=a.device)
    print(f"load the sd14 bundle (pipeline, {', '.join(b.properties)} estimators, VGG-16) on "
          f"{b.pipe.unet.device}: {time.perf_counter() - t:.1f} s")
    for line in b.left_out:
        print(f"  {line}")
    p = [q for q in b.read_prompts() if q.split == "test"][:1]
    s = GenerationSettings(steps=15, height=a.size, width=a.size, layers=b.layers)
    times = {}
    with ActivationBuffer(b.pipe.unet.device) as buf:
        sync()
        t = time.perf_counter()
        run = generate(b.pipe, p, s, decode=False, sink=buf)[0]
        sync()
        times["generation, 15 LMS steps, 16 layers recorded"] = time.perf_counter() - t
        t = time.perf_counter()
        lat = torch.from_numpy(run.latents)
        xt = decode_latents(b.pipe, lat)
        x0 = decode_latents(b.pipe, torch.from_numpy(run.x0_latents))
        sync()
        times["decoding every step, x_t and x0 (30 VAE decodes)"] = time.perf_counter() - t
        t = time.perf_counter()
        y = targets_many(b.estimators, run.final[None])[0]
        times["labels: estimators on the final image"] = time.perf_counter() - t
        t = time.perf_counter()
        per_step(b.estimators, xt)
        times["off-the-shelf estimators on every step's image"] = time.perf_counter() - t
        t = time.perf_counter()
        b.classifier(xt)
        times["VGG-16 on every step's image"] = time.perf_counter() - t
        t = time.perf_counter()
        st = ProbeStats(b.properties, b.pipe.unet.device)
        S = len(run.timesteps)
        for layer in b.layers:
            for step in range(S):
                X = buf.get(layer, step)
                Y = torch.from_numpy(area_average(y[None], *X.shape[1:3])).permute(0, 2, 3, 1).reshape(-1, len(y))
                st.add_steps(layer, step, X.reshape(-1, X.shape[-1]), Y, S)
        sync()
        times[f"probe statistics, all layers and steps (float64 on {st.device})"] = time.perf_counter() - t
        print(f"activations of the run: {buf.nbytes / 2**20:.0f} MiB; statistics: {st.nbytes() / 2**30:.2f} GiB")
    print(f"one prompt at {a.size}x{a.size}, every stage:")
    for k, v in times.items():
        print(f"  {k:70s} {v:8.1f} s")
    print(f"  {'total':70s} {sum(times.values()):8.1f} s")
    assert np.isfinite(y).all()


def experiment(a) -> None:
    exe = Path(sys.executable).with_name("ldm-explore")
    out = Path(tempfile.mkdtemp())
    cmd = [exe, "experiment", "run", "--bundle", "sd14", "--per-split", a.per_split, "--height", a.size,
           "--width", a.size, "--batch-size", a.per_split, "--out", out / "report", "--cache", out / "store"]
    mib, wall, r = timed(cmd)
    print(r.stderr[-4000:])
    print(r.stdout[:3000])
    print(f"experiment run --bundle sd14, {a.per_split} prompts per split at {a.size}x{a.size}: wall {wall}, "
          f"peak RSS {mib:.0f} MiB; report in {out / 'report'}")


def main() -> None:
    ap = OneLineParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="the fixture's folder (ldm-explore fixture sd14 --root ...)")
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("rss")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 10])
    p.add_argument("--prompts", type=int, nargs="+", default=[10, 20])
    p.add_argument("--device", default="auto")
    p = sub.add_parser("worker-rss")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--device", default="auto")
    p = sub.add_parser("stages")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--device", default="auto")
    p = sub.add_parser("experiment")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--per-split", type=int, default=3)
    a = ap.parse_args()
    from ldm_explore.backend.bundles.fixture import environment

    os.environ.update(environment(a.root))  # before huggingface_hub reads where its cache is
    os.environ["HF_HUB_OFFLINE"] = "1"
    {"rss": rss, "worker-rss": worker_rss, "stages": stages, "experiment": experiment}[a.what](a)


if __name__ == "__main__":
    main()
