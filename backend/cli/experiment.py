"""``ldm-explore experiment run``: a whole experiment (generate, label, fit probes, evaluate) and its report."""

from __future__ import annotations

from pathlib import Path

from .common import at_least_one


def add_parsers(sub) -> dict:
    ex = sub.add_parser("experiment", help="whole experiments: generate, label, fit probes, evaluate, report")
    exs = ex.add_subparsers(dest="ex_command", metavar="ACTION", required=True)
    p = exs.add_parser("run", help="run (or resume) an experiment and write its report folder")
    p.add_argument("--bundle", default="toyworld", help="model bundle (default toyworld)")
    p.add_argument("--prompts", default=None, metavar="FILE", help="prompt file with a split column "
                   "(default: the bundle's own)")
    p.add_argument("--layers", nargs="*", default=None, metavar="LAYER",
                   help="module paths or glob patterns (default: every self-attention layer)")
    p.add_argument("--out", default=None, metavar="DIR", help="report folder (default: ./report-<bundle>)")
    p.add_argument("--cache", default=None, metavar="DIR", help="run store folder")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--view", default="xt", choices=["xt", "x0"],
                   help="decoded image the off-the-shelf models see: x_t (the studies) or predicted x0")
    p.add_argument("--per-split", type=int, default=None, metavar="N", help="only the first N prompts of each split")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines (shuffled UNet, VAE latent, spatial prior)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    return {"experiment": run}


def run(args) -> int:
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ldm_explore.cache.store import RunStore

    from ..experiment.distributed import Dist
    from ..experiment.engine import Config, run_experiment

    at_least_one(args, "--steps", "--batch-size", "--per-split")
    con = Console(stderr=True)
    store = RunStore(args.cache, on_corrupt=lambda m: con.print(f"[yellow]warning:[/] {m}"))
    out = Path(args.out or f"report-{args.bundle}")
    cfg = Config(steps=args.steps, guidance=args.guidance, view=args.view, batch=args.batch_size,
                 baselines=not args.no_baselines)
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*cols, console=con, disable=not Dist().main) as prog:
        tasks = {}

        def progress(stage, done, total):
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=done, total=total)

        summary = run_experiment(args.bundle, args.prompts, out, layers=args.layers, per_split=args.per_split,
                                 cfg=cfg, device=args.device, progress=progress, store=store)
    if summary is None:  # not the main process
        return 0
    con.print(f"report written to {out}/ (summary.md, metrics.csv, curves-*.png, heatmap-*.png)")
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "meta"}))
    else:
        print((out / "summary.md").read_text())
    return 0
