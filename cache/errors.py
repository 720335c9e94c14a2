"""Errors of the run store. The store depends on nothing else of the project, so it declares its own; the
CLI and the explorer treat :class:`StoreError` as a user error (one line, exit code 2)."""

from __future__ import annotations


class StoreError(Exception):
    """A run store that cannot be used (unwritable folder, foreign files), reported as one line."""

    exit_code = 2

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


class CorruptEntryError(Exception):
    """A run-store entry whose files do not match its manifest (truncated, edited, half-written)."""
