"""Uncertainty over test prompts: percentile bootstrap intervals that resample *prompts*, and a paired bootstrap
for "source A beats source B at step s".

Every function takes per-prompt values ``(G, S)`` (G prompts, S steps). Runs of one prompt at several seeds
are averaged into the prompt's value first (:func:`per_prompt`), so that resampling prompts resamples all of
a prompt's seeds together (a cluster bootstrap): seeds of one prompt are not independent observations.

The resampling indices come from one seeded generator (:func:`resample`), and every statistic of one report
(each source's curve, its final value, its emergence step, each paired difference) is computed on the *same*
resamples, so intervals of related figures are consistent with each other.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95  # every interval in the report
B = 2000  # bootstrap resamples
SEED = 0


def per_prompt(values: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    """Average rows of ``values`` (n, S) that share a group (a prompt's seeds): ``(G, S)`` and the groups, sorted."""
    values = np.asarray(values, np.float64)
    groups = np.asarray(groups)
    keys, inv = np.unique(groups, return_inverse=True)
    out = np.zeros((len(keys),) + values.shape[1:])
    cnt = np.zeros((len(keys),) + values.shape[1:])
    ok = np.isfinite(values)
    np.add.at(out, inv, np.where(ok, values, 0.0))
    np.add.at(cnt, inv, ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        return out / cnt, keys


def resample(G: int, b: int = B, seed: int = SEED) -> np.ndarray:
    """``(b, G)`` indices: each row one bootstrap sample of G prompts drawn with replacement."""
    return np.random.default_rng(seed).integers(0, G, size=(b, G))


def boot_means(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean over prompts of every resample: ``x`` (G, ...) and ``idx`` (b, G) -> (b, ...)."""
    return np.nanmean(np.asarray(x, np.float64)[idx], axis=1)


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis of ``samples`` (b, ...)."""
    a = (1 - level) / 2
    return np.nanquantile(samples, a, axis=0), np.nanquantile(samples, 1 - a, axis=0)


def bootstrap_ci(x: np.ndarray, b: int = B, level: float = LEVEL, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """``level`` percentile interval of the mean over prompts of ``x`` (G, S), per step."""
    return interval(boot_means(x, resample(len(x), b, seed)), level)


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (keeps inside [0, 1] and stays honest near 0 and 1,
    where the normal approximation does not)."""
    from scipy.stats import norm

    if n == 0:
        return float("nan"), float("nan")
    z = norm.ppf(1 - (1 - level) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at k = 0 and k = n the bound is exactly 0 or 1 (the two terms cancel; floats miss by an ulp)
    return (0.0 if k == 0 else float(max(0.0, centre - half))), (1.0 if k == n else float(min(1.0, centre + half)))


def first_stays(ok: np.ndarray) -> np.ndarray:
    """First step from which ``ok`` (..., S) holds at every later step; S where it does not hold at the last."""
    ok = np.asarray(ok, bool)
    S = ok.shape[-1]
    tail = np.flip(np.logical_and.accumulate(np.flip(ok, -1), -1), -1)  # tail[s]: ok at s and every later step
    return np.where(tail.any(-1), S - tail.sum(-1), S)


def paired(a: np.ndarray, b_: np.ndarray, idx: np.ndarray, level: float = LEVEL) -> dict[str, np.ndarray]:
    """Paired bootstrap of the mean difference ``a - b_`` (both (G, S), the same prompts in the same order) on the
    resamples ``idx``: mean difference, its interval, and the one-sided p-value of "a is not above b" per step
    (the share of resamples whose mean difference is <= 0, with the +1 correction of a Monte Carlo p-value)."""
    d = np.asarray(a, np.float64) - np.asarray(b_, np.float64)
    bm = boot_means(d, idx)
    lo, hi = interval(bm, level)
    p = ((bm <= 0).sum(0) + 1) / (len(bm) + 1)
    return {"mean": np.nanmean(d, 0), "low": lo, "high": hi, "p": p}
