"""Record what a UNet computes while a stock diffusers pipeline denoises.

In the style of nnsight / baukit: a context manager that hooks named modules and hands back what it saw.

    with Recorder(pipe, ["*attn1.to_out.0"], guidance=True) as rec:
        image = pipe(prompt, callback_on_step_end=rec.step_callback, ...).images
    rec[layer][step]      # (batch, h, w, c) tensor on the CPU, in ``dtype``
    rec.x0[step]          # predicted x0 latents for every step, from the guided noise prediction
    rec.latents[step]     # x_t after each step (the scheduler's output)

Hooks only read: the pipeline's outputs are bit-identical with and without a Recorder.

Copies to the host are made without blocking (into pinned memory on CUDA) and waited for once per step, in
``step_callback``. A ``sink`` instead receives every recorded output on the compute device and keeps it where
it wants (the experiment keeps a batch's activations on the GPU, or spills them to disk on a CPU).

A *step* is one iteration of the pipeline's denoising loop: one UNet call, one scheduler step. DDIM makes
N of them for N inference steps; PNDM (PLMS) makes N+1, its warm-up repeating the second timestep.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Iterable, Literal

import torch

Half = Literal["cond", "uncond", "both"]

SELF_ATTENTION_PATTERN = "*attn1.to_out.0"


def match_layers(module: torch.nn.Module, patterns: Iterable[str]) -> list[str]:
    """Module paths under ``module`` that equal or glob-match one of ``patterns``, in module order."""
    patterns = list(patterns)
    names = [n for n, _ in module.named_modules() if n]
    out = []
    for n in names:
        if any(n == p or fnmatch.fnmatchcase(n, p) for p in patterns):
            out.append(n)
    missing = [p for p in patterns if not any(n == p or fnmatch.fnmatchcase(n, p) for n in names)]
    if missing:
        from ..errors import UserError

        raise UserError(f"no module of the UNet matches layer '{missing[0]}' (try `ldm-explore layers --model ...`)")
    return out


def _spatial(seq_len: int, height: int, width: int) -> tuple[int, int]:
    """The (h, w) of a token sequence produced from a (height, width) latent by stride-2 downsampling."""
    h, w = height, width
    while h * w > seq_len:
        h, w = (h + 1) // 2, (w + 1) // 2
    if h * w != seq_len:
        raise ValueError(f"cannot map {seq_len} tokens onto a grid derived from a {height}x{width} latent")
    return h, w


@dataclass
class Recorder:
    """Forward hooks on ``pipe.unet`` (or a bare UNet) that record named modules per denoising step.

    layers   exact module paths or glob patterns (``*attn1.to_out.0``: every self-attention output)
    half     which half of a classifier-free-guidance batch to keep: "cond" (text, the default), "uncond", "both"
    guidance whether the UNet batch is doubled for guidance (unconditional half first, as in diffusers)
    dtype    storage dtype of activations (float16 halves memory; latents and x0 are kept in float32)
    sink     ``sink(layer, step, tensor)`` receives each output on the compute device, (batch, h, w, c) in
             ``dtype``, instead of the recorder keeping a host copy in ``activations``
    """

    unet: torch.nn.Module
    layers: Iterable[str] = (SELF_ATTENTION_PATTERN,)
    half: Half = "cond"
    guidance: bool = True
    guidance_scale: float = 7.5
    dtype: torch.dtype = torch.float16
    scheduler: object | None = None
    record_activations: bool = True
    sink: object | None = None

    # filled while recording
    activations: dict[str, list[torch.Tensor]] = field(default_factory=dict, init=False)
    timesteps: list[float] = field(default_factory=list, init=False)
    eps: list[torch.Tensor] = field(default_factory=list, init=False)
    x0: list[torch.Tensor] = field(default_factory=list, init=False)
    latents: list[torch.Tensor] = field(default_factory=list, init=False)

    def __post_init__(self):
        if hasattr(self.unet, "unet"):  # a pipeline was passed
            pipe = self.unet
            self.unet = pipe.unet
            if self.scheduler is None:
                self.scheduler = pipe.scheduler
        if self.half not in ("cond", "uncond", "both"):
            raise ValueError(f"half must be 'cond', 'uncond' or 'both', not {self.half!r}")
        self.layer_names = match_layers(self.unet, self.layers) if self.record_activations else []
        self._handles: list = []
        self._latent_hw: tuple[int, int] | None = None
        self._sample: torch.Tensor | None = None
        self._t: torch.Tensor | None = None

    # --- context manager -------------------------------------------------------------------------
    def __enter__(self) -> "Recorder":
        self.activations = {n: [] for n in self.layer_names}
        self.timesteps, self.eps, self.x0, self.latents = [], [], [], []
        modules = dict(self.unet.named_modules())
        self._handles.append(self.unet.register_forward_pre_hook(self._unet_pre, with_kwargs=True))
        self._handles.append(self.unet.register_forward_hook(self._unet_post, with_kwargs=True))
        for n in self.layer_names:
            self._handles.append(modules[n].register_forward_hook(self._layer_hook(n)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # --- access ----------------------------------------------------------------------------------
    def __getitem__(self, layer: str) -> list[torch.Tensor]:
        return self.activations[layer]

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def stacked(self, layer: str) -> torch.Tensor:
        """(steps, batch, h, w, c)"""
        return torch.stack(self.activations[layer])

    # --- hooks -----------------------------------------------------------------------------------
    def _select(self, t: torch.Tensor) -> torch.Tensor:
        if not self.guidance or self.half == "both":
            return t
        b = t.shape[0] // 2
        return t[b:] if self.half == "cond" else t[:b]

    def _unet_pre(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        self._latent_hw = tuple(sample.shape[-2:])
        self._sample, self._t = sample, t
        self.timesteps.append(float(t.flatten()[0]) if torch.is_tensor(t) else float(t))

    def _unet_post(self, module, args, kwargs, output):
        eps = output[0] if isinstance(output, tuple) else output.sample
        sample = self._sample
        if self.guidance:  # the same arithmetic as the pipeline's guidance
            eps_u, eps_c = eps.chunk(2)
            eps = eps_u + self.guidance_scale * (eps_c - eps_u)
            sample = sample.chunk(2)[1]
        eps = eps.detach().float()
        self.eps.append(_to_host(eps))
        x0 = predicted_x0(sample.detach().float(), eps, self.timesteps[-1], self.scheduler)
        if x0 is not None:
            self.x0.append(_to_host(x0))

    def _layer_hook(self, name: str):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            out = self._select(out.detach())
            if out.dim() == 3:  # (b, h*w, c) tokens
                h, w = _spatial(out.shape[1], *self._latent_hw)
                out = out.reshape(out.shape[0], h, w, out.shape[2])
            elif out.dim() == 4:  # (b, c, h, w) feature map
                out = out.permute(0, 2, 3, 1)
            out = out.to(dtype=self.dtype)
            if self.sink is not None:
                self.sink(name, len(self.timesteps) - 1, out)
            else:
                self.activations[name].append(_to_host(out, copy=False))  # nothing writes into a Linear's output

        return hook

    def step_callback(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        """Pass as ``callback_on_step_end``: records x_t after each scheduler step, changes nothing; the one
        place a step waits for its copies to the host."""
        lat = callback_kwargs["latents"].detach()
        self.latents.append(_to_host(lat.float()))
        if lat.device.type == "cuda":
            torch.cuda.current_stream(lat.device).synchronize()
        elif lat.device.type == "mps":
            torch.mps.synchronize()
        return {}


def _to_host(t: torch.Tensor, copy: bool = True) -> torch.Tensor:
    """A host copy of ``t`` that does not wait: into pinned memory with a non-blocking copy on CUDA (the step
    callback waits once per step). On the CPU a copy (``copy``), so that later in-place changes cannot reach
    it, or ``t`` itself."""
    if t.device.type == "cuda":
        out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        return out.copy_(t, non_blocking=True)
    if t.device.type == "cpu":
        return t.clone() if copy else t
    return t.to("cpu", non_blocking=True)


def predicted_x0(sample: torch.Tensor, output: torch.Tensor, t: float, scheduler) -> torch.Tensor | None:
    """Predicted x0 from the UNet's input ``sample`` and its (guided) ``output``, for the scheduler's prediction
    type, with abar the cumulative alpha of timestep ``t``:

        epsilon        x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
        v_prediction   x0 = sqrt(abar) x_t - sqrt(1 - abar) v
        sample         x0 = the output itself

    ``sample`` is the UNet's input, i.e. after ``scheduler.scale_model_input``: for DDIM/PNDM/DDPM that is x_t,
    for sigma schedulers (Euler, LMS, DPM) x / sqrt(sigma^2 + 1), which is again sqrt(abar) x0 + sqrt(1 - abar)
    eps with abar = 1 / (1 + sigma^2); there the scheduler's own sigma of the current step is used (its
    timesteps can fall between the training timesteps). Computed in float64 (float32 on MPS, which has none).
    """
    if scheduler is None or not hasattr(scheduler, "alphas_cumprod"):
        return None
    kind = getattr(scheduler.config, "prediction_type", "epsilon")
    if kind not in ("epsilon", "v_prediction", "sample"):
        return None
    if kind == "sample":
        return output.float()
    sigmas, i = getattr(scheduler, "sigmas", None), getattr(scheduler, "step_index", None)
    if sigmas is not None and i is not None and i < len(sigmas):
        a = 1.0 / (1.0 + float(sigmas[i]) ** 2)
    else:
        ac = scheduler.alphas_cumprod
        a = float(ac[min(max(int(round(t)), 0), len(ac) - 1)])
    from .loading import compute_dtype

    dt = compute_dtype(sample.device)
    x, o = sample.to(dt), output.to(dt)
    if kind == "epsilon":
        x0 = (x - (1 - a) ** 0.5 * o) / a ** 0.5
    else:
        x0 = a ** 0.5 * x - (1 - a) ** 0.5 * o
    return x0.float()
