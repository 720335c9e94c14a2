"""When a property or a class shows: the step from which a per-step curve settles."""

from __future__ import annotations

import numpy as np


def emergence_step(curve: np.ndarray, frac: float = 0.9) -> int | None:
    """First step from which the metric stays at or above ``frac`` of its final-step value."""
    final = curve[-1]
    if not np.isfinite(final) or final <= 0:
        return None
    ok = curve >= frac * final
    for s in range(len(curve)):
        if ok[s:].all():
            return s
    return None


def recognition_step(top1: np.ndarray) -> int:
    """First step from which the classifier's top-1 equals the final image's top-1 (and stays)."""
    final = top1[-1]
    s = len(top1) - 1
    while s > 0 and top1[s - 1] == final:
        s -= 1
    return s
