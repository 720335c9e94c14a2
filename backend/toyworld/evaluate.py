"""``ldm-explore toyworld evaluate``: the bundle's figures on held-out data."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..probing.metrics import dice_rows, pearson_rows, spearman_rows
from .scenes import COLORS, SHAPES, SLOTS, WORLD, class_index, sample_scene
from .train import EVAL_SEED0, render_many, training_info

FRESH_PROMPT_SEED0 = 30_000_000  # evaluation prompts: drawn fresh, never in the prompt file nor in training
MIN_OBJECT_PIXELS = 8  # a colour counts as an object from this many masked pixels (of 64 x 64)
MAX_CHROMA_DISTANCE = 0.06  # a pixel belongs to a colour this close to it in chromaticity (r, g, b) / sum
_CHROMA = np.array([np.array(c) / sum(c) for c in COLORS.values()])
_OBJ = re.compile(r"\ba (small|large) (\w+) (\w+)(?: (on the left|in the centre|on the right))?")


def named_objects(prompt: str) -> list[tuple[str, str, str | None]]:
    """(colour, shape, slot or None) of each object a grammar prompt names, in order."""
    slot = {"on the left": "left", "in the centre": "centre", "on the right": "right"}
    return [(c, s, slot.get(w)) for _, c, s, w in _OBJ.findall(prompt.lower()) if c in COLORS and s in SHAPES]


def objects_seen(img: np.ndarray, mask: np.ndarray) -> dict[str, tuple[int, str]]:
    """The objects in an image, found by colour: each masked pixel takes the nearest of the world's colours by
    chromaticity (shading scales a colour, it keeps its chromaticity; every object of a scene has its own
    colour); a colour with at least MIN_OBJECT_PIXELS pixels is an object. Returns colour -> (pixels, the third
    of the image its pixels' mean column falls in)."""
    px = img[mask].astype(np.float64) + 1.0
    if not len(px):
        return {}
    chroma = px / px.sum(1, keepdims=True)
    dist = np.sqrt(((chroma[:, None] - _CHROMA[None]) ** 2).sum(-1))
    near, close = dist.argmin(1), dist.min(1) < MAX_CHROMA_DISTANCE  # edge pixels blend into the background
    cols = np.nonzero(mask)[1]
    out = {}
    for k, name in enumerate(COLORS):
        sel = (near == k) & close
        if sel.sum() >= MIN_OBJECT_PIXELS:
            out[name] = (int(sel.sum()), SLOTS[min(2, int(cols[sel].mean() * 3 // img.shape[1]))])
    return out


def prompt_followed(prompt: str, img: np.ndarray, mask: np.ndarray) -> tuple[bool | None, bool]:
    """(main object where the prompt puts it, or None where the prompt names no place for it; as many objects
    as the prompt names)."""
    named = named_objects(prompt)
    seen = objects_seen(img, mask)
    pos = None
    if named and named[0][2] is not None:
        pos = named[0][0] in seen and seen[named[0][0]][1] == named[0][2]
    return pos, len(seen) == len(named)


def bundle_world(bundle_dir: Path | None) -> int:
    from ..bundles import toyworld_dir

    info = training_info(bundle_dir or toyworld_dir())
    return int(info.get("world", 1)) if info else WORLD


def main_class_of(prompt: str) -> int | None:
    """The class of the object a grammar prompt names first ("a large red sphere ..." -> red sphere)."""
    w = prompt.lower().replace(",", " ").split()
    colors = [x for x in w[:4] if x in COLORS]
    shapes = [x for x in w[:5] if x in SHAPES]
    if not colors or not shapes:
        return None
    return class_index(colors[0], shapes[0])


def intervals(per_item: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """95% intervals of the figures: a proportion (booleans) gets its Wilson interval, a mean over images its
    percentile bootstrap over the images. They show what the sample size allows: on 100 prompts a match rate
    of 0.83 is anywhere in about 0.74-0.89, so a bar of 0.85 is not decided by the point alone."""
    from ..probing.uncertainty import bootstrap_ci, wilson

    out = {}
    for k, v in per_item.items():
        v = np.asarray(v)
        if len(v) == 0:
            continue
        if v.dtype == bool:
            lo, hi = wilson(int(v.sum()), len(v))
        else:
            lo, hi = (float(x[0]) for x in bootstrap_ci(v.astype(np.float64)[:, None]))
        out[k] = [lo, hi]
    return out


def fresh_prompts(world: int, n: int, first: int = 0) -> list:
    """Prompts ``first`` .. ``first + n - 1`` of the evaluation's own sequence (scene seeds from
    ``FRESH_PROMPT_SEED0``, each with a fixed diffusion seed): the same prompt at the same place whatever ``n``."""
    from ..prompts import Prompt

    seeds = np.random.default_rng(FRESH_PROMPT_SEED0).integers(0, 2**31 - 1, first + n)
    return [Prompt(i, sample_scene(FRESH_PROMPT_SEED0 + i, world).prompt, int(seeds[i]), "eval")
            for i in range(first, first + n)]


@torch.no_grad()
def vae_reconstruct(vae, rgb: np.ndarray, batch: int = 50) -> np.ndarray:
    """``rgb`` (N, H, W, 3) uint8 through ``vae`` (the posterior mean, decoded), back as uint8."""
    from ..pipeline.generate import to_uint8

    recs = []
    for i in range(0, len(rgb), batch):
        x = torch.from_numpy(rgb[i:i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
        recs.append(to_uint8(((y.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()))
    return np.concatenate(recs)


@torch.no_grad()
def evaluate(bundle_dir: Path | None = None, n_renders: int = 500, n_prompts: int = 200, n_timing: int = 5,
             batch: int = 20, progress=None, first_prompt: int = 0) -> dict:
    """Every figure of the bundle in ``bundle_dir``: the estimators, classifier and VAE on ``n_renders`` held-out
    renders, generation on ``n_prompts`` fresh prompts (``first_prompt``, ``first_prompt`` + 1, ... of the
    evaluation's own sequence: no prompt file or training run holds them), each with its 95% interval."""
    from ..bundles import load_bundle
    from ..pipeline.generate import GenerationSettings, generate
    from ..prompts import PromptSet

    progress = progress or (lambda msg: None)
    b = load_bundle("toyworld", device="cpu", bundle_dir=bundle_dir)
    res: dict[str, float] = {}
    per_item: dict[str, np.ndarray] = {}  # each figure's values per image / prompt, for its interval
    world = bundle_world(bundle_dir)
    progress(f"rendering {n_renders} held-out scenes of world {world}")
    d = render_many(range(EVAL_SEED0, EVAL_SEED0 + n_renders), procs=2 if n_renders >= 200 else 1, world=world)
    est = b.estimators.all(d["rgb"])
    per_item["mask_dice"] = np.array([dice_rows(p[None] > 0.5, m)[0] for p, m in zip(est["mask"], d["mask"])])
    res["mask_dice"] = float(np.mean(per_item["mask_dice"]))
    rho = per_item["depth_spearman"] = np.array([spearman_rows(p[None], t)[0] for p, t in zip(est["depth"], d["depth"])])
    res["depth_spearman"] = float(np.mean(rho))
    if world == 2:  # by floor: where depth is hardest to read (a plain floor, none), and how often
        floors = np.array([sample_scene(s, world).floor for s in range(EVAL_SEED0, EVAL_SEED0 + n_renders)])
        res["depth_spearman_by_floor"] = {f: {"mean": float(rho[floors == f].mean()), "n": int((floors == f).sum())}
                                          for f in ("checker", "plain", "none") if (floors == f).any()}
    per_item["shading_pearson"] = np.array([pearson_rows(p[None], t)[0] for p, t in zip(est["shading"], d["shading"])])
    res["shading_pearson"] = float(np.mean(per_item["shading_pearson"]))
    probs = b.classifier(d["rgb"])
    order = np.argsort(-probs, 1)
    per_item["classifier_top1"] = order[:, 0] == d["cls"]
    res["classifier_top1"] = float(np.mean(per_item["classifier_top1"]))
    res["classifier_top5"] = float(np.mean([c in row[:5] for c, row in zip(d["cls"], order)]))
    # the position and count checks on renders, where the answer is known: how far the measure itself can be
    # trusted (with the renderer's mask, and with the estimators' mask as on generated images)
    for key, masks in (("render", d["mask"]), ("render_est", est["mask"] > 0.5)):
        f = [prompt_followed(p, im, m) for p, im, m in zip(d["prompt"], d["rgb"], masks)]
        res[f"{key}_position_match"] = float(np.mean([a for a, _ in f if a is not None]))
        res[f"{key}_count_match"] = float(np.mean([c for _, c in f]))
    progress("VAE reconstructions")
    rec = vae_reconstruct(b.pipe.vae, d["rgb"])
    mse = ((rec.astype(np.float64) - d["rgb"]) ** 2).mean(axis=(1, 2, 3))
    per_item["vae_psnr_db"] = 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))
    res["vae_psnr_db"] = float(np.mean(per_item["vae_psnr_db"]))
    per_item["vae_classifier_top1"] = b.classifier(rec).argmax(1) == d["cls"]
    res["vae_classifier_top1"] = float(np.mean(per_item["vae_classifier_top1"]))

    # fresh prompts: scenes no training run or prompt file used, with fixed diffusion seeds
    ps = fresh_prompts(world, n_prompts, first_prompt)
    settings = GenerationSettings(steps=15, guidance=7.5)
    match, mask_ok, position, count = [], [], [], []
    for i in range(0, len(ps), batch):
        progress(f"generating test prompts {i}/{len(ps)}")
        runs = generate(b.pipe, list(ps[i:i + batch]), settings, record=False, decode=False)
        imgs = np.stack([r.final for r in runs])
        pred = b.classifier(imgs).argmax(1)
        masks = b.estimators.mask(imgs) > 0.5
        for r, c, im, m in zip(runs, pred, imgs, masks):
            match.append(c == main_class_of(r.prompt.prompt))
            mask_ok.append(0.01 <= m.mean() <= 0.70)
            pos, cnt = prompt_followed(r.prompt.prompt, im, m)
            count.append(cnt)
            if pos is not None:
                position.append(pos)
    per_item.update(gen_class_match=np.array(match, bool), gen_position_match=np.array(position, bool),
                    gen_count_match=np.array(count, bool))
    res["gen_class_match"] = float(np.mean(match))
    res["gen_position_match"] = float(np.mean(position)) if position else None  # no prompt named a place
    res["gen_count_match"] = float(np.mean(count))
    res["gen_mask_ok"] = float(np.mean(mask_ok))
    progress("timing")
    times = []
    for p in list(ps[:n_timing]):
        t = time.perf_counter()
        generate(b.pipe, [p], settings, record=False, decode=False)
        times.append(time.perf_counter() - t)
    res["gen_seconds_per_image"] = float(statistics.median(times))
    res["n_renders"], res["n_prompts"], res["first_prompt"], res["world"] = n_renders, len(ps), first_prompt, world
    res["ci95"] = intervals(per_item)
    return res
