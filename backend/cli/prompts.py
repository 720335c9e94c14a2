"""``ldm-explore prompts FILE``: validate a prompt file and list its first rows."""

from __future__ import annotations


def add_parsers(sub) -> dict:
    p = sub.add_parser("prompts", help="validate a prompt file and list its first rows")
    p.add_argument("file", help="CSV (prompts,seeds,prompt_inds or prompt,seed,prompt index) or text, one per line")
    p.add_argument("-n", "--head", type=int, default=5, help="rows to show (default 5)")
    return {"prompts": run}


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..prompts import PromptSet

    ps = PromptSet.read(args.file)
    con = Console()
    splits = {k: v for k, v in ps.splits().items() if k != "-"}
    extra = f" ({', '.join(f'{k}: {v}' for k, v in splits.items())})" if splits else ""
    con.print(f"{args.file}: {len(ps)} prompts, {ps.format} format{extra}", soft_wrap=True, highlight=False)
    t = Table("index", "seed", *(["split"] if splits else []), "prompt")
    for p in ps[: max(args.head, 0)]:
        t.add_row(str(p.index), str(p.seed), *([p.split or ""] if splits else []), p.prompt)
    con.print(t)
    return 0
