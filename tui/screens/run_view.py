"""What the screens on one open run share (zoom, side by side): the run, its layer, view and step, a property
to show, and the keys that move between properties and steps; closing hands the step back to the main view."""

from __future__ import annotations

from textual.binding import Binding
from textual.screen import Screen


class RunViewScreen(Screen):
    BINDINGS = [
        Binding("p", "next_property", "property"),
        Binding("left", "step(-1)", "step -", priority=True),
        Binding("right", "step(1)", "step +", priority=True),
    ]

    def __init__(self, analysis, layer: str | None, view: str, step: int, renderer: str):
        super().__init__()
        self.a, self.probe_layer, self.view, self.step = analysis, layer, view, step
        self.renderer = renderer
        self.prop = analysis.props[0]

    def on_mount(self) -> None:
        self.draw()

    def draw(self) -> None:
        raise NotImplementedError

    def action_next_property(self) -> None:
        ps = self.a.props
        self.prop = ps[(ps.index(self.prop) + 1) % len(ps)]
        self.draw()

    def action_step(self, delta: int) -> None:
        self.step = max(0, min(self.a.num_steps - 1, self.step + delta))
        self.draw()

    def action_close(self) -> None:
        self.dismiss(self.step)
