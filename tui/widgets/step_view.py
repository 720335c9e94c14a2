"""The step view: images side by side for the current step, the step strip, and the numbers."""

from __future__ import annotations

import numpy as np
from PIL import Image
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import DataTable, Static

from ldm_explore.backend.probing.properties import BY_NAME, NAMES as PROPS

from .images import Tile
from .sparks import Sparks
from .step_strip import StepStrip

SHORT = {p: BY_NAME[p].short for p in PROPS}


def _s(step) -> str:
    return "–" if step is None else str(step)


def pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(a))


class StepView(Vertical):
    step = reactive(0, repaint=False)  # redraw() repaints what changed; a container repaint redraws all
    view = reactive("xt", repaint=False)
    layer: str | None = None
    split: str | None = None  # of the prompt shown: train-split probe metrics are in-sample

    def __init__(self, renderer: str, **kw):
        super().__init__(**kw)
        self.renderer = renderer
        self.analysis = None
        self.total = 15
        self.previews: dict[int, np.ndarray] = {}
        self._cache: dict = {}

    def compose(self) -> ComposeResult:
        yield Static("Choose a prompt and press Enter.", id="title")
        yield Static("", id="status")
        yield StepStrip(id="strip")
        yield Static("", id="emergence")
        with Horizontal(classes="tiles", id="tiles-step"):
            yield Tile("image", self.renderer, id="t-image")
            for p in PROPS:
                yield Tile(f"{SHORT[p]} P", self.renderer, id=f"t-{p}-probe")
                yield Tile(f"{SHORT[p]} O", self.renderer, id=f"t-{p}-ots")
        yield Static("P: linear probe on the layer above · O: off-the-shelf model on the decoded image · "
                     "below: final image and its labels", id="legend")
        with Horizontal(classes="tiles", id="tiles-final"):
            yield Tile("final", self.renderer, id="f-image")
            for p in PROPS:
                yield Tile(f"{SHORT[p]} label", self.renderer, id=f"f-{p}")
        with Horizontal(id="numbers"):
            yield DataTable(id="metrics", cursor_type="row", zebra_stripes=True)
            with Vertical(id="side"):
                yield Static("", id="top5")
                yield Sparks(id="sparks")

    def on_mount(self) -> None:
        t = self.query_one("#metrics", DataTable)
        t.add_column("step", key="step", width=4)
        for p in PROPS:  # one column per property: probe and off-the-shelf side by side (45 cells in all)
            t.add_column(f"{SHORT[p]} P/O", key=p, width=11)

    # --- a run coming in --------------------------------------------------------------------------
    def begin(self, prompt, steps: int) -> None:
        self.analysis = None
        self.previews = {}
        self._cache = {}
        self.total = steps
        self.split = prompt.split
        where = {"train": " · train split: probe metrics are in-sample (the probes were fitted on it)",
                 "val": " · val split: chose the probes' layer and penalty", "test": " · test split"}.get(prompt.split, "")
        self.query_one("#title", Static).update(f"#{prompt.index} (seed {prompt.seed}): {prompt.prompt}{where}")
        self.query_one("#status", Static).update("running…")
        s = self.query_one(StepStrip)
        s.total, s.filled, s.current = steps, 0, 0
        self.step = 0

    def queued(self, prompt) -> None:
        self.query_one("#title", Static).update(f"#{prompt.index} (seed {prompt.seed}): {prompt.prompt}")
        self.query_one("#status", Static).update("queued: runs when the models are loaded…")

    def preview(self, step: int, total: int, image: np.ndarray) -> None:
        self.previews[step] = image
        self.total = total
        s = self.query_one(StepStrip)
        s.total, s.filled = total, step + 1
        self.step = step
        self.query_one("#t-image", Tile).set_image(pil(image))
        self.query_one("#status", Static).update(f"denoising… step {step + 1}/{total} (labels and probes when done)")

    def show_run(self, a) -> None:
        self.analysis = a
        self._cache = {}
        self.total = a.num_steps
        layers = a.layers
        if self.layer not in layers:
            self.layer = a.default_layer
        s = self.query_one(StepStrip)
        s.total, s.filled = a.num_steps, a.num_steps
        self.query_one("#f-image", Tile).set_image(pil(a.final))
        from ldm_explore.backend.explore.analysis import to_rgb

        for k, p in enumerate(a.props):
            self.query_one(f"#f-{p}", Tile).set_image(pil(to_rgb(a.target[k], p)))
        for p in PROPS:  # a property the bundle has no estimator for: an empty tile that says so
            if p not in a.props:
                for wid in (f"#f-{p}", f"#t-{p}-ots", f"#t-{p}-probe"):
                    self.query_one(wid, Tile).set_caption(f"{SHORT[p]}: no model")
        self._fill_table()
        if self.step >= a.num_steps:
            self.step = a.num_steps - 1
        self.redraw()
        self._prebuild()

    # --- navigation -------------------------------------------------------------------------------
    def move(self, delta: int) -> None:
        self.goto(self.step + delta)

    def goto(self, step: int) -> None:
        n = self.total if self.analysis is not None else max(len(self.previews), 1)
        self.step = (n - 1) if step < 0 else max(0, min(step, n - 1))

    def show_layer(self, layer: str, step: int) -> None:
        """Jump to ``layer`` (when the run has probes for it) and ``step``."""
        if self.analysis is not None and layer in self.analysis.layers and layer != self.layer:
            self.layer = layer
            self._rebuild()
        self.goto(step)

    def next_layer(self) -> None:
        if self.analysis is None or not self.analysis.layers:
            self.app.notify("no probe layers to choose from", severity="warning")
            return
        ls = self.analysis.layers
        self.layer = ls[(ls.index(self.layer) + 1) % len(ls)] if self.layer in ls else ls[0]
        self._rebuild()

    def watch_step(self, old: int, new: int) -> None:
        self.redraw()

    def watch_view(self, old: str, new: str) -> None:
        if self.analysis is None:
            self.redraw()
        else:
            self._rebuild()

    def _rebuild(self) -> None:
        """Another layer or view of the open run: new tiles, table and curves."""
        self._cache = {}
        self._fill_table()
        self.redraw()
        self._prebuild()

    # --- drawing ----------------------------------------------------------------------------------
    @staticmethod
    def _make_tiles(a, s: int, view: str, layer: str | None) -> dict:
        """The step's tile images (no widget state: safe in a worker thread)."""
        from ldm_explore.backend.explore.analysis import to_rgb

        out = {"t-image": pil(a.images[view][s])}
        for k, p in enumerate(a.props):
            out[f"t-{p}-ots"] = pil(to_rgb(a.ots[view][s, k], p))
            if layer is not None:
                out[f"t-{p}-probe"] = pil(to_rgb(a.probe_maps(layer)[s, k], p))
        return out

    def _tiles_for(self, s: int) -> dict:
        key = (id(self.analysis), s, self.view, self.layer)
        if key not in self._cache:
            self._cache[key] = self._make_tiles(self.analysis, s, self.view, self.layer)
        return self._cache[key]

    def _prebuild(self) -> None:
        """Build every step's tiles in a thread, so a first visit of a step costs what a revisit does. The thread
        only computes; the cache is written on the UI thread."""
        a, view, layer = self.analysis, self.view, self.layer
        if a is None:
            return

        def build():
            for s in range(a.num_steps):
                if self.analysis is not a or self.view != view or self.layer != layer:
                    return  # another run, view or layer: its own prebuild takes over
                key = (id(a), s, view, layer)  # a previous run's prebuild never fills in this one's
                if key not in self._cache:
                    tiles = self._make_tiles(a, s, view, layer)
                    self.app.call_from_thread(self._cache.setdefault, key, tiles)

        self.run_worker(build, thread=True, exclusive=True, group="tiles", exit_on_error=False)

    def redraw(self) -> None:
        strip = self.query_one(StepStrip)
        strip.current = self.step
        a = self.analysis
        if a is None:
            if self.step in self.previews:
                self.query_one("#t-image", Tile).set_image(pil(self.previews[self.step]))
            return
        s = self.step
        for wid, img in self._tiles_for(s).items():
            self.query_one(f"#{wid}", Tile).set_image(img)
        if self.layer is None:
            for p in a.props:
                self.query_one(f"#t-{p}-probe", Tile).set_caption(f"{SHORT[p]} P: none")
        else:
            name = self._short(self.layer)
            for p in a.props:
                self.query_one(f"#t-{p}-probe", Tile).set_caption(f"{SHORT[p]} P")
            # fixed-size widgets: repaint only, no relayout (a relayout re-renders the whole screen)
            ins = "  ·  IN-SAMPLE" if self.split == "train" else ""
            self.query_one("#status", Static).update(
                f"view {'x_t (noisy latent)' if self.view == 'xt' else 'predicted x0'}  ·  probe layer {name}: "
                f"{self.layer}  ·  t={a.timesteps[s]:.0f}{ins}", layout=False)
        t = self.query_one("#metrics", DataTable)
        if t.row_count:
            t.move_cursor(row=s, animate=False)
        top = a.top5[self.view][s]
        rec = a.recognition_step(self.view)
        lines = [f"top-5 @ step {s}", f"(recognised at {rec})"]
        lines += [f"{p:4.2f} {name}" for name, p in top]  # the number first: a long name never runs into it
        self.query_one("#top5", Static).update("\n".join(lines), layout=False)
        self.query_one(Sparks).show(self._metrics(), s)

    def _short(self, layer: str) -> str:
        return self.app.session.layer_names.get(layer, layer)

    def _metrics(self):
        key = ("metrics", self.view, self.layer)
        if key not in self._cache:
            self._cache[key] = self.analysis.metrics(self.layer, self.view)
        return self._cache[key]

    def _fill_table(self) -> None:
        a = self.analysis
        m = self._metrics()
        t = self.query_one("#metrics", DataTable)
        t.clear()
        for s in range(a.num_steps):
            row = [str(s)]
            for p in PROPS:
                if p not in m:
                    row.append(f"{'–':>5} {'–':>5}")
                    continue
                pr = f"{m[p]['probe'][s]:5.2f}" if "probe" in m[p] else f"{'–':>5}"
                row.append(f"{pr} {m[p]['off-the-shelf'][s]:5.2f}")
            t.add_row(*row, key=str(s))
        em = a.emergence(self.layer, self.view)
        parts = []
        for p in a.props:
            e = em[p]
            beats = f" P>O {_s(e['probe beats'])}" if "probe beats" in e else ""
            parts.append(f"{p} ≥{e['bar']:.2f}: P {_s(e.get('probe'))} O {_s(e['off-the-shelf'])}{beats}")
        self.query_one("#emergence", Static).update("reaches 90% of probe's final from step: " + " · ".join(parts))
