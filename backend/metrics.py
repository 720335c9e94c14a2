"""Per-image metrics: Dice for masks, Spearman and Pearson for depth and shading maps."""

from __future__ import annotations

import numpy as np


def dice(pred, target) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    p = np.asarray(pred, bool).ravel()
    t = np.asarray(target, bool).ravel()
    s = p.sum() + t.sum()
    return 1.0 if s == 0 else float(2.0 * (p & t).sum() / s)


def pearson(a, b) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def _rank(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as scipy.stats.rankdata."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    # average ties
    change = np.concatenate([[True], xs[1:] != xs[:-1], [True]])
    idx = np.flatnonzero(change)
    for s, e in zip(idx[:-1], idx[1:]):
        if e - s > 1:
            ranks[order[s:e]] = (s + 1 + e) / 2.0
    return ranks


def spearman(a, b) -> float:
    return pearson(_rank(np.asarray(a, np.float64).ravel()), _rank(np.asarray(b, np.float64).ravel()))
