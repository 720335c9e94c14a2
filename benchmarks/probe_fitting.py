"""Probe fitting: the project's streaming ridge (every layer x step x property at once) against the
studies' method (one linear probe per layer and step, Adam lr 1e-3, 30 epochs, batch 4; cross-entropy for
the mask, Huber for depth and shading), on the same cached activations.

    python benchmarks/probe_fitting.py --cache STORE [--sample 6] [--epochs 30]

STORE is the run store an ``experiment run --bundle toyworld`` filled (it keeps the activations). The
studies' method is run on a fixed random sample of (layer, step) pairs and its time scaled to all pairs
(stated as such); both are scored on the same test images with the same metrics.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from ldm_explore.backend.cli import OneLineParser  # argparse's own errors: one line, exit 2


def main():
    ap = OneLineParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--sample", type=int, default=6, help="(layer, step) pairs trained the studies' way")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from ldm_explore.backend.bundles import load_bundle
    from ldm_explore.backend.probing import properties
    from ldm_explore.backend.probing.labels import targets
    from ldm_explore.backend.probing.metrics import primary
    from ldm_explore.backend.probing.properties import NAMES as PROPERTIES
    from ldm_explore.backend.probing.ridge import fit, upsample
    from ldm_explore.backend.probing.stats import ProbeStats
    from ldm_explore.backend.prompts import PromptSet
    from ldm_explore.backend.pipeline.runner import run_key
    from ldm_explore.backend.pipeline.generate import GenerationSettings
    from ldm_explore.cache.store import RunStore

    b = load_bundle("toyworld")
    store = RunStore(a.cache)
    s = GenerationSettings(steps=15, guidance=7.5, layers=b.layers)
    ps = PromptSet.read(b.prompts)

    def load(split):
        out = []
        for p in ps:
            if p.split == split:
                e = store.get(run_key(b.pipe, p, s))
                if e is not None:
                    out.append((e.activations(), targets(b.estimators, e.final)))
        return out

    t = time.perf_counter()
    train, val, test = load("train"), load("val"), load("test")
    t_read = time.perf_counter() - t
    print(f"cached runs: train {len(train)}, val {len(val)}, test {len(test)} (read + label {t_read:.1f} s)")
    layers = list(b.layers)
    S = next(iter(train[0][0].values())).shape[0]

    # --- streaming ridge: every layer x step x property
    t = time.perf_counter()
    st, sv = ProbeStats(PROPERTIES), ProbeStats(PROPERTIES)
    for acts, y in train:
        st.add_run(acts, y)
    for acts, y in val:
        sv.add_run(acts, y)
    probes = fit(st, sv)
    t_ridge = time.perf_counter() - t
    n_probes = len(layers) * S * len(PROPERTIES)

    rng = np.random.default_rng(a.seed)
    pairs = [(layers[i], int(j)) for i, j in zip(rng.integers(0, len(layers), a.sample), rng.integers(0, S, a.sample))]

    def test_metric(predict_fn, layer, step, k, prop):
        vals = []
        for acts, y in test:
            pred = predict_fn(acts[layer][step])  # (H, W)
            vals.append(primary(prop, pred[None], y[k])[0])
        return float(np.mean(vals))

    # --- the studies' method on the sample
    t_adam, rows = 0.0, []
    for layer, step in pairs:
        X = torch.from_numpy(np.stack([acts[layer][step] for acts, _ in train]).astype(np.float32))  # (N,h,w,c)
        Y = torch.from_numpy(np.stack([y for _, y in train]).astype(np.float32))  # (N,P,H,W)
        for k, prop in enumerate(PROPERTIES):
            torch.manual_seed(a.seed)
            lin = torch.nn.Linear(X.shape[-1], 1)
            opt = torch.optim.Adam(lin.parameters(), lr=1e-3)
            t0 = time.perf_counter()
            for _ in range(a.epochs):
                perm = torch.randperm(len(X))
                for i in range(0, len(X), 4):
                    idx = perm[i:i + 4]
                    out = lin(X[idx]).permute(0, 3, 1, 2)  # (B,1,h,w)
                    out = F.interpolate(out, size=Y.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
                    tgt = Y[idx, k]
                    binary = properties.get(prop).binary
                    loss = F.binary_cross_entropy_with_logits(out, tgt) if binary else F.huber_loss(out, tgt)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            t_adam += time.perf_counter() - t0

            def adam_pred(x, lin=lin, prop=prop):
                with torch.no_grad():
                    o = lin(torch.from_numpy(x.astype(np.float32))[None]).permute(0, 3, 1, 2)
                    o = F.interpolate(o, size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
                    return (torch.sigmoid(o) if properties.get(prop).binary else o).numpy()

            def ridge_pred(x, layer=layer, step=step, k=k):
                return upsample(probes.predict(layer, x[None], steps=[step])[0, k], 64, 64)

            rows.append((layer, step, prop, test_metric(ridge_pred, layer, step, k, prop),
                         test_metric(adam_pred, layer, step, k, prop)))
    per_probe = t_adam / (len(pairs) * len(PROPERTIES))
    t_adam_all = per_probe * n_probes
    print(f"\nstreaming ridge, all {n_probes} probes ({len(layers)} layers x {S} steps x 3 properties), "
          f"alpha chosen on val: {t_ridge:.1f} s")
    print(f"studies' method (Adam, {a.epochs} epochs, batch 4): {per_probe:.2f} s per probe on a sample of "
          f"{len(pairs) * 3} probes, scaled to all {n_probes}: {t_adam_all:.0f} s")
    print(f"speed-up: {t_adam_all / t_ridge:.0f}x (target >= 100x)")
    print(f"\n{'layer':60s} step property   {'ridge':>7s} {'adam':>7s}  (test {', '.join(properties.get(p).metric for p in PROPERTIES)})")
    for layer, step, prop, r, ad in rows:
        print(f"{layer:60s} {step:4d} {prop:9s} {r:7.3f} {ad:7.3f}")
    for prop in PROPERTIES:
        r = np.mean([x[3] for x in rows if x[2] == prop])
        ad = np.mean([x[4] for x in rows if x[2] == prop])
        print(f"mean over the sample, {prop} ({properties.get(prop).metric}): ridge {r:.3f}, studies' method {ad:.3f}")


if __name__ == "__main__":
    main()
