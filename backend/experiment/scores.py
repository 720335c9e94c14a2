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
    mean: np.ndarray  # (S,)
    std: np.ndarray  # (S,)
    n: int  # test images


def aggregate(rows: list[dict]) -> dict[ScoreKey, Aggregate]:
    """Mean, standard deviation and count over test images, per score key and step."""
    acc: dict[ScoreKey, list] = {}
    for r in rows:
        for d in r["scores"]:
            s = Score.from_dict(d)
            acc.setdefault(s.key, []).append(s.values)
    out = {}
    for k, vs in acc.items():
        a = np.asarray(vs, np.float64)  # (n, S)
        out[k] = Aggregate(np.nanmean(a, 0), np.nanstd(a, 0), a.shape[0])
    return out
