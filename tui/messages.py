"""Every message the explorer's workers post back to the UI, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class PartsOpened(Message):
    """Stored runs can be opened (the store, estimators, classifier and probes are loaded); the pipeline is next."""


@dataclass
class Loaded(Message):
    """The session's models are loaded (or failed to load: ``error``)."""

    error: str | None = None


@dataclass
class StepPreview(Message):
    """A step of a run in progress: its decoded x_t."""

    step: int
    total: int
    image: object


@dataclass
class RunReady(Message):
    """A run is generated (or read from the store) and analysed."""

    analysis: object
    index: int


@dataclass
class RunFailed(Message):
    error: str
