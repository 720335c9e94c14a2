"""The pipeline's commands: ``layers`` (a UNet's self-attention layers) and ``generate`` (runs with
recording into the run store)."""

from __future__ import annotations

from .common import add_model_args, at_least_one


def add_parsers(sub) -> dict:
    p = sub.add_parser("layers", help="list a UNet's self-attention layers with Table-1 names and sizes")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("generate", help="generate prompts with recording into the run store (resumable)")
    add_model_args(p)
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
    return {"layers": run_layers, "generate": run_generate}


def run_layers(args) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from ..bundles import resolve_model
    from ..pipeline.layers import self_attention_layers
    from ..pipeline.loading import load_pipeline

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


def run_generate(args) -> int:
    at_least_one(args, "--steps", "--batch-size", "--limit")  # before anything loads
    import signal

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ldm_explore.cache.store import RunStore

    from ..bundles import resolve_model
    from ..pipeline.generate import GenerationSettings
    from ..pipeline.layers import resolve_layers
    from ..pipeline.loading import load_pipeline
    from ..pipeline.runner import generate_into_store
    from ..prompts import PromptSet

    prompts = PromptSet.read(args.prompts).select(args.split, args.limit)
    store = RunStore(args.cache, on_corrupt=lambda m: Console(stderr=True).print(f"[yellow]warning:[/] {m}"))
    pipe = load_pipeline(resolve_model(args.model), args.device, args.dtype, args.scheduler)
    settings = GenerationSettings(steps=args.steps, guidance=args.guidance, height=args.height, width=args.width,
                                  scheduler=args.scheduler, half=args.half, act_dtype=args.act_dtype,
                                  layers=resolve_layers(pipe.unet, args.layers))
    con = Console(stderr=True)

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
