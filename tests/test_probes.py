"""Streaming ridge probes against a direct dense solve on the stacked data."""

import numpy as np
import pytest

from ldm_explore.backend.probing.properties import NAMES as PROPERTIES
from ldm_explore.backend.probing.ridge import fit, ridge_path, sse, upsample
from ldm_explore.backend.probing.stats import ProbeStats, area_average


def synthetic(n_img, S=3, h=4, w=4, c=6, H=16, seed=0):
    true_W = np.random.default_rng(99).normal(size=(S, c, 3))  # one relation for every split
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(n_img):
        acts = rng.normal(size=(S, h, w, c)).astype(np.float32)
        # targets whose area averages are linear in the tokens (plus noise), at label size H x H
        tok = np.einsum("shwc,scp->sphw", acts, true_W)[-1] + 0.3 * rng.normal(size=(3, h, w))
        targets = np.repeat(np.repeat(tok, H // h, 1), H // w, 2)
        runs.append((acts, targets))
    return runs


def stacked(runs, h=4, w=4):
    X = np.concatenate([a.reshape(a.shape[0], h * w, -1) for a, _ in runs], 1).astype(np.float64)  # (S, N, c)
    Y = np.concatenate([area_average(t, h, w).reshape(3, -1).T for _, t in runs], 0)  # (N, P)
    return X, Y


def direct_ridge(X, Y, lam):
    """Centred ridge by a dense solve: min |Y - XW - b|^2 + lam |W|^2."""
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    W = np.linalg.solve(Xc.T @ Xc + lam * np.eye(X.shape[1]), Xc.T @ Yc)
    return W, my - mx @ W


def test_area_average_and_upsample():
    t = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert np.allclose(area_average(t, 2, 2), [[2.5, 4.5], [10.5, 12.5]])
    assert upsample(np.ones((2, 2)), 8, 8).shape == (8, 8)


@pytest.mark.parametrize("alpha", [1e-4, 1e-1, 3.0])
def test_stream_fit_equals_dense_solve(alpha):
    runs = synthetic(12)
    st = ProbeStats(PROPERTIES)
    for a, t in runs:
        st.add_run({"L": a}, t)
    W, b = ridge_path(st, "L", np.array([alpha]))
    X, Y = stacked(runs)
    for s in range(X.shape[0]):
        Xc = X[s] - X[s].mean(0)
        lam = alpha * np.linalg.eigvalsh(Xc.T @ Xc).mean()
        Wd, bd = direct_ridge(X[s], Y, lam)
        np.testing.assert_allclose(W[0, s], Wd, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(b[0, s], bd, rtol=1e-6, atol=1e-7)
        # the closed-form SSE equals the residual sum of squares
        r = Y - X[s] @ Wd - bd
        np.testing.assert_allclose(sse(st, "L", W[0], b[0])[s], (r ** 2).sum(0), rtol=1e-6)


def test_alpha_chosen_on_validation_minimises_its_error():
    train, val = synthetic(6, seed=1), synthetic(6, seed=2)
    st, sv = ProbeStats(PROPERTIES), ProbeStats(PROPERTIES)
    for a, t in train:
        st.add_run({"L": a}, t)
    for a, t in val:
        sv.add_run({"L": a}, t)
    p = fit(st, sv)
    Xv, Yv = stacked(val)
    for s in range(3):
        for k in range(3):
            errs = []
            for al in p.meta["alphas"]:
                W, b = ridge_path(st, "L", np.array([al]))
                errs.append(((Yv[:, k] - Xv[s] @ W[0, s, :, k] - b[0, s, k]) ** 2).sum())
            assert p.alpha["L"][s, k] == p.meta["alphas"][int(np.argmin(errs))]
    # predictions: token level, one map per property
    pred = p.predict("L", val[0][0])
    assert pred.shape == (3, 3, 4, 4)
    assert (p.val_r2["L"][-1] > 0.5).all()  # the last step is linear in its tokens by construction


def test_statistics_add_up_across_shards(tmp_path):
    runs = synthetic(8, seed=3)
    whole, a, b = ProbeStats(PROPERTIES), ProbeStats(PROPERTIES), ProbeStats(PROPERTIES)
    for i, (x, t) in enumerate(runs):
        whole.add_run({"L": x}, t)
        (a if i % 2 else b).add_run({"L": x}, t)
    a.save(tmp_path / "a.safetensors")
    merged = ProbeStats.load(tmp_path / "a.safetensors").merge(b)
    assert merged.images == whole.images == 8
    for k, v in whole.to_tensors().items():
        np.testing.assert_allclose(merged.to_tensors()[k], v, rtol=1e-12)
    pw, pm = fit(whole), fit(merged)
    np.testing.assert_allclose(pw.W["L"], pm.W["L"], rtol=1e-9)
    pw.save(tmp_path / "p.safetensors")
    from ldm_explore.backend.probing.ridge import Probes

    back = Probes.load(tmp_path / "p.safetensors")
    np.testing.assert_allclose(back.W["L"], pw.W["L"].astype(np.float32))
