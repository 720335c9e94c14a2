"""When a property or a class shows: the step from which a per-step curve settles."""

from __future__ import annotations

import numpy as np


def emergence_step(curve: np.ndarray, frac: float = 0.9) -> int | None:
    """First step from which the metric stays at or above ``frac`` of its *own* final-step value. Curves compared
    this way stand on uneven footing (each has its own bar); the report labels it "own-final emergence" and
    compares sources with :func:`reach_step` at a common bar and :func:`beats_step`."""
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


def reach_step(curve: np.ndarray, bar: float) -> int | None:
    """First step from which ``curve`` stays at or above ``bar`` (a bar common to every source); None if it does
    not end above it."""
    from .uncertainty import first_stays

    s = int(first_stays(np.asarray(curve) >= bar))
    return s if s < len(curve) else None


def beats_step(a: np.ndarray, b: np.ndarray) -> int | None:
    """First step from which curve ``a`` stays strictly above curve ``b``; None if it does not end above it."""
    from .uncertainty import first_stays

    s = int(first_stays(np.asarray(a) > np.asarray(b)))
    return s if s < len(a) else None
