"""The help screen: keys and what the screen shows."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

HELP = """\
[b]ldm-explore[/b]: what the model knows about the scene at each denoising step

  [b]↑ ↓[/b]          choose a prompt         [b]Enter[/b]   run it (cached runs open at once)
  [b]← →[/b]          previous / next step    [b]Home End[/b] first / last step
  [b]/[/b]            search (Esc: back)      [b]v[/b]        decoded x_t / predicted x0
  [b]l[/b]            next probe layer        [b]e[/b]        export grid, curves, table
  [b]s[/b]            settings: steps, guidance, scheduler, seed (a new run; [b]b[/b] goes back to the one before)
  [b]z[/b]            zoom: one property's maps as large as the screen allows (p: property)
  [b]c[/b]            side by side: x_t vs x0, two layers, or two seeds ([b]m[/b] mode), both rows' numbers
  [b]x[/b]            layer x step screen     (the experiment's metric per layer and step; Enter jumps there)
  [b]?[/b]            this help               [b]q[/b]        quit

Top row: the decoded image, then for mask, depth and shading the linear probe's map
(from the layer shown) beside the off-the-shelf model run on the decoded image.
Second row: the final image and its labels (the probes' targets).
Numbers: Dice (mask), Spearman (depth), Pearson (shading) against the final labels;
reaches = first step from which the metric stays >= 90% of the probe's final value (one bar for probe P
and off-the-shelf O: O ends at 1.0 by construction); P>O = first step from which the probe stays above O.
Type a prompt and a seed in the boxes under the table to run your own.
"""


class HelpScreen(ModalScreen):
    BINDINGS = [("escape,q,question_mark", "app.pop_screen", "close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static(HELP)
            yield Button("close", id="help-close")

    def on_button_pressed(self, event) -> None:
        self.app.pop_screen()
