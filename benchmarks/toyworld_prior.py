"""How much of a toyworld's layout a spatial prior gives away, on renders (no model involved).

    python benchmarks/toyworld_prior.py [--world 2] [--train 2000] [--test 400]

The experiment's spatial-prior baseline is a ridge probe on one-hot 16x16 cell positions: it predicts each
cell's training mean, the same map for every image. This computes that map from the renderer's exact labels
of ``--train`` training scenes (cell means, 4x4 pixels per cell) and scores it on ``--test`` held-out scenes
the way the report does: depth by Spearman per image, the mask by Dice of the map cut at 0.5. The issue's
bounds for a world whose layout is not given away: depth <= 0.4, mask <= 0.3. The experiment's own figures
use the estimators' labels of generated images, so they can differ a little.
"""

import argparse

import numpy as np
from scipy.stats import spearmanr

from ldm_explore.backend.toyworld.train import EVAL_SEED0, TRAIN_SEED0, render_many


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--procs", type=int, default=2)
    a = ap.parse_args()
    tr = render_many(range(TRAIN_SEED0, TRAIN_SEED0 + a.train), a.procs, a.world)
    te = render_many(range(EVAL_SEED0, EVAL_SEED0 + a.test), a.procs, a.world)

    def cell_mean(x):  # (N, 64, 64) -> the (64, 64) map of 16x16 cell means
        m = x.astype(np.float64).reshape(len(x), 16, 4, 16, 4).mean((0, 2, 4))
        return np.kron(m, np.ones((4, 4)))

    depth, mask = cell_mean(tr["depth"]), cell_mean(tr["mask"]) > 0.5
    sp = [spearmanr(depth.ravel(), d.ravel().astype(np.float64))[0] for d in te["depth"]]
    dice = [2 * (mask & m).sum() / (mask.sum() + m.sum()) if mask.sum() + m.sum() else 1.0 for m in te["mask"]]
    print(f"world {a.world}: spatial prior from {a.train} training renders, scored on {a.test} held-out renders")
    print(f"  depth Spearman {np.nanmean(sp):.3f} (bound 0.4); mask Dice {np.mean(dice):.3f} (bound 0.3); "
          f"highest cell mean of the mask {cell_mean(tr['mask']).max():.2f}, mask cover {te['mask'].mean():.3f}")


if __name__ == "__main__":
    main()
