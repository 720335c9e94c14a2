"""Two CPU processes (torchrun, gloo) fit the probes one process fits from all runs, and write one report."""

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ldm_explore.backend.bundles import load_bundle
from ldm_explore.backend.pipeline.generate import GenerationSettings, RunResult
from ldm_explore.backend.pipeline.runner import run_key
from ldm_explore.backend.probing.labels import targets
from ldm_explore.backend.probing.properties import NAMES
from ldm_explore.backend.probing.ridge import Probes, fit
from ldm_explore.backend.probing.stats import ProbeStats
from ldm_explore.backend.prompts import PromptSet
from ldm_explore.cache.store import RunStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_fit_what_one_fits(tmp_path):
    # 3 train prompts (split 2 + 1 between the processes), 1 validation prompt, 2 test prompts (one each)
    b = load_bundle("toyworld", device="cpu")
    lines = open(b.prompts, encoding="utf-8").read().splitlines()
    by_split = {s: [x for x in lines[1:] if x.endswith("," + s)] for s in ("train", "val", "test")}
    pfile = tmp_path / "prompts.csv"
    pfile.write_text("\n".join([lines[0], *by_split["train"][:3], *by_split["val"][:1], *by_split["test"][:2]]) + "\n",
                     encoding="utf-8")
    args = ["experiment", "run", "--bundle", "toyworld", "--prompts", str(pfile), "--batch-size", "2",
            "--no-baselines", "--steps", "5", "--device", "cpu", "--json", "--keep-activations"]
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    two = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()), "-m",
                          "ldm_explore.backend.cli", *args, "--out", str(tmp_path / "two"), "--cache",
                          str(tmp_path / "store")], capture_output=True, text=True, env=env, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    # each process wrote its own share of statistics and test rows
    ck = tmp_path / "two" / "checkpoint"
    shares = [ProbeStats.load(ck / f"stats-train-real-rank{r}of2.safetensors") for r in (0, 1)]
    assert sorted(s.images for s in shares) == [1, 2]  # 3 train prompts split 2 + 1
    assert (ck / "test-rows-rank0of2.jsonl").exists() and (ck / "test-rows-rank1of2.jsonl").exists()

    # what one process accumulates from all the runs (read back from the store the two processes filled)
    store = RunStore(tmp_path / "store")
    prompts = PromptSet.read(pfile)
    settings = GenerationSettings(steps=5, guidance=7.5, layers=b.layers)

    def stats(split):
        st = ProbeStats(NAMES)
        for p in prompts.select(split):
            run = RunResult.from_entry(store.get(run_key(b.pipe, p, settings)))
            st.add_run(run.activations, targets(b.estimators, run.final))
        return st

    whole = stats("train")
    parts = shares[0].merge(shares[1])
    assert parts.images == whole.images == 3
    # the same sums, added in another order; the targets differ in their last float32 bits (the estimators
    # ran with one thread per process there, with two here)
    for k, v in whole.to_tensors().items():
        np.testing.assert_allclose(parts.to_tensors()[k], v, rtol=1e-5, atol=1e-4)
    # the probes both processes fitted from the all-reduced statistics are those one fits from all runs (ridge
    # weights from 3 images are ill-conditioned, so compare what they predict on a test run)
    got = Probes.load(tmp_path / "two" / "probes-real.safetensors")
    want = fit(whole, stats("val"))
    assert got.meta["train_images"] == 3 and got.meta["val_images"] == 1
    run = RunResult.from_entry(store.get(run_key(b.pipe, prompts.select("test")[0], settings)))
    for layer in b.layers:
        np.testing.assert_allclose(got.predict(layer, run.activations[layer]),
                                   want.predict(layer, run.activations[layer]), atol=1e-3)
    # the main process wrote the report from both processes' test rows: both test images, once each
    rows = list(csv.DictReader(open(tmp_path / "two" / "metrics.csv")))
    assert rows and all(r["n"] == "2" for r in rows)
