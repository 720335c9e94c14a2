"""The zoom screen: the current step's image with one property's probe map, off-the-shelf map and label, each
as large as the terminal allows (aspect kept). p: next property; left/right: step."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Static

from ..widgets.images import Tile
from ..widgets.step_view import pil
from .run_view import RunViewScreen


class ZoomScreen(RunViewScreen):
    BINDINGS = [
        Binding("escape,z", "close", "back"),
    ]

    def compose(self) -> ComposeResult:
        yield Static("", id="zoom-title")
        with Horizontal(id="zoom-tiles"):
            for wid in ("image", "probe", "ots", "label"):
                yield Tile(wid, self.renderer, id=f"z-{wid}")
        yield Footer()

    def draw(self) -> None:
        from ldm_explore.backend.explore.analysis import to_rgb

        a, s, k = self.a, self.step, self.a.props.index(self.prop)
        self.query_one("#zoom-title", Static).update(
            f"step {s}/{a.num_steps - 1} · {self.prop} · view {self.view} · probe layer "
            f"{self.app.session.layer_names.get(self.probe_layer, self.probe_layer) if self.probe_layer else 'none'} · "
            f"#{a.prompt.index}: {a.prompt.prompt}")
        self.query_one("#z-image", Tile).set_image(pil(a.images[self.view][s]))
        probe = self.query_one("#z-probe", Tile)
        if self.probe_layer is not None:
            probe.set_image(pil(to_rgb(a.probe_maps(self.probe_layer)[s, k], self.prop)))
            probe.set_caption(f"{self.prop}: linear probe")
        else:
            probe.set_caption(f"{self.prop}: no probe")
        self.query_one("#z-ots", Tile).set_image(pil(to_rgb(a.ots[self.view][s, k], self.prop)))
        self.query_one("#z-ots", Tile).set_caption(f"{self.prop}: off-the-shelf")
        self.query_one("#z-label", Tile).set_image(pil(to_rgb(a.target[k], self.prop)))
        self.query_one("#z-label", Tile).set_caption(f"{self.prop}: label (final image)")
        self.query_one("#z-image", Tile).set_caption(f"{'x_t' if self.view == 'xt' else 'x0'} at step {s}")
