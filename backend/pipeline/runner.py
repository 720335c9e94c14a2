"""Fill the run store from a prompt set: resumable, shareable between processes, flat in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ldm_explore.cache.store import RunKey, RunStore, model_slug

from .generate import GenerationSettings, generate
from ..prompts import Prompt


def pipe_signature(pipe) -> dict:
    """What else changes a run's result besides the settings: the weights' revision, their dtype, the kind of
    device (kernels differ between CPU, CUDA and MPS) and the scheduler the pipeline came with. Kept on the
    pipeline per scheduler (the UNet's dtype and device take milliseconds to ask; the explorer asks for every
    prompt of its list)."""
    cached = getattr(pipe, "_ldmx_signature", None)
    if cached is not None and cached[0] is pipe.scheduler:
        return dict(cached[1])
    p = next(pipe.unet.parameters())
    sig = {"revision": getattr(pipe, "model_revision", "unknown"), "dtype": str(p.dtype).removeprefix("torch."),
           "device": p.device.type, "scheduler": type(pipe.scheduler).__name__}
    pipe._ldmx_signature = (pipe.scheduler, sig)
    return dict(sig)


def probes_file(store: RunStore, pipe, steps: int, model_id: str | None = None, signature: dict | None = None) -> Path:
    """Where an experiment publishes the probes it fitted for this pipeline (its weights' revision, its
    scheduler) at ``steps`` denoising steps, and where the explorer finds them: beside the run store.
    Without the pipeline (``pipe`` None): its ``model_id`` and ``signature`` (:func:`.loading.pipeline_spec`)."""
    sig = pipe_signature(pipe) if pipe is not None else signature
    model_id = pipe.model_id if pipe is not None else model_id
    return (store.root / "probes" / f"{model_slug(model_id)}-{sig['revision']}" /
            f"{sig['scheduler']}-{steps}steps.safetensors")


def summary_file(probes_path) -> Path:
    """The experiment summary published beside a probes file (``X.safetensors`` -> ``X.summary.json``): the
    explorer shows it (layer x step metrics, common footing, intervals) beside the probes it loads."""
    p = Path(probes_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".summary.json")


def run_key(pipe, prompt: Prompt, settings: GenerationSettings, model_id: str | None = None,
            signature: dict | None = None) -> RunKey:
    """A run's key in the store. Without the pipeline (``pipe`` None): its ``model_id`` and ``signature``
    (:func:`.loading.pipeline_spec`), as :func:`probes_file` takes them."""
    if pipe is not None:
        model_id, signature = pipe.model_id, pipe_signature(pipe)
    return RunKey(model_id, prompt.index, prompt.seed, settings.key(signature))


def generate_into_store(pipe, prompts: Sequence[Prompt], settings: GenerationSettings, store: RunStore,
                        batch_size: int = 1, on_run: Callable[[int], None] | None = None,
                        on_step: Callable[[int, int], None] | None = None) -> dict:
    """Generate every prompt not yet in ``store``; return counts.

    Each entry is locked while it is computed, so several processes can share one store: an entry held
    by another process is skipped first and waited for at the end. Results are written and dropped per
    batch, so memory does not grow with the number of prompts. Interrupting loses at most the batch in
    flight; a rerun resumes.
    """
    on_run = on_run or (lambda n: None)
    stats = {"generated": 0, "cached": 0}
    todo = []
    for p in prompts:
        if store.has(run_key(pipe, p, settings)):
            stats["cached"] += 1
            on_run(1)
        else:
            todo.append(p)
    deferred: list[Prompt] = []

    def process(batch: list[Prompt], blocking: bool) -> None:
        from contextlib import ExitStack

        with ExitStack() as stack:
            mine = []
            for p in batch:
                key = run_key(pipe, p, settings)
                got = stack.enter_context(store.lock(key, timeout=-1 if blocking else 0))
                if not got:
                    deferred.append(p)
                elif store.has(key):
                    stats["cached"] += 1
                    on_run(1)
                else:
                    mine.append(p)
            if not mine:
                return
            for r in generate(pipe, mine, settings, on_step=on_step):
                store.put(run_key(pipe, r.prompt, settings), r, settings.to_dict(),
                          extra={"model_id": pipe.model_id, "pipe": pipe_signature(pipe)})
                stats["generated"] += 1
                on_run(1)

    for i in range(0, len(todo), batch_size):
        process(todo[i:i + batch_size], blocking=False)
    while deferred:
        batch, deferred[:] = list(deferred), []
        for p in batch:
            process([p], blocking=True)
    return stats
