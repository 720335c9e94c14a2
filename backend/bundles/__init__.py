"""Model bundles: everything one experiment needs, loaded through one code path.

``toyworld``: embedded, shipped with the project, runs on a CPU. ``sd14``: Stable Diffusion v1.4 and the
studies' estimators, from the user's Hugging Face cache. :func:`load_bundle` builds either complete;
:class:`~.base.Bundle` and the :class:`~.base.Estimators` / :class:`~.base.Classifier` protocols say what
a bundle holds.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelNotFoundError, UserError
from .base import Bundle, BundleParts, Classifier, Estimators

BUNDLES = ("toyworld", "sd14")
# the shipped bundle; LDM_EXPLORE_TOYWORLD_DIR points the project at another export (e.g. a fresh training run)
TOYWORLD_DIR = Path(os.environ.get("LDM_EXPLORE_TOYWORLD_DIR") or Path(__file__).resolve().parent / "toyworld")

__all__ = ["BUNDLES", "Bundle", "BundleParts", "Classifier", "Estimators", "TOYWORLD_DIR", "load_bundle",
           "open_bundle", "resolve_model", "toyworld_dir"]


def toyworld_dir() -> Path:
    return TOYWORLD_DIR


SD14_DIR = Path(__file__).resolve().parent / "sd14"


def prompt_files(name: str) -> tuple[Path, Path | None]:
    """A bundle's default prompt file(s), without loading the bundle: (file with a split column, None) or
    (train file, test file)."""
    if name == "sd14":
        return SD14_DIR / "train_split_prompts_seeds.csv", SD14_DIR / "test_split_prompts_seeds.csv"
    if name == "toyworld":
        return toyworld_dir() / "prompts.csv", None
    raise UserError(f"bundle '{name}': unknown (bundles: {', '.join(BUNDLES)})")


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
                bundle_dir: Path | None = None, model: str | None = None, scheduler: str | None = None) -> Bundle:
    """The bundle ``name``, complete. ``model``: another pipeline (a folder or cached hub id) judged by the
    bundle's estimators and classifier; the bundle's fitted probes then don't apply to it. ``scheduler``:
    "lms", "pndm", "ddim", ... (default: the bundle's own; LMS for sd14, as the studies used)."""
    return open_bundle(name, device, dtype, bundle_dir, model, scheduler).complete()


def open_bundle(name: str = "toyworld", device: str | None = "cpu", dtype: str | None = None,
                bundle_dir: Path | None = None, model: str | None = None, scheduler: str | None = None) -> BundleParts:
    """The bundle ``name`` without its pipeline (:class:`BundleParts`: stored runs open with it); ``.complete()``
    loads the pipeline."""
    if name == "sd14":
        return _open_sd14(device=device, dtype=dtype, scheduler=scheduler or "lms", model=model)
    if name == "toyworld":
        return _open_toyworld(device=device, dtype=dtype, bundle_dir=bundle_dir, scheduler=scheduler, model=model)
    raise UserError(f"bundle '{name}': unknown (bundles: {', '.join(BUNDLES)})")


def _parts_of(model, device, dtype, scheduler):
    from ..pipeline.layers import layers_from_config
    from ..pipeline.loading import pick_device, pipeline_spec

    dev = str(pick_device(device))
    spec = pipeline_spec(model, device=dev, dtype=dtype, scheduler=scheduler)
    return dev, dict(layer_info=tuple(layers_from_config(spec["unet_config"])), model_id=spec["model_id"],
                     signature=spec["signature"], pipeline=dict(model=model, device=dev, dtype=dtype, scheduler=scheduler))


def _open_toyworld(device: str | None = "cpu", dtype: str | None = None, bundle_dir: Path | None = None,
                   scheduler: str | None = None, model: str | None = None) -> BundleParts:
    from . import toyworld as tw

    folder = Path(bundle_dir or toyworld_dir())
    for f in ("pipeline/model_index.json", "estimators.safetensors", "classifier.safetensors", "prompts.csv"):
        if not (folder / f).exists():
            raise ModelNotFoundError(f"toyworld bundle: {folder / f} is missing "
                                     "(train it with `ldm-explore toyworld train`)")
    dev, parts = _parts_of(model or folder / "pipeline", device, dtype, scheduler)
    probes = folder / "probes.safetensors"  # fitted on the bundle's own pipeline
    return BundleParts("toyworld", tw.load_estimators(folder, dev), tw.load_classifier(folder, dev),
                       folder / "prompts.csv", folder=folder, probes=probes if probes.exists() and not model else None,
                       **parts)


def _open_sd14(device: str | None = None, dtype: str | None = None, hybrid: bool = False,
               scheduler: str | None = "lms", model: str | None = None) -> BundleParts:
    """SD v1.4 (or ``model``) with the studies' estimators. A missing pipeline or classifier is a one-line error
    naming its fetch command; a missing estimator leaves its property out (``left_out``)."""
    from .sd14 import SD14, SD14Estimators, VGG16Classifier, inventory

    needed = ("classifier",) if model else ("pipeline", "classifier")
    missing = [m for m in inventory(hybrid) if not m.found and m.role in needed]
    if missing:
        m = missing[0]
        more = f" (and {len(missing) - 1} more: `ldm-explore models --bundle sd14`)" if len(missing) > 1 else ""
        raise ModelNotFoundError(f"sd14 bundle: {m.name} is missing; fetch it with `{m.fetch}`{more}")
    dev, parts = _parts_of(model or SD14, device, dtype, scheduler)
    est = SD14Estimators(dev, hybrid)
    train, test = prompt_files("sd14")
    return BundleParts("sd14", est, VGG16Classifier(device=dev), train, folder=SD14_DIR, left_out=tuple(est.left_out),
                       test_prompts=test, **parts)
