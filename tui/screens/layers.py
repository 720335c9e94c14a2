"""The layer x step screen: the experiment's metric per layer and step (test split), heat-coloured, with the
common-footing table and its intervals below. Enter jumps the main view to the layer and step under the cursor.

It reads the summary the experiment published beside the probes the session loaded (``X.summary.json``);
the screen says so when there is none.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ldm_explore.backend.probing.properties import METRIC_LABELS


def heat(v: float, lo: float, hi: float) -> str:
    """A dark-blue -> teal -> yellow background for ``v`` in [lo, hi] (viridis-like, readable with white/black)."""
    t = 0.0 if hi <= lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))
    stops = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
    x = t * (len(stops) - 1)
    i = min(int(x), len(stops) - 2)
    f = x - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(stops[i], stops[i + 1]))
    return f"rgb({r},{g},{b})"


def _step(s) -> str:
    return "never" if s is None else str(s)


class LayerStepScreen(Screen[tuple[str, int] | None]):
    """Rows: the probe's layers (then the shuffled-UNet probe's, and the single-row sources), columns: steps."""

    BINDINGS = [
        Binding("escape", "close", "back"),
        Binding("p", "next_property", "property"),
        Binding("o", "next_source", "probe/baselines"),
        Binding("enter", "jump", "show in main view", priority=True),
    ]

    def __init__(self, report: dict | None, layer: str | None, step: int, prop: str | None = None):
        super().__init__()
        self.report = report
        self.props = list((report or {}).get("layer_step", {}))
        self.prop = prop if prop in self.props else (self.props[0] if self.props else None)
        self.at_layer, self.at_step = layer, step
        self.source = "probe"

    def compose(self) -> ComposeResult:
        yield Static("", id="ls-title")
        yield DataTable(id="ls-grid", cursor_type="cell", zebra_stripes=False)
        yield Static("", id="ls-footing")
        yield Footer()

    def on_mount(self) -> None:
        if self.prop is None:
            self.query_one("#ls-title", Static).update(
                "No experiment summary for these probes: `ldm-explore experiment run` fits probes and publishes "
                "its summary where the explorer finds it.")
            return
        self.fill()

    def _data(self):
        d = self.report["layer_step"][self.prop]
        return d, d["sources"].get(self.source) or d["sources"]["probe"]

    def fill(self) -> None:
        d, src = self._data()
        meta = self.report.get("meta", {})
        unc = self.report.get("uncertainty", {})
        m = METRIC_LABELS.get(d["metric"], d["metric"])
        self.query_one("#ls-title", Static).update(
            f"[b]{self.prop}[/b]: {m} of the {self.source} per layer and step, test split "
            f"({unc.get('test_prompts', '?')} prompts, {meta.get('bundle', '')}); p: property · o: source · "
            "Enter: show that layer and step")
        t = self.query_one("#ls-grid", DataTable)
        t.clear(columns=True)
        t.fixed_columns = 1  # the layer names stay when a narrow terminal scrolls to the later steps
        S = len(src["mean"][0])
        t.add_column("layer", key="layer")
        for s in range(S):
            t.add_column(f"{s:>4}", key=str(s))
        rows = list(zip(d["names"], d["layers"], src["mean"])) if len(src["mean"]) == len(d["layers"]) else \
            [(self.source, None, src["mean"][0])]
        # single-row sources below the layers: off-the-shelf, the latent and prior baselines
        extra = [(k, None, v["mean"][0]) for k, v in d["sources"].items() if len(v["mean"]) == 1 and k != self.source]
        vals = [x for _, _, r in rows + extra for x in r]
        lo, hi = min(vals), max(vals)
        for name, layer, r in rows + extra:
            cells = [Text(f"{x:4.2f}", style=f"{'black' if x > (lo + hi) / 2 else 'white'} on {heat(x, lo, hi)}")
                     for x in r]
            label = Text(name, style="bold" if layer == self.at_layer else "" if layer else "italic")
            t.add_row(label, *cells, key=layer or f"src:{name}")
        row = d["layers"].index(self.at_layer) if self.at_layer in d["layers"] and len(rows) > 1 else 0
        t.move_cursor(row=row, column=min(self.at_step, S - 1) + 1, animate=False)
        t.focus()
        self._footing()

    def _footing(self) -> None:
        p = self.report["properties"].get(self.prop, {})
        if not p:
            return
        bar = p["bars"]["relative"]
        lines = [f"common footing (bar {bar['value']:.3f} = {bar['definition']}); [low, high] = "
                 f"{self.report.get('uncertainty', {}).get('interval', 'bootstrap interval')}:"]
        for k, f in p["final"].items():
            r = p["reaches_relative_bar"][k]
            b = p["probe_beats"].get(k)
            beats = (f" · probe beats it from {_step(b['step_means'])} (significant from {_step(b['step_significant'])})"
                     + (f", it overtakes the probe from {_step(b['overtaken_from'])}" if b.get("overtaken_from") is not None
                        else "")) if b else ""
            lines.append(f"  {k:<20} last {f['mean']:.3f} [{f['low']:.3f}, {f['high']:.3f}] · reaches the bar at "
                         f"{_step(r['step'])} [{_step(r['ci'][0])}, {_step(r['ci'][1])}]{beats}")
        self.query_one("#ls-footing", Static).update("\n".join(lines))

    def action_next_property(self) -> None:
        if self.props:
            self.prop = self.props[(self.props.index(self.prop) + 1) % len(self.props)]
            self.fill()

    def action_next_source(self) -> None:
        if self.prop is None:
            return
        srcs = [k for k, v in self.report["layer_step"][self.prop]["sources"].items() if len(v["mean"]) > 1]
        self.source = srcs[(srcs.index(self.source) + 1) % len(srcs)] if self.source in srcs else "probe"
        self.fill()

    def action_jump(self) -> None:
        if self.prop is None:
            self.dismiss(None)
            return
        t = self.query_one("#ls-grid", DataTable)
        d, _ = self._data()
        row, col = t.cursor_coordinate.row, t.cursor_coordinate.column
        layer = d["layers"][row] if row < len(d["layers"]) else self.at_layer
        self.dismiss((layer, max(0, col - 1)))

    def action_close(self) -> None:
        self.dismiss(None)
