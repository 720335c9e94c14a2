"""The prompt browser: the prompt table and its search box."""

from __future__ import annotations

from textual.widgets import DataTable, Input


class PromptTable(DataTable):
    """index, split, prompt, seed, cached; filtered by the search box."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.add_column("idx", key="idx", width=5)
        self.add_column("split", key="split", width=5)  # before the prompt: long prompts push later columns off
        self.add_column("prompt", key="prompt")
        self.add_column("seed", key="seed", width=10)
        self.add_column("✓", key="cached", width=2)

    def fill(self, prompts, cached: set[int], query: str = "") -> None:
        q = query.lower().strip()
        self.clear()
        for p in prompts:
            if q and q not in p.prompt.lower() and q != str(p.index):
                continue
            self.add_row(str(p.index), p.split or "", p.prompt, str(p.seed), "✓" if p.index in cached else "",
                         key=str(p.index))


class SearchBox(Input):
    pass
