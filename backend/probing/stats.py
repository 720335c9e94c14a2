"""Sufficient statistics of linear probes, streamed over runs.

For each layer and step we accumulate, over all training tokens, n, sum x, sum y, X^T X, X^T Y and
sum y^2 (float64). That is all a ridge regression needs (:mod:`.ridge`): one pass over the runs fits every
layer and step, no activation is kept, and the statistics of several processes or machines simply add up.

Targets are area-averaged to the layer's h x w, one target per token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def area_average(target: np.ndarray, h: int, w: int) -> np.ndarray:
    """(..., H, W) -> (..., h, w) mean over each cell (H, W multiples of h, w; else area interpolation)."""
    t = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))
    shape = t.shape
    t = t.reshape(-1, 1, *shape[-2:])
    out = F.adaptive_avg_pool2d(t, (h, w)) if shape[-2] % h == 0 and shape[-1] % w == 0 else \
        F.interpolate(t, size=(h, w), mode="area")
    return out.reshape(*shape[:-2], h, w).numpy()


@dataclass
class ProbeStats:
    """Sufficient statistics per layer, stacked over steps: arrays of shape (S, ...)."""

    props: tuple[str, ...]
    n: dict[str, np.ndarray] = field(default_factory=dict)  # (S,)
    sx: dict[str, np.ndarray] = field(default_factory=dict)  # (S, c)
    sy: dict[str, np.ndarray] = field(default_factory=dict)  # (S, P)
    xx: dict[str, np.ndarray] = field(default_factory=dict)  # (S, c, c)
    xy: dict[str, np.ndarray] = field(default_factory=dict)  # (S, c, P)
    yy: dict[str, np.ndarray] = field(default_factory=dict)  # (S, P)
    images: int = 0

    def add(self, layer: str, acts: np.ndarray, targets: np.ndarray) -> None:
        """acts (S, h, w, c) of one image; targets (P, H, W) label maps of its final image."""
        S, h, w, c = acts.shape
        Y = area_average(targets, h, w).reshape(len(self.props), h * w).T.astype(np.float64)  # (hw, P)
        X = torch.from_numpy(acts.reshape(S, h * w, c)).to(torch.float64)
        Yt = torch.from_numpy(Y)
        if layer not in self.n:
            P = len(self.props)
            self.n[layer] = np.zeros(S)
            self.sx[layer] = np.zeros((S, c))
            self.sy[layer] = np.zeros((S, P))
            self.xx[layer] = np.zeros((S, c, c))
            self.xy[layer] = np.zeros((S, c, P))
            self.yy[layer] = np.zeros((S, P))
        self.n[layer] += h * w
        self.sx[layer] += X.sum(1).numpy()
        self.sy[layer] += Y.sum(0)[None]
        self.xx[layer] += torch.einsum("snc,snd->scd", X, X).numpy()
        self.xy[layer] += torch.einsum("snc,np->scp", X, Yt).numpy()
        self.yy[layer] += (Y * Y).sum(0)[None]

    def add_run(self, activations: dict[str, np.ndarray], targets: np.ndarray) -> None:
        for layer, a in activations.items():
            self.add(layer, a, targets)
        self.images += 1

    def merge(self, other: "ProbeStats") -> "ProbeStats":
        for layer in other.n:
            if layer not in self.n:
                for name in ("n", "sx", "sy", "xx", "xy", "yy"):
                    getattr(self, name)[layer] = getattr(other, name)[layer].copy()
            else:
                for name in ("n", "sx", "sy", "xx", "xy", "yy"):
                    getattr(self, name)[layer] += getattr(other, name)[layer]
        self.images += other.images
        return self

    @property
    def layers(self) -> list[str]:
        return list(self.n)

    def to_tensors(self) -> dict[str, np.ndarray]:
        out = {}
        for layer in self.n:
            for name in ("n", "sx", "sy", "xx", "xy", "yy"):
                out[f"{layer}/{name}"] = getattr(self, name)[layer]
        return out

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        tmp = Path(str(path) + ".tmp")
        save_file(self.to_tensors(), str(tmp), metadata={"props": json.dumps(self.props), "images": str(self.images)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "ProbeStats":
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            meta = f.metadata()
            st = cls(tuple(json.loads(meta["props"])), images=int(meta["images"]))
            for k in f.keys():
                layer, name = k.rsplit("/", 1)
                getattr(st, name)[layer] = f.get_tensor(k)
        return st
