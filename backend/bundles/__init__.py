"""Model bundles: everything one experiment needs, loaded through one code path.

``toyworld``: embedded, shipped with the project, runs on a CPU. ``sd14``: Stable Diffusion v1.4 and the
studies' estimators, from the user's Hugging Face cache. :func:`load_bundle` builds either complete;
:class:`~.base.Bundle` and the :class:`~.base.Estimators` / :class:`~.base.Classifier` protocols say what
a bundle holds.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..errors import ModelNotFoundError, UserError
from .base import Bundle, Classifier, Estimators

BUNDLES = ("toyworld", "sd14")
# the shipped bundle; LDM_EXPLORE_TOYWORLD_DIR points the project at another export (e.g. a fresh training run)
TOYWORLD_DIR = Path(os.environ.get("LDM_EXPLORE_TOYWORLD_DIR") or Path(__file__).resolve().parent / "toyworld")

__all__ = ["BUNDLES", "Bundle", "Classifier", "Estimators", "TOYWORLD_DIR", "load_bundle", "resolve_model",
           "toyworld_dir"]


def toyworld_dir() -> Path:
    return TOYWORLD_DIR


def resolve_model(model: str) -> str:
    """A bundle name stands for its pipeline folder; anything else is a path or hub id."""
    if model == "toyworld":
        d = toyworld_dir() / "pipeline"
        if not (d / "model_index.json").exists():
            raise ModelNotFoundError(f"the toyworld bundle's weights are missing from {d} "
                                     "(train them with `ldm-explore toyworld train`)")
        return str(d)
    return model


def load_bundle(name: str = "toyworld", device: str | None = "cpu", dtype: str | None = None,
                bundle_dir: Path | None = None, model: str | None = None) -> Bundle:
    """The bundle ``name``, complete. ``model``: another pipeline (a folder or cached hub id) judged by the
    bundle's estimators and classifier; the bundle's fitted probes then don't apply to it."""
    if name == "sd14":
        b = _load_sd14(device=device, dtype=dtype)
    elif name == "toyworld":
        b = _load_toyworld(device=device, dtype=dtype, bundle_dir=bundle_dir)
    else:
        raise UserError(f"bundle '{name}': unknown (bundles: {', '.join(BUNDLES)})")
    if model:
        from ..pipeline.layers import default_layers
        from ..pipeline.loading import load_pipeline

        pipe = load_pipeline(model, device=device, dtype=dtype)
        b = replace(b, pipe=pipe, layers=default_layers(pipe.unet), probes=None)
    return b


def _load_toyworld(device: str | None = "cpu", dtype: str | None = None, bundle_dir: Path | None = None) -> Bundle:
    from ..pipeline.layers import default_layers
    from ..pipeline.loading import load_pipeline
    from . import toyworld as tw

    folder = Path(bundle_dir or toyworld_dir())
    for f in ("pipeline/model_index.json", "estimators.safetensors", "classifier.safetensors", "prompts.csv"):
        if not (folder / f).exists():
            raise ModelNotFoundError(f"toyworld bundle: {folder / f} is missing "
                                     "(train it with `ldm-explore toyworld train`)")
    pipe = load_pipeline(folder / "pipeline", device=device, dtype=dtype)
    dev = str(pipe.unet.device)
    layers = default_layers(pipe.unet)
    probes = folder / "probes.safetensors"
    return Bundle("toyworld", pipe, tw.load_estimators(folder, dev), tw.load_classifier(folder, dev),
                  folder / "prompts.csv", layers, folder, probes if probes.exists() else None)


def _load_sd14(device: str | None = None, dtype: str | None = None, hybrid: bool = False) -> Bundle:
    """SD v1.4 with the studies' estimators; a missing model is a one-line error naming its fetch command."""
    from ..pipeline.layers import default_layers
    from ..pipeline.loading import load_pipeline, pick_device
    from .sd14 import SD14, SD14Estimators, VGG16Classifier, inventory

    missing = [m for m in inventory(hybrid) if not m.found]
    if missing:
        m = missing[0]
        more = f" (and {len(missing) - 1} more: `ldm-explore models --bundle sd14`)" if len(missing) > 1 else ""
        raise ModelNotFoundError(f"sd14 bundle: {m.name} is missing; fetch it with `{m.fetch}`{more}")
    dev = str(pick_device(device))
    pipe = load_pipeline(SD14, device=dev, dtype=dtype)
    folder = Path(__file__).resolve().parent
    return Bundle("sd14", pipe, SD14Estimators(dev, hybrid), VGG16Classifier(device=dev), folder / "sd14-prompts.txt",
                  default_layers(pipe.unet), folder)
