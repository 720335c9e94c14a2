"""Labels: the bundle's estimators on the final image (the probes' targets, as in the studies) and on
every step's decoded image (the "off-the-shelf" rows)."""

from __future__ import annotations

import numpy as np

from .probes import PROPERTIES


def targets(estimators, final: np.ndarray) -> np.ndarray:
    """(P, H, W) float32 label maps of one final image: binary mask, depth, shading."""
    e = estimators.all(final[None])
    return np.stack([(e["mask"][0] > 0.5).astype(np.float32), e["depth"][0], e["shading"][0]])


def per_step(estimators, images: np.ndarray) -> np.ndarray:
    """(S, P, H, W) estimator maps of every step's decoded image (mask as probability)."""
    e = estimators.all(images)
    return np.stack([e[p] for p in PROPERTIES], 1).astype(np.float32)
