"""Load a Stable-Diffusion-family diffusers pipeline, offline-first, on the device and dtype asked for.

The pipeline is the stock ``StableDiffusionPipeline``: nothing is forked or patched, and nothing is
downloaded here (a model missing from the local cache is a one-line error with the command that fetches it).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ModelNotFoundError, UserError
from .hub_dirs import hf_cache_dir

SCHEDULERS = {
    "lms": "LMSDiscreteScheduler",  # the studies' scheduler
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "ddpm": "DDPMScheduler",
}


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is available here (try --device cpu)")
        if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise UserError("--device mps: MPS is not available here (try --device cpu)")
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp32": torch.float32, "float32": torch.float32}


def pick_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    if dtype and dtype != "auto":
        if dtype not in _DTYPES:
            raise UserError(f"--dtype {dtype}: choose one of fp16, bf16, fp32")
        return _DTYPES[dtype]
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def fetch_hint(model: str) -> str:
    return f"fetch it with `hf download {model}` (or pass a local folder with --model PATH)"


def pipeline_spec(model: str | os.PathLike, device: str | None = None, dtype: str | None = None,
                  scheduler: str | None = None) -> dict:
    """What :func:`load_pipeline` would load, from the folder's files alone (no diffusers, no weights read):
    ``model_id``, ``folder``, the ``signature`` :func:`.runner.pipe_signature` will give the loaded pipeline, and
    the UNet's ``unet_config``. The explorer keys and opens stored runs with it while the pipeline loads."""
    import json

    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(f"{path}: not a diffusers pipeline folder (no model_index.json)")
        folder, model_id = path.resolve(), str(path.resolve())
    else:
        if str(model).startswith((".", "/", "~")) or str(model).count("/") != 1:
            raise ModelNotFoundError(f"model '{model}': no such folder, and not a hub id of the form owner/name")
        folder, model_id = _cached_snapshot(str(model)), str(model)
        if folder is None:
            raise ModelNotFoundError(f"model '{model}' is not in the local Hugging Face cache; {fetch_hint(str(model))}")
    if scheduler and scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler {scheduler}: choose one of {', '.join(SCHEDULERS)}")
    try:
        sched = SCHEDULERS[scheduler] if scheduler else \
            json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
        unet_config = json.loads((folder / "unet" / "config.json").read_text())
    except (OSError, ValueError, KeyError) as e:
        raise ModelNotFoundError(f"{folder}: cannot read the pipeline's configuration: {str(e).splitlines()[0]}") from None
    sig = {"revision": model_revision(folder), "dtype": str(dt).removeprefix("torch."), "device": dev.type,
           "scheduler": sched}
    return {"model_id": model_id, "folder": folder, "signature": sig, "unet_config": unet_config}


def load_pipeline(model: str | os.PathLike, device: str | None = None, dtype: str | None = None,
                  scheduler: str | None = None):
    """Load a pipeline folder or hub id, offline-first: nothing is downloaded here."""
    from diffusers import StableDiffusionPipeline

    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    path = Path(model).expanduser()
    import diffusers
    from packaging.version import Version

    dt_kw = "dtype" if Version(diffusers.__version__) >= Version("0.36") else "torch_dtype"
    kwargs = {dt_kw: dt, "safety_checker": None, "requires_safety_checker": False}
    quiet_hf()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(f"{path}: not a diffusers pipeline folder (no model_index.json)")
        try:
            pipe = StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True, **kwargs)
        except (OSError, ValueError, EnvironmentError) as e:
            raise ModelNotFoundError(f"{path}: cannot load pipeline: {str(e).splitlines()[0]}") from None
    else:
        if str(model).startswith((".", "/", "~")) or str(model).count("/") != 1:
            raise ModelNotFoundError(f"model '{model}': no such folder, and not a hub id of the form owner/name")
        try:
            pipe = StableDiffusionPipeline.from_pretrained(str(model), local_files_only=True, cache_dir=hf_cache_dir(),
                                                           **kwargs)
        except (OSError, ValueError, EnvironmentError):
            raise ModelNotFoundError(
                f"model '{model}' is not in the local Hugging Face cache; {fetch_hint(str(model))}"
            ) from None
    if scheduler:
        pipe.scheduler = make_scheduler(pipe.scheduler, scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(dev)
    pipe.model_id = str(path.resolve()) if path.exists() else str(model)
    pipe.model_folder = path.resolve() if path.exists() else _cached_snapshot(str(model))
    pipe.model_revision = model_revision(pipe.model_folder)
    return pipe


def _cached_snapshot(repo: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, local_files_only=True, cache_dir=hf_cache_dir()))
    except Exception:
        return None


def model_revision(folder: Path | None) -> str:
    """What identifies the weights in ``folder``: the Hugging Face snapshot's commit hash for a cached hub model,
    otherwise a short hash of every config file and, per weight file, its size and its first and last MiB
    (cheap, and a retrained model of the same architecture gets another revision)."""
    if folder is None:
        return "unknown"
    folder = Path(folder).resolve()
    if folder.parent.name == "snapshots":
        return folder.name
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        h.update(rel.encode())
        if f.suffix == ".json" or f.suffix == ".txt":
            h.update(f.read_bytes())
        else:
            size = f.stat().st_size
            h.update(str(size).encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read(1 << 20))
    return h.hexdigest()[:12]


def compute_dtype(device) -> torch.dtype:
    """The widest float type ``device`` computes in: float64, except on MPS, which has none."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def quiet_hf() -> None:
    """No library progress bars or load reports: the project draws its own progress."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()


def make_scheduler(current, name: str):
    import diffusers

    if name not in SCHEDULERS:
        raise UserError(f"--scheduler {name}: choose one of {', '.join(SCHEDULERS)}")
    cls = getattr(diffusers, SCHEDULERS[name])
    return cls.from_config(current.config)
