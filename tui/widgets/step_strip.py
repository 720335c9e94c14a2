"""The step strip: where you are among all steps."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


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
