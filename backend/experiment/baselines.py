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
def teacher_forced_acts(unet, pipe, run, layers, settings) -> dict[str, np.ndarray]:
    """Activations of ``unet`` (the shuffled copy) teacher-forced along a real run's trajectory: at every
    step it sees exactly the real UNet's inputs (x_t, timestep, text), so only the weights differ."""
    from ..pipeline.generate import initial_latents
    from ..pipeline.recorder import Recorder

    dev, dt = pipe.unet.device, pipe.unet.dtype
    prompt = run.prompt
    cond, uncond = pipe.encode_prompt(prompt.prompt, dev, 1, True)
    emb = torch.cat([uncond, cond])
    x0 = initial_latents(pipe, 1, [torch.Generator().manual_seed(prompt.seed)], settings)
    x0 = x0 * pipe.scheduler.init_noise_sigma
    inputs = [x0] + [torch.from_numpy(run.latents[i])[None].to(dev, dt) for i in range(len(run.timesteps) - 1)]
    with Recorder(unet, list(layers), guidance=True, guidance_scale=settings.guidance) as rec:
        for x, t in zip(inputs, run.timesteps):
            unet(torch.cat([x, x]), torch.tensor(t, device=dev), encoder_hidden_states=emb)
    return {n: rec.stacked(n)[:, 0].numpy() for n in rec.layer_names}
