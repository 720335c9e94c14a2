"""The experiment's report folder: tables (CSV, JSON), heatmaps and curves (PNG), a summary in words.

Every figure is a mean over test prompts (a prompt's seeds averaged first) with a 95% percentile bootstrap
interval that resamples prompts (:mod:`..probing.uncertainty`). Sources are compared on common footing: the
first step from which each curve stays above a bar common to all sources (90% of the probe's final value, and an
absolute bar per metric), and the first step from which the probe beats each other source (in the means, and
with a paired bootstrap interval above zero). Each curve's emergence against its *own* final value is kept,
labelled as such.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..probing import properties
from ..probing import uncertainty as U
from ..probing.emergence import recognition_step
from .baselines import BASELINES, LATENT, PRIOR
from .scores import Aggregates, ScoreKey, aggregate

REL = 0.9  # the relative bar: this share of the probe's final value

# The studies' replication on SD v1.4 (15 LMS steps, guidance 7.5, 617 prompts): its published figures, with the
# metric each was computed with, for the report of an sd14 run to read against.
PUBLISHED_SD14 = {
    "source": "Chen, Viegas & Wattenberg (2023) replicated on SD v1.4: best self-attention probe 'Decoder 4, layer 1'",
    "layer": "Decoder 4, layer 1",
    "final": {"mask": ("dice", 0.85), "depth": ("spearman", 0.71), "shading": ("spearman", 0.62)},
    "emergence": "properties emerge around step 3 of 15",
    "classifier": "VGG-16 right only from about step 11-12 of 15",
}

TARGETS = {
    "probe": "a ridge probe on the layer's self-attention activations at that step, fitted on the train split's "
             "targets (made the same way) with its penalty and layer chosen on validation",
    "off-the-shelf": "the same off-the-shelf model that makes the targets, run on the step's decoded image",
    BASELINES["shuffled"]: "a probe fitted the same way on a UNet whose weights are shuffled within each tensor, "
                           "fed the real run's inputs at each step",
    BASELINES["latent"]: "a probe fitted the same way on the VAE latent x_t itself (4 channels per cell)",
    BASELINES["prior"]: "the train split's mean map per pixel position: the same map for every image and step",
}


def _step(s, S: int) -> int | None:
    """A step from :func:`~..probing.uncertainty.first_stays`, None for S ("never")."""
    return None if s >= S else int(s)


def _step_ci(boot: np.ndarray, S: int) -> list:
    """Percentile interval of bootstrap steps (S meaning "never"), as integers; None for "never"."""
    a = (1 - U.LEVEL) / 2
    lo, hi = np.quantile(boot, [a, 1 - a], method="inverted_cdf")
    return [_step(lo, S), _step(hi, S)]


def _fmt_step(s) -> str:
    return "never" if s is None else str(s)


def _fmt_ci(d: dict, digits: int = 3) -> str:
    return f"{d['mean']:.{digits}f} [{d['low']:.{digits}f}, {d['high']:.{digits}f}]"


def _fmt_step_ci(d: dict) -> str:
    lo, hi = d["ci"]
    return f"{_fmt_step(d['step'])} [{_fmt_step(lo)}, {_fmt_step(hi)}]"


def common_footing(agg: Aggregates, keys: dict[str, ScoreKey], metric: str) -> dict:
    """For the sources ``keys`` (the first is the probe): the step each curve reaches the common bars, own-final
    emergence, and from which step the probe beats each other source, each with a bootstrap interval."""
    S = len(agg[keys["probe"]].mean)
    idx = agg.idx
    mean = {k: agg[v].mean for k, v in keys.items()}
    boot = {k: U.boot_means(agg[v].per_prompt, idx) for k, v in keys.items()}  # (b, S) on the same resamples
    rel, rel_boot = REL * mean["probe"][-1], REL * boot["probe"][:, -1:]
    absolute = properties.ABSOLUTE_BARS.get(metric)
    out = {"bars": {"relative": {"value": round(float(rel), 4), "definition": f"{REL:.0%} of the probe's final value"},
                    "absolute": {"value": absolute, "definition": f"{metric} {absolute}"}},
           "reaches_relative_bar": {}, "reaches_absolute_bar": {}, "own_final_emergence": {}, "probe_beats": {}}
    for k in keys:
        out["reaches_relative_bar"][k] = {"step": _step(U.first_stays(mean[k] >= rel), S),
                                          "ci": _step_ci(U.first_stays(boot[k] >= rel_boot), S)}
        if absolute is not None:
            out["reaches_absolute_bar"][k] = {"step": _step(U.first_stays(mean[k] >= absolute), S),
                                              "ci": _step_ci(U.first_stays(boot[k] >= absolute), S)}
        own = mean[k][-1] > 0
        out["own_final_emergence"][k] = {
            "step": _step(U.first_stays(mean[k] >= REL * mean[k][-1]), S) if own else None,
            "ci": _step_ci(np.where(boot[k][:, -1] > 0, U.first_stays(boot[k] >= REL * boot[k][:, -1:]), S), S)}
    P = agg[keys["probe"]].per_prompt
    for k, key in keys.items():
        if k == "probe":
            continue
        d = U.paired(P, agg[key].per_prompt, idx)
        out["probe_beats"][k] = {
            "step_means": _step(U.first_stays(mean["probe"] > mean[k]), S),
            "ci": _step_ci(U.first_stays(boot["probe"] > boot[k]), S),
            "step_significant": _step(U.first_stays(d["low"] > 0), S),
            "overtaken_from": _step(U.first_stays(mean[k] > mean["probe"]), S),  # the source stays above the probe
            "difference": {"mean": [round(float(x), 4) for x in d["mean"]], "low": [round(float(x), 4) for x in d["low"]],
                           "high": [round(float(x), 4) for x in d["high"]]},
            "p": [round(float(x), 5) for x in d["p"]]}
    return out


def _band(a) -> dict:
    return {"mean": [round(float(x), 4) for x in a.mean], "low": [round(float(x), 4) for x in a.low],
            "high": [round(float(x), 4) for x in a.high]}


def _at(a, s: int) -> dict:
    return {"mean": round(float(a.mean[s]), 4), "low": round(float(a.low[s]), 4), "high": round(float(a.high[s]), 4)}


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
                          "step": s, "metric": k.metric, "mean": float(a.mean[s]), "ci_low": float(a.low[s]),
                          "ci_high": float(a.high[s]), "std": float(a.std[s]), "n": a.n, "runs": a.runs})
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(table[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(table)
    (out / "metrics.csv").write_text(buf.getvalue())
    n_prompts, n_runs = len(agg.prompts), len(rows)
    summary = {"meta": meta, "properties": {}, "classifier": {},
               "uncertainty": {"interval": f"{U.LEVEL:.0%} percentile bootstrap over test prompts ({len(agg.idx)} "
                                           "resamples; a prompt's seeds resampled together)",
                               "test_prompts": n_prompts, "test_runs": n_runs},
               "targets": {}, "layer_step": {}}
    # --- per property: best layer, curves, common footing
    for prop in probes["real"].props:
        m = properties.get(prop).metric
        bl = probes["real"].best_layer(prop)
        keys = {"probe": ScoreKey("probe", bl, prop, m), "off-the-shelf": ScoreKey("off-the-shelf", "-", prop, m)}
        if "shuffled" in probes:
            keys[BASELINES["shuffled"]] = ScoreKey(BASELINES["shuffled"], probes["shuffled"].best_layer(prop), prop, m)
        for k, layer in (("latent", LATENT), ("prior", PRIOR)):  # baselines with a single "layer"
            if k in probes:
                keys[BASELINES[k]] = ScoreKey(BASELINES[k], layer, prop, m)
        others = {}
        for m2 in properties.get(prop).metrics[1:]:
            others[m2] = {k: _at(agg[ScoreKey(v.source, v.layer, prop, m2)], S - 1) for k, v in keys.items()
                          if ScoreKey(v.source, v.layer, prop, m2) in agg}
        summary["properties"][prop] = {
            "metric": m, "best_layer": bl, "best_layer_name": layer_names.get(bl, bl),
            "curves": {k: _band(agg[v]) for k, v in keys.items()},
            "final": {k: _at(agg[v], S - 1) for k, v in keys.items()},
            "first_step": {k: _at(agg[v], 0) for k, v in keys.items()},
            **common_footing(agg, keys, m),
            "other_metrics_final": others,
        }
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
        for k, v in keys.items():
            a = agg[v]
            line, = ax.plot(range(S), a.mean, marker="o", ms=3,
                            label=k if k != "probe" else f"probe ({layer_names.get(bl, bl)})")
            ax.fill_between(range(S), a.low, a.high, color=line.get_color(), alpha=0.15, lw=0)
        ax.set_xlabel("denoising step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(m)
        ax.set_title(f"{prop}: {m} vs step, test split ({n_prompts} prompts, {U.LEVEL:.0%} bootstrap band)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"curves-{prop}.png")
        plt.close(fig)
        layers = probes["real"].layers
        summary["layer_step"][prop] = layer_step(agg, probes, prop, m, layer_names, keys)
        grid = np.stack([agg[ScoreKey("probe", layer, prop, m)].mean for layer in layers])
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(layers) + 1.5), dpi=110)
        im = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(layers)), [layer_names.get(x, x) for x in layers], fontsize=7)
        ax.set_xlabel("denoising step")
        ax.set_title(f"{prop} probe {m} per layer and step (test split)")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(out / f"heatmap-{prop}.png")
        plt.close(fig)
    summary["targets"] = {k: v for k, v in TARGETS.items() if any(k in d["final"] for d in summary["properties"].values())}
    # --- classifier: top-1 agreement with the final image per step, recognition step (per prompt, seeds averaged)
    groups = [r["index"] for r in rows]
    agree, _ = U.per_prompt(np.array([np.asarray(r["top1"]) == r["final_top1"] for r in rows], np.float64), groups)
    rec, _ = U.per_prompt(np.array([[recognition_step(np.asarray(r["top1"]))] for r in rows], np.float64), groups)
    a_lo, a_hi = U.interval(U.boot_means(agree, agg.idx))
    r_lo, r_hi = U.interval(U.boot_means(rec, agg.idx))
    summary["classifier"] = {"agreement_with_final_top1": {"mean": [round(float(x), 4) for x in agree.mean(0)],
                                                           "low": [round(float(x), 4) for x in a_lo],
                                                           "high": [round(float(x), 4) for x in a_hi]},
                             "recognition_step_mean": {"mean": round(float(rec.mean()), 3),
                                                       "low": round(float(r_lo[0]), 3), "high": round(float(r_hi[0]), 3)},
                             "recognition_step_median": float(np.median(rec))}
    if meta.get("bundle") == "sd14":
        summary["published"] = published_comparison(summary, agg, layer_names)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "metrics.json").write_text(json.dumps(table))
    (out / "summary.md").write_text(summary_text(summary, S))
    return summary


def layer_step(agg: Aggregates, probes: dict, prop: str, m: str, layer_names: dict[str, str], keys: dict) -> dict:
    """The primary metric per layer and step (mean and interval) of the probes with layers (real, shuffled), and
    the single-row sources (off-the-shelf, latent, prior): what the explorer's layer x step screen shows."""
    out = {"metric": m, "layers": list(probes["real"].layers),
           "names": [layer_names.get(x, x) for x in probes["real"].layers], "sources": {}}
    r4 = lambda a: [[round(float(x), 4) for x in row] for row in a]  # noqa: E731
    for src in ("probe", BASELINES["shuffled"]):
        ks = [ScoreKey(src, layer, prop, m) for layer in out["layers"]]
        if all(k in agg for k in ks):
            out["sources"][src] = {f: r4([getattr(agg[k], f) for k in ks]) for f in ("mean", "low", "high")}
    for src, k in keys.items():
        if src not in out["sources"] and src != "probe":
            out["sources"][src] = {f: r4([getattr(agg[k], f)]) for f in ("mean", "low", "high")}
    return out


