"""Errors a user can act on.

Every error the CLI and the TUI show to a user is one of :data:`USER_ERRORS`: :class:`UserError` and its
subclasses, and the run store's own :class:`StoreError` (the store depends on nothing of the backend). Its
message is one line that names the file, line, field or model at fault. The CLI prints it without a
traceback and exits 2.
"""

from __future__ import annotations

from ldm_explore.cache.errors import CorruptEntryError, StoreError


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    exit_code = 2

    def __str__(self) -> str:  # keep it one line whatever the message held
        return " ".join(super().__str__().split())


class PromptFileError(UserError):
    """A prompt file that cannot be read: names the file, line and field."""

    def __init__(self, path, message: str, line: int | None = None, field: str | None = None):
        where = str(path)
        if line is not None:
            where += f":{line}"
        if field is not None:
            message = f"field '{field}': {message}"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.field = str(path), line, field


class ModelNotFoundError(UserError):
    """A model that is neither a local folder nor in the Hugging Face cache."""


USER_ERRORS = (UserError, StoreError)
__all__ = ["UserError", "PromptFileError", "ModelNotFoundError", "StoreError", "CorruptEntryError", "USER_ERRORS"]
