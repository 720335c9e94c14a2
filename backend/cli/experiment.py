"""``ldm-explore experiment run``: a whole experiment (generate, label, fit probes, evaluate) and its report."""

from __future__ import annotations

from pathlib import Path

from .common import at_least_one


def add_parsers(sub) -> dict:
    ex = sub.add_parser("experiment", help="whole experiments: generate, label, fit probes, evaluate, report")
    exs = ex.add_subparsers(dest="ex_command", metavar="ACTION", required=True)
    p = exs.add_parser("run", help="run (or resume) an experiment and write its report folder")
    p.add_argument("--bundle", default="toyworld", help="model bundle (default toyworld)")
    p.add_argument("--prompts", default=None, metavar="FILE", help="prompt file with a split column, or the train "
                   "file with --test-prompts (default: the bundle's own)")
    p.add_argument("--test-prompts", default=None, metavar="FILE",
                   help="the test file beside a train file (the studies' two CSVs as they are); validation is every "
                        "fifth train prompt by index")
    p.add_argument("--model", default=None, metavar="PATH|HUB_ID",
                   help="another Stable-Diffusion-family pipeline (SD 1.x, 2.x; a folder or a cached hub id), judged "
                        "by the bundle's estimators and classifier")
    p.add_argument("--scheduler", default=None,
                   help="lms, pndm, ddim, euler, dpm, ddpm (default: the bundle's; LMS for sd14, as the studies)")
    p.add_argument("--height", type=int, default=None, help="image height (default: the model's; 512 for SD v1.4)")
    p.add_argument("--width", type=int, default=None, help="image width (default: the model's)")
    p.add_argument("--layers", nargs="*", default=None, metavar="LAYER",
                   help="module paths or glob patterns (default: every self-attention layer)")
    p.add_argument("--out", default=None, metavar="DIR", help="report folder (default: ./report-<bundle>)")
    p.add_argument("--cache", default=None, metavar="DIR", help="run store folder")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--view", default="xt", choices=["xt", "x0"],
                   help="decoded image the off-the-shelf models see: x_t (the studies) or predicted x0")
    p.add_argument("--per-split", type=int, default=None, metavar="N", help="only the first N prompts of each split")
    p.add_argument("--seeds", type=int, default=1, metavar="K",
                   help="runs per prompt: the file's seed, then seed + k*1000003 (k = 1..K-1); a prompt's seeds stay in "
                        "its split, and intervals resample prompts (default 1)")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines (shuffled UNet, VAE latent, spatial prior)")
    p.add_argument("--keep-activations", action="store_true",
                   help="keep every run with its activations in the run store (the disk it takes is printed first)")
    p.add_argument("--fresh", action="store_true",
                   help="start over: drop the checkpoint in --out (a rerun resumes it only with the same configuration)")
    p.add_argument("--checkpoint-every", type=int, default=20, metavar="N",
                   help="save the probe statistics every N runs (default 20)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    return {"experiment": run}


def run(args) -> int:
    at_least_one(args, "--steps", "--seeds", "--batch-size", "--per-split", "--checkpoint-every")  # before anything loads
    if args.test_prompts and not args.prompts:
        from ..errors import UserError

        raise UserError("--test-prompts FILE goes with --prompts TRAIN_FILE")
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ldm_explore.cache.store import RunStore

    from ..experiment.distributed import Dist
    from ..experiment.engine import Config, run_experiment

    con = Console(stderr=True)
    store = RunStore(args.cache, on_corrupt=lambda m: con.print(f"[yellow]warning:[/] {m}"))
    out = Path(args.out or f"report-{args.bundle}")
    cfg = Config(steps=args.steps, guidance=args.guidance, view=args.view, batch=args.batch_size,
                 baselines=not args.no_baselines, keep_activations=args.keep_activations,
                 checkpoint_every=args.checkpoint_every, height=args.height, width=args.width, fresh=args.fresh,
                 seeds=args.seeds)
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*cols, console=con, disable=not Dist().main) as prog:
        tasks = {}

        def progress(stage, done, total):
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=done, total=total)

        summary = run_experiment(args.bundle, args.prompts, out, layers=args.layers, per_split=args.per_split,
                                 cfg=cfg, device=args.device, progress=progress, store=store,
                                 test_prompts=args.test_prompts, model=args.model, scheduler=args.scheduler,
                                 notify=lambda m: con.print(m, highlight=False, markup=False, soft_wrap=True))
    if summary is None:  # not the main process
        return 0
    con.print(f"report written to {out}/ (summary.md, metrics.csv, curves-*.png, heatmap-*.png)")
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "meta"}))
    else:
        print((out / "summary.md").read_text())
    return 0