def published_comparison(summary: dict, agg: Aggregates, layer_names: dict[str, str]) -> list[dict]:
    """This run's figures beside the replication's, with the same metrics: at this run's best layer and at the
    published best layer."""
    by_name = {v: k for k, v in layer_names.items()}
    pub_layer = by_name.get(PUBLISHED_SD14["layer"])
    rows = []
    for prop, (metric, value) in PUBLISHED_SD14["final"].items():
        d = summary["properties"].get(prop)
        if d is None:
            rows.append({"property": prop, "metric": metric, "published": value, "this_run": None,
                         "note": "left out of this run"})
            continue
        S = len(d["curves"]["probe"]["mean"])
        row = {"property": prop, "metric": metric, "published": value}
        k = ScoreKey("probe", d["best_layer"], prop, metric)
        if k in agg:
            row["this_run_best_layer"] = {"layer": d["best_layer_name"], **_at(agg[k], S - 1)}
        k = ScoreKey("probe", pub_layer, prop, metric)
        if pub_layer and k in agg:
            row["this_run_published_layer"] = {"layer": PUBLISHED_SD14["layer"], **_at(agg[k], S - 1)}
        rows.append(row)
    return rows


def summary_text(summary: dict, S: int) -> str:
    meta, unc = summary["meta"], summary["uncertainty"]
    lines = [f"# What the model knows, step by step ({meta.get('bundle', '')}, {S} steps)", "",
             f"Test split: {unc['test_prompts']} prompts, {unc['test_runs']} runs. Every figure is a mean over test "
             f"prompts with its {unc['interval']} in brackets. Steps count from 0 (pure noise) to {S - 1}; "
             "\"never\" means the curve does not end above the bar.", ""]
    for prop, d in summary["properties"].items():
        m = d["metric"]
        bars = d["bars"]
        lines.append(f"## {prop} ({properties.METRIC_LABELS.get(m, m)})")
        lines.append(f"Probe layer (best on validation): {d['best_layer_name']} (`{d['best_layer']}`).")
        lines.append("")
        hdr = (f"| source | step 0 | last step | reaches {bars['relative']['value']:.3f} ({bars['relative']['definition']}) "
               f"| reaches {properties.METRIC_LABELS.get(m, m)} {bars['absolute']['value']} | probe beats it from (means) | ... with 95% paired bootstrap "
               f"| it overtakes the probe from | own-final emergence |")
        lines += [hdr, "|" + "---|" * 9]
        for k in d["final"]:
            beats = d["probe_beats"].get(k)
            ab = d["reaches_absolute_bar"].get(k)
            lines.append(
                f"| {k} | {_fmt_ci(d['first_step'][k])} | {_fmt_ci(d['final'][k])} | "
                f"{_fmt_step_ci(d['reaches_relative_bar'][k])} | {_fmt_step_ci(ab) if ab else '-'} | "
                f"{_fmt_step_ci({'step': beats['step_means'], 'ci': beats['ci']}) if beats else '-'} | "
                f"{_fmt_step(beats['step_significant']) if beats else '-'} | "
                f"{_fmt_step(beats['overtaken_from']) if beats else '-'} | {_fmt_step_ci(d['own_final_emergence'][k])} |")
        for m2, vals in d.get("other_metrics_final", {}).items():
            lab = properties.METRIC_LABELS.get(m2, m2)
            lines.append("")
            lines.append(f"{lab} at the last step: " + "; ".join(f"{k} {_fmt_ci(v)}" for k, v in vals.items()) +
                         (" (scale-and-shift aligned, target min-max normalised; lower is better)" if m2 == "rmse" else ""))
        lines.append("")
    c = summary["classifier"]
    r = c["recognition_step_mean"]
    lines.append(f"## classifier\nRecognition step (top-1 equals the final image's from then on): mean "
                 f"{_fmt_ci(r, 1)}, median {c['recognition_step_median']:.0f}.")
    lines += ["", "## how each source's targets are made",
              "Targets: the bundle's off-the-shelf models run on each test run's final image; every source below "
              "is scored against these same maps."]
    lines += [f"- {k}: {v}." for k, v in summary["targets"].items()]
    ends = ", ".join(f"{p} {d['final']['off-the-shelf']['mean']:.3f}" for p, d in summary["properties"].items()
                     if "off-the-shelf" in d["final"])
    view = meta.get("view", "xt")
    lines.append(f"- off-the-shelf equals the target at the last step by construction ({ends} there): "
                 + ("its last image is the final image" if view == "xt" else
                    "its last image is the last step's x0 prediction, next to the final image")
                 + ". Its own-final emergence is against that 1.0; compare it with the probe at the common bars.")
    if summary.get("published"):
        pub = PUBLISHED_SD14
        lines += ["", "## beside the published figures", f"{pub['source']}. Same metrics, last step, test split.", "",
                  "| property | metric | published | this run, best layer | this run, " + pub["layer"] + " |",
                  "|---|---|---|---|---|"]
        for row in summary["published"]:
            b = row.get("this_run_best_layer")
            p = row.get("this_run_published_layer")
            lines.append(f"| {row['property']} | {row['metric']} | {row['published']:.2f} | "
                         f"{(_fmt_ci(b) + ' (' + b['layer'] + ')') if b else row.get('note', '-')} | "
                         f"{_fmt_ci(p) if p else '-'} |")
        lines += [f"- Published: {pub['emergence']}; {pub['classifier']}. Here: see each table's common-footing "
                  "columns and the classifier's recognition step."]
    notes = ([f"- The model's weights are a random-weight fixture (`ldm-explore fixture`): these figures test the "
              f"machinery, they say nothing about {meta.get('model', 'the model')}."] if meta.get("fixture") else [])
    notes += [f"- Property {line}" for line in meta.get("left_out", [])]
    notes += [f"- Run {line}" for line in meta.get("runs_left_out", [])]
    if notes:
        lines += ["", "## left out and caveats", *notes]
    return "\n".join(lines) + "\n"
