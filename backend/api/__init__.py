"""ldm-explore: what a latent diffusion model knows about a scene while it is still noise.

The few entry points a notebook needs, in the order of the data flow::

    import ldm_explore as lx

    bundle = lx.load_bundle("toyworld")                    # or lx.load_pipeline("CompVis/stable-diffusion-v1-4")
    prompts = lx.read_prompts(bundle.prompts)
    with lx.Recorder(bundle.pipe, bundle.layers) as rec:   # hooks on the stock diffusers pipeline
        image = bundle.pipe(prompts[0].prompt, num_inference_steps=15,
                            callback_on_step_end=rec.step_callback).images[0]
    rec[bundle.layers[-1]][3]                              # (batch, h, w, c) at step 3

    runs = lx.generate(bundle.pipe, prompts[:4], lx.GenerationSettings(layers=bundle.layers))
    stats = lx.ProbeStats(lx.PROPERTIES)                   # streamed sufficient statistics
    for run in runs:
        stats.add_run(run.activations, lx.labels(bundle.estimators, run.final))
    probes = lx.fit_probes(stats)                          # ridge, every layer and step at once
    summary = lx.run_experiment("toyworld", per_split=3, out="report")   # the whole study, with a report

Names are loaded on first use, so ``import ldm_explore`` itself is instant (torch and diffusers load with
the first function that needs them).
"""

from __future__ import annotations

import importlib

# public name -> (module under ldm_explore.backend, attribute)
_EXPORTS = {
    "load_bundle": ("bundles", "load_bundle"),
    "Bundle": ("bundles.base", "Bundle"),
    "load_pipeline": ("pipeline.loading", "load_pipeline"),
    "Recorder": ("pipeline.recorder", "Recorder"),
    "self_attention_layers": ("pipeline.layers", "self_attention_layers"),
    "GenerationSettings": ("pipeline.generate", "GenerationSettings"),
    "RunResult": ("pipeline.generate", "RunResult"),
    "generate": ("pipeline.generate", "generate"),
    "generate_into_store": ("pipeline.runner", "generate_into_store"),
    "RunStore": ("cache", "RunStore"),
    "Prompt": ("prompts", "Prompt"),
    "PromptSet": ("prompts", "PromptSet"),
    "read_prompts": ("prompts", "read_prompts"),
    "PROPERTIES": ("probing.properties", "NAMES"),
    "labels": ("probing.labels", "targets"),
    "ProbeStats": ("probing.stats", "ProbeStats"),
    "Probes": ("probing.ridge", "Probes"),
    "fit_probes": ("probing.ridge", "fit"),
    "upsample": ("probing.ridge", "upsample"),
    "score": ("probing.metrics", "score"),
    "emergence_step": ("probing.emergence", "emergence_step"),
    "Config": ("experiment.engine", "Config"),
    "run_experiment": ("experiment.engine", "run_experiment"),
    "UserError": ("errors", "UserError"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    try:
        mod, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'ldm_explore' has no attribute {name!r}") from None
    module = importlib.import_module("ldm_explore.cache.store" if mod == "cache" else f"ldm_explore.backend.{mod}")
    value = getattr(module, attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
