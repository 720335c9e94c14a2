"""Sparklines: each property's metric per step, probe and off-the-shelf."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.widgets import Static

from ldm_explore.backend.probing.properties import BY_NAME


class Sparks(Static):
    """One line per property: metric vs step as a sparkline, probe and off-the-shelf."""

    BARS = "▁▂▃▄▅▆▇█"

    def show(self, metrics: dict, current: int) -> None:
        t = Text()
        for prop, d in metrics.items():
            for src, v in d.items():
                t.append(f"{BY_NAME[prop].short[:5]:5s} {'P' if src == 'probe' else 'O'} ")
                for s, x in enumerate(np.nan_to_num(np.asarray(v, float))):
                    ch = self.BARS[int(np.clip(x, 0, 1) * (len(self.BARS) - 1))]
                    t.append(ch, style="reverse" if s == current else "")
                t.append("\n")
        self.update(t, layout=False)  # fixed height (one line per property and source)
