"""What the explorer works with, without any UI: a bundle, its prompts, probes and run store, and runs
that report each step as it comes and can be cancelled."""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from ..errors import UserError
from ..prompts import Prompt, PromptSet

# torch, diffusers and the models are imported in load(), in a worker, so the first frame comes first


class RunCancelled(Exception):
    pass


class ExplorerSession:
    def __init__(self, bundle: str = "toyworld", model: str | None = None, prompts: str | None = None,
                 cache: str | None = None, device: str | None = "auto", steps: int = 15, guidance: float = 7.5,
                 probes: str | None = None):
        self.bundle_name, self.model_path, self.prompts_path = bundle, model, prompts
        self.probes_path = probes
        self.cache, self.device, self.steps, self.guidance = cache, device, steps, guidance
        self.parts = None  # the bundle without its pipeline: stored runs open with it
        self.bundle = None  # the whole bundle: new runs need its pipeline
        self.probes = None
        self.store = None
        self.prompts: PromptSet | None = None
        self.settings = None  # GenerationSettings, once loaded
        self.layer_names: dict[str, str] = {}  # module path -> Table-1 name, once loaded
        self.report: dict | None = None  # the summary of the experiment that fitted the probes, when published
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    # --- loading (slow: torch, diffusers; call from a worker) -------------------------------------
    def read_prompts(self) -> PromptSet:
        """The prompt file given, else the bundle's own (read without loading the bundle)."""
        from ..bundles import prompt_files
        from ..prompts import read_prompts

        self.prompts = PromptSet.read(self.prompts_path) if self.prompts_path else read_prompts(*prompt_files(self.bundle_name))
        return self.prompts

    def load(self) -> None:
        self.open_parts()
        self.load_pipeline()

    def open_parts(self) -> None:
        """The run store, estimators, classifier, probes and layers, and the run keys (from the pipeline folder's
        files): stored runs can be opened from here on (seconds before the pipeline is loaded)."""
        from ldm_explore.cache.store import RunStore

        from ..bundles import open_bundle
        from ..pipeline.generate import GenerationSettings

        self.store = RunStore(self.cache, on_corrupt=self.warnings.append)
        # a toyworld-shaped pipeline of the user's (--model) is judged by the bundle's models
        parts = open_bundle(self.bundle_name, device=self.device, model=self.model_path)
        self.warnings += list(parts.left_out)
        self.layer_names = {i.path: i.short for i in parts.layer_info}
        self.parts = parts
        self._find_probes()
        self.settings = GenerationSettings(steps=self.steps, guidance=self.guidance, layers=parts.layers)

    def load_pipeline(self) -> None:
        """The pipeline (diffusers' import and the weights: most of the loading time): new runs from here on."""
        self.bundle = self.parts.complete()

    def _find_probes(self) -> None:
        """--probes; else what an experiment published for this pipeline at these steps; else the bundle's
        shipped probes. With them, the experiment's summary published beside them (if any)."""
        import json

        from ..pipeline.runner import probes_file, summary_file
        from ..probing.ridge import Probes

        b = self.bundle or self.parts
        self.probes, self.report = None, None
        published = probes_file(self.store, self._pipe(), self.steps, self.parts.model_id, self.parts.signature)
        path = self.probes_path or (published if published.exists() else b.probes)
        if path is not None:
            self.probes = Probes.load(path)
            unknown = [layer for layer in self.probes.layers if layer not in b.layers]
            if unknown:
                self.warnings.append(f"{path}: probes for layers this model does not have ({unknown[0]}); not shown")
                self.probes = None
        if self.probes is not None and summary_file(path).exists():
            try:
                self.report = json.loads(summary_file(path).read_text())
            except ValueError:
                self.warnings.append(f"{summary_file(path)}: not a readable experiment summary; not shown")

    # --- settings --------------------------------------------------------------------------------
    @property
    def opened(self) -> bool:
        """Stored runs can be opened: store, estimators, classifier, probes and settings are there."""
        return self.settings is not None

    @property
    def ready(self) -> bool:
        """New runs can be made: the pipeline is loaded too."""
        return self.bundle is not None and self.settings is not None

    @staticmethod
    def schedulers() -> list[str]:
        """The schedulers a session can switch to (the CLI's --scheduler names)."""
        from ..pipeline.loading import SCHEDULERS

        return list(SCHEDULERS)

    def current(self) -> dict:
        """The settings the next run is made with."""
        return {"steps": self.steps, "guidance": self.guidance, "scheduler": self.scheduler_name()}

    def scheduler_name(self) -> str:
        from ..pipeline.loading import SCHEDULERS

        cls = type(self.bundle.pipe.scheduler).__name__ if self.bundle is not None else \
            self.parts.signature["scheduler"] if self.parts is not None else ""
        return next((k for k, v in SCHEDULERS.items() if v == cls), cls)

    def configure(self, steps: int | None = None, guidance: float | None = None, scheduler: str | None = None) -> None:
        """Change the settings of the next runs: each combination is its own run in the store, so a run made
        with the old settings opens again from the store when they come back. Probes are looked up again
        (they are fitted per scheduler and number of steps)."""
        from ..pipeline.generate import GenerationSettings
        from ..pipeline.loading import make_scheduler

        if steps is not None and steps < 1:
            raise UserError(f"steps {steps}: must be at least 1")
        if guidance is not None and not guidance >= 0:
            raise UserError(f"guidance {guidance}: must be 0 or more")
        with self._lock:  # not while a run uses the pipeline
            pipe = self.bundle.pipe
            if scheduler is not None and scheduler != self.scheduler_name():
                pipe.scheduler = make_scheduler(pipe.scheduler, scheduler)
            changed_steps = steps is not None and steps != self.steps
            self.steps = steps if steps is not None else self.steps
            self.guidance = guidance if guidance is not None else self.guidance
            self.settings = GenerationSettings(steps=self.steps, guidance=self.guidance, layers=self.bundle.layers)
            if changed_steps or scheduler is not None:
                self._find_probes()

    # --- runs ------------------------------------------------------------------------------------
    def key(self, p: Prompt):
        from ..pipeline.runner import run_key

        # with the pipeline, its own signature (its scheduler may have been switched); before it, the folder's
        return run_key(self._pipe(), p, self.settings, self.parts.model_id, self.parts.signature)

    def _pipe(self):
        return self.bundle.pipe if self.bundle is not None else None

    def is_cached(self, p: Prompt) -> bool:
        # until the parts are open nothing counts as cached
        return self.store is not None and self.opened and self.store.has(self.key(p))

    def unknown_words(self, text: str) -> list[str]:
        from ..bundles.toyworld import unknown_words

        return unknown_words(self.bundle.pipe.tokenizer, text) if self.bundle_name == "toyworld" and self.ready else []

    def open(self, p: Prompt):
        """The analysed run from the store, or None."""
        from ..pipeline.generate import RunResult
        from .analysis import analyse

        e = self.store.get(self.key(p))
        return None if e is None else analyse(self.bundle or self.parts, RunResult.from_entry(e), self.probes)

    def run(self, p: Prompt, on_step: Callable[[int, int, np.ndarray], None] | None = None,
            cancelled: Callable[[], bool] = lambda: False):
        """Generate ``p`` (live: ``on_step(step, total, decoded x_t uint8)``), store it, analyse it."""
        from ..pipeline.generate import decode_latents, generate
        from .analysis import analyse

        if self.bundle is None:
            raise UserError("the pipeline is still loading: new runs start once it is loaded")
        pipe = self.bundle.pipe

        previews = []

        def live(i, xt, x0):
            if cancelled():
                raise RunCancelled()
            if on_step is not None:  # the scheduler's own step count (PNDM makes N+1 for N)
                previews.append(decode_latents(pipe, xt)[0])
                on_step(i, pipe.num_timesteps, previews[-1])

        with self._lock:  # one pipeline, one run at a time
            # the x_t images are the live previews, decoded once (decode_latents: the bytes a batch run stores)
            r = generate(pipe, [p], self.settings, on_latents=live, decode=("x0",) if on_step is not None else True)[0]
            if cancelled():
                raise RunCancelled()
            if on_step is not None:
                r.xt_images = np.stack(previews)
            self.store.put(self.key(p), r, self.settings.to_dict(),
                           extra={"model_id": self.bundle.pipe.model_id, "bundle": self.bundle_name})
        return analyse(self.bundle, r, self.probes)

    def custom_prompt(self, text: str, seed: int) -> Prompt:
        text = text.strip()
        if not text:
            raise UserError("empty prompt")
        if not 0 <= seed <= 2**32 - 1:
            raise UserError(f"seed {seed} is out of range (0 to 4294967295)")
        used = {p.index for p in self.prompts} if self.prompts else set()
        import hashlib

        digest = hashlib.sha256(f"{seed}\n{text}".encode()).digest()
        idx = 1_000_000 + int.from_bytes(digest[:4], "big") % 1_000_000  # stable across launches
        while idx in used:
            idx += 1
        return Prompt(idx, text, seed, "custom")
