"""``ldm-explore toyworld``: train, evaluate and sample the embedded toyworld bundle, write its prompt file."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from ..toyworld import DEFAULT_STEPS, STAGES
from .common import at_least_one


def add_parsers(sub) -> dict:
    tw = sub.add_parser("toyworld", help="train and evaluate the embedded toyworld bundle")
    tws = tw.add_subparsers(dest="tw_command", metavar="ACTION", required=True)
    p = tws.add_parser("train", help="train the bundle's models (resumable; checkpoints in --workdir)")
    p.add_argument("--stage", action="append", choices=list(STAGES), help="stage(s) to run, in order (default: all)")
    p.add_argument("--steps", action="append", default=None, metavar="[STAGE=]N",
                   help="target steps: N for the chosen stage(s), or STAGE=N (repeatable), e.g. --steps unet=30000")
    p.add_argument("--batch", action="append", default=None, metavar="[STAGE=]N",
                   help="batch size instead of the stage's own (vae 16 (x4 crops early), estimators 32, classifier 64, "
                        "unet 64, decoder 32): N for the chosen stage(s), or STAGE=N (repeatable); a resumed stage "
                        "may change it, e.g. --batch unet=256 on a large GPU")
    p.add_argument("--cooldown", type=int, default=0, metavar="N",
                   help="the UNet's learning rate falls linearly to 5%% of its value over the last N steps before its "
                        "--steps target (default 0: constant after warm-up); a resumed run keeps to the same schedule")
    p.add_argument("--procs", type=int, default=2, help="processes rendering the training scenes (default 2)")
    p.add_argument("--minutes", type=float, default=None, help="wall-time budget of this invocation; rerun resumes")
    p.add_argument("--n-train", type=int, default=16000, help="training scenes to render (default 16000)")
    p.add_argument("--workdir", default=None, help="checkpoints and data (default: <user cache>/toyworld-train)")
    p.add_argument("--out", default=None, help="bundle folder to export to (default: the shipped bundle)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, cuda:1, mps, cpu")
    p.add_argument("--world", type=int, default=None,
                   help="the scene world to train on (1: the first bundle's, 2: varied camera, floor and backdrop); "
                        "a workdir keeps the world it started with")
    p.add_argument("--init-from", default=None, metavar="BUNDLE",
                   help="start the stages that have no checkpoint yet from this bundle folder's weights "
                        "(fine-tune; e.g. the shipped bundle: `--init-from shipped`)")
    p = tws.add_parser("evaluate", help="the bundle's figures on held-out renders and test prompts")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--n-renders", type=int, default=500)
    p.add_argument("--n-prompts", type=int, default=200)
    p.add_argument("--first-prompt", type=int, default=0, metavar="N",
                   help="the fresh prompts are N, N+1, ... of the evaluation's own sequence (default 0): a later "
                        "evaluation can use prompts no earlier one has seen, e.g. the last before shipping")
    p.add_argument("--bundle-dir", default=None, help="a bundle folder other than the shipped one (e.g. a fresh export)")
    p = tws.add_parser("samples", help="PNG grid of generated test-prompt samples beside their prompts")
    p.add_argument("--out", default="docs/toyworld-samples.png")
    p.add_argument("-n", type=int, default=12)
    p = tws.add_parser("prompts", help="write the bundle's prompt file (CSV with a split column)")
    p.add_argument("--out", required=True)
    p.add_argument("-n", type=int, default=800)
    return {"toyworld": run}


def run(args) -> int:
    if args.tw_command == "train":
        return _train(args)
    at_least_one(args, *{"prompts": ["-n"], "samples": ["-n"], "evaluate": ["--n-renders", "--n-prompts"]}
                 [args.tw_command])
    from ..bundles import toyworld_dir

    if args.tw_command == "prompts":
        from ..toyworld.train import write_prompt_file

        print(write_prompt_file(Path(args.out), args.n))
        return 0
    if args.tw_command == "samples":
        from ..toyworld.train import sample_grid

        print(sample_grid(toyworld_dir(), Path(args.out), args.n))
        return 0
    import json

    from ..toyworld.evaluate import evaluate

    say = (lambda m: None) if args.json else (lambda m: print(f"... {m}", file=sys.stderr))
    if args.first_prompt < 0:
        raise UserError(f"--first-prompt {args.first_prompt}: must be at least 0")
    res = evaluate(Path(args.bundle_dir) if args.bundle_dir else toyworld_dir(), args.n_renders, args.n_prompts,
                   progress=say, first_prompt=args.first_prompt)
    if args.json:
        print(json.dumps(res))
    else:
        ci = res.pop("ci95")
        for k, v in res.items():
            if isinstance(v, dict):  # depth by floor: "checker 0.9500 (n 114), ..."
                v = ", ".join(f"{f} {x['mean']:.4f} (n {x['n']})" for f, x in v.items())
            line = f"{k:24s} {v:.4f}" if isinstance(v, float) else f"{k:24s} {v}"
            print(line + (f"  95% interval {ci[k][0]:.4f}-{ci[k][1]:.4f}" if k in ci else ""))
    return 0


def _train(args) -> int:
    at_least_one(args, "--procs", "--n-train")
    if args.cooldown < 0:
        raise UserError(f"--cooldown {args.cooldown}: must be at least 0")
    if args.minutes is not None and args.minutes <= 0:
        raise UserError(f"--minutes {args.minutes:g}: must be more than 0")
    stages = args.stage or list(STAGES)
    steps = _per_stage(args.steps, "--steps", stages, "steps", least=0)
    batch = _per_stage(args.batch, "--batch", stages, "stages with a batch", least=1)
    from ..bundles import toyworld_dir
    from ..pipeline.loading import pick_device
    from ..toyworld import train as T

    init = None if args.init_from is None else toyworld_dir() if args.init_from == "shipped" else Path(args.init_from)
    T.run(Path(args.workdir) if args.workdir else None, stages, steps or None, args.minutes, args.n_train,
          procs=args.procs, out=Path(args.out) if args.out else None, device=str(pick_device(args.device)),
          world=args.world, init_from=init, batch=batch or None, cooldown=args.cooldown)
    return 0


def _per_stage(items, flag: str, stages: list[str], what: str, least: int) -> dict[str, int]:
    """``[STAGE=]N`` items: N for the named stage, or for every chosen stage that trains."""
    out = {}
    for item in items or []:
        stage, _, n = item.rpartition("=")
        if stage and stage not in DEFAULT_STEPS:
            raise UserError(f"{flag} {item}: no stage '{stage}' ({what}: {', '.join(DEFAULT_STEPS)})")
        if not n.isdigit():
            raise UserError(f"{flag} {item}: '{n}' is not a whole number")
        if int(n) < least:
            raise UserError(f"{flag} {item}: must be at least {least}")
        out.update({stage: int(n)} if stage else {st: int(n) for st in stages if st in DEFAULT_STEPS})
    return out
