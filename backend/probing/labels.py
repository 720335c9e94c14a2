"""Labels: the bundle's estimators on the final image (the probes' targets, as in the studies) and on
every step's decoded image (the "off-the-shelf" rows)."""

from __future__ import annotations

import numpy as np

from .properties import NAMES, PROPERTIES


def targets(estimators, final: np.ndarray) -> np.ndarray:
    """(P, H, W) float32 label maps of one final image, in property order (a binary property cut at 0.5)."""
    e = estimators.all(final[None])
    return np.stack([(e[p.name][0] > 0.5).astype(np.float32) if p.binary else e[p.name][0] for p in PROPERTIES])


def per_step(estimators, images: np.ndarray) -> np.ndarray:
    """(S, P, H, W) estimator maps of every step's decoded image (a binary property as its probability)."""
    e = estimators.all(images)
    return np.stack([e[p] for p in NAMES], 1).astype(np.float32)
