"""The settings form: steps, guidance, scheduler and seed of the next run. Each change is a new run in the run
store; the run before it stays a key away (``b``)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Select, Static


class SettingsScreen(ModalScreen[dict | None]):
    BINDINGS = [("escape", "cancel", "cancel")]

    def __init__(self, current: dict, seed: int | None, schedulers: list[str]):
        super().__init__()
        self.current, self.seed, self.schedulers = current, seed, schedulers

    def compose(self) -> ComposeResult:
        c = self.current
        with Vertical(id="settings-box"):
            yield Static("Settings of the next run (Enter in a field applies, Escape cancels)")
            with Horizontal(classes="field"):
                yield Static("steps", classes="label")
                yield Input(str(c["steps"]), id="set-steps", type="integer")
            with Horizontal(classes="field"):
                yield Static("guidance", classes="label")
                yield Input(str(c["guidance"]), id="set-guidance", type="number")
            with Horizontal(classes="field"):
                yield Static("scheduler", classes="label")
                yield Select([(s, s) for s in self.schedulers], value=c["scheduler"] if c["scheduler"] in
                             self.schedulers else Select.BLANK, id="set-scheduler", allow_blank=False)
            with Horizontal(classes="field"):
                yield Static("seed", classes="label")
                yield Input("" if self.seed is None else str(self.seed), id="set-seed", type="integer",
                            placeholder="the prompt's own")
            yield Static("", id="set-error", classes="dim")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            steps = int(self.query_one("#set-steps", Input).value)
            guidance = float(self.query_one("#set-guidance", Input).value)
            seed_s = self.query_one("#set-seed", Input).value.strip()
            seed = int(seed_s) if seed_s else None
        except ValueError as e:
            self.query_one("#set-error", Static).update(f"not a number: {e}")
            return
        if steps < 1 or guidance < 0 or (seed is not None and not 0 <= seed <= 2**32 - 1):
            self.query_one("#set-error", Static).update("steps >= 1, guidance >= 0, seed 0 to 4294967295")
            return
        self.dismiss({"steps": steps, "guidance": guidance, "scheduler": self.query_one("#set-scheduler", Select).value,
                      "seed": seed})

    def action_cancel(self) -> None:
        self.dismiss(None)
