"""``ldm-explore``: the explorer. Science lives in ldm_explore.backend; the screens in :mod:`.screens` lay it
out, the widgets are in :mod:`.widgets`, and the workers' messages in :mod:`.messages`."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.widgets import Input

from .screens import HelpScreen, MainScreen


class ExplorerApp(App):
    CSS_PATH = Path(__file__).parent / "explorer.tcss"
    TITLE = "ldm-explore"
    BINDINGS = [
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
    ]
    MAIN_SCREEN = MainScreen

    def __init__(self, session, renderer: str = "auto", export_dir: Path | None = None):
        super().__init__()
        self.session = session
        self.renderer = renderer
        self.export_dir = export_dir or Path.cwd() / "ldm-explore-export"
        self.main = self.MAIN_SCREEN(session, renderer, self.export_dir)

    def get_default_screen(self) -> MainScreen:
        return self.main

    def check_action(self, action: str, parameters) -> bool | None:
        if action in ("help", "quit") and isinstance(self.focused, Input):
            return False  # typing: the key goes to the input
        return True

    def action_help(self) -> None:
        self.push_screen(HelpScreen())


def run_app(session, renderer: str = "auto") -> None:
    ExplorerApp(session, renderer).run()
