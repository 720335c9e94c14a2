"""Load a Stable-Diffusion-1.x-shaped diffusers pipeline and generate with recording.

The pipeline is the stock ``StableDiffusionPipeline``; the project only adds hooks (``Recorder``) and
decodes every step's latents afterwards in batches.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import ModelNotFoundError, UserError
from .prompts import Prompt
from .recorder import Recorder

SCHEDULERS = {
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
            pipe = StableDiffusionPipeline.from_pretrained(str(model), local_files_only=True, **kwargs)
        except (OSError, ValueError, EnvironmentError):
            raise ModelNotFoundError(
                f"model '{model}' is not in the local Hugging Face cache; {fetch_hint(str(model))}"
            ) from None
    if scheduler:
        pipe.scheduler = make_scheduler(pipe.scheduler, scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(dev)
    pipe.model_id = str(path.resolve()) if path.exists() else str(model)
    return pipe


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


@dataclass(frozen=True)
class GenerationSettings:
    steps: int = 15
    guidance: float = 7.5
    height: int | None = None  # None: the UNet's sample_size x the VAE factor
    width: int | None = None
    scheduler: str | None = None  # None: the pipeline's own
    half: str = "cond"
    act_dtype: str = "float16"
    layers: tuple[str, ...] = ()

    def key(self) -> str:
        """A short hash of everything that changes what a run produces."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunResult:
    """Everything one (prompt, seed) produced."""

    prompt: Prompt
    final: np.ndarray  # (H, W, 3) uint8: the pipeline's own output image
    xt_images: np.ndarray  # (S, H, W, 3) uint8: VAE decode of x_t after each step
    x0_images: np.ndarray  # (S, H, W, 3) uint8: VAE decode of predicted x0 at each step
    latents: np.ndarray  # (S, C, h, w) float32: x_t after each step
    x0_latents: np.ndarray  # (S, C, h, w) float32
    timesteps: list[float]
    activations: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> (S, h, w, c)
    meta: dict = field(default_factory=dict)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 exactly as diffusers' numpy_to_pil does."""
    return (images * 255).round().astype("uint8")


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor, batch_size: int = 8) -> np.ndarray:
    """Batched VAE decode of (N, C, h, w) latents to (N, H, W, 3) uint8."""
    vae = pipe.vae
    out = []
    for i in range(0, latents.shape[0], batch_size):
        z = latents[i:i + batch_size].to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
        img = vae.decode(z, return_dict=False)[0]
        img = pipe.image_processor.postprocess(img, output_type="np", do_denormalize=[True] * img.shape[0])
        out.append(to_uint8(img))
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 3), np.uint8)


def _act_dtype(name: str) -> torch.dtype:
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


@torch.no_grad()
def generate(pipe, prompts: Sequence[Prompt], settings: GenerationSettings = GenerationSettings(),
             record: bool = True, decode: bool = True, on_step=None, on_latents=None) -> list[RunResult]:
    """Run ``prompts`` as one batch (each with its own seed) through the stock pipeline, recording.

    ``on_step(step, num_steps)`` is called after each denoising step (progress bars; ``num_steps`` is the
    scheduler's real count, e.g. N+1 for PNDM); ``on_latents(step, x_t, x0)`` too, with that step's
    latents, for live previews. Either may raise to abort the run.
    """
    gens = [torch.Generator(device="cpu").manual_seed(p.seed) for p in prompts]
    guidance = settings.guidance > 1.0
    rec = Recorder(pipe, list(settings.layers), half=settings.half, guidance=guidance,
                   guidance_scale=settings.guidance, dtype=_act_dtype(settings.act_dtype),
                   record_activations=record and bool(settings.layers))

    def callback(p, i, t, kw):
        out = rec.step_callback(p, i, t, kw)
        if on_step is not None:
            on_step(i, getattr(p, "num_timesteps", None) or len(p.scheduler.timesteps))
        if on_latents is not None:
            on_latents(i, rec.latents[-1], rec.x0[-1] if rec.x0 else None)
        return out

    latents = initial_latents(pipe, len(prompts), gens, settings)
    with rec:
        out = pipe(
            [p.prompt for p in prompts], num_inference_steps=settings.steps, guidance_scale=settings.guidance,
            height=settings.height, width=settings.width, latents=latents, output_type="np",
            callback_on_step_end=callback,
        )
    finals = to_uint8(out.images)
    S = len(rec.latents)
    lat = torch.stack(rec.latents)  # (S, B, C, h, w)
    x0 = torch.stack(rec.x0) if rec.x0 else torch.zeros_like(lat)
    results = []
    for b, p in enumerate(prompts):
        xt_img = decode_latents(pipe, lat[:, b]) if decode else np.zeros((0,), np.uint8)
        x0_img = decode_latents(pipe, x0[:, b]) if decode else np.zeros((0,), np.uint8)
        acts = {}
        if settings.half == "both" and guidance:
            B = len(prompts)
            for n in rec.layer_names:
                a = rec.stacked(n)  # (S, 2B, h, w, c): uncond then cond
                acts[n] = torch.stack([a[:, b], a[:, B + b]], 1).numpy()  # (S, 2, h, w, c)
        else:
            for n in rec.layer_names:
                acts[n] = rec.stacked(n)[:, b].numpy()
        results.append(RunResult(
            prompt=p, final=finals[b], xt_images=xt_img, x0_images=x0_img,
            latents=lat[:, b].numpy(), x0_latents=x0[:, b].numpy(), timesteps=list(rec.timesteps),
            activations=acts,
            meta={"num_steps": S, "unet_calls": len(rec.timesteps)},
        ))
    return results


def initial_latents(pipe, batch: int, generators: list[torch.Generator], settings: GenerationSettings):
    """The same x_T the stock pipeline draws for ``generator=[...]``, made on the CPU for any device.

    Drawing on the CPU makes a seed give the same image on every machine (diffusers' randn_tensor does
    the same for a CPU generator); it also lets a batch be split into single prompts without changing
    any of them.
    """
    from diffusers.utils.torch_utils import randn_tensor

    vae_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    h = settings.height or pipe.unet.config.sample_size * vae_factor
    w = settings.width or pipe.unet.config.sample_size * vae_factor
    shape = (batch, pipe.unet.config.in_channels, h // vae_factor, w // vae_factor)
    lat = randn_tensor(shape, generator=generators, device=torch.device("cpu"), dtype=pipe.unet.dtype)
    return lat.to(pipe.unet.device)  # the pipeline scales it by init_noise_sigma itself
