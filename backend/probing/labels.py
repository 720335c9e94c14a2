"""Labels: the bundle's estimators on the final image (the probes' targets, as in the studies) and on
every step's decoded image (the "off-the-shelf" rows)."""

from __future__ import annotations

import numpy as np

from . import properties


def targets(estimators, final: np.ndarray) -> np.ndarray:
    """(P, H, W) float32 label maps of one final image, one per property of ``estimators.properties`` (in that
    order; a binary property cut at 0.5)."""
    return targets_many(estimators, final[None])[0]


def targets_many(estimators, finals: np.ndarray) -> np.ndarray:
    """(B, P, H, W) label maps of a batch of final images (B, H, W, 3), the estimators run once on all."""
    e = estimators.all(finals)
    return np.stack([(e[p] > 0.5).astype(np.float32) if properties.get(p).binary else e[p]
                     for p in estimators.properties], 1).astype(np.float32)


def per_step(estimators, images: np.ndarray) -> np.ndarray:
    """(S, P, H, W) estimator maps of every step's decoded image (a binary property as its probability)."""
    e = estimators.all(images)
    return np.stack([e[p] for p in estimators.properties], 1).astype(np.float32)
