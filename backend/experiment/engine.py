"""One experiment: generate, label, fit probes on train, choose on val, evaluate on test.

Bounded at any scale: a batch's activations wait on the compute device (or, on a CPU, in a temporary file)
only until the batch's labels exist, are added to the probe statistics (which live on the compute device, in
float64 where it has it) or scored, and are dropped; nothing is kept on disk unless ``keep_activations`` asks
for every run in the run store. Progress is checkpointed in the report folder every few runs
(:mod:`.checkpoint`), so an interrupted run resumes without redoing finished runs. A run whose activations or
labels are not finite is named and left out. :func:`.report.write_report` turns the probes and test rows
into the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..pipeline.generate import GenerationSettings, RunResult, generate
from ..probing.labels import per_step, targets_many
from ..probing.metrics import score
from ..probing.ridge import Probes, fit, upsample
from ..probing.stats import ProbeStats, area_average
from ..prompts import Prompt, PromptSet, with_seeds
from .baselines import BASELINES, LATENT, PRIOR, prior_features, shuffled_unet, teacher_forced_acts
from .buffer import ActivationBuffer
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
    keep_activations: bool = False  # keep every run (activations, decoded steps) in the run store
    fresh: bool = False  # start over: drop a checkpoint this report folder holds
    seeds: int = 1  # runs per prompt (the file's seed, then derived ones: see prompts.with_seeds)
    checkpoint_every: int = 20  # runs between two checkpoints of the statistics
    height: int | None = None  # None: the model's own size
    width: int | None = None
    spill: bool | None = None  # a batch's activations in a temporary file (default: when computing on a CPU)


@dataclass
class Batch:
    """A batch of runs with their activations: from the buffer they were recorded into, or from the store."""

    runs: list[RunResult]
    buffer: ActivationBuffer | None = None
    bad: dict[int, str] | None = None  # position in the batch -> what was not finite

    def acts(self, layer: str, step: int) -> torch.Tensor:
        """(B, h, w, c) activations of every run of the batch."""
        if self.buffer is not None:
            return self.buffer.get(layer, step)
        return torch.from_numpy(np.stack([r.activations[layer][step] for r in self.runs]))


class Experiment:
    def __init__(self, bundle, prompts: PromptSet, out: Path, store, layers=None, cfg: Config = Config(),
                 progress: Callable[[str, int, int], None] | None = None,
                 notify: Callable[[str], None] | None = None):
        self.b, self.prompts, self.out, self.store = bundle, prompts, Path(out), store
        self.layers = tuple(layers or bundle.layers)
        self.cfg = cfg
        self.progress = progress or (lambda stage, done, total: None)
        self.notify = notify or (lambda msg: None)
        self.out.mkdir(parents=True, exist_ok=True)
        # what recording asks for, and the run-store key of a kept run
        self.rec = GenerationSettings(steps=cfg.steps, guidance=cfg.guidance, height=cfg.height, width=cfg.width,
                                      layers=self.layers)
        self.settings = self.rec
        from .distributed import Dist

        self.dist = Dist()
        self.device = self.b.pipe.unet.device
        self.ckpt = Checkpoint(self.out / "checkpoint", self.dist.rank, self.dist.world)
        if cfg.fresh and self.dist.main:
            self.ckpt.clear()
        self.dist.barrier()
        self.all_splits = {s: with_seeds([p for p in prompts if p.split == s], cfg.seeds) for s in ("train", "val", "test")}
        self.splits = {s: self.dist.share(v) for s, v in self.all_splits.items()}  # this process's share
        if not self.all_splits["train"] or not self.all_splits["test"]:
            from ..errors import UserError

            raise UserError(f"{prompts.path}: an experiment needs 'train' and 'test' prompts in a split column "
                            f"(found {prompts.splits()})")
        self.skipped: list[str] = []  # runs left out, and why
        self._shuffled = None
        self.config = self._configuration()
        if self.dist.main:
            self.ckpt.guard(self.config, defaults={"seeds": 1})  # checkpoints from before --seeds: one seed
        self.dist.barrier()

    def _configuration(self) -> dict:
        """Everything that decides what the statistics and test rows hold: a checkpoint made with another
        configuration must not be resumed (see :meth:`Checkpoint.guard`)."""
        import hashlib
        from importlib.metadata import PackageNotFoundError, version

        from ..pipeline.runner import pipe_signature

        try:
            pkg = version("ldm-explore")
        except PackageNotFoundError:
            pkg = "unknown"
        rows = "\n".join(f"{p.index}\t{p.seed}\t{p.split}\t{p.prompt}" for p in self.prompts)
        sig = pipe_signature(self.b.pipe)
        return {"bundle": self.b.name, "model": self.b.pipe.model_id, "revision": sig["revision"],
                "dtype": sig["dtype"], "scheduler": sig["scheduler"], "prompts": str(self.prompts.path),
                "prompts_sha256": hashlib.sha256(rows.encode()).hexdigest(), "splits": self.prompts.splits(),
                "properties": list(self.b.properties), "steps": self.cfg.steps, "guidance": self.cfg.guidance,
                "height": self.cfg.height, "width": self.cfg.width, "view": self.cfg.view,
                "layers": list(self.layers), "baselines": self.cfg.baselines, "seeds": self.cfg.seeds, "ldm_explore": pkg}

    # --- per-batch data --------------------------------------------------------------------------
    def _batches(self, prompts: list[Prompt], stage: str, decode=()) -> Iterator[Batch]:
        """Every prompt's run in batches: from the store (when runs are kept) or newly generated."""
        from ..pipeline.runner import pipe_signature, run_key

        pipe = self.b.pipe
        for i in range(0, len(prompts), self.cfg.batch):
            batch = prompts[i:i + self.cfg.batch]
            stored, todo = [], []
            for p in batch:
                e = self.store.get(run_key(pipe, p, self.settings)) if self.cfg.keep_activations else None
                run = RunResult.from_entry(e, list(self.layers)) if e is not None else None
                (stored if run is not None and set(run.activations) == set(self.layers) else todo).append(run or p)
            if stored:
                yield self._checked(Batch(stored))
            if todo and self.cfg.keep_activations:  # kept runs: host copies, both views decoded for the explorer
                runs = generate(pipe, todo, self.rec)
                for r in runs:
                    self.store.put(run_key(pipe, r.prompt, self.settings), r, self.settings.to_dict(),
                                   extra={"model_id": pipe.model_id, "bundle": self.b.name, "pipe": pipe_signature(pipe)})
                yield self._checked(Batch(runs))
            elif todo:
                with ActivationBuffer(self.device, self.cfg.spill, self.out / "checkpoint") as buf:
                    runs = generate(pipe, todo, self.rec, decode=decode, sink=buf)
                    yield self._checked(Batch(runs, buf))
            self.progress(stage, min(i + self.cfg.batch, len(prompts)), len(prompts))

    def _checked(self, batch: Batch) -> Batch:
        """Find the runs with a non-finite activation (naming run, layer and step) before anything is summed."""
        if batch.buffer is not None:  # checked on the device as they were recorded
            batch.bad = batch.buffer.bad()
            return batch
        batch.bad = {}
        for layer in self.layers:
            for step in range(len(batch.runs[0].timesteps)):
                ok = torch.isfinite(batch.acts(layer, step)).flatten(1).all(1).cpu()
                for b in np.flatnonzero(~ok.numpy()):
                    batch.bad.setdefault(int(b), f"activation of {layer} at step {step}")
        return batch

    def _skip(self, batch: Batch, y: np.ndarray) -> np.ndarray:
        """Which runs of the batch enter the sums: finite activations and finite labels; the others are named."""
        for b in np.flatnonzero(~np.isfinite(y).reshape(len(y), -1).all(1)):
            batch.bad.setdefault(int(b), "labels of the final image")
        for b, what in sorted(batch.bad.items()):
            p = batch.runs[b].prompt
            self.skipped.append(f"prompt {p.index} (seed {p.seed}): {what} is not finite; left out of the sums")
            self.notify(self.skipped[-1])
        return np.array([b not in batch.bad for b in range(len(batch.runs))])

    def _shuffled_unet(self):
        if self._shuffled is None:
            self._shuffled = shuffled_unet(self.b.pipe.unet)
        return self._shuffled

    def _baseline_acts(self, kind: str, run: RunResult) -> dict[str, np.ndarray]:
        """A single-"layer" baseline's "activations" for one run: the latent x_t, or the prior's positions."""
        if kind == "latent":
            return {LATENT: run.latents.transpose(0, 2, 3, 1)}
        return {PRIOR: prior_features(len(run.latents))}

    # --- phases ----------------------------------------------------------------------------------
    def _stats(self, split: str) -> dict[str, ProbeStats]:
        """Statistics of one split for the real probes and the baselines; resumes from its checkpoint."""
        st, done = self.ckpt.load_stats(split, KINDS, self.b.properties, self.device)
        todo = [p for p in self.splits[split] if p.run_id not in done]
        since = 0
        for batch in self._batches(todo, f"{split}: generate + accumulate"):
            self._accumulate(batch, st)
            done.update(r.prompt.run_id for r in batch.runs)
            since += len(batch.runs)
            if since >= self.cfg.checkpoint_every:
                self._save(split, st, done)
                since = 0
        self._save(split, st, done)
        for k in st:  # sum over processes: every process now holds the statistics of all runs
            self.dist.all_reduce_stats(st[k])
        return st

    def _save(self, split: str, st: dict, done: set) -> None:
        size = self.ckpt.save_stats(split, st, done)
        self.notify(f"checkpoint: {split} statistics of {len(done)} runs, {human_bytes(size)}")

    def _targets(self, runs: list[RunResult]) -> np.ndarray:
        return targets_many(self.b.estimators, np.stack([r.final for r in runs]))

    def _accumulate(self, batch: Batch, st: dict) -> None:
        y = self._targets(batch.runs)  # (B, P, H, W)
        ok = self._skip(batch, y)
        if not ok.any():
            return
        S = len(batch.runs[0].timesteps)
        ys: dict[tuple[int, int], torch.Tensor] = {}  # targets per layer resolution, tokens in (b, i, j) order

        def tokens_y(h, w):
            if (h, w) not in ys:
                ys[(h, w)] = torch.from_numpy(area_average(y[ok], h, w)).permute(0, 2, 3, 1).reshape(-1, y.shape[1])
            return ys[(h, w)]

        for layer in self.layers:
            for step in range(S):
                X = batch.acts(layer, step)[torch.from_numpy(ok).to(self.device if batch.buffer else "cpu")]
                st["real"].add_steps(layer, step, X.reshape(-1, X.shape[-1]), tokens_y(*X.shape[1:3]), S)
        st["real"].images += int(ok.sum())
        if not self.cfg.baselines:
            return
        runs = [r for r, good in zip(batch.runs, ok) if good]
        for k in ("latent", "prior"):
            if k in st:
                for r, yy in zip(runs, y[ok]):
                    st[k].add_run(self._baseline_acts(k, r), yy)
        if "shuffled" in st:
            def sink(layer, step, t):  # the labels are known: add each step as the shuffled UNet computes it
                st["shuffled"].add_steps(layer, step, t.reshape(-1, t.shape[-1]), tokens_y(*t.shape[1:3]), S)

            teacher_forced_acts(self._shuffled_unet(), self.b.pipe, runs, self.layers, self.rec, sink=sink)
            st["shuffled"].images += len(runs)

    def fit(self) -> dict[str, Probes]:
        tr, va = self._stats("train"), self._stats("val") if self.all_splits["val"] else None
        probes = {}
        for k in KINDS:
            if k in tr and tr[k].images:
                probes[k] = fit(tr[k], va.get(k) if va is not None else None)
                probes[k].meta.update(bundle=self.b.name, property_order=list(self.b.properties), kind=k,
                                      steps=self.cfg.steps, guidance=self.cfg.guidance)
        if self.dist.main:
            for k, p in probes.items():
                p.save(self.out / f"probes-{k}.safetensors")
            # published where the explorer looks for this pipeline's probes (--probes chooses others)
            from ..pipeline.runner import probes_file

            f = probes_file(self.store, self.b.pipe, self.cfg.steps)
            f.parent.mkdir(parents=True, exist_ok=True)
            probes["real"].save(f)
        return probes

    def evaluate(self, probes: dict[str, Probes]) -> list[dict]:
        """Per test image and step: metrics of every probe layer, off-the-shelf, and baselines."""
        done = {f"{r['index']}:{r.get('seed_no', 0)}" for r in self.ckpt.rows()}
        todo = [p for p in self.splits["test"] if p.run_id not in done]
        with open(self.ckpt.rows_file, "a") as fh:
            for batch in self._batches(todo, "test: generate + score", decode=(self.cfg.view,)):
                for row in self._score(batch, probes):
                    fh.write(json.dumps(row) + "\n")
                fh.flush()
        return self.dist.gather_rows(self.ckpt.rows())

    def _score(self, batch: Batch, probes: dict[str, Probes]) -> list[dict]:
        """Each test image's row: every source's scores per step, and the classifier's top-1 per step."""
        runs = batch.runs
        y = self._targets(runs)
        ok = self._skip(batch, y)
        H, W = y.shape[-2:]
        S, props = len(runs[0].timesteps), self.b.properties
        scores: list[list[Score]] = [[] for _ in runs]

        def add(src, layer, maps):  # maps (B, S, P, h, w) token-level predictions
            for b in np.flatnonzero(ok):
                pred = upsample(maps[b], H, W)
                for k, prop in enumerate(props):
                    for m, v in score(prop, pred[:, k], y[b, k]).items():
                        scores[b].append(Score(ScoreKey(src, layer, prop, m), v.tolist()))

        def predict(pr, layer, step, X):  # X (B, h, w, c) -> (B, P, h, w)
            Wt = torch.as_tensor(pr.W[layer][step], dtype=torch.float32, device=X.device)
            bt = torch.as_tensor(pr.b[layer][step], dtype=torch.float32, device=X.device)
            return (X.float() @ Wt + bt).permute(0, 3, 1, 2).cpu().numpy()

        real = probes["real"]
        for layer in self.layers:
            if layer in real.W:
                add("probe", layer, np.stack([predict(real, layer, s, batch.acts(layer, s)) for s in range(S)], 1))
        for k, src in BASELINES.items():
            if k not in probes:
                continue
            if k == "shuffled":
                preds: dict[str, list] = {}

                def sink(layer, step, t, pr=probes[k], preds=preds):  # scored as the shuffled UNet computes them
                    if layer in pr.W:
                        preds.setdefault(layer, []).append(predict(pr, layer, step, t))

                teacher_forced_acts(self._shuffled_unet(), self.b.pipe, runs, self.layers, self.rec, sink=sink)
                for layer, steps in preds.items():
                    add(src, layer, np.stack(steps, 1))
            else:
                for layer in (LATENT if k == "latent" else PRIOR,):
                    maps = [probes[k].predict(layer, self._baseline_acts(k, r)[layer]) for r in runs]
                    add(src, layer, np.stack(maps))
        rows = []
        for b, r in enumerate(runs):
            if not ok[b]:
                continue
            imgs = r.images(self.cfg.view)
            ots = per_step(self.b.estimators, imgs)
            for k, prop in enumerate(props):
                for m, v in score(prop, ots[:, k], y[b, k]).items():
                    scores[b].append(Score(ScoreKey("off-the-shelf", "-", prop, m), v.tolist()))
            probs = self.b.classifier(imgs)
            fin = self.b.classifier(r.final[None])[0]
            rows.append({"index": r.prompt.index, "seed": r.prompt.seed, "seed_no": r.prompt.seed_no, "scores": [s.to_dict() for s in scores[b]],
                         "top1": probs.argmax(1).tolist(), "final_top1": int(fin.argmax())})
        return rows

    def activation_bytes_per_run(self) -> int:
        """What keeping one run's activations costs on disk (fp16, every layer and step)."""
        from ..pipeline.layers import self_attention_layers

        pipe = self.b.pipe
        f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        h = (self.cfg.height or pipe.unet.config.sample_size * f) // f
        w = (self.cfg.width or pipe.unet.config.sample_size * f) // f
        sizes = {i.path: i.height * i.width * i.channels for i in self_attention_layers(pipe.unet, h, w)}
        steps = self.cfg.steps + (1 if type(pipe.scheduler).__name__ == "PNDMScheduler" else 0)
        return 2 * steps * sum(sizes.get(layer, 0) for layer in self.layers)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024


