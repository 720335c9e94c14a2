"""An experiment's progress on disk, ``<out>/checkpoint/``, so an interrupted run resumes without redoing
finished runs:

    configuration.json                                 what the statistics and rows were made with
    stats-<split>-<kind>[-rank<r>of<n>].safetensors   probe statistics of the runs done so far (per kind:
                                                       real, and each baseline), and in the same file the
                                                       ids ("<prompt index>:<seed number>") of those runs
    test-rows[-rank<r>of<n>].jsonl                     one line of scores per finished test run

(Checkpoints written before the files recorded their runs kept them in ``stats-<split>-done.json`` as
prompt indices; they are read as seed number 0.)

Files are per process when several run one experiment, so a resumed run needs the same number of processes.
Every write is atomic (written beside, then renamed; the rows file is appended and flushed line by line).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..probing.stats import ProbeStats


def _short(v) -> str:
    s = json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."


class Checkpoint:
    def __init__(self, folder: Path, rank: int = 0, world: int = 1):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.suffix = f"-rank{rank}of{world}" if world > 1 else ""

    # --- configuration ---------------------------------------------------------------------------
    def guard(self, config: dict, defaults: dict | None = None) -> None:
        """Record the configuration of the runs the checkpoint will hold; refuse to resume one made with another
        (its statistics would be merged with the new runs'), naming what differs. A key an older checkpoint
        does not record counts as its value in ``defaults`` (what that version always did)."""
        from ..errors import UserError

        f = self.folder / "configuration.json"
        want = json.loads(json.dumps(config))
        if f.exists():
            have = json.loads(f.read_text())
            have = {**(defaults or {}), **have}
            diff = [k for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k) and k != "ldm_explore"]
            if diff:
                what = "; ".join(f"{k} {_short(have.get(k))} -> {_short(want.get(k))}" for k in diff)
                raise UserError(f"{self.folder.parent}: made with another configuration ({what}); choose another "
                                f"--out, or --fresh to start this one over")
            return
        if any(self.folder.iterdir()):
            raise UserError(f"{self.folder}: a checkpoint without its configuration (an older version made it); "
                            f"--fresh starts over")
        tmp = f.with_suffix(".tmp")
        tmp.write_text(json.dumps(want, indent=1))
        tmp.replace(f)

    def clear(self) -> None:
        """Start over (``--fresh``): the statistics, test rows and configuration go."""
        import shutil

        shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)

    # --- probe statistics ------------------------------------------------------------------------
    def stats_file(self, split: str, kind: str) -> Path:
        return self.folder / f"stats-{split}-{kind}{self.suffix}.safetensors"

    def _done_file(self, split: str) -> Path:
        return self.folder / f"stats-{split}-done{self.suffix}.json"

    def load_stats(self, split: str, kinds: tuple[str, ...], props: tuple[str, ...], device="cpu") -> tuple[dict, set]:
        """Statistics per kind (on ``device``) and the ids of the runs they hold, which each statistics file
        records itself. The first kind is always there; a later kind whose file is missing, or holds other runs
        (a kill between two files' writes), is left out rather than fitted on part of the runs."""
        from ..errors import UserError

        first = self.stats_file(split, kinds[0])
        done: set = set()
        if first.exists():
            runs = ProbeStats.saved_runs(first)
            if runs is None:  # written before the files recorded their runs: the separate list, prompt indices
                f = self._done_file(split)
                runs = [r if isinstance(r, str) else f"{r}:0" for r in json.loads(f.read_text())] if f.exists() else []
            done = set(runs)
        st = {}
        for k in kinds:
            path = self.stats_file(split, k)
            if path.exists() and done:
                runs = ProbeStats.saved_runs(path)
                if k != kinds[0] and runs is not None and set(runs) != done:
                    continue
                st[k] = ProbeStats.load(path, device)
                if st[k].images > len(done):
                    raise UserError(f"{path}: holds {st[k].images} runs but records {len(done)}; this checkpoint "
                                    f"cannot be resumed: --fresh starts over")
            elif k == kinds[0] or not done:
                st[k] = ProbeStats(props, device)
        return st, done

    def save_stats(self, split: str, st: dict, done: set) -> int:
        """Write the statistics, each file with the runs it holds; returns the bytes written."""
        size = 0
        for k, s in st.items():
            if s.images:
                s.save(self.stats_file(split, k), runs=done)
                size += self.stats_file(split, k).stat().st_size
        return size

    # --- test rows -------------------------------------------------------------------------------
    @property
    def rows_file(self) -> Path:
        return self.folder / f"test-rows{self.suffix}.jsonl"

    def rows(self) -> list[dict]:
        """The finished test rows (a line cut short by a kill is skipped: its image is scored again)."""
        out = []
        if self.rows_file.exists():
            for line in self.rows_file.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return [r for r in out if "index" in r]
