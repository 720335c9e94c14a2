"""Generate with recording: the stock pipeline plus a :class:`~.recorder.Recorder`; every step's latents are
decoded afterwards in batches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..prompts import Prompt
from .recorder import Recorder


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

    def key(self, pipe_signature: dict | None = None) -> str:
        """A short hash of everything that changes what a run produces: these settings and, given, the
        pipeline's signature (weights' revision, dtype, device kind, scheduler: :func:`.runner.pipe_signature`)."""
        d = asdict(self)
        if pipe_signature:
            d["pipe"] = pipe_signature
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

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

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def images(self, view: str) -> np.ndarray:
        """The decoded images of ``view``: "xt" (x_t after each step) or "x0" (predicted x0)."""
        return {"xt": self.xt_images, "x0": self.x0_images}[view]

    @classmethod
    def from_entry(cls, entry, layers: list[str] | None = None) -> "RunResult":
        """A run read back from the store (``layers``: the activations to load; None: all it has)."""
        d = entry.manifest["prompt"]
        prompt = Prompt(d["index"], d["prompt"], d["seed"], d.get("split"))
        return cls(prompt, entry.final, entry.xt_images, entry.x0_images, entry.latents, entry.x0_latents,
                   list(entry.meta["timesteps"]), entry.activations(layers), entry.meta)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 exactly as diffusers' numpy_to_pil does."""
    return (images * 255).round().astype("uint8")


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor, batch_size: int = 1) -> np.ndarray:
    """VAE decode of (N, C, h, w) latents to (N, H, W, 3) uint8, ``batch_size`` at a time.

    One at a time by default, so that an image's bytes do not depend on what it was decoded with: the
    explorer decodes each step as it comes (its live preview) and stores those images, a batch run decodes
    all steps after, and both must store the same run (a batch of 8 differs from single decodes in the last
    float bits, which move a few pixels by one level). Batching gains little here: an SD-size decode fills a
    GPU on its own, and on a CPU one at a time cost 25% more at toyworld's 64 x 64."""
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


VIEWS = ("xt", "x0")  # decoded x_t after each step; decoded predicted x0


@torch.no_grad()
def generate(pipe, prompts: Sequence[Prompt], settings: GenerationSettings = GenerationSettings(),
             record: bool = True, decode=VIEWS, on_step=None, on_latents=None, sink=None) -> list[RunResult]:
    """Run ``prompts`` as one batch (each with its own seed) through the stock pipeline, recording.

    ``decode``: the views whose every step is decoded to images ("xt", "x0"; True for both, False for none: the
    VAE decoder at full size costs about what denoising does). ``sink``: a ``sink(layer, step, tensor)`` that
    receives the recorded activations on the compute device (see :class:`Recorder`); the results then hold
    none. ``on_step(step, num_steps)`` is called after each denoising step (progress bars; ``num_steps`` is the
    scheduler's real count, e.g. N+1 for PNDM); ``on_latents(step, x_t, x0)`` too, with that step's latents,
    for live previews. Either may raise to abort the run.
    """
    views = VIEWS if decode is True else () if decode is False else tuple(decode)
    gens = [torch.Generator(device="cpu").manual_seed(p.seed) for p in prompts]
    guidance = settings.guidance > 1.0
    rec = Recorder(pipe, list(settings.layers), half=settings.half, guidance=guidance,
                   guidance_scale=settings.guidance, dtype=_act_dtype(settings.act_dtype),
                   record_activations=record and bool(settings.layers), sink=sink)

    def callback(p, i, t, kw):
        out = rec.step_callback(p, i, t, kw)
        if on_step is not None:
            on_step(i, getattr(p, "num_timesteps", None) or len(p.scheduler.timesteps))
        if on_latents is not None:
            on_latents(i, rec.latents[-1], rec.x0[-1] if rec.x0 else None)
        return out

    check_size(pipe, settings)
    latents = initial_latents(pipe, len(prompts), gens, settings)
    with rec:
        out = pipe(
            [p.prompt for p in prompts], num_inference_steps=settings.steps, guidance_scale=settings.guidance,
            height=settings.height, width=settings.width, latents=latents, output_type="np",
            callback_on_step_end=callback,
        )
    finals = to_uint8(out.images)
    S, B = len(rec.latents), len(prompts)
    lat = torch.stack(rec.latents)  # (S, B, C, h, w)
    x0 = torch.stack(rec.x0) if rec.x0 else torch.zeros_like(lat)
    # each prompt's activations, (S, h, w, c); a layer's batch tensors are let go as soon as every prompt has its
    # copy, so memory grows with the batch, never with its square
    acts: list[dict[str, np.ndarray]] = [{} for _ in prompts]
    for n in list(rec.activations) if sink is None else ():
        steps = rec.activations.pop(n)
        for b in range(B):
            if settings.half == "both" and guidance:  # (S, 2, h, w, c): uncond then cond
                acts[b][n] = torch.stack([torch.stack([t[b], t[B + b]]) for t in steps]).numpy()
            else:
                acts[b][n] = torch.stack([t[b] for t in steps]).numpy()
        del steps
    none = np.zeros((0,), np.uint8)
    return [RunResult(
        prompt=p, final=finals[b],
        xt_images=decode_latents(pipe, lat[:, b]) if "xt" in views else none,
        x0_images=decode_latents(pipe, x0[:, b]) if "x0" in views else none,
        latents=lat[:, b].numpy(), x0_latents=x0[:, b].numpy(), timesteps=list(rec.timesteps),
        activations=acts[b], meta={"num_steps": S, "unet_calls": len(rec.timesteps)},
    ) for b, p in enumerate(prompts)]


def check_size(pipe, settings: GenerationSettings) -> None:
    """Height and width the pipeline can make: multiples of the VAE's downsampling factor (8 for SD)."""
    f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    for name, v in (("height", settings.height), ("width", settings.width)):
        if v is not None and (v < f or v % f):
            from ..errors import UserError

            raise UserError(f"--{name} {v}: must be a positive multiple of {f} (the VAE downsamples by {f})")


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
