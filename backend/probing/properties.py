"""The scene properties the probes read, defined once: every command, the report, the explorer and the
benchmarks take names, metrics, short names and colour maps from this table.

A property's *primary* metric is the one curves, emergence steps and the explorer's numbers use; the
others are reported beside it in the tables.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Property:
    name: str  # the one name in code, CLI, files: "mask", "depth", "shading"
    metrics: tuple[str, ...]  # every metric reported for it; the first is the primary one
    short: str  # as tiles, tables and sparklines say it
    cmap: str  # colour map of its maps as images (matplotlib's name; "gray" is drawn without matplotlib)
    normalise: bool  # maps shown min-max normalised (1st-99th percentile): relative depth has no fixed scale
    binary: bool  # the target is cut at 0.5 and predictions are scored as masks
    description: str

    @property
    def metric(self) -> str:
        """The primary metric."""
        return self.metrics[0]


# metric name -> how it is written in tables and on screen
METRIC_LABELS = {"dice": "Dice", "spearman": "Spearman", "pearson": "Pearson", "rmse": "RMSE"}
# metric -> the absolute bar of the report's common footing: a curve "reaches" it from the first step it stays at
# or above it (beside the relative bar, 90% of the probe's final value). Higher is better for all but "rmse",
# which is never a primary metric (it is reported in the tables only).
ABSOLUTE_BARS = {"dice": 0.5, "spearman": 0.5, "pearson": 0.5}
HIGHER_IS_BETTER = {"dice": True, "spearman": True, "pearson": True, "rmse": False}

PROPERTIES: tuple[Property, ...] = (
    Property("mask", ("dice",), "mask", "gray", False, True,
             "salient-object mask (TRACER's role), Dice of the probe's map cut at 0.5"),
    Property("depth", ("spearman", "pearson", "rmse"), "depth", "gray", True, False,
             "relative inverse depth (MiDaS' role): larger is closer, scale and shift arbitrary"),
    Property("shading", ("pearson", "spearman"), "shade", "gray", False, False,
             "grayscale shading (Intrinsic's role)"),
)
NAMES: tuple[str, ...] = tuple(p.name for p in PROPERTIES)
BY_NAME: dict[str, Property] = {p.name: p for p in PROPERTIES}


def get(name: str) -> Property:
    return BY_NAME[name]


def index(name: str) -> int:
    """The property's position in label and prediction arrays (..., P, H, W)."""
    return NAMES.index(name)
