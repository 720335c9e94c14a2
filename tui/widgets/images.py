"""Image tiles: a textual-image widget per renderer, and a tile with a caption under its image."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static


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
    sixel = issubclass(base, tiw.SixelImage)  # "auto" is Sixel where the terminal speaks it

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
                if sixel:  # the Sixel widget draws through a child that holds its own reference to the image
                    for child in self.children:
                        child.image = value
                        child.refresh()
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


CELL_ASPECT = 2.0  # a terminal cell is about twice as tall as it is wide


def letterbox(cols: int, rows: int, aspect: float) -> tuple[int, int]:
    """The largest (cols, rows) box inside ``cols`` x ``rows`` cells that shows an image of ``aspect``
    (width / height) undistorted on cells ``CELL_ASPECT`` times taller than wide."""
    w = max(1, min(cols, int(rows * CELL_ASPECT * aspect)))
    h = max(1, min(rows, round(w / (CELL_ASPECT * aspect))))
    return w, h


class Tile(Vertical):
    """An image with a caption under it; the image keeps its aspect ratio (letterboxed, centred) at any size."""

    def __init__(self, caption: str, renderer: str, **kw):
        super().__init__(**kw)
        self.caption = caption
        self.renderer = renderer
        self.aspect = 1.0  # of the image shown (width / height)

    def compose(self) -> ComposeResult:
        yield image_class(self.renderer)(None, classes="tile-image")
        yield Static(self.caption, classes="tile-caption")

    def on_resize(self, event) -> None:
        self._fit()

    def _fit(self) -> None:
        cols, rows = self.size.width, self.size.height - 1  # the caption takes a line
        if cols < 1 or rows < 1:
            return
        w, h = letterbox(cols, rows, self.aspect)
        img = self.query_one(".tile-image")
        if (img.styles.width, img.styles.height) != (w, h):
            img.styles.width, img.styles.height = w, h

    def set_image(self, pil) -> None:
        if pil is not None and pil.height:
            aspect = pil.width / pil.height
            if aspect != self.aspect:
                self.aspect = aspect
                self._fit()
        self.query_one(".tile-image").image = pil

    def set_caption(self, text: str) -> None:
        if text != self.caption:
            self.caption = text
            self.query_one(".tile-caption", Static).update(text, layout=False)
