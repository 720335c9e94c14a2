"""One experiment: generate (or reuse), label, fit probes on train, choose on val, evaluate on test, report.

Streaming throughout: each run's activations live in memory only while its statistics are added (train,
val) or its probe maps are scored (test), unless the bundle keeps them in the run store for the explorer.
Progress is checkpointed in the report folder (statistics, per-run test scores), so an interrupted run
resumes without redoing finished runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .generation import GenerationSettings, generate
from .labels import per_step, targets
from .metrics import dice_rows, pearson_rows, spearman_rows
from .probes import PROPERTIES, ProbeStats, Probes, fit, upsample
from .prompts import Prompt, PromptSet

PRIMARY = {"mask": "dice", "depth": "spearman", "shading": "pearson"}
METRICS = {"mask": ("dice",), "depth": ("spearman", "pearson"), "shading": ("pearson", "spearman")}
SOURCES = ("probe", "off-the-shelf", "shuffled-unet probe", "latent probe", "spatial-prior probe")
LATENT = "vae-latent"  # the controlled baseline's "layer": x_t itself
PRIOR = "spatial-prior"  # the prior baseline's "layer": one-hot pixel positions, the same for every image
PRIOR_GRID = 16
BASELINES = {"shuffled": "shuffled-unet probe", "latent": "latent probe", "prior": "spatial-prior probe"}


def prior_features(steps: int, n: int = PRIOR_GRID) -> np.ndarray:
    """(steps, n, n, n*n) one-hot position features. A ridge probe on them predicts each cell's training mean
    (shrunk to the global mean): the spatial prior a probe must beat before it can claim to read the scene."""
    eye = np.eye(n * n, dtype=np.float32).reshape(n, n, n * n)
    return np.repeat(eye[None], steps, 0)  # a real array: torch warns on the read-only broadcast view


def score(prop: str, pred: np.ndarray, target: np.ndarray) -> dict[str, list[float]]:
    """Metrics of every row of ``pred`` (S, H, W) against ``target`` (H, W)."""
    if prop == "mask":
        return {"dice": dice_rows(pred > 0.5, target > 0.5).tolist()}
    return {"spearman": spearman_rows(pred, target).tolist(), "pearson": pearson_rows(pred, target).tolist()}


def emergence_step(curve: np.ndarray, frac: float = 0.9) -> int | None:
    """First step from which the metric stays at or above ``frac`` of its final-step value."""
    final = curve[-1]
    if not np.isfinite(final) or final <= 0:
        return None
    ok = curve >= frac * final
    for s in range(len(curve)):
        if ok[s:].all():
            return s
    return None


def recognition_step(top1: np.ndarray) -> int:
    """First step from which the classifier's top-1 equals the final image's top-1 (and stays)."""
    final = top1[-1]
    s = len(top1) - 1
    while s > 0 and top1[s - 1] == final:
        s -= 1
    return s


def shuffled_unet(unet, seed: int = 0):
    """A copy of ``unet`` whose weights are permuted within each tensor (Chen et al.'s control)."""
    import copy

    g = torch.Generator().manual_seed(seed)
    u = copy.deepcopy(unet)
    with torch.no_grad():
        for p in u.parameters():
            flat = p.data.reshape(-1)
            p.data.copy_(flat[torch.randperm(flat.numel(), generator=g)].reshape(p.shape))
    return u


@dataclass
class Config:
    steps: int = 15
    guidance: float = 7.5
    view: str = "xt"  # decoded image the off-the-shelf models see: "xt" (the studies) or "x0"
    batch: int = 10
    baselines: bool = True
    keep_activations: bool = True


class Experiment:
    def __init__(self, bundle, prompts: PromptSet, out: Path, store, layers=None, cfg: Config = Config(),
                 progress: Callable[[str, int, int], None] | None = None):
        self.b, self.prompts, self.out, self.store = bundle, prompts, Path(out), store
        self.layers = tuple(layers or bundle.layers)
        self.cfg = cfg
        self.progress = progress or (lambda stage, done, total: None)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt = self.out / "checkpoint"
        self.ckpt.mkdir(exist_ok=True)
        self.settings = GenerationSettings(steps=cfg.steps, guidance=cfg.guidance,
                                           layers=self.layers if cfg.keep_activations else ())
        from .distributed import Dist

        self.dist = Dist()
        self.all_splits = {s: [p for p in prompts if p.split == s] for s in ("train", "val", "test")}
        self.splits = {s: self.dist.share(v) for s, v in self.all_splits.items()}  # this process's share
        if not self.all_splits["train"] or not self.all_splits["test"]:
            from .errors import UserError

            raise UserError(f"{prompts.path}: an experiment needs 'train' and 'test' prompts in a split column "
                            f"(found {prompts.splits()})")
        self._shuffled = None

    # --- per-run data ----------------------------------------------------------------------------
    def _runs(self, prompts: list[Prompt], stage: str):
        """Yield (prompt, final, decoded images, latents, activations, timesteps) per prompt, from the store
        or newly generated (and then stored)."""
        from .runner import run_key

        pipe = self.b.pipe
        rec_settings = GenerationSettings(steps=self.cfg.steps, guidance=self.cfg.guidance, layers=self.layers)
        for i in range(0, len(prompts), self.cfg.batch):
            batch = prompts[i:i + self.cfg.batch]
            todo = []
            for p in batch:
                e = self.store.get(run_key(pipe, p, self.settings)) if self.cfg.keep_activations else None
                acts = e.activations(list(self.layers)) if e is not None else {}
                if e is not None and set(acts) == set(self.layers):
                    imgs = e.xt_images if self.cfg.view == "xt" else e.x0_images
                    yield p, e.final, imgs, e.latents, acts, e.meta["timesteps"]
                else:
                    todo.append(p)
            if todo:
                for r in generate(pipe, todo, rec_settings):
                    if self.cfg.keep_activations:
                        self.store.put(run_key(pipe, r.prompt, self.settings), r, self.settings.to_dict(),
                                       extra={"model_id": pipe.model_id, "bundle": self.b.name})
                    imgs = r.xt_images if self.cfg.view == "xt" else r.x0_images
                    yield r.prompt, r.final, imgs, r.latents, r.activations, r.timesteps
            self.progress(stage, min(i + self.cfg.batch, len(prompts)), len(prompts))

    @torch.no_grad()
    def _shuffled_acts(self, prompt: Prompt, latents: np.ndarray, timesteps: list[float]) -> dict[str, np.ndarray]:
        """Activations of the weight-shuffled UNet, teacher-forced along the real run's trajectory: at
        every step it sees exactly the real UNet's inputs (x_t, timestep, text), so only the weights differ."""
        from .generation import initial_latents
        from .recorder import Recorder

        pipe = self.b.pipe
        if self._shuffled is None:
            self._shuffled = shuffled_unet(pipe.unet)
        dev, dt = pipe.unet.device, pipe.unet.dtype
        cond, uncond = pipe.encode_prompt(prompt.prompt, dev, 1, True)
        emb = torch.cat([uncond, cond])
        x0 = initial_latents(pipe, 1, [torch.Generator().manual_seed(prompt.seed)], self.settings)
        x0 = x0 * pipe.scheduler.init_noise_sigma
        inputs = [x0] + [torch.from_numpy(latents[i])[None].to(dev, dt) for i in range(len(timesteps) - 1)]
        with Recorder(self._shuffled, list(self.layers), guidance=True, guidance_scale=self.cfg.guidance) as rec:
            for x, t in zip(inputs, timesteps):
                self._shuffled(torch.cat([x, x]), torch.tensor(t, device=dev), encoder_hidden_states=emb)
        return {n: rec.stacked(n)[:, 0].numpy() for n in rec.layer_names}

    def _baseline_acts(self, kind: str, prompt: Prompt, latents: np.ndarray, timesteps) -> dict[str, np.ndarray]:
        """A baseline's "activations" for one run: the shuffled UNet's, the latent x_t, or the prior's positions."""
        if kind == "shuffled":
            return self._shuffled_acts(prompt, latents, timesteps)
        if kind == "latent":
            return {LATENT: latents.transpose(0, 2, 3, 1)}
        return {PRIOR: prior_features(len(latents))}

    # --- phases ----------------------------------------------------------------------------------
    def _stats(self, split: str) -> dict[str, ProbeStats]:
        """Statistics of one split for the real probes and the baselines; resumes from its checkpoint."""
        r = f"-rank{self.dist.rank}of{self.dist.world}" if self.dist.world > 1 else ""
        f = {k: self.ckpt / f"stats-{split}-{k}{r}.safetensors" for k in ("real", *BASELINES)}
        done_f = self.ckpt / f"stats-{split}-done{r}.json"
        done = set(json.loads(done_f.read_text())) if done_f.exists() else set()
        # a baseline missing from a checkpoint made by an older version is left out rather than fitted on part
        st = {k: ProbeStats.load(f[k]) if f[k].exists() and done else ProbeStats(PROPERTIES) for k in f
              if k == "real" or not done or f[k].exists()}
        todo = [p for p in self.splits[split] if p.index not in done]
        last = time.time()
        for p, final, _, lat, acts, ts in self._runs(todo, f"{split}: generate + accumulate"):
            y = targets(self.b.estimators, final)
            st["real"].add_run(acts, y)
            if self.cfg.baselines:
                for k in BASELINES:
                    if k in st:
                        st[k].add_run(self._baseline_acts(k, p, lat, ts), y)
            done.add(p.index)
            if time.time() - last > 60:
                self._save_stats(st, f, done, done_f)
                last = time.time()
        self._save_stats(st, f, done, done_f)
        for k in st:  # sum over processes: every process now holds the statistics of all runs
            self.dist.all_reduce_stats(st[k])
        return st

    @staticmethod
    def _save_stats(st, f, done, done_f):
        for k in st:
            if st[k].images:
                st[k].save(f[k])
        tmp = done_f.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(done)))
        tmp.replace(done_f)

    def fit(self) -> dict[str, Probes]:
        tr, va = self._stats("train"), self._stats("val") if self.all_splits["val"] else None
        probes = {}
        for k in ("real", *BASELINES):
            if k in tr and tr[k].images:
                probes[k] = fit(tr[k], va.get(k) if va is not None else None)
                probes[k].meta.update(bundle=self.b.name, property_order=list(PROPERTIES), kind=k,
                                      steps=self.cfg.steps, guidance=self.cfg.guidance)
        if self.dist.main:
            for k, p in probes.items():
                p.save(self.out / f"probes-{k}.safetensors")
        return probes

    def evaluate(self, probes: dict[str, Probes]) -> list[dict]:
        """Per test image and step: metrics of every probe layer, off-the-shelf, and baselines."""
        r = f"-rank{self.dist.rank}of{self.dist.world}" if self.dist.world > 1 else ""
        rows_f = self.ckpt / f"test-rows{r}.jsonl"
        done = set()
        if rows_f.exists():
            for line in rows_f.read_text().splitlines():
                try:
                    done.add(json.loads(line)["index"])
                except (ValueError, KeyError):
                    pass
        todo = [p for p in self.splits["test"] if p.index not in done]
        with open(rows_f, "a") as fh:
            for p, final, imgs, lat, acts, ts in self._runs(todo, "test: generate + score"):
                y = targets(self.b.estimators, final)
                H, W = y.shape[-2:]
                rec = {"index": p.index, "scores": {}}
                sources = {"probe": (probes["real"], acts)}
                for k, src in BASELINES.items():
                    if k in probes:
                        sources[src] = (probes[k], self._baseline_acts(k, p, lat, ts))
                for src, (pr, a) in sources.items():
                    for layer, x in a.items():
                        pred = upsample(pr.predict(layer, x), H, W)  # (S, P, H, W)
                        for k, prop in enumerate(PROPERTIES):
                            for m, v in score(prop, pred[:, k], y[k]).items():
                                rec["scores"][f"{src}|{layer}|{prop}|{m}"] = v
                ots = per_step(self.b.estimators, imgs)
                for k, prop in enumerate(PROPERTIES):
                    for m, v in score(prop, ots[:, k], y[k]).items():
                        rec["scores"][f"off-the-shelf|-|{prop}|{m}"] = v
                probs = self.b.classifier(imgs)
                fin = self.b.classifier(final[None])[0]
                rec["top1"] = probs.argmax(1).tolist()
                rec["final_top1"] = int(fin.argmax())
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
        mine = [json.loads(line) for line in rows_f.read_text().splitlines() if line.strip()] if rows_f.exists() else []
        return self.dist.gather_rows(mine)