def run_experiment(bundle="toyworld", prompts=None, out="report", cache=None, layers=None,
                   per_split: int | None = None, cfg: Config = Config(), device: str | None = "auto",
                   progress: Callable[[str, int, int], None] | None = None, store=None, test_prompts=None,
                   model: str | None = None, scheduler: str | None = None,
                   notify: Callable[[str], None] | None = None) -> dict | None:
    """Run (or resume) a whole experiment and write its report folder; returns the report's summary (None on
    every process but the main one when several run it).

    bundle        a bundle name ("toyworld", "sd14") or a loaded :class:`~ldm_explore.backend.bundles.Bundle`
    prompts       a prompt file with a split column, or a train file with ``test_prompts`` a test file (the
                  studies' two CSVs; validation carved out of train), or a PromptSet (default: the bundle's own)
    model         another pipeline (a Stable-Diffusion-family folder or cached hub id) judged by the bundle's
                  estimators and classifier
    scheduler     "lms", "pndm", "ddim", ... (default: the bundle's: LMS for sd14, as the studies)
    layers        module paths or glob patterns (default: the bundle's layers, every self-attention output)
    per_split     only the first N prompts of each split
    notify        receives one-line notes: properties left out, disk use, checkpoints, runs left out
    """
    from ldm_explore.cache.store import RunStore

    from ..bundles import load_bundle
    from ..pipeline.layers import resolve_layers, self_attention_layers
    from ..prompts import read_prompts
    from .baselines import LAYER_NAMES
    from .distributed import Dist
    from .report import write_report

    notify = notify or (lambda msg: None)
    if prompts is not None and not isinstance(prompts, PromptSet):  # a bad file fails before any model loads
        prompts = read_prompts(prompts, test_prompts)
    if isinstance(bundle, str):
        dist = Dist()
        if dist.state is not None and device == "auto":
            device = str(dist.state.device)
        bundle = load_bundle(bundle, device=device, model=model, scheduler=scheduler)
    for line in bundle.left_out:
        notify(line)
    store = store if store is not None else RunStore(cache)
    ps = prompts if prompts is not None else bundle.read_prompts()
    if per_split:
        ps = ps.per_split(per_split)
    layers = resolve_layers(bundle.pipe.unet, layers) if layers else bundle.layers
    out = Path(out)
    ex = Experiment(bundle, ps, out, store, layers, cfg, progress, notify)
    if cfg.keep_activations:
        per_run = ex.activation_bytes_per_run()
        notify(f"keeping activations in {store.root}: about {human_bytes(per_run)} per run, "
               f"{human_bytes(per_run * len(ps) * cfg.seeds)} for {len(ps) * cfg.seeds} runs")
    probes = ex.fit()
    rows = ex.evaluate(probes)
    if not ex.dist.main:  # the main process writes the report from every process's rows
        return None
    rows.sort(key=lambda r: (r["index"], r.get("seed_no", 0)))
    names = {**{i.path: i.short for i in self_attention_layers(bundle.pipe.unet)}, **LAYER_NAMES}
    from ..bundles.sd14 import is_fixture

    summary = write_report(out, rows, probes, names, {
        "bundle": bundle.name, "model": bundle.pipe.model_id, "fixture": is_fixture(getattr(bundle.pipe, "model_folder", None)), "prompts": str(ps.path), "splits": ps.splits(),
        "steps": cfg.steps, "guidance": cfg.guidance, "scheduler": type(bundle.pipe.scheduler).__name__,
        "view": cfg.view, "seeds": cfg.seeds, "layers": list(layers), "left_out": list(bundle.left_out), "runs_left_out": ex.skipped,
        "configuration": ex.config})
    # the report travels with the probes it describes: the explorer shows it beside the probes it loads
    from ..pipeline.runner import probes_file, summary_file

    f = summary_file(probes_file(store, bundle.pipe, cfg.steps))
    tmp = f.with_name(f.name + ".tmp")
    tmp.write_text(json.dumps(summary))
    tmp.replace(f)
    return summary

