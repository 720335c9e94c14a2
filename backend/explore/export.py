"""Export one analysed run: a paper-style grid PNG, the metric curves PNG and the per-step table CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..probing import properties
from .analysis import RunAnalysis, to_rgb


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
    for k, prop in enumerate(a.props):
        if layer is not None:
            rows.append((f"{prop} probe", np.stack([to_rgb(x, prop) for x in a.probe_maps(layer)[:, k]])))
        rows.append((f"{prop} off-the-shelf", np.stack([to_rgb(x, prop) for x in a.ots[view][:, k]])))
    label_w, cw, ch = 130, W * scale, H * scale
    grid = Image.new("RGB", (label_w + (S + 1) * (cw + 2), 18 + len(rows) * (ch + 2)), "white")
    d = ImageDraw.Draw(grid)
    for s in range(S):
        d.text((label_w + s * (cw + 2) + 2, 3), f"step {s}", fill="black")
    d.text((label_w + S * (cw + 2) + 2, 3), "final labels", fill="black")
    refs = [a.final] + [to_rgb(a.target[k], p) for k, p in enumerate(a.props) for _ in ([0, 1] if layer else [0])]
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
    from matplotlib.ticker import MaxNLocator

    m = a.metrics(layer, view)
    fig, axes = plt.subplots(1, len(a.props), figsize=(11 * len(a.props) / 3, 3.2), dpi=100, squeeze=False)
    for ax, prop in zip(axes[0], a.props):
        for src, v in m[prop].items():
            ax.plot(range(S), v, marker="o", ms=3, label=src)
        ax.set_title(f"{prop} ({properties.get(prop).metric})")
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
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
