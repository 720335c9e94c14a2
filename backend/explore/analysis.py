"""One run, analysed for display and export: what the explorer shows and ``ldm-explore export`` writes.

Built from a run (fresh, or read back from the store) + the bundle's estimators, classifier and probes.
Nothing here draws: the TUI and the export (:mod:`.export`) only lay these arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..pipeline.generate import RunResult
from ..probing import properties
from ..probing.emergence import beats_step, reach_step, recognition_step
from ..probing.labels import per_step, targets
from ..probing.metrics import primary
from ..probing.ridge import Probes, upsample

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
    props: tuple[str, ...]  # the properties labelled (the bundle's), in the order of target and ots
    probes: Probes | None = None
    _probe_maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def layers(self) -> list[str]:
        """The probed layers this run can show: recorded, and fitted for as many steps as the run has."""
        if self.probes is None:
            return []
        return [layer for layer in self.probes.layers
                if layer in self.activations and len(self.probes.W[layer]) == self.num_steps]

    @property
    def default_layer(self) -> str | None:
        """The layer shown first: the best on validation for depth, or the first property probed when depth is
        not (see :meth:`Probes.best_layer`)."""
        if not self.layers:
            return None
        return self.probes.best_layer("depth" if "depth" in self.probes.props else self.probes.props[0], self.layers)

    def probe_maps(self, layer: str) -> np.ndarray:
        """(S, P, H, W) probe predictions of ``layer`` upsampled to the label size, in the order of ``props``."""
        if layer not in self._probe_maps:
            H, W = self.target.shape[-2:]
            pred = self.probes.predict(layer, self.activations[layer])
            pred = pred[:, [self.probes.props.index(p) for p in self.props]]
            self._probe_maps[layer] = upsample(pred, H, W)
        return self._probe_maps[layer]

    def metrics(self, layer: str | None, view: str = "xt") -> dict[str, dict[str, np.ndarray]]:
        """{property: {"probe": (S,), "off-the-shelf": (S,)}} of the property's primary metric."""
        out = {}
        for k, prop in enumerate(self.props):
            row = {"off-the-shelf": primary(prop, self.ots[view][:, k], self.target[k])}
            if layer is not None:
                row["probe"] = primary(prop, self.probe_maps(layer)[:, k], self.target[k])
            out[prop] = row
        return out

    def emergence(self, layer: str | None, view: str = "xt", frac: float = 0.9) -> dict[str, dict]:
        """Common footing, per property: the bar (``frac`` of the probe's final value; without a probe, of the
        off-the-shelf curve's), the step each source reaches it and stays, and from which step the probe beats
        the off-the-shelf model. (Off-the-shelf ends at 1.0 by construction: its own final is no bar.)"""
        out = {}
        for p, d in self.metrics(layer, view).items():
            ref = d.get("probe", d["off-the-shelf"])
            bar = frac * float(ref[-1])
            e = {"bar": bar, **{src: reach_step(v, bar) for src, v in d.items()}}
            if "probe" in d:
                e["probe beats"] = beats_step(d["probe"], d["off-the-shelf"])
            out[p] = e
        return out

    def recognition_step(self, view: str = "xt") -> int:
        return recognition_step(np.array([t[0][0] for t in self.top5[view]]))

    def table_rows(self, layer: str | None, view: str = "xt") -> list[dict]:
        m = self.metrics(layer, view)
        rows = []
        for s in range(self.num_steps):
            r = {"step": s, "timestep": self.timesteps[s]}
            for prop in self.props:
                for src, v in m[prop].items():
                    r[f"{prop} {properties.get(prop).metric} ({src})"] = round(float(v[s]), 4)
            top = self.top5[view][s][0]
            r["top-1"], r["top-1 p"] = top[0], round(top[1], 4)
            rows.append(r)
        return rows


def analyse(bundle, run: RunResult, probes: Probes | None = None) -> RunAnalysis:
    """Analyse ``run`` with ``bundle``'s models: labels, off-the-shelf maps and top-5 for both views."""
    images = {v: run.images(v) for v in VIEWS}
    ots = {v: per_step(bundle.estimators, images[v]) for v in VIEWS}
    top5 = {v: bundle.classifier.top_k(images[v], 5) for v in VIEWS}
    return RunAnalysis(run.prompt, run.final, images, run.activations, list(run.timesteps),
                       targets(bundle.estimators, run.final), ots, top5, bundle.classifier.top_k(run.final[None], 5)[0],
                       bundle.properties, probes)


def to_rgb(m: np.ndarray, prop: str) -> np.ndarray:
    """A label or prediction map as an (H, W, 3) uint8 image in the property's colour map: values in [0, 1]
    as they are (mask, shading), or min-max normalised between the 1st and 99th percentile (relative inverse
    depth: bright is near)."""
    p = properties.get(prop)
    m = np.asarray(m, np.float32)
    if p.normalise:
        lo, hi = np.percentile(m, 1), np.percentile(m, 99)
        m = (m - lo) / max(hi - lo, 1e-6)
    m = np.clip(m, 0, 1)
    if p.cmap == "gray":
        return np.repeat((m * 255).round().astype(np.uint8)[..., None], 3, -1)
    from matplotlib import colormaps

    return (colormaps[p.cmap](m)[..., :3] * 255).round().astype(np.uint8)
