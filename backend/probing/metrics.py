"""Metrics: Dice for masks, Spearman and Pearson for depth and shading maps, and a scale-and-shift invariant RMSE
for depth (relative depth has no fixed scale).

The ``*_rows`` forms score many predictions (one per row, e.g. every denoising step) against one target
at once; the scalar forms are their one-row case. :func:`score` and :func:`primary` score a property's
maps with the metrics the property table (:mod:`.properties`) names for it.
"""

from __future__ import annotations

import numpy as np

from . import properties


def dice_rows(pred, target) -> np.ndarray:
    """Dice of boolean masks ``pred`` (R, N) against ``target`` (N,); 1.0 where both are empty."""
    p = np.asarray(pred, bool).reshape(np.shape(pred)[0], -1)
    t = np.asarray(target, bool).ravel()
    s = p.sum(1) + t.sum()
    inter = (p & t).sum(1)
    return np.where(s == 0, 1.0, 2.0 * inter / np.maximum(s, 1))


def pearson_rows(pred, target) -> np.ndarray:
    """Pearson correlation of each row of ``pred`` (R, N) with ``target`` (N,); 0 for a constant row."""
    a = np.asarray(pred, np.float64).reshape(np.shape(pred)[0], -1)
    b = np.asarray(target, np.float64).ravel()
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean()
    den = np.sqrt((a * a).sum(1) * (b * b).sum())
    num = a @ b
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def rank(x) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank), as scipy.stats.rankdata."""
    x = np.asarray(x, np.float64)
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty_like(flat)
    n = flat.shape[1]
    for i, row in enumerate(flat):
        order = np.argsort(row, kind="mergesort")
        xs = row[order]
        new = np.empty(n, bool)
        new[0] = True
        new[1:] = xs[1:] != xs[:-1]
        group = np.cumsum(new) - 1
        first = np.flatnonzero(new)
        counts = np.diff(np.append(first, n))
        avg = first + (counts + 1) / 2.0
        out[i, order] = avg[group]
    return out.reshape(x.shape)


def spearman_rows(pred, target) -> np.ndarray:
    p = np.asarray(pred).reshape(np.shape(pred)[0], -1)
    return pearson_rows(rank(p), rank(np.asarray(target).ravel()))


def rmse_rows(pred, target) -> np.ndarray:
    """Scale-and-shift invariant RMSE of each row of ``pred`` (R, N) against ``target`` (N,): the target is
    min-max normalised to [0, 1], each row is fitted to it by least squares (a * row + b), and the root mean
    square of the residual is returned (as MiDaS-style evaluations align relative depth). A constant row scores
    the target's standard deviation; lower is better."""
    a = np.asarray(pred, np.float64).reshape(np.shape(pred)[0], -1)
    t = np.asarray(target, np.float64).ravel()
    span = t.max() - t.min()
    t = (t - t.min()) / span if span > 0 else np.zeros_like(t)
    ac = a - a.mean(1, keepdims=True)
    tc = t - t.mean()
    var = (ac * ac).sum(1)
    slope = np.divide(ac @ tc, var, out=np.zeros(len(a)), where=var > 0)
    res = tc[None] - slope[:, None] * ac
    return np.sqrt((res * res).mean(1))


def dice(pred, target) -> float:
    return float(dice_rows(np.asarray(pred)[None], target)[0])


def pearson(a, b) -> float:
    return float(pearson_rows(np.asarray(a)[None], b)[0])


def spearman(a, b) -> float:
    return float(spearman_rows(np.asarray(a)[None], b)[0])


def metric_rows(metric: str, pred, target, binary: bool = False) -> np.ndarray:
    """``metric`` ("dice", "spearman", "pearson", "rmse") of every row of ``pred`` (R, ...) against ``target``; a
    binary property's maps are cut at 0.5 first."""
    if binary:
        pred, target = np.asarray(pred) > 0.5, np.asarray(target) > 0.5
    return _ROWS[metric](pred, target)


def score(prop: str, pred, target) -> dict[str, np.ndarray]:
    """Every metric of property ``prop`` for each row of ``pred`` (S, H, W) against ``target`` (H, W)."""
    p = properties.get(prop)
    return {m: metric_rows(m, pred, target, p.binary) for m in p.metrics}


def primary(prop: str, pred, target) -> np.ndarray:
    """The property's primary metric for each row of ``pred`` (S, H, W) against ``target`` (H, W)."""
    p = properties.get(prop)
    return metric_rows(p.metric, pred, target, p.binary)


_ROWS = {"dice": dice_rows, "spearman": spearman_rows, "pearson": pearson_rows, "rmse": rmse_rows}
