"""One experiment: generate (or reuse), label, fit probes on train, choose on val, evaluate on test.

Streaming throughout: each run's activations live in memory only while its statistics are added (train,
val) or its probe maps are scored (test), unless the bundle keeps them in the run store for the explorer.
Progress is checkpointed in the report folder (:mod:`.checkpoint`), so an interrupted run resumes without
redoing finished runs. :func:`.report.write_report` turns the fitted probes and test rows into the report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..pipeline.generate import GenerationSettings, RunResult, generate
from ..probing.labels import per_step, targets
from ..probing.metrics import score
from ..probing.properties import NAMES
from ..probing.ridge import Probes, fit, upsample
from ..prompts import Prompt, PromptSet
from .baselines import BASELINES, LATENT, PRIOR, prior_features, shuffled_unet, teacher_forced_acts
from .checkpoint import Checkpoint
from .scores import Score, ScoreKey

KINDS = ("real", *BASELINES)  # the probe kinds fitted: the real UNet's, then each baseline's


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
        self.settings = GenerationSettings(steps=cfg.steps, guidance=cfg.guidance,
                                           layers=self.layers if cfg.keep_activations else ())
        from .distributed import Dist

        self.dist = Dist()
        self.ckpt = Checkpoint(self.out / "checkpoint", self.dist.rank, self.dist.world)
        self.all_splits = {s: [p for p in prompts if p.split == s] for s in ("train", "val", "test")}
        self.splits = {s: self.dist.share(v) for s, v in self.all_splits.items()}  # this process's share
        if not self.all_splits["train"] or not self.all_splits["test"]:
            from ..errors import UserError

            raise UserError(f"{prompts.path}: an experiment needs 'train' and 'test' prompts in a split column "
                            f"(found {prompts.splits()})")
        self._shuffled = None

    # --- per-run data ----------------------------------------------------------------------------
    def _runs(self, prompts: list[Prompt], stage: str) -> Iterator[RunResult]:
        """Every prompt's run, from the store or newly generated (and then stored)."""
        from ..pipeline.runner import run_key

        pipe = self.b.pipe
        rec_settings = GenerationSettings(steps=self.cfg.steps, guidance=self.cfg.guidance, layers=self.layers)
        for i in range(0, len(prompts), self.cfg.batch):
            batch = prompts[i:i + self.cfg.batch]
            todo = []
            for p in batch:
                e = self.store.get(run_key(pipe, p, self.settings)) if self.cfg.keep_activations else None
                run = RunResult.from_entry(e, list(self.layers)) if e is not None else None
                if run is not None and set(run.activations) == set(self.layers):
                    yield run
                else:
                    todo.append(p)
            if todo:
                for r in generate(pipe, todo, rec_settings):
                    if self.cfg.keep_activations:
                        self.store.put(run_key(pipe, r.prompt, self.settings), r, self.settings.to_dict(),
                                       extra={"model_id": pipe.model_id, "bundle": self.b.name})
                    yield r
            self.progress(stage, min(i + self.cfg.batch, len(prompts)), len(prompts))

    def _baseline_acts(self, kind: str, run: RunResult) -> dict[str, np.ndarray]:
        """A baseline's "activations" for one run: the shuffled UNet's, the latent x_t, or the prior's positions."""
        if kind == "shuffled":
            if self._shuffled is None:
                self._shuffled = shuffled_unet(self.b.pipe.unet)
            return teacher_forced_acts(self._shuffled, self.b.pipe, run, self.layers, self.settings)
        if kind == "latent":
            return {LATENT: run.latents.transpose(0, 2, 3, 1)}
        return {PRIOR: prior_features(len(run.latents))}

    # --- phases ----------------------------------------------------------------------------------
    def _stats(self, split: str) -> dict:
        """Statistics of one split for the real probes and the baselines; resumes from its checkpoint."""
        st, done = self.ckpt.load_stats(split, KINDS, NAMES)
        todo = [p for p in self.splits[split] if p.index not in done]
        last = time.time()
        for run in self._runs(todo, f"{split}: generate + accumulate"):
            y = targets(self.b.estimators, run.final)
            st["real"].add_run(run.activations, y)
            if self.cfg.baselines:
                for k in BASELINES:
                    if k in st:
                        st[k].add_run(self._baseline_acts(k, run), y)
            done.add(run.prompt.index)
            if time.time() - last > 60:
                self.ckpt.save_stats(split, st, done)
                last = time.time()
        self.ckpt.save_stats(split, st, done)
        for k in st:  # sum over processes: every process now holds the statistics of all runs
            self.dist.all_reduce_stats(st[k])
        return st

    def fit(self) -> dict[str, Probes]:
        tr, va = self._stats("train"), self._stats("val") if self.all_splits["val"] else None
        probes = {}
        for k in KINDS:
            if k in tr and tr[k].images:
                probes[k] = fit(tr[k], va.get(k) if va is not None else None)
                probes[k].meta.update(bundle=self.b.name, property_order=list(NAMES), kind=k,
                                      steps=self.cfg.steps, guidance=self.cfg.guidance)
        if self.dist.main:
            for k, p in probes.items():
                p.save(self.out / f"probes-{k}.safetensors")
        return probes

    def evaluate(self, probes: dict[str, Probes]) -> list[dict]:
        """Per test image and step: metrics of every probe layer, off-the-shelf, and baselines."""
        done = {r["index"] for r in self.ckpt.rows()}
        todo = [p for p in self.splits["test"] if p.index not in done]
        with open(self.ckpt.rows_file, "a") as fh:
            for run in self._runs(todo, "test: generate + score"):
                fh.write(json.dumps(self._score(run, probes)) + "\n")
                fh.flush()
        return self.dist.gather_rows(self.ckpt.rows())

    def _score(self, run: RunResult, probes: dict[str, Probes]) -> dict:
        """One test image's row: every source's scores per step, and the classifier's top-1 per step."""
        y = targets(self.b.estimators, run.final)
        H, W = y.shape[-2:]
        scores: list[Score] = []
        sources = {"probe": (probes["real"], run.activations)}
        for k, src in BASELINES.items():
            if k in probes:
                sources[src] = (probes[k], self._baseline_acts(k, run))
        for src, (pr, acts) in sources.items():
            for layer, x in acts.items():
                pred = upsample(pr.predict(layer, x), H, W)  # (S, P, H, W)
                for k, prop in enumerate(NAMES):
                    for m, v in score(prop, pred[:, k], y[k]).items():
                        scores.append(Score(ScoreKey(src, layer, prop, m), v.tolist()))
        imgs = run.images(self.cfg.view)
        ots = per_step(self.b.estimators, imgs)
        for k, prop in enumerate(NAMES):
            for m, v in score(prop, ots[:, k], y[k]).items():
                scores.append(Score(ScoreKey("off-the-shelf", "-", prop, m), v.tolist()))
        probs = self.b.classifier(imgs)
        fin = self.b.classifier(run.final[None])[0]
        return {"index": run.prompt.index, "scores": [s.to_dict() for s in scores],
                "top1": probs.argmax(1).tolist(), "final_top1": int(fin.argmax())}


