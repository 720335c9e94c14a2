"""Ridge probes for every (layer, step) at once, fitted from streamed sufficient statistics (:mod:`.stats`).

The regularisation is chosen per (property, layer, step) on the validation split without its activations
either: the validation error of any linear map is a quadratic form in the validation split's own
statistics. The test split is never looked at when choosing.

Targets are area-averaged to the layer's h x w (one target per token); predictions are upsampled back to
the label's size. The mask probe is a linear-probability model (least squares on 0/1 targets, cut at 0.5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .stats import ProbeStats


def upsample(pred: np.ndarray, H: int, W: int) -> np.ndarray:
    """(..., h, w) -> (..., H, W) bilinear."""
    t = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))
    shape = t.shape
    t = t.reshape(-1, 1, *shape[-2:])
    out = F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)
    return out.reshape(*shape[:-2], H, W).numpy()



def _centered(st: ProbeStats, layer: str):
    st = st.numpy()
    n = st.n[layer][:, None]
    mx = st.sx[layer] / n
    my = st.sy[layer] / n
    cxx = st.xx[layer] - n[..., None] * mx[:, :, None] * mx[:, None, :]
    cxy = st.xy[layer] - n[..., None] * mx[:, :, None] * my[:, None, :]
    return mx, my, cxx, cxy


def sse(st: ProbeStats, layer: str, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of squared errors of y ~ x W + b on the data summarised by ``st``: (S, P)."""
    st = st.numpy()
    n = st.n[layer][:, None]
    xy = np.einsum("scp,scp->sp", W, st.xy[layer])
    wxxw = np.einsum("scp,scd,sdp->sp", W, st.xx[layer], W)
    bxw = b * np.einsum("sc,scp->sp", st.sx[layer], W)
    return st.yy[layer] - 2 * xy - 2 * b * st.sy[layer] + wxxw + 2 * bxw + n * b * b


def ridge_path(st: ProbeStats, layer: str, alphas: np.ndarray):
    """Ridge solutions for every alpha at once: W (A, S, c, P), b (A, S, P). The penalty is
    alpha * mean eigenvalue of the centred X^T X (scale-free); the bias is not penalised."""
    mx, my, cxx, cxy = _centered(st, layer)
    evals, evecs = np.linalg.eigh(cxx)  # (S, c), (S, c, c)
    evals = np.clip(evals, 0, None)
    scale = evals.mean(1)  # (S,)
    proj = np.einsum("sdc,sdp->scp", evecs, cxy)  # Q^T Cxy
    Ws, bs = [], []
    for a in alphas:
        den = evals + a * scale[:, None]
        inv = np.divide(1.0, den, out=np.zeros_like(den), where=den > 1e-12 * scale[:, None])  # pseudo-inverse
        W = np.einsum("scd,sd,sdp->scp", evecs, inv, proj)
        Ws.append(W)
        bs.append(my - np.einsum("sc,scp->sp", mx, W))
    return np.stack(Ws), np.stack(bs)


DEFAULT_ALPHAS = np.logspace(-6, 1, 15)


@dataclass
class Probes:
    """Fitted probes: per layer W (S, c, P), b (S, P), chosen alpha (S, P), validation R^2 (S, P)."""

    props: tuple[str, ...]
    W: dict[str, np.ndarray]
    b: dict[str, np.ndarray]
    alpha: dict[str, np.ndarray]
    val_r2: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.W)

    def best_layer(self, prop: str, layers=None) -> str:
        """The layer (of ``layers``, default all) with the highest validation R^2 for ``prop``, averaged over
        steps: chosen on the validation split, never on test."""
        k = self.props.index(prop)
        return max(layers if layers is not None else self.layers,
                   key=lambda layer: float(np.mean(self.val_r2[layer][:, k])))

    def predict(self, layer: str, acts: np.ndarray, steps=None) -> np.ndarray:
        """acts (S', h, w, c) for ``steps`` (default all) -> (S', P, h, w) token-level predictions."""
        W, b = self.W[layer], self.b[layer]
        if steps is not None:
            W, b = W[steps], b[steps]
        S, h, w, c = acts.shape
        out = np.einsum("shwc,scp->sphw", acts.astype(np.float32), W.astype(np.float32))
        return out + b.astype(np.float32)[:, :, None, None]

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        t = {}
        for layer in self.W:
            t[f"{layer}/W"] = self.W[layer].astype(np.float32)
            t[f"{layer}/b"] = self.b[layer].astype(np.float32)
            t[f"{layer}/alpha"] = self.alpha[layer]
            t[f"{layer}/val_r2"] = self.val_r2[layer]
        tmp = Path(str(path) + ".tmp")
        save_file(t, str(tmp), metadata={"props": json.dumps(self.props), "meta": json.dumps(self.meta)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Probes":
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            m = f.metadata()
            p = cls(tuple(json.loads(m["props"])), {}, {}, {}, {}, json.loads(m.get("meta", "{}")))
            for k in f.keys():
                layer, name = k.rsplit("/", 1)
                getattr(p, {"W": "W", "b": "b", "alpha": "alpha", "val_r2": "val_r2"}[name])[layer] = f.get_tensor(k)
        return p


def fit(train: ProbeStats, val: ProbeStats | None = None, alphas=DEFAULT_ALPHAS, alpha: float | None = None) -> Probes:
    """Ridge probes for every layer and step; alpha chosen per (layer, step, property) on ``val``."""
    alphas = np.asarray([alpha] if alpha is not None else alphas, np.float64)
    train, val = train.numpy(), val.numpy() if val is not None else None
    Ws, bs, chosen, r2s = {}, {}, {}, {}
    for layer in train.layers:
        W, b = ridge_path(train, layer, alphas)  # (A, S, c, P), (A, S, P)
        ref = val if val is not None and layer in val.n else train
        errs = np.stack([sse(ref, layer, W[i], b[i]) for i in range(len(alphas))])  # (A, S, P)
        best = errs.argmin(0)  # (S, P)
        Ws[layer] = np.take_along_axis(W, np.broadcast_to(best[None, :, None, :], (1, *W.shape[1:])), 0)[0]
        bs[layer] = np.take_along_axis(b, best[None], 0)[0]
        chosen[layer] = alphas[best]
        n = ref.n[layer][:, None]
        var = ref.yy[layer] - ref.sy[layer] ** 2 / n
        r2s[layer] = 1 - np.take_along_axis(errs, best[None], 0)[0] / np.maximum(var, 1e-12)
    return Probes(train.props, Ws, bs, chosen, r2s,
                  {"train_images": train.images, "val_images": val.images if val is not None else 0,
                   "alphas": alphas.tolist()})
