"""What a bundle is: a pipeline, estimators and a classifier behind declared interfaces, a prompt file,
the layers to probe, and fitted probes where they exist. Every bundle (toyworld, sd14) satisfies these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Estimators(Protocol):
    """The off-the-shelf models of a bundle (TRACER's, MiDaS' and Intrinsic's roles).

    Images in: uint8 (H, W, 3) or (B, H, W, 3). Maps out: float (B, H, W) at the images' size.
    """

    properties: tuple[str, ...]  # the properties it estimates, in the property table's order

    def all(self, images) -> dict[str, np.ndarray]:
        """Every property's maps, keyed by property name ("mask", "depth", "shading")."""

    def mask(self, images) -> np.ndarray:
        """Salient-object probability in [0, 1]."""

    def depth(self, images) -> np.ndarray:
        """Relative inverse depth: larger is closer; scale and shift arbitrary."""

    def shading(self, images) -> np.ndarray:
        """Grayscale shading."""


@runtime_checkable
class Classifier(Protocol):
    """An image classifier (VGG-16's role): images in, probabilities over ``classes`` out."""

    classes: list[str]

    def __call__(self, images) -> np.ndarray:
        """(B, len(classes)) probabilities."""

    def top_k(self, images, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per image, the ``k`` most probable (class, probability) pairs, most probable first."""


@dataclass(frozen=True)
class BundleParts:
    """A bundle without its pipeline: what opening a stored run needs (estimators, classifier, probes, layers, and
    the run keys' ``model_id`` and ``signature``, read from the pipeline folder's files). Fast: no diffusers
    import, no UNet. :meth:`complete` loads the pipeline and returns the :class:`Bundle`."""

    name: str
    estimators: Estimators
    classifier: Classifier
    prompts: Path
    layer_info: tuple  # LayerInfo of every self-attention layer, from the UNet's config
    folder: Path
    model_id: str
    signature: dict  # what pipe_signature() gives the loaded pipeline (a test holds them equal)
    pipeline: dict  # load_pipeline's arguments: model, device, dtype, scheduler
    probes: Path | None = None
    left_out: tuple[str, ...] = ()
    test_prompts: Path | None = None

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(i.path for i in self.layer_info)

    @property
    def properties(self) -> tuple[str, ...]:
        return self.estimators.properties

    def complete(self) -> "Bundle":
        """Load the pipeline (seconds: diffusers' import, the weights) and return the whole bundle."""
        from ..pipeline.loading import load_pipeline

        pipe = load_pipeline(**self.pipeline)
        return Bundle(self.name, pipe, self.estimators, self.classifier, self.prompts, self.layers, self.folder,
                      self.probes, self.left_out, self.test_prompts)


@dataclass(frozen=True)
class Bundle:
    """Everything one experiment needs, built complete by :func:`ldm_explore.backend.bundles.load_bundle`."""

    name: str  # "toyworld", "sd14"
    pipe: object  # a diffusers StableDiffusionPipeline with a ``model_id`` attribute
    estimators: Estimators
    classifier: Classifier
    prompts: Path  # the bundle's default prompt file (with a split column), or its train file
    layers: tuple[str, ...]  # the layers probed by default (every self-attention output), forward order
    folder: Path  # where the bundle's own files live
    probes: Path | None = None  # fitted probes for this pipeline, when there are any
    left_out: tuple[str, ...] = ()  # one line per property without its estimator: which model is missing, and why
    test_prompts: Path | None = None  # the test file, where the default prompts come as a train and a test file

    def read_prompts(self):
        """The bundle's default prompts with their splits."""
        from ..prompts import read_prompts

        return read_prompts(self.prompts, self.test_prompts)

    @property
    def properties(self) -> tuple[str, ...]:
        """The properties this bundle can label and probe (those whose estimator is present)."""
        return self.estimators.properties
