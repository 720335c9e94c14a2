"""Peak resident memory and wall time of the whole toyworld experiment (generate, label, fit, evaluate,
report) against the number of prompts. It must stay flat: activations are streamed into per-(layer, step)
statistics and test metrics, so nothing grows with the prompts but the run store on disk.

    python benchmarks/experiment_memory.py [--counts 40 80 160]

Each count is a prefix of the bundle's prompt file taken split by split (60% train, 15% val, 25% test, as
in the file), run in a fresh process with a fresh run store (GNU time's maximum resident set size).
"""

import csv
import sys
import tempfile
from pathlib import Path

from _gnu_time import timed
from ldm_explore.backend.cli import OneLineParser  # argparse's own errors: one line, exit 2


def main():
    ap = OneLineParser()
    ap.add_argument("--counts", type=int, nargs="+", default=[40, 80, 160])
    a = ap.parse_args()
    from ldm_explore.backend.bundles import TOYWORLD_DIR

    rows = list(csv.DictReader(open(TOYWORLD_DIR / "prompts.csv", encoding="utf-8")))
    tmp = Path(tempfile.mkdtemp())
    exe = Path(sys.executable).with_name("ldm-explore")
    print("toyworld experiment, all self-attention layers x 15 steps x 3 properties, baselines included")
    for n in a.counts:
        want = {"train": round(0.6 * n), "val": round(0.15 * n)}
        want["test"] = n - want["train"] - want["val"]
        take = []
        for r in rows:
            if want.get(r["split"], 0) > 0:
                want[r["split"]] -= 1
                take.append(r)
        f = tmp / f"p{n}.csv"
        with open(f, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(take)
        rss, wall, r = timed([exe, "experiment", "run", "--bundle", "toyworld", "--prompts", f,
                              "--cache", tmp / f"store{n}", "--out", tmp / f"report{n}", "--json"])
        if r.returncode != 0:
            sys.exit(f"experiment with {n} prompts failed: {r.stderr.strip().splitlines()[-1]}")
        print(f"  {n:5d} prompts: peak RSS {rss:7.1f} MiB, wall {wall}")


if __name__ == "__main__":
    main()
