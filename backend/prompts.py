"""Prompt files: the anchors' CSV (``prompts,seeds,prompt_inds``), the paper's column names, plain text.

>>> ps = PromptSet.read("test_split_prompts_seeds.csv")   # doctest: +SKIP
>>> ps[0].index, ps[0].prompt, ps[0].seed                  # doctest: +SKIP

Every problem raises :class:`~ldm_explore.backend.errors.PromptFileError` naming file, line and field.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from .errors import PromptFileError

SEED_MAX = 2**32 - 1  # numpy and torch both accept this range; the anchors' seeds are < 1e8

# canonical field -> accepted header spellings (compared after lower-casing and folding ' ' / '-' to '_')
_ALIASES = {
    "prompt": ("prompts", "prompt", "text", "caption"),
    "seed": ("seeds", "seed"),
    "index": ("prompt_inds", "prompt_ind", "prompt_index", "prompt_indices", "index", "idx", "id"),
    "split": ("split", "splits", "subset"),
}


@dataclass(frozen=True)
class Prompt:
    index: int
    prompt: str
    seed: int
    split: str | None = None
    line: int | None = field(default=None, compare=False)  # where it stands in its file (1-based), for messages
    seed_no: int = 0  # which of the prompt's seeds this is (0: the file's seed; see :func:`with_seeds`)

    def to_dict(self) -> dict:
        return {"index": self.index, "prompt": self.prompt, "seed": self.seed, "split": self.split}

    @property
    def run_id(self) -> str:
        """The run's identity within an experiment: prompt index and seed number."""
        return f"{self.index}:{self.seed_no}"


SEED_STRIDE = 1_000_003  # a prime: the k-th seed of a prompt is its file's seed + k * SEED_STRIDE (mod 2**32)


def with_seeds(prompts, k: int) -> list[Prompt]:
    """Each prompt at ``k`` seeds, the prompt's runs together: the file's seed, then ``seed + j * SEED_STRIDE``
    (mod 2**32) for j = 1 .. k-1. The split stays the prompt's, so no prompt's seeds straddle train and test."""
    import dataclasses

    return [dataclasses.replace(p, seed=(p.seed + j * SEED_STRIDE) % (SEED_MAX + 1), seed_no=j)
            for p in prompts for j in range(k)]


def derive_seed(prompt: str) -> int:
    """The seed of a plain-text prompt: stable under edits elsewhere in the file."""
    return int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:4], "big")


