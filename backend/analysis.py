"""One run, analysed for display and export: what the explorer shows and ``ldm-explore export`` writes.

Built from a run-store entry (or a fresh RunResult) + the bundle's estimators, classifier and probes.
Nothing here draws: the TUI and the export only lay these arrays out.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .experiment import PRIMARY, emergence_step, recognition_step
from .labels import per_step, targets
from .metrics import dice_rows, pearson_rows, spearman_rows
from .probes import PROPERTIES, Probes, upsample

VIEWS = ("xt", "x0")


@dataclass
class RunAnalysis:
    prompt: object
    final: np.ndarray  # (H, W, 3)
    images: dict[str, np.ndarray]  # view -> (S, H, W, 3)
    activations: dict[str, np.ndarray]  # layer -> (S, h, w, c)
    timesteps: list[float]
    target: np.ndarray  # (P, H, W) labels of the final image
    ots: dict[str, np.ndarray]  # view -> (S, P, H, W) off-the-shelf maps
    top5: dict[str, list]  # view -> per step [(class, prob)] * 5
    final_top5: list
    probes: Probes | None = None
    _probe_maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def layers(self) -> list[str]:
        if self.probes is None:
            return []
        return [layer for layer in self.probes.layers if layer in self.activations]

    def probe_maps(self, layer: str) -> np.ndarray:
        """(S, P, H, W) probe predictions of ``layer`` upsampled to the label size."""
        if layer not in self._probe_maps:
            H, W = self.target.shape[-2:]
            self._probe_maps[layer] = upsample(self.probes.predict(layer, self.activations[layer]), H, W)
        return self._probe_maps[layer]

    def metrics(self, layer: str | None, view: str = "xt") -> dict[str, dict[str, np.ndarray]]:
        """{property: {"probe": (S,), "off-the-shelf": (S,)}} of the property's primary metric."""
        out = {}
        for k, prop in enumerate(PROPERTIES):
            row = {"off-the-shelf": _primary(prop, self.ots[view][:, k], self.target[k])}
            if layer is not None:
                row["probe"] = _primary(prop, self.probe_maps(layer)[:, k], self.target[k])
            out[prop] = row
        return out

    def emergence(self, layer: str | None, view: str = "xt") -> dict[str, dict[str, int | None]]:
        return {p: {src: emergence_step(v) for src, v in d.items()} for p, d in self.metrics(layer, view).items()}

    def recognition_step(self, view: str = "xt") -> int:
        return recognition_step(np.array([t[0][0] for t in self.top5[view]]))

    def table_rows(self, layer: str | None, view: str = "xt") -> list[dict]:
        m = self.metrics(layer, view)
        rows = []
        for s in range(self.num_steps):
            r = {"step": s, "timestep": self.timesteps[s]}
            for prop in PROPERTIES:
                for src, v in m[prop].items():
                    r[f"{prop} {PRIMARY[prop]} ({src})"] = round(float(v[s]), 4)
            top = self.top5[view][s][0]
            r["top-1"], r["top-1 p"] = top[0], round(top[1], 4)
            rows.append(r)
        return rows


def _primary(prop: str, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    if prop == "mask":
        return dice_rows(pred > 0.5, target > 0.5)
    if prop == "depth":
        return spearman_rows(pred, target)
    return pearson_rows(pred, target)


def analyse(bundle, entry_or_result, probes: Probes | None = None) -> RunAnalysis:
    """Analyse a run-store Entry or a RunResult with ``bundle``'s models."""
    e = entry_or_result
    acts = e.activations() if callable(getattr(e, "activations", None)) else e.activations
    prompt = getattr(e, "prompt", None)
    if prompt is None:
        from .prompts import Prompt

        d = e.manifest["prompt"]
        prompt = Prompt(d["index"], d["prompt"], d["seed"], d.get("split"))
    timesteps = e.timesteps if hasattr(e, "timesteps") else e.meta["timesteps"]
    images = {"xt": e.xt_images, "x0": e.x0_images}
    ots = {v: per_step(bundle.estimators, images[v]) for v in VIEWS}
    top5 = {v: bundle.classifier.top_k(images[v], 5) for v in VIEWS}
    return RunAnalysis(prompt, e.final, images, acts, list(timesteps), targets(bundle.estimators, e.final), ots,
                       top5, bundle.classifier.top_k(e.final[None], 5)[0], probes)


def to_rgb(m: np.ndarray, prop: str) -> np.ndarray:
    """A label or prediction map as an (H, W, 3) uint8 image: mask and shading grey in [0, 1], depth
    min-max normalised (relative inverse depth: bright is near)."""
    m = np.asarray(m, np.float32)
    if prop == "depth":
        lo, hi = np.percentile(m, 1), np.percentile(m, 99)
        m = (m - lo) / max(hi - lo, 1e-6)
    g = (np.clip(m, 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(g[..., None], 3, -1)


def export(a: RunAnalysis, folder: Path, layer: str | None, view: str = "xt", scale: int = 2) -> list[Path]:
    """Paper-style grid PNG (rows: image, then probe / off-the-shelf per property; columns: steps), metric
    curves PNG, and the per-step table as CSV. Returns the files written."""
    from PIL import Image, ImageDraw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"prompt{a.prompt.index}-seed{a.prompt.seed}-{view}"
    S = a.num_steps
    H, W = a.final.shape[:2]
    rows = [("image", a.images[view])]
    for k, prop in enumerate(PROPERTIES):
        if layer is not None:
            rows.append((f"{prop} probe", np.stack([to_rgb(x, prop) for x in a.probe_maps(layer)[:, k]])))
        rows.append((f"{prop} off-the-shelf", np.stack([to_rgb(x, prop) for x in a.ots[view][:, k]])))
    label_w, cw, ch = 130, W * scale, H * scale
    grid = Image.new("RGB", (label_w + (S + 1) * (cw + 2), 18 + len(rows) * (ch + 2)), "white")
    d = ImageDraw.Draw(grid)
    for s in range(S):
        d.text((label_w + s * (cw + 2) + 2, 3), f"step {s}", fill="black")
    d.text((label_w + S * (cw + 2) + 2, 3), "final labels", fill="black")
    refs = [a.final] + [to_rgb(a.target[k], p) for k, p in enumerate(PROPERTIES) for _ in ([0, 1] if layer else [0])]
    for r, (name, imgs) in enumerate(rows):
        y = 18 + r * (ch + 2)
        d.text((4, y + ch // 2 - 6), name, fill="black")
        for s in range(S):
            grid.paste(Image.fromarray(imgs[s]).resize((cw, ch), Image.NEAREST), (label_w + s * (cw + 2), y))
        grid.paste(Image.fromarray(refs[r]).resize((cw, ch), Image.NEAREST), (label_w + S * (cw + 2), y))
    files = [folder / f"{stem}-grid.png"]
    grid.save(files[0])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = a.metrics(layer, view)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), dpi=100)
    for ax, prop in zip(axes, PROPERTIES):
        for src, v in m[prop].items():
            ax.plot(range(S), v, marker="o", ms=3, label=src)
        ax.set_title(f"{prop} ({PRIMARY[prop]})")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(a.prompt.prompt[:100], fontsize=8)
    fig.tight_layout()
    files.append(folder / f"{stem}-curves.png")
    fig.savefig(files[-1])
    plt.close(fig)

    rows_ = a.table_rows(layer, view)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows_[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows_)
    files.append(folder / f"{stem}-metrics.csv")
    files[-1].write_text(buf.getvalue())
    return files
