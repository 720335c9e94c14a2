"""The ``ldm-explore`` command: the explorer (no sub-command) and the batch CLI.

Every user error ends as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UserError


def _at_least_one(args, *flags: str) -> None:
    """A count given on the command line (``--batch-size``, ``-n``) below 1 is a one-line error naming the flag."""
    for flag in flags:
        v = getattr(args, flag.lstrip("-").replace("-", "_"))
        if v is not None and v < 1:
            raise UserError(f"{flag} {v}: must be at least 1")


def _add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, metavar="PATH|HUB_ID",
                   help="'toyworld', a diffusers StableDiffusionPipeline folder, or a hub id (hub ids come from "
                        "the local cache only)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, cuda:1, mps, cpu")
    p.add_argument("--dtype", default="auto", help="auto (fp16 on GPU, fp32 on CPU), fp16, bf16, fp32")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="ldm-explore",
        description="What does a latent diffusion model know about a scene while it is still noise?",
    )
    ap.add_argument("--bundle", default="toyworld", help="explorer: model bundle (default toyworld)")
    ap.add_argument("--model", default=None, metavar="PATH", help="explorer: a toyworld-shaped pipeline folder")
    ap.add_argument("--prompts", default=None, metavar="FILE", help="explorer: prompt file (default: the bundle's)")
    ap.add_argument("--cache", default=None, metavar="DIR", help="run store folder (default: the user cache dir)")
    ap.add_argument("--device", default="cpu", help="explorer: cpu (default), cuda, mps")
    ap.add_argument("--renderer", default="auto", choices=["auto", "halfcell", "sixel", "tgp", "unicode"],
                    help="explorer: image rendering (auto: Kitty/Sixel graphics where the terminal speaks them)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("prompts", help="validate a prompt file and list its first rows")
    p.add_argument("file", help="CSV (prompts,seeds,prompt_inds or prompt,seed,prompt index) or text, one per line")
    p.add_argument("-n", "--head", type=int, default=5, help="rows to show (default 5)")

    p = sub.add_parser("layers", help="list a UNet's self-attention layers with Table-1 names and sizes")
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("generate", help="generate prompts with recording into the run store (resumable)")
    _add_model_args(p)
    p.add_argument("--prompts", required=True, metavar="FILE", help="prompt file")
    p.add_argument("--layers", nargs="*", default=[], metavar="LAYER",
                   help="module paths or glob patterns whose activations to keep; 'self-attention' = every "
                        "*attn1.to_out.0 (default: keep none)")
    p.add_argument("--steps", type=int, default=15, help="denoising steps (default 15)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    p.add_argument("--scheduler", default=None, help="ddim, pndm, euler, dpm, ddpm (default: the pipeline's own)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--half", default="cond", choices=["cond", "uncond", "both"],
                   help="half of the guidance batch to record (default cond, the text half)")
    p.add_argument("--act-dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                   help="storage dtype of activations (default float16)")
    p.add_argument("--batch-size", type=int, default=1, help="prompts per pipeline call (default 1)")
    p.add_argument("--split", default=None, help="only prompts of this split (prompt files with a split column)")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--cache", default=None, metavar="DIR", help="run store folder (default: the user cache dir)")

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

    p = sub.add_parser("models", help="every model of a bundle: found or missing, and the command that fetches it")
    p.add_argument("--bundle", default="sd14", choices=["sd14", "toyworld"])
    p.add_argument("--hybrid", action="store_true", help="sd14: MiDaS DPT-Hybrid instead of DPT-Large")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", help="export one run's grid PNG, curves PNG and table CSV (as the explorer's 'e')")
    p.add_argument("--bundle", default="toyworld")
    p.add_argument("--prompts", default=None, metavar="FILE", help="prompt file (default: the bundle's)")
    p.add_argument("--prompt-index", type=int, required=True, metavar="N", help="the prompt's index in the file")
    p.add_argument("--layer", default=None, help="probe layer (default: best on validation for depth)")
    p.add_argument("--view", default="xt", choices=["xt", "x0"])
    p.add_argument("--out", default="ldm-explore-export", metavar="DIR")
    p.add_argument("--cache", default=None, metavar="DIR")
    p.add_argument("--device", default="cpu")

    tw = sub.add_parser("toyworld", help="train and evaluate the embedded toyworld bundle")
    tws = tw.add_subparsers(dest="tw_command", metavar="ACTION", required=True)
    p = tws.add_parser("train", help="train the bundle's models (resumable; checkpoints in --workdir)")
    p.add_argument("--stage", action="append", choices=["data", "vae", "estimators", "classifier", "unet", "decoder", "export"],
                   help="stage(s) to run, in order (default: all)")
    p.add_argument("--steps", action="append", default=None, metavar="[STAGE=]N",
                   help="target steps: N for the chosen stage(s), or STAGE=N (repeatable), e.g. --steps unet=30000")
    p.add_argument("--procs", type=int, default=2, help="processes rendering the training scenes (default 2)")
    p.add_argument("--minutes", type=float, default=None, help="wall-time budget of this invocation; rerun resumes")
    p.add_argument("--n-train", type=int, default=16000, help="training scenes to render (default 16000)")
    p.add_argument("--workdir", default=None, help="checkpoints and data (default: <user cache>/toyworld-train)")
    p.add_argument("--out", default=None, help="bundle folder to export to (default: the shipped bundle)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, cuda:1, mps, cpu")
    p = tws.add_parser("evaluate", help="the bundle's figures on held-out renders and test prompts")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--n-renders", type=int, default=500)
    p.add_argument("--n-prompts", type=int, default=200)
    p.add_argument("--bundle-dir", default=None, help="a bundle folder other than the shipped one (e.g. a fresh export)")
    p = tws.add_parser("samples", help="PNG grid of generated test-prompt samples beside their prompts")
    p.add_argument("--out", default="docs/toyworld-samples.png")
    p.add_argument("-n", type=int, default=12)
    p = tws.add_parser("prompts", help="write the bundle's prompt file (CSV with a split column)")
    p.add_argument("--out", required=True)
    p.add_argument("-n", type=int, default=800)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        if args.command is None:
            return _explore(args)
        return {"prompts": cmd_prompts, "layers": cmd_layers, "generate": cmd_generate,
                "toyworld": cmd_toyworld, "experiment": cmd_experiment, "export": cmd_export, "models": cmd_models}[args.command](args)
    except UserError as e:
        print(f"ldm-explore: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ldm-explore: interrupted", file=sys.stderr)
        return 130


def _explore(args) -> int:
    import textual_image.widget  # noqa: F401  (detects the terminal's graphics protocol before the app runs)

    from ldm_explore.tui.app import run_app

    from .session import ExplorerSession

    if args.bundle not in ("toyworld", "sd14"):
        raise UserError(f"--bundle {args.bundle}: choose toyworld or sd14")
    session = ExplorerSession(bundle=args.bundle, model=args.model, prompts=args.prompts, cache=args.cache,
                              device=args.device)
    run_app(session, renderer=args.renderer)
    return 0


def cmd_prompts(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .prompts import PromptSet

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


def cmd_layers(args) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from .generation import load_pipeline
    from .layers import self_attention_layers

    from .bundles import resolve_model

    pipe = load_pipeline(resolve_model(args.model), device="cpu" if args.device == "auto" else args.device,
                         dtype=args.dtype)
    infos = self_attention_layers(pipe.unet)
    if args.json:
        print(json.dumps([{"layer": i.path, "name": i.short, "height": i.height, "width": i.width,
                           "channels": i.channels} for i in infos], indent=1))
        return 0
    t = Table(title=f"{len(infos)} self-attention layers of {args.model}")
    t.add_column("layer", overflow="fold")
    t.add_column("name")
    t.add_column("size (h x w x c)")
    for i in infos:
        t.add_row(i.path, i.short, i.size)
    Console().print(t)
    return 0


def resolve_layers(unet, patterns: list[str]) -> tuple[str, ...]:
    from .recorder import SELF_ATTENTION_PATTERN, match_layers

    pats = [SELF_ATTENTION_PATTERN if p in ("self-attention", "all") else p for p in patterns]
    return tuple(match_layers(unet, pats)) if pats else ()


def cmd_generate(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ldm_explore.cache.store import RunStore

    from .generation import GenerationSettings, load_pipeline
    from .prompts import PromptSet
    from .runner import generate_into_store

    _at_least_one(args, "--steps", "--batch-size", "--limit")
    prompts = PromptSet.read(args.prompts).select(args.split, args.limit)
    store = RunStore(args.cache, on_corrupt=lambda m: Console(stderr=True).print(f"[yellow]warning:[/] {m}"))
    from .bundles import resolve_model

    pipe = load_pipeline(resolve_model(args.model), args.device, args.dtype, args.scheduler)
    settings = GenerationSettings(steps=args.steps, guidance=args.guidance, height=args.height, width=args.width,
                                  scheduler=args.scheduler, half=args.half, act_dtype=args.act_dtype,
                                  layers=resolve_layers(pipe.unet, args.layers))
    con = Console(stderr=True)
    import signal

    # Ctrl-C stops at the next denoising step, never inside a store write (an interrupt raised inside a
    # C extension can be swallowed; a flag checked between steps cannot)
    stop = {"asked": False}

    def on_sigint(sig, frame):
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True

    signal.signal(signal.SIGINT, on_sigint)

    def step(i, n):
        if stop["asked"]:
            raise KeyboardInterrupt
        prog.update(steps, completed=i + 1, total=n)

    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn()]
    with Progress(*cols, console=con, transient=False) as prog:
        runs = prog.add_task("runs", total=len(prompts))
        steps = prog.add_task("steps", total=args.steps)
        stats = generate_into_store(
            pipe, prompts, settings, store, batch_size=args.batch_size,
            on_run=lambda n: prog.update(runs, advance=n),
            on_step=step,
        )
    if stop["asked"]:
        raise KeyboardInterrupt
    con.print(f"{len(prompts)} runs: {stats['generated']} generated, {stats['cached']} already stored "
              f"in {store.root}")
    return 0


def cmd_experiment(args) -> int:
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ldm_explore.cache.store import RunStore

    from .bundles import load_bundle
    from .experiment import Config, Experiment
    from .layers import self_attention_layers
    from .prompts import PromptSet
    from .report import write_report

    from .distributed import Dist

    _at_least_one(args, "--steps", "--batch-size", "--per-split")
    con = Console(stderr=True)
    dist = Dist()
    device = str(dist.state.device) if dist.state is not None and args.device == "auto" else args.device
    b = load_bundle(args.bundle, device=device)
    store = RunStore(args.cache, on_corrupt=lambda m: con.print(f"[yellow]warning:[/] {m}"))
    ps = PromptSet.read(args.prompts or b.prompts)
    if args.per_split:
        keep = []
        for split in ("train", "val", "test"):
            keep += [q for q in ps if q.split == split][: args.per_split]
        ps = PromptSet(keep, ps.path, ps.format)
    layers = resolve_layers(b.pipe.unet, args.layers) if args.layers else b.layers
    out = Path(args.out or f"report-{args.bundle}")
    cfg = Config(steps=args.steps, guidance=args.guidance, view=args.view, batch=args.batch_size,
                 baselines=not args.no_baselines)
    main_process = dist.main
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*cols, console=con, disable=not main_process) as prog:
        tasks = {}

        def progress(stage, done, total):
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=done, total=total)

        ex = Experiment(b, ps, out, store, layers, cfg, progress)
        probes = ex.fit()
        rows = ex.evaluate(probes)
    if not ex.dist.main:  # the main process writes the report from every process's rows
        return 0
    rows.sort(key=lambda r: r["index"])
    names = {i.path: i.short for i in self_attention_layers(b.pipe.unet)}
    names["vae-latent"] = "VAE latent x_t"
    names["spatial-prior"] = "spatial prior (train mean map)"
    summary = write_report(out, rows, probes, names, {
        "bundle": b.name, "prompts": str(ps.path), "splits": ps.splits(), "steps": args.steps,
        "guidance": args.guidance, "view": args.view, "layers": list(layers)})
    con.print(f"report written to {out}/ (summary.md, metrics.csv, curves-*.png, heatmap-*.png)")
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "meta"}))
    else:
        print((out / "summary.md").read_text())
    return 0


def cmd_models(args) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    if args.bundle == "sd14":
        from .sd14 import inventory

        rows = [m.__dict__ for m in inventory(args.hybrid)]
    else:
        from .bundles import toyworld_dir

        d = toyworld_dir()
        rows = [{"role": role, "name": name, "found": (d / f).exists(), "where": str(d / f),
                 "fetch": "shipped with ldm-explore (retrain: ldm-explore toyworld train)", "note": ""}
                for role, name, f in [("pipeline", "toyworld tiny SD", "pipeline/model_index.json"),
                                      ("mask, depth, shading", "toyworld estimators", "estimators.safetensors"),
                                      ("classifier", "toyworld classifier", "classifier.safetensors"),
                                      ("probes", "fitted probes", "probes.safetensors")]]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.markup import escape

    t = Table(title=f"models of the {args.bundle} bundle")
    for c in ("role", "model", "status", "fetch with"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(escape(r["role"]), escape(r["name"] + (f" ({r['note']})" if r.get("note") else "")),
                  "[green]found[/]" if r["found"] else "[red]missing[/]", "" if r["found"] else escape(r["fetch"]))
    Console().print(t)
    return 0


def cmd_export(args) -> int:
    from .analysis import export
    from .session import ExplorerSession

    s = ExplorerSession(bundle=args.bundle, prompts=args.prompts, cache=args.cache, device=args.device)
    ps = s.read_prompts()
    try:
        prompt = ps.by_index(args.prompt_index)
    except KeyError:
        raise UserError(f"{ps.path}: no prompt with index {args.prompt_index}") from None
    s.load()
    a = s.open(prompt) or s.run(prompt)
    layer = args.layer
    if layer is None and a.layers:
        import numpy as np

        layer = max(a.layers, key=lambda x: float(np.mean(a.probes.val_r2[x][:, 1])))
    elif layer is not None and layer not in a.layers:
        raise UserError(f"--layer {layer}: no fitted probe for it (fitted: {', '.join(a.layers) or 'none'})")
    for f in export(a, Path(args.out), layer, args.view):
        print(f)
    return 0


def cmd_toyworld(args) -> int:
    import json

    from . import toyworld_train as T

    if args.tw_command == "train":
        _at_least_one(args, "--procs", "--n-train")
        if args.minutes is not None and args.minutes <= 0:
            raise UserError(f"--minutes {args.minutes:g}: must be more than 0")
        stages = args.stage or list(T.STAGES)
        steps = {}
        for item in args.steps or []:
            stage, _, n = item.rpartition("=")
            if stage and stage not in T.DEFAULT_STEPS:
                raise UserError(f"--steps {item}: no stage '{stage}' (stages with steps: "
                                f"{', '.join(T.DEFAULT_STEPS)})")
            if not n.isdigit():
                raise UserError(f"--steps {item}: '{n}' is not a whole number of steps")
            steps.update({stage: int(n)} if stage else {st: int(n) for st in stages if st in T.DEFAULT_STEPS})
        out = Path(args.out) if args.out else None
        from .generation import pick_device

        T.run(Path(args.workdir) if args.workdir else None, stages, steps or None, args.minutes, args.n_train,
              procs=args.procs, out=out or T.tw.BUNDLE_DIR, device=str(pick_device(args.device)))
        return 0
    _at_least_one(args, *{"prompts": ["-n"], "samples": ["-n"], "evaluate": ["--n-renders", "--n-prompts"]}
                  [args.tw_command])
    if args.tw_command == "prompts":
        print(T.write_prompt_file(Path(args.out), args.n))
        return 0
    if args.tw_command == "samples":
        print(T.sample_grid(T.tw.BUNDLE_DIR, Path(args.out), args.n))
        return 0
    from .toyworld_eval import evaluate

    say = (lambda m: None) if args.json else (lambda m: print(f"... {m}", file=sys.stderr))
    res = evaluate(Path(args.bundle_dir) if args.bundle_dir else T.tw.BUNDLE_DIR, args.n_renders, args.n_prompts,
                   progress=say)
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:24s} {v:.4f}" if isinstance(v, float) else f"{k:24s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
