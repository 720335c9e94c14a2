"""``ldm-explore models``: every model of a bundle, found or missing, and the command that fetches it;
``ldm-explore fixture``: a full-size random-weight stand-in for the sd14 bundle's models, built offline."""

from __future__ import annotations


def add_parsers(sub) -> dict:
    p = sub.add_parser("models", help="every model of a bundle: found or missing, and the command that fetches it")
    p.add_argument("--bundle", default="sd14", choices=["sd14", "toyworld"])
    p.add_argument("--hybrid", action="store_true", help="sd14: MiDaS DPT-Hybrid instead of DPT-Large")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("fixture", help="write random-weight models of SD v1.4's (or SD 1.5's, 2.1's) real architecture "
                                       "where the sd14 bundle looks for the real ones, offline")
    p.add_argument("family", choices=["sd14", "sd15", "sd21"],
                   help="sd14: the pipeline, DPT-Large, VGG-16, TRACER-B7; sd15, sd21: the pipeline only")
    p.add_argument("--root", required=True, metavar="DIR",
                   help="folder for the fixture's caches (never your own Hugging Face, torch or carvekit cache)")
    p.add_argument("--only", nargs="+", choices=["pipeline", "depth", "mask", "classifier"], default=None,
                   help="build only these models (default: all)")
    p.add_argument("--small", action="store_true", help="a few channels of the same architectures (tests)")
    return {"models": run, "fixture": run_fixture}


def run_fixture(args) -> int:
    import sys

    from ..bundles import fixture

    parts = tuple(args.only or ("pipeline", "depth", "mask", "classifier"))
    env = fixture.build(args.root, args.family, parts, small=args.small,
                        progress=lambda m: print(f"... {m}", file=sys.stderr, flush=True))
    print(f"# the {args.family} fixture is in {args.root}; point the caches at it with:")
    print(fixture.export_lines(env))
    return 0


def run(args) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    if args.bundle == "sd14":
        from ..bundles.sd14 import inventory

        rows = [m.__dict__ for m in inventory(args.hybrid)]
    else:
        from ..bundles import toyworld_dir

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
    for c in ("role", "model", "status", "where"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(escape(r["role"]), escape(r["name"] + (f" ({r['note']})" if r.get("note") else "")),
                  "[green]found[/]" if r["found"] else "[red]missing[/]", escape(r["where"]) if r["found"] else "")
    Console().print(t)
    missing = [r for r in rows if not r["found"]]
    if missing:  # whole commands, one per line, never wrapped by the table: they are for copying
        print("\nto fetch what is missing:")
        for r in missing:
            print(f"# {r['role']}: {r['name']}\n{r['fetch']}")
    return 0
