"""Side by side: the open run against a variant of it, one row each, with both rows' numbers.

Modes (``m`` cycles): the x_t view against the predicted-x0 view; the probe layer shown against another layer
(``l`` picks it); the same prompt at another seed (generated, or opened from the run store). Each row shows the
step's image, one property's probe map and off-the-shelf map, and that property's metric for both at the step.
"""

from __future__ import annotations

import dataclasses

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Static

from ldm_explore.backend.probing.properties import METRIC_LABELS, get

from ..widgets.images import Tile
from ..widgets.step_view import pil
from .run_view import RunViewScreen

MODES = ("views", "layers", "seeds")


class CompareScreen(RunViewScreen):
    BINDINGS = [
        Binding("escape,c", "close", "back"),
        Binding("m", "next_mode", "x_t|x0 / layers / seeds"),
        Binding("l", "next_layer", "other layer"),
    ]

    def __init__(self, analysis, layer: str | None, view: str, step: int, renderer: str):
        super().__init__(analysis, layer, view, step, renderer)
        self.mode = "views"
        layers = analysis.layers
        self.other_layer = next((x for x in layers if x != layer), layer)
        self.other_seed = None  # the analysed run at another seed, once there
        self._seed_started = False

    def compose(self) -> ComposeResult:
        yield Static("", id="cmp-title")
        for row in ("a", "b"):
            yield Static("", id=f"cmp-{row}-label", classes="cmp-label")
            with Horizontal(classes="cmp-row"):
                for what in ("image", "probe", "ots"):
                    yield Tile(what, self.renderer, id=f"cmp-{row}-{what}")
        yield Footer()

    # --- the two rows ---------------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, object, str | None, str]]:
        """(label, analysis, layer, view) of the two rows; the second's analysis is None while it runs."""
        names = self.app.session.layer_names
        here = (f"seed {self.a.prompt.seed}, {names.get(self.probe_layer, self.probe_layer)}, {self.view}",
                self.a, self.probe_layer, self.view)
        if self.mode == "views":
            other = "x0" if self.view == "xt" else "xt"
            return [here, (f"seed {self.a.prompt.seed}, {names.get(self.probe_layer, self.probe_layer)}, {other}",
                           self.a, self.probe_layer, other)]
        if self.mode == "layers":
            return [here, (f"seed {self.a.prompt.seed}, {names.get(self.other_layer, self.other_layer)}, {self.view}",
                           self.a, self.other_layer, self.view)]
        seed = (self.a.prompt.seed + 1) % 2**32
        return [here, (f"seed {seed}, {names.get(self.probe_layer, self.probe_layer)}, {self.view}",
                       self.other_seed, self.probe_layer, self.view)]

    def draw(self) -> None:
        from ldm_explore.backend.explore.analysis import to_rgb

        prop = get(self.prop)
        m = METRIC_LABELS.get(prop.metric, prop.metric)
        self.query_one("#cmp-title", Static).update(
            f"side by side ({self.mode}) · {self.prop} · step {self.step}/{self.a.num_steps - 1} · "
            f"#{self.a.prompt.index}: {self.a.prompt.prompt}")
        for row, (label, a, layer, view) in zip(("a", "b"), self.rows()):
            lab = self.query_one(f"#cmp-{row}-label", Static)
            if a is None:
                lab.update(f"{label}: running…")
                continue
            s = min(self.step, a.num_steps - 1)
            k = a.props.index(self.prop)
            met = a.metrics(layer if layer in a.layers else None, view)[self.prop]
            nums = " · ".join(f"{tag} {m} {met[src][s]:.2f}" for src, tag in (("probe", "P"), ("off-the-shelf", "O"))
                              if src in met)
            lab.update(f"{label}: {nums}")
            self.query_one(f"#cmp-{row}-image", Tile).set_image(pil(a.images[view][s]))
            probe = self.query_one(f"#cmp-{row}-probe", Tile)
            if layer in a.layers:
                probe.set_image(pil(to_rgb(a.probe_maps(layer)[s, k], self.prop)))
                probe.set_caption(f"{prop.short} P")
            else:
                probe.set_caption(f"{prop.short} P: none")
            self.query_one(f"#cmp-{row}-ots", Tile).set_image(pil(to_rgb(a.ots[view][s, k], self.prop)))
            self.query_one(f"#cmp-{row}-ots", Tile).set_caption(f"{prop.short} O")

    # --- the other seed: opened from the store or generated, in a thread --------------------------------
    def _want_seed(self) -> None:
        if self._seed_started:
            return
        self._seed_started = True
        session = self.app.session
        p = dataclasses.replace(self.a.prompt, seed=(self.a.prompt.seed + 1) % 2**32)

        def work():
            try:
                a = session.open(p) or session.run(p)
            except Exception as e:  # e.g. the pipeline still loading: say so, and try again on the next key
                self._seed_started = False
                self.app.call_from_thread(self.notify, f"other seed: {e}", severity="warning")
                return
            self.app.call_from_thread(self._seed_ready, a)

        self.run_worker(work, thread=True, group="compare-seed", exit_on_error=False)

    def _seed_ready(self, a) -> None:
        self.other_seed = a
        self.draw()

    # --- keys -----------------------------------------------------------------------------------------
    def action_next_mode(self) -> None:
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        if self.mode == "seeds":
            self._want_seed()
        self.draw()

    def action_next_layer(self) -> None:
        ls = self.a.layers
        if ls:
            self.other_layer = ls[(ls.index(self.other_layer) + 1) % len(ls)] if self.other_layer in ls else ls[0]
            self.draw()
