"""``ldm-explore models``: every model of a bundle, found or missing, and the command that fetches it."""

from __future__ import annotations


def add_parsers(sub) -> dict:
    p = sub.add_parser("models", help="every model of a bundle: found or missing, and the command that fetches it")
    p.add_argument("--bundle", default="sd14", choices=["sd14", "toyworld"])
    p.add_argument("--hybrid", action="store_true", help="sd14: MiDaS DPT-Hybrid instead of DPT-Large")
    p.add_argument("--json", action="store_true")
    return {"models": run}


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
    for c in ("role", "model", "status", "fetch with"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(escape(r["role"]), escape(r["name"] + (f" ({r['note']})" if r.get("note") else "")),
                  "[green]found[/]" if r["found"] else "[red]missing[/]", "" if r["found"] else escape(r["fetch"]))
    Console().print(t)
    return 0
