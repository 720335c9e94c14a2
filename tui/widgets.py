"""The explorer's widgets: prompt browser, step strip, image tiles, numbers."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import DataTable, Input, Static


_IMAGE_CLASSES: dict = {}


def image_class(renderer: str):
    """The textual-image widget for ``renderer`` (auto: Kitty/Sixel where the terminal speaks it, halfcell
    blocks elsewhere), changed in one way: swapping in an image of the same size repaints without a relayout,
    which is what stepping through a run does on every key press."""
    if renderer in _IMAGE_CLASSES:
        return _IMAGE_CLASSES[renderer]
    import textual_image.widget as tiw

    base = {"auto": tiw.Image, "halfcell": tiw.HalfcellImage, "sixel": tiw.SixelImage, "tgp": tiw.TGPImage,
            "unicode": tiw.UnicodeImage}[renderer]

    class StepImage(base, Renderable=base._Renderable):
        @property
        def image(self):
            return self._image

        @image.setter
        def image(self, value):
            old = self._image
            if value is not None and old is not None and getattr(value, "size", None) == getattr(old, "size", 0):
                if self._renderable:
                    self._renderable.cleanup()
                    self._renderable = None
                self._image = value
                self.refresh()
            else:
                base.image.fset(self, value)

        if renderer in ("halfcell", "unicode"):
            def render_lines(self, crop):
                # Character renderers: the lines depend only on the image, the size and the crop, so a step
                # revisited is a dictionary lookup instead of a pixel-by-pixel re-render (the bulk of a redraw).
                cache = self.__dict__.setdefault("_strips", {})
                key = (id(self._image), self.size, crop, self.app.theme)
                hit = cache.get(key)
                if hit is not None and hit[0] is self._image:
                    return hit[1]
                lines = base.render_lines(self, crop)
                if len(cache) >= 256:
                    cache.clear()
                cache[key] = (self._image, lines)
                return lines

    _IMAGE_CLASSES[renderer] = StepImage
    return StepImage


class Tile(Vertical):
    """An image with a caption under it."""

    def __init__(self, caption: str, renderer: str, **kw):
        super().__init__(**kw)
        self.caption = caption
        self.renderer = renderer

    def compose(self) -> ComposeResult:
        yield image_class(self.renderer)(None, classes="tile-image")
        yield Static(self.caption, classes="tile-caption")

    def set_image(self, pil) -> None:
        self.query_one(".tile-image").image = pil

    def set_caption(self, text: str) -> None:
        if text != self.caption:
            self.caption = text
            self.query_one(".tile-caption", Static).update(text, layout=False)


class StepStrip(Static):
    """Where you are among all steps: filled steps, the current one highlighted."""

    total = reactive(15)
    filled = reactive(0)
    current = reactive(0)

    def render(self) -> Text:
        t = Text("step ")
        for s in range(self.total):
            style = "reverse bold" if s == self.current else ("green" if s < self.filled else "dim")
            t.append(f"{s:>2}", style=style)
            t.append(" ")
        t.append(f"  {self.current}/{max(self.total - 1, 0)}", style="bold")
        return t


class PromptTable(DataTable):
    """index, prompt, seed, cached; filtered by the search box."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.add_column("idx", key="idx", width=5)
        self.add_column("prompt", key="prompt")
        self.add_column("seed", key="seed", width=10)
        self.add_column("✓", key="cached", width=2)

    def fill(self, prompts, cached: set[int], query: str = "") -> None:
        q = query.lower().strip()
        self.clear()
        for p in prompts:
            if q and q not in p.prompt.lower() and q != str(p.index):
                continue
            self.add_row(str(p.index), p.prompt, str(p.seed), "✓" if p.index in cached else "", key=str(p.index))


SHORT = {"mask": "mask", "depth": "depth", "shading": "shade"}  # as the tiles and the table say them


class Sparks(Static):
    """One line per property: metric vs step as a sparkline, probe and off-the-shelf."""

    BARS = "▁▂▃▄▅▆▇█"

    def show(self, metrics: dict, current: int) -> None:
        t = Text()
        for prop, d in metrics.items():
            for src, v in d.items():
                t.append(f"{SHORT.get(prop, prop)[:5]:5s} {'P' if src == 'probe' else 'O'} ")
                for s, x in enumerate(np.nan_to_num(np.asarray(v, float))):
                    ch = self.BARS[int(np.clip(x, 0, 1) * (len(self.BARS) - 1))]
                    t.append(ch, style="reverse" if s == current else "")
                t.append("\n")
        self.update(t, layout=False)  # fixed height (one line per property and source)


class SearchBox(Input):
    pass
