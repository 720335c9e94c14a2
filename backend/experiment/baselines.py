"""The controls a probe must beat (Chen et al.'s, plus a spatial prior): probes on the same layers of a
UNet whose weights are shuffled within each tensor, probes on the VAE latent x_t itself, and a probe on
one-hot pixel positions, which predicts each cell's training mean (the same map for every image and step).
"""

from __future__ import annotations

import numpy as np
import torch

LATENT = "vae-latent"  # the latent baseline's "layer": x_t itself
PRIOR = "spatial-prior"  # the prior baseline's "layer": one-hot pixel positions, the same for every image
PRIOR_GRID = 16
BASELINES = {"shuffled": "shuffled-unet probe", "latent": "latent probe", "prior": "spatial-prior probe"}
SOURCES = ("probe", "off-the-shelf", *BASELINES.values())  # every source of a score in the report
LAYER_NAMES = {LATENT: "VAE latent x_t", PRIOR: "spatial prior (train mean map)"}


def prior_features(steps: int, n: int = PRIOR_GRID) -> np.ndarray:
    """(steps, n, n, n*n) one-hot position features. A ridge probe on them predicts each cell's training mean
    (shrunk to the global mean): the spatial prior a probe must beat before it can claim to read the scene."""
    eye = np.eye(n * n, dtype=np.float32).reshape(n, n, n * n)
    return np.repeat(eye[None], steps, 0)  # a real array: torch warns on the read-only broadcast view


def shuffled_unet(unet, seed: int = 0):
    """A copy of ``unet`` whose weights are permuted within each tensor (Chen et al.'s control)."""
    import copy

    g = torch.Generator().manual_seed(seed)
    u = copy.deepcopy(unet)
    with torch.no_grad():
        for p in u.parameters():
            flat = p.data.reshape(-1)
            p.data.copy_(flat[torch.randperm(flat.numel(), generator=g)].reshape(p.shape))
    return u


@torch.no_grad()
def teacher_forced_acts(unet, pipe, runs, layers, settings, sink) -> None:
    """Run ``unet`` (the shuffled copy) teacher-forced along real runs' trajectories, the whole batch at once: at
    every step it sees exactly the real UNet's inputs (x_t, timestep, text), so only the weights differ.
    ``sink(layer, step, tensor)`` receives each layer's output, (B, h, w, c) of the text half, on the device."""
    from ..pipeline.generate import initial_latents
    from ..pipeline.recorder import Recorder

    dev, dt = pipe.unet.device, pipe.unet.dtype
    cond, uncond = pipe.encode_prompt([r.prompt.prompt for r in runs], dev, 1, True)
    emb = torch.cat([uncond, cond])
    x = initial_latents(pipe, len(runs), [torch.Generator().manual_seed(r.prompt.seed) for r in runs], settings)
    inputs = [x * pipe.scheduler.init_noise_sigma]
    inputs += [torch.from_numpy(np.stack([r.latents[i] for r in runs])).to(dev, dt)
               for i in range(len(runs[0].timesteps) - 1)]
    with Recorder(unet, list(layers), guidance=True, guidance_scale=settings.guidance, sink=sink):
        for x, t in zip(inputs, runs[0].timesteps):
            unet(torch.cat([x, x]), torch.tensor(t, device=dev), encoder_hidden_states=emb)
