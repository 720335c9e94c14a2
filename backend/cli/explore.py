"""The explorer (``ldm-explore`` with no command) and ``ldm-explore export``, the explorer's export without it."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError


def add_root_args(ap) -> None:
    ap.add_argument("--bundle", default="toyworld", help="explorer: model bundle (default toyworld)")
    ap.add_argument("--model", default=None, metavar="PATH", help="explorer: a toyworld-shaped pipeline folder")
    ap.add_argument("--prompts", default=None, metavar="FILE", help="explorer: prompt file (default: the bundle's)")
    ap.add_argument("--cache", default=None, metavar="DIR", help="run store folder (default: the user cache dir)")
    ap.add_argument("--device", default="auto", help="explorer: auto (cuda, then mps, then cpu), cuda, mps, cpu")
    ap.add_argument("--probes", default=None, metavar="FILE",
                    help="explorer: fitted probes (default: those an experiment published for the model, else the "
                         "bundle's own)")
    ap.add_argument("--renderer", default="auto", choices=["auto", "halfcell", "sixel", "tgp", "unicode"],
                    help="explorer: image rendering (auto: Kitty/Sixel graphics where the terminal speaks them)")


def add_parsers(sub) -> dict:
    p = sub.add_parser("export", help="export runs' grid PNG, curves PNG, table CSV and denoising GIF (as the "
                                      "explorer's 'e'): one prompt, a split, or all; resumable")
    p.add_argument("--bundle", default="toyworld")
    p.add_argument("--prompts", default=None, metavar="FILE", help="prompt file (default: the bundle's)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--prompt-index", type=int, metavar="N", help="the prompt's index in the file")
    which.add_argument("--split", choices=["train", "val", "test"], help="every prompt of a split")
    which.add_argument("--all", action="store_true", help="every prompt of the file")
    p.add_argument("--layer", default=None, help="probe layer (default: best on validation for depth)")
    p.add_argument("--view", default="xt", choices=["xt", "x0"])
    p.add_argument("--out", default="ldm-explore-export", metavar="DIR")
    p.add_argument("--cache", default=None, metavar="DIR")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, mps, cpu")
    return {"export": run_export}


def run_explorer(args) -> int:
    import textual_image.widget  # noqa: F401  (detects the terminal's graphics protocol before the app runs)

    from ldm_explore.tui.app import run_app

    from ..explore.session import ExplorerSession

    if args.bundle not in ("toyworld", "sd14"):
        raise UserError(f"--bundle {args.bundle}: choose toyworld or sd14")
    session = ExplorerSession(bundle=args.bundle, model=args.model, prompts=args.prompts, cache=args.cache,
                              device=args.device, probes=args.probes)
    run_app(session, renderer=args.renderer)
    return 0


def run_export(args) -> int:
    from ..explore.export import export, exported
    from ..explore.session import ExplorerSession

    s = ExplorerSession(bundle=args.bundle, prompts=args.prompts, cache=args.cache, device=args.device)
    ps = s.read_prompts()
    if args.prompt_index is not None:
        try:
            prompts = [ps.by_index(args.prompt_index)]
        except KeyError:
            raise UserError(f"{ps.path}: no prompt with index {args.prompt_index}") from None
    else:
        prompts = list(ps.select(args.split) if args.split else ps)
    out = Path(args.out)
    todo = [p for p in prompts if not exported(out, p, args.view)]
    if len(prompts) > 1 and len(todo) < len(prompts):
        print(f"{len(prompts) - len(todo)} of {len(prompts)} prompts already exported in {out}/: skipped", file=sys.stderr)
    if not todo:
        return 0
    s.load()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("export"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), disable=len(todo) == 1) as prog:
        task = prog.add_task("export", total=len(todo))
        for prompt in todo:
            a = s.open(prompt) or s.run(prompt)
            layer = args.layer
            if layer is None and a.layers:
                layer = a.default_layer
            elif layer is not None and layer not in a.layers:
                raise UserError(f"--layer {layer}: no fitted probe for it (fitted: {', '.join(a.layers) or 'none'})")
            for f in export(a, out, layer, args.view):
                if len(todo) == 1:
                    print(f)
            prog.advance(task)
    if len(todo) > 1:
        print(f"{len(todo)} prompts exported into {out}/")
    return 0
