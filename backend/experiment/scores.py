"""Scores of the experiment's test split as typed records, and their aggregation over test images."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True, order=True)
class ScoreKey:
    """What one per-step curve of one test image measures."""

    source: str  # "probe", "off-the-shelf", or a baseline's source name
    layer: str  # the probe's layer (module path, or a baseline's pseudo-layer); "-" for off-the-shelf
    property: str
    metric: str


@dataclass(frozen=True)
class Score:
    key: ScoreKey
    values: list[float]  # one per step

    def to_dict(self) -> dict:
        return {**asdict(self.key), "values": self.values}

    @classmethod
    def from_dict(cls, d: dict) -> "Score":
        return cls(ScoreKey(d["source"], d["layer"], d["property"], d["metric"]), list(d["values"]))


@dataclass(frozen=True)
class Aggregate:
    """One score key over the test split: per-prompt values (a prompt's seeds averaged), their mean over prompts
    and its bootstrap interval (resampling prompts), per step."""

    mean: np.ndarray  # (S,) mean over prompts
    low: np.ndarray  # (S,) 95% bootstrap interval of the mean
    high: np.ndarray
    std: np.ndarray  # (S,) spread of the per-prompt values
    n: int  # test prompts
    runs: int  # test runs (prompts x seeds)
    per_prompt: np.ndarray  # (G, S), rows in the order of Aggregates.prompts (NaN where this key has none)


@dataclass
class Aggregates:
    """Every score key's :class:`Aggregate`, all on the same prompts and the same bootstrap resamples."""

    prompts: np.ndarray  # (G,) prompt indices
    idx: np.ndarray  # (b, G) bootstrap resamples of prompts (positions into ``prompts``)
    keys: dict[ScoreKey, Aggregate]

    def __getitem__(self, k: ScoreKey) -> Aggregate:
        return self.keys[k]

    def __contains__(self, k) -> bool:
        return k in self.keys

    def items(self):
        return self.keys.items()

    def values(self):
        return self.keys.values()


def aggregate(rows: list[dict], b: int | None = None, seed: int = 0) -> Aggregates:
    """Per score key and step: the mean over test prompts (each prompt's seeds averaged first) and its 95%
    percentile bootstrap interval over prompts (see :mod:`..probing.uncertainty`)."""
    from ..probing import uncertainty as U

    prompts = np.array(sorted({r["index"] for r in rows}))
    pos = {int(p): i for i, p in enumerate(prompts)}
    idx = U.resample(len(prompts), b or U.B, seed)
    acc: dict[ScoreKey, tuple[list, list]] = {}
    for r in rows:
        for d in r["scores"]:
            s = Score.from_dict(d)
            vals, groups = acc.setdefault(s.key, ([], []))
            vals.append(s.values)
            groups.append(pos[r["index"]])
    out = {}
    for k, (vals, groups) in acc.items():
        pp, g = U.per_prompt(np.asarray(vals, np.float64), groups)
        full = np.full((len(prompts), pp.shape[1]), np.nan)
        full[g] = pp
        lo, hi = U.interval(U.boot_means(full, idx))
        out[k] = Aggregate(np.nanmean(full, 0), lo, hi, np.nanstd(full, 0), len(g), len(vals), full)
    return Aggregates(prompts, idx, out)