def run_experiment(bundle="toyworld", prompts=None, out="report", cache=None, layers=None,
                   per_split: int | None = None, cfg: Config = Config(), device: str | None = "auto",
                   progress: Callable[[str, int, int], None] | None = None, store=None) -> dict | None:
    """Run (or resume) a whole experiment and write its report folder; returns the report's summary (None on
    every process but the main one when several run it).

    bundle     a bundle name ("toyworld", "sd14") or a loaded :class:`~ldm_explore.backend.bundles.Bundle`
    prompts    a prompt file with a split column, or a PromptSet (default: the bundle's own file)
    layers     module paths or glob patterns (default: the bundle's layers, every self-attention output)
    per_split  only the first N prompts of each split
    """
    from ldm_explore.cache.store import RunStore

    from ..bundles import load_bundle
    from ..pipeline.layers import resolve_layers, self_attention_layers
    from .baselines import LAYER_NAMES
    from .distributed import Dist
    from .report import write_report

    if isinstance(bundle, str):
        dist = Dist()
        if dist.state is not None and device == "auto":
            device = str(dist.state.device)
        bundle = load_bundle(bundle, device=device)
    store = store if store is not None else RunStore(cache)
    ps = prompts if isinstance(prompts, PromptSet) else PromptSet.read(prompts or bundle.prompts)
    if per_split:
        ps = ps.per_split(per_split)
    layers = resolve_layers(bundle.pipe.unet, layers) if layers else bundle.layers
    out = Path(out)
    ex = Experiment(bundle, ps, out, store, layers, cfg, progress)
    probes = ex.fit()
    rows = ex.evaluate(probes)
    if not ex.dist.main:  # the main process writes the report from every process's rows
        return None
    rows.sort(key=lambda r: r["index"])
    names = {**{i.path: i.short for i in self_attention_layers(bundle.pipe.unet)}, **LAYER_NAMES}
    return write_report(out, rows, probes, names, {
        "bundle": bundle.name, "prompts": str(ps.path), "splits": ps.splits(), "steps": cfg.steps,
        "guidance": cfg.guidance, "view": cfg.view, "layers": list(layers)})
