"""``ldm-explore toyworld evaluate``: the bundle's figures on held-out data."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..probing.metrics import dice_rows, pearson_rows, spearman_rows
from .scenes import COLORS, SHAPES, class_index
from .train import EVAL_SEED0, render_many


def main_class_of(prompt: str) -> int | None:
    """The class of the object a grammar prompt names first ("a large red sphere ..." -> red sphere)."""
    w = prompt.lower().replace(",", " ").split()
    colors = [x for x in w[:4] if x in COLORS]
    shapes = [x for x in w[:5] if x in SHAPES]
    if not colors or not shapes:
        return None
    return class_index(colors[0], shapes[0])


@torch.no_grad()
def evaluate(bundle_dir: Path | None = None, n_renders: int = 500, n_prompts: int = 200, n_timing: int = 5,
             batch: int = 20, progress=None) -> dict:
    from ..bundles import load_bundle
    from ..pipeline.generate import GenerationSettings, generate, to_uint8
    from ..prompts import PromptSet

    progress = progress or (lambda msg: None)
    b = load_bundle("toyworld", device="cpu", bundle_dir=bundle_dir)
    res: dict[str, float] = {}
    progress(f"rendering {n_renders} held-out scenes")
    d = render_many(range(EVAL_SEED0, EVAL_SEED0 + n_renders), procs=2 if n_renders >= 200 else 1)
    est = b.estimators.all(d["rgb"])
    res["mask_dice"] = float(np.mean([dice_rows(p[None] > 0.5, m)[0] for p, m in zip(est["mask"], d["mask"])]))
    res["depth_spearman"] = float(np.mean([spearman_rows(p[None], t)[0] for p, t in zip(est["depth"], d["depth"])]))
    res["shading_pearson"] = float(np.mean([pearson_rows(p[None], t)[0] for p, t in zip(est["shading"], d["shading"])]))
    probs = b.classifier(d["rgb"])
    order = np.argsort(-probs, 1)
    res["classifier_top1"] = float(np.mean(order[:, 0] == d["cls"]))
    res["classifier_top5"] = float(np.mean([c in row[:5] for c, row in zip(d["cls"], order)]))
    progress("VAE reconstructions")
    vae = b.pipe.vae
    recs = []
    for i in range(0, n_renders, 50):
        x = torch.from_numpy(d["rgb"][i:i + 50]).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
        recs.append(to_uint8(((y.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()))
    rec = np.concatenate(recs)
    mse = ((rec.astype(np.float64) - d["rgb"]) ** 2).mean(axis=(1, 2, 3))
    res["vae_psnr_db"] = float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))
    res["vae_classifier_top1"] = float(np.mean(b.classifier(rec).argmax(1) == d["cls"]))

    ps = PromptSet.read(b.prompts).select("test", n_prompts)
    settings = GenerationSettings(steps=15, guidance=7.5)
    match, mask_ok = [], []
    for i in range(0, len(ps), batch):
        progress(f"generating test prompts {i}/{len(ps)}")
        runs = generate(b.pipe, list(ps[i:i + batch]), settings, record=False, decode=False)
        imgs = np.stack([r.final for r in runs])
        pred = b.classifier(imgs).argmax(1)
        cover = (b.estimators.mask(imgs) > 0.5).mean(axis=(1, 2))
        for r, c, cov in zip(runs, pred, cover):
            match.append(c == main_class_of(r.prompt.prompt))
            mask_ok.append(0.01 <= cov <= 0.70)
    res["gen_class_match"] = float(np.mean(match))
    res["gen_mask_ok"] = float(np.mean(mask_ok))
    progress("timing")
    times = []
    for p in list(ps[:n_timing]):
        t = time.perf_counter()
        generate(b.pipe, [p], settings, record=False, decode=False)
        times.append(time.perf_counter() - t)
    res["gen_seconds_per_image"] = float(statistics.median(times))
    res["n_renders"], res["n_prompts"] = n_renders, len(ps)
    return res
