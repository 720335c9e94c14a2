"""Export one analysed run: a paper-style grid PNG, the metric curves PNG, the per-step table CSV and an
animated GIF of the denoising (image, probe and off-the-shelf maps per step). Every file is written whole or
not at all (a temporary name, then a rename), so an interrupted ``export --split`` resumes where it stopped."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..probing import properties
from .analysis import RunAnalysis, to_rgb


def stem(prompt, view: str) -> str:
    return f"prompt{prompt.index}-seed{prompt.seed}-{view}"


SUFFIXES = ("-grid.png", "-curves.png", "-metrics.csv", "-denoising.gif")


def exported(folder: Path, prompt, view: str) -> bool:
    """Whether every file of ``prompt``'s export is in ``folder``."""
    return all((Path(folder) / f"{stem(prompt, view)}{x}").exists() for x in SUFFIXES)


def _atomic(path: Path, write) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    tmp.replace(path)
    return path


def animation(a: RunAnalysis, layer: str | None, view: str = "xt", scale: int = 2) -> list:
    """One frame per step: the decoded image, then per property the probe's map (if a layer) and the
    off-the-shelf map, captioned with the step."""
    from PIL import Image, ImageDraw

    H, W = a.final.shape[:2]
    cw, ch = W * scale, H * scale
    cols = ["image"] + [f"{p} {src}" for p in a.props for src in (("probe", "O") if layer else ("O",))]
    frames = []
    for s in range(a.num_steps):
        f = Image.new("RGB", (len(cols) * (cw + 2), ch + 30), "white")
        d = ImageDraw.Draw(f)
        tiles = [a.images[view][s]]
        for k, p in enumerate(a.props):
            if layer:
                tiles.append(to_rgb(a.probe_maps(layer)[s, k], p))
            tiles.append(to_rgb(a.ots[view][s, k], p))
        for c, (name, t) in enumerate(zip(cols, tiles)):
            f.paste(Image.fromarray(t).resize((cw, ch), Image.NEAREST), (c * (cw + 2), 0))
            d.text((c * (cw + 2) + 2, ch + 2), name.replace(" O", " off-the-shelf") if name != "image" else view,
                   fill="black")
        d.text((2, ch + 16), f"step {s}/{a.num_steps - 1}  {a.prompt.prompt[:60]}", fill="black")
        frames.append(f)
    return frames


def export(a: RunAnalysis, folder: Path, layer: str | None, view: str = "xt", scale: int = 2) -> list[Path]:
    """Paper-style grid PNG (rows: image, then probe / off-the-shelf per property; columns: steps), metric
    curves PNG, the per-step table as CSV, and the denoising as an animated GIF. Returns the files written."""
    from PIL import Image, ImageDraw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem_ = stem(a.prompt, view)
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
    files = [_atomic(folder / f"{stem_}-grid.png", lambda p: grid.save(p, format="PNG"))]

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
    files.append(_atomic(folder / f"{stem_}-curves.png", lambda p: fig.savefig(p, format="png")))
    plt.close(fig)

    rows_ = a.table_rows(layer, view)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows_[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows_)
    files.append(_atomic(folder / f"{stem_}-metrics.csv", lambda p: p.write_text(buf.getvalue())))
    frames = animation(a, layer, view, scale)
    files.append(_atomic(folder / f"{stem_}-denoising.gif", lambda p: frames[0].save(
        p, format="GIF", save_all=True, append_images=frames[1:], duration=[300] * (len(frames) - 1) + [1500],
        loop=0)))
    return files
