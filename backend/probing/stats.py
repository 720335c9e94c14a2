"""Sufficient statistics of linear probes, streamed over runs.

For each layer and step we accumulate, over all training tokens, n, sum x, sum y, X^T X, X^T Y and
sum y^2 (float64). That is all a ridge regression needs (:mod:`.ridge`): one pass over the runs fits every
layer and step, no activation is kept, and the statistics of several processes or machines simply add up.

Targets are area-averaged to the layer's h x w, one target per token.
"""

from __future__ import annotations

import json
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


FIELDS = ("n", "sx", "sy", "xx", "xy", "yy")


def stats_device(device) -> torch.device:
    """Where statistics accumulate for a run computed on ``device``: there, in float64, unless it has no
    float64 (MPS), then on the CPU."""
    d = torch.device(device)
    return torch.device("cpu") if d.type == "mps" else d


class ProbeStats:
    """Sufficient statistics per layer, stacked over steps: tensors of shape (S, ...) in float64 on ``device``.

    n (S,) tokens; sx (S, c) sum x; sy (S, P) sum y; xx (S, c, c) X^T X; xy (S, c, P) X^T Y; yy (S, P) sum y^2.
    """

    def __init__(self, props, device="cpu"):
        self.props = tuple(props)
        self.device = stats_device(device)
        self.n: dict = {}
        self.sx: dict = {}
        self.sy: dict = {}
        self.xx: dict = {}
        self.xy: dict = {}
        self.yy: dict = {}
        self.images = 0

    @property
    def layers(self) -> list[str]:
        return list(self.n)

    def _alloc(self, layer: str, steps: int, c: int) -> None:
        if layer not in self.n:
            P, z = len(self.props), lambda *shape: torch.zeros(shape, dtype=torch.float64, device=self.device)
            self.n[layer], self.sx[layer], self.sy[layer] = z(steps), z(steps, c), z(steps, P)
            self.xx[layer], self.xy[layer], self.yy[layer] = z(steps, c, c), z(steps, c, P), z(steps, P)

    def add_steps(self, layer: str, steps, X, Y, num_steps: int) -> None:
        """Add tokens of several images at ``steps`` (a step index or a slice of them): X (s, N, c), or (N, c) for
        one step, activations in any dtype on any device; Y (N, P) their targets at the layer's resolution."""
        X = torch.as_tensor(X).to(self.device, torch.float64)
        if X.dim() == 2:
            X = X[None]
        Y = torch.as_tensor(Y).to(self.device, torch.float64)
        self._alloc(layer, num_steps, X.shape[-1])
        self.n[layer][steps] += X.shape[1]
        self.sx[layer][steps] += X.sum(1).squeeze(0) if isinstance(steps, int) else X.sum(1)
        self.sy[layer][steps] += Y.sum(0)
        xx = torch.einsum("snc,snd->scd", X, X)
        xy = torch.einsum("snc,np->scp", X, Y)
        self.xx[layer][steps] += xx[0] if isinstance(steps, int) else xx
        self.xy[layer][steps] += xy[0] if isinstance(steps, int) else xy
        self.yy[layer][steps] += (Y * Y).sum(0)

    def add(self, layer: str, acts, targets: np.ndarray) -> None:
        """acts (S, h, w, c) of one image; targets (P, H, W) label maps of its final image."""
        S, h, w, c = acts.shape
        Y = area_average(targets, h, w).reshape(len(self.props), h * w).T  # (hw, P)
        X = torch.as_tensor(acts).reshape(S, h * w, c)
        self.add_steps(layer, slice(None), X, torch.from_numpy(np.ascontiguousarray(Y)), S)

    def add_run(self, activations: dict, targets: np.ndarray) -> None:
        for layer, a in activations.items():
            self.add(layer, a, targets)
        self.images += 1

    def merge(self, other: "ProbeStats") -> "ProbeStats":
        for layer in other.n:
            for name in FIELDS:
                theirs = torch.as_tensor(getattr(other, name)[layer]).to(self.device, torch.float64)
                mine = getattr(self, name)
                if layer in mine:
                    mine[layer] += theirs
                else:
                    mine[layer] = theirs.clone()
        self.images += other.images
        return self

    def to_tensors(self) -> dict[str, np.ndarray]:
        """Every array as float64 numpy on the CPU, keyed ``layer/field``."""
        return {f"{layer}/{name}": np.asarray(torch.as_tensor(getattr(self, name)[layer]).cpu().numpy())
                for layer in self.n for name in FIELDS}

    def numpy(self) -> "ProbeStats":
        """The same statistics with numpy arrays on the CPU (what fitting works on)."""
        if all(isinstance(v, np.ndarray) for v in self.n.values()):
            return self
        out = ProbeStats(self.props)
        for key, v in self.to_tensors().items():
            layer, name = key.rsplit("/", 1)
            getattr(out, name)[layer] = v
        out.images = self.images
        return out

    def nbytes(self) -> int:
        return sum(torch.as_tensor(getattr(self, name)[layer]).numel() * 8 for layer in self.n for name in FIELDS)

    def save(self, path: Path, runs=None) -> None:
        """Write the statistics whole or not at all; ``runs`` (the ids of the runs they hold) go into the same
        file, so a checkpoint can never say it holds runs its sums do not (or the reverse)."""
        from safetensors.numpy import save_file

        tmp = Path(str(path) + ".tmp")
        meta = {"props": json.dumps(self.props), "images": str(self.images)}
        if runs is not None:
            meta["runs"] = json.dumps(sorted(runs))
        save_file(self.to_tensors(), str(tmp), metadata=meta)
        tmp.replace(path)

    @staticmethod
    def saved_runs(path: Path) -> list[str] | None:
        """The run ids a statistics file says it holds (None for a file written without them)."""
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            runs = f.metadata().get("runs")
        return None if runs is None else json.loads(runs)

    @classmethod
    def load(cls, path: Path, device="cpu") -> "ProbeStats":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            st = cls(tuple(json.loads(meta["props"])), device)
            st.images = int(meta["images"])
            for k in f.keys():
                layer, name = k.rsplit("/", 1)
                getattr(st, name)[layer] = f.get_tensor(k).to(st.device)
        return st