class PromptSet(Sequence[Prompt]):
    """An ordered, validated list of prompts with unique indices."""

    def __init__(self, prompts: Sequence[Prompt], path: str | None = None, fmt: str = "memory"):
        self._prompts = list(prompts)
        self.path = path
        self.format = fmt
        self._by_index = {p.index: p for p in self._prompts}

    # Sequence protocol
    def __len__(self) -> int:
        return len(self._prompts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return PromptSet(self._prompts[i], self.path, self.format)
        return self._prompts[i]

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self._prompts)

    def by_index(self, index: int) -> Prompt:
        return self._by_index[index]

    def splits(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self._prompts:
            out[p.split or "-"] = out.get(p.split or "-", 0) + 1
        return out

    def select(self, split: str | None = None, limit: int | None = None) -> "PromptSet":
        ps = [p for p in self._prompts if split is None or p.split == split]
        if split is not None and not ps:
            have = ", ".join(sorted(k for k in self.splits() if k != "-")) or "none"
            raise PromptFileError(self.path or "<prompts>", f"no prompts in split '{split}' (splits: {have})")
        return PromptSet(ps[:limit] if limit else ps, self.path, self.format)

    def per_split(self, n: int) -> "PromptSet":
        """The first ``n`` prompts of each split, train, val and test in that order."""
        keep = []
        for split in ("train", "val", "test"):
            keep += [p for p in self._prompts if p.split == split][:n]
        return PromptSet(keep, self.path, self.format)

    @classmethod
    def read(cls, path: str | Path) -> "PromptSet":
        path = Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise PromptFileError(path, "no such file") from None
        except IsADirectoryError:
            raise PromptFileError(path, "is a directory, not a prompt file") from None
        except OSError as e:
            raise PromptFileError(path, f"cannot read: {e.strerror}") from None
        text = _decode(path, raw)
        if not text.strip():
            raise PromptFileError(path, "empty file: no prompts")
        if path.suffix.lower() in (".csv", ".tsv") or _looks_like_csv(text):
            prompts, fmt = _read_csv(path, text), "csv"
        else:
            prompts, fmt = _read_text(path, text), "text"
        if not prompts:
            raise PromptFileError(path, "empty file: no prompts")
        return cls(prompts, str(path), fmt)


def read_prompts(path: str | Path, test: str | Path | None = None, val_every: int = 5) -> PromptSet:
    """Read and validate a prompt file (see :meth:`PromptSet.read`), or, given ``test``, a train file and a test
    file as the studies published them (see :func:`read_split_files`)."""
    return PromptSet.read(path) if test is None else read_split_files(path, test, val_every)


def read_split_files(train: str | Path, test: str | Path, val_every: int = 5) -> PromptSet:
    """A train file and a test file (the studies' two CSVs, as they are) as one PromptSet with splits: the test
    file is the test split; sorted by prompt index, every ``val_every``-th prompt of the train file (the 5th,
    10th, ...) is the validation split, the rest train. The same prompt index in both files is an error."""
    import dataclasses

    tr, te = PromptSet.read(train), PromptSet.read(test)
    for path, ps in ((train, tr), (test, te)):
        have = {k for k in ps.splits() if k != "-"}
        if have:
            raise PromptFileError(path, f"has a split column ({', '.join(sorted(have))}); give it alone with "
                                        "--prompts, or two files without one", line=1)
    for p in te:
        if p.index in tr._by_index:
            raise PromptFileError(test, f"prompt index {p.index} is also in {train} (line {tr.by_index(p.index).line}): "
                                        "the train and test files must not share prompts", line=p.line)
    ordered = sorted(tr, key=lambda p: p.index)
    val = {p.index for k, p in enumerate(ordered) if (k + 1) % val_every == 0}
    prompts = [dataclasses.replace(p, split="val" if p.index in val else "train") for p in tr]
    prompts += [dataclasses.replace(p, split="test") for p in te]
    return PromptSet(prompts, f"{train} + {test}", "csv")


def _decode(path: Path, raw: bytes) -> str:
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw  # a BOM is fine
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        line = body[: e.start].count(b"\n") + 1
        col = e.start - (body.rfind(b"\n", 0, e.start) + 1) + 1
        raise PromptFileError(
            path, f"column {col}: byte 0x{body[e.start]:02x} is not valid UTF-8 (save the file as UTF-8)", line=line
        ) from None


def _norm(h: str) -> str:
    return h.strip().lower().replace(" ", "_").replace("-", "_")


def _looks_like_csv(text: str) -> bool:
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    cols = {_norm(c) for c in first.split(",")}
    return any(a in cols for a in _ALIASES["prompt"]) and any(a in cols for a in _ALIASES["seed"])


def _read_csv(path: Path, text: str) -> list[Prompt]:
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        header = next(reader)
    except StopIteration:
        raise PromptFileError(path, "empty file: no prompts") from None
    except csv.Error as e:
        raise PromptFileError(path, f"malformed CSV: {e}", line=1) from None
    cols: dict[str, int] = {}
    normed = [_norm(h) for h in header]
    for field, names in _ALIASES.items():
        for i, h in enumerate(normed):
            if h in names:
                cols[field] = i
                break
    for field in ("prompt", "seed"):
        if field not in cols:
            want = " or ".join(repr(n) for n in _ALIASES[field][:2])
            raise PromptFileError(path, f"missing column {want} (header is: {','.join(header)})", line=1, field=field)
    prompts: list[Prompt] = []
    seen: dict[int, int] = {}
    prev_end = reader.line_num
    row_no = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise PromptFileError(path, f"malformed CSV: {e}", line=prev_end + 1) from None
        line = prev_end + 1
        prev_end = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue  # blank line
        row_no += 1
        need = max(cols.values()) + 1
        if len(row) < need:
            missing = [f for f, i in cols.items() if i >= len(row)][0]
            raise PromptFileError(path, f"row has {len(row)} fields, the header {len(header)}", line=line, field=missing)
        prompt = row[cols["prompt"]]
        if not prompt.strip():
            raise PromptFileError(path, "empty prompt", line=line, field=header[cols["prompt"]])
        seed = _parse_int(path, row[cols["seed"]], line, header[cols["seed"]], 0, SEED_MAX)
        if "index" in cols:
            index = _parse_int(path, row[cols["index"]], line, header[cols["index"]], 0, None)
        else:
            index = row_no - 1
        if index in seen:
            raise PromptFileError(
                path, f"duplicate prompt index {index} (first on line {seen[index]})", line=line,
                field=header[cols.get("index", 0)] if "index" in cols else "index",
            )
        seen[index] = line
        split = row[cols["split"]].strip() or None if "split" in cols else None
        prompts.append(Prompt(index, prompt, seed, split, line))
    return prompts


def _parse_int(path, value: str, line: int, field: str, lo: int, hi: int | None) -> int:
    v = value.strip()
    try:
        n = int(v)
    except ValueError:
        try:  # "123.0" as pandas writes it is an integer too
            f = float(v)
            if not f.is_integer():
                raise ValueError
            n = int(f)
        except (ValueError, OverflowError):
            raise PromptFileError(path, f"{value!r} is not an integer", line=line, field=field) from None
    if n < lo or (hi is not None and n > hi):
        rng = f"{lo} to {hi}" if hi is not None else f">= {lo}"
        raise PromptFileError(path, f"{n} is out of range ({rng})", line=line, field=field)
    return n


def _read_text(path: Path, text: str) -> list[Prompt]:
    prompts = []
    for i, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        prompts.append(Prompt(i, s, derive_seed(s), None, i))
    return prompts
