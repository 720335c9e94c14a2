"""The export dialog: the folder the explorer's export writes into."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class ExportScreen(ModalScreen[Path | None]):
    BINDINGS = [("escape", "cancel", "cancel")]

    def __init__(self, default: Path):
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box"):
            yield Static("Export the grid PNG, curves PNG and table CSV into folder:")
            yield Input(str(self.default), id="export-dir")
            yield Static("Enter to export, Escape to cancel", classes="dim")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(Path(event.value).expanduser())

    def action_cancel(self) -> None:
        self.dismiss(None)
