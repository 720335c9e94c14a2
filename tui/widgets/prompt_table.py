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

    _marks: dict[str, str] = {}  # the rows the table holds, in order (row key -> its ✓ cell); replaced, never mutated

    def fill(self, prompts, cached: set[int], query: str = "") -> None:
        """Show the prompts the query matches, ✓ on those in ``cached``. When the rows shown stay the same (a
        run was stored, the models loaded) only the ✓ cells that changed are updated: the cursor stays, and
        a refill of 800 rows (every cell measured again, about a second on a slow CPU) is not paid per run."""
        q = query.lower().strip()
        rows = [p for p in prompts if not q or q in p.prompt.lower() or q == str(p.index)]
        marks = {str(p.index): "✓" if p.index in cached else "" for p in rows}
        if list(marks) == list(self._marks) and self.row_count == len(marks):
            for k, m in marks.items():
                if self._marks[k] != m:
                    self.update_cell(k, "cached", m)
        else:
            self.clear()
            for p, (k, m) in zip(rows, marks.items()):
                self.add_row(str(p.index), p.split or "", p.prompt, str(p.seed), m, key=k)
        self._marks = marks


class SearchBox(Input):
    pass
