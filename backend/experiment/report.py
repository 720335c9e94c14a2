"""The experiment's report folder: tables (CSV, JSON), heatmaps and curves (PNG), a summary in words."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..probing import properties
from ..probing.emergence import emergence_step, recognition_step
from .baselines import BASELINES, LATENT, PRIOR
from .scores import ScoreKey, aggregate


def write_report(out: Path, rows: list[dict], probes: dict, layer_names: dict[str, str], meta: dict) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out = Path(out)
    agg = aggregate(rows)
    S = len(next(iter(agg.values())).mean)
    # --- tables
    table = []
    for k, a in sorted(agg.items()):
        for s in range(S):
            table.append({"property": k.property, "source": k.source, "layer": k.layer,
                          "layer_name": layer_names.get(k.layer, k.layer if k.layer != "-" else ""),
                          "step": s, "metric": k.metric, "mean": float(a.mean[s]), "std": float(a.std[s]),
                          "n": a.n})
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(table[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(table)
    (out / "metrics.csv").write_text(buf.getvalue())
    # --- per property: best layer, curves, emergence
    summary = {"meta": meta, "properties": {}, "classifier": {}}
    for prop in probes["real"].props:
        m = properties.get(prop).metric
        bl = probes["real"].best_layer(prop)

        def curve(src: str, layer: str, prop=prop, m=m) -> np.ndarray:
            return agg[ScoreKey(src, layer, prop, m)].mean

        curves = {"probe": curve("probe", bl), "off-the-shelf": curve("off-the-shelf", "-")}
        if "shuffled" in probes:
            curves[BASELINES["shuffled"]] = curve(BASELINES["shuffled"], probes["shuffled"].best_layer(prop))
        for k, layer in (("latent", LATENT), ("prior", PRIOR)):  # baselines with a single "layer"
            if k in probes:
                curves[BASELINES[k]] = curve(BASELINES[k], layer)
        summary["properties"][prop] = {
            "metric": m, "best_layer": bl, "best_layer_name": layer_names.get(bl, bl),
            "emergence_step": {k: emergence_step(v) for k, v in curves.items()},
            "curves": {k: [round(float(x), 4) for x in v] for k, v in curves.items()},
            "final": {k: round(float(v[-1]), 4) for k, v in curves.items()},
            "first_step": {k: round(float(v[0]), 4) for k, v in curves.items()},
        }
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
        for k, v in curves.items():
            ax.plot(range(S), v, marker="o", ms=3, label=k if k != "probe" else f"probe ({layer_names.get(bl, bl)})")
        ax.set_xlabel("denoising step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(m)
        ax.set_title(f"{prop}: {m} vs step (test split)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"curves-{prop}.png")
        plt.close(fig)
        layers = probes["real"].layers
        grid = np.stack([curve("probe", layer) for layer in layers])
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(layers) + 1.5), dpi=110)
        im = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(layers)), [layer_names.get(x, x) for x in layers], fontsize=7)
        ax.set_xlabel("denoising step")
        ax.set_title(f"{prop} probe {m} per layer and step (test split)")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(out / f"heatmap-{prop}.png")
        plt.close(fig)
    # --- classifier: top-1 agreement with the final image per step, recognition step
    agree = np.mean([np.asarray(r["top1"]) == r["final_top1"] for r in rows], 0)
    rec = [recognition_step(np.asarray(r["top1"])) for r in rows]
    summary["classifier"] = {"agreement_with_final_top1": [round(float(x), 4) for x in agree],
                             "recognition_step_mean": float(np.mean(rec)), "recognition_step_median": float(np.median(rec))}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "metrics.json").write_text(json.dumps(table))
    (out / "summary.md").write_text(summary_text(summary, S))
    return summary


def summary_text(summary: dict, S: int) -> str:
    lines = [f"# What the model knows, step by step ({summary['meta'].get('bundle', '')}, {S} steps)", ""]
    for prop, d in summary["properties"].items():
        e = d["emergence_step"]
        lines.append(f"## {prop} ({d['metric']})")
        lines.append(f"- Linear probe, best layer on validation {d['best_layer_name']} (`{d['best_layer']}`): "
                     f"{d['first_step']['probe']:.3f} at step 0, {d['final']['probe']:.3f} at the last step; "
                     f"emerges at step {e['probe']} (stays >= 90% of its final value).")
        lines.append(f"- Off-the-shelf model on the decoded image: {d['first_step']['off-the-shelf']:.3f} at step 0, "
                     f"emerges at step {e['off-the-shelf']}.")
        for k in BASELINES.values():
            if k in d["final"]:
                lines.append(f"- Baseline, {k}: {d['first_step'][k]:.3f} at step 0, {d['final'][k]:.3f} at the last step.")
        lines.append("")
    c = summary["classifier"]
    lines.append(f"## classifier\n- Recognition step (top-1 equals the final image's from then on): mean "
                 f"{c['recognition_step_mean']:.1f}, median {c['recognition_step_median']:.0f}.")
    meta = summary["meta"]
    notes = ([f"- The model's weights are a random-weight fixture (`ldm-explore fixture`): these figures test the "
              f"machinery, they say nothing about {meta.get('model', 'the model')}."] if meta.get("fixture") else [])
    notes += [f"- Property {line}" for line in meta.get("left_out", [])]
    notes += [f"- Run {line}" for line in meta.get("runs_left_out", [])]
    if notes:
        lines += ["", "## left out and caveats", *notes]
    return "\n".join(lines) + "\n"
