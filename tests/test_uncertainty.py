"""Bootstrap intervals, the paired comparison, common footing, seeds and the depth RMSE, each against an
independent reference: exhaustive resampling, a constructed case whose answer is known, numpy's lstsq."""

import itertools

import numpy as np
import pytest

from ldm_explore.backend.experiment.report import common_footing
from ldm_explore.backend.experiment.scores import Score, ScoreKey, aggregate
from ldm_explore.backend.probing import uncertainty as U
from ldm_explore.backend.probing.emergence import beats_step, reach_step
from ldm_explore.backend.probing.metrics import rmse_rows
from ldm_explore.backend.prompts import SEED_STRIDE, Prompt, with_seeds


def test_bootstrap_interval_matches_the_exhaustive_bootstrap():
    """With 5 prompts there are 5**5 equally likely resamples: their means' quantiles are the exact bootstrap
    interval, which the Monte Carlo one must approach."""
    x = np.array([[0.1, 0.9], [0.4, 0.2], [0.35, 0.5], [0.8, 0.7], [0.55, 0.1]])  # (G=5, S=2)
    G = len(x)
    exact = np.array([x[list(c)].mean(0) for c in itertools.product(range(G), repeat=G)])
    want_lo, want_hi = np.quantile(exact, 0.025, axis=0), np.quantile(exact, 0.975, axis=0)
    lo, hi = U.bootstrap_ci(x, b=40000)
    np.testing.assert_allclose(lo, want_lo, atol=0.01)
    np.testing.assert_allclose(hi, want_hi, atol=0.01)
    assert (lo < x.mean(0)).all() and (x.mean(0) < hi).all()


def test_seeds_of_a_prompt_are_resampled_together():
    """Two seeds of one prompt are averaged before resampling: the interval is that of the prompts' means,
    not of the runs (which would count each prompt twice and come out too narrow)."""
    runs = np.array([[0.0], [0.2], [1.0], [1.2], [0.5], [0.7]])  # 3 prompts x 2 seeds
    groups = [7, 7, 3, 3, 9, 9]
    pp, keys = U.per_prompt(runs, groups)
    assert keys.tolist() == [3, 7, 9] and pp[:, 0].tolist() == pytest.approx([1.1, 0.1, 0.6])
    rows = [{"index": g, "scores": [Score(ScoreKey("probe", "l", "depth", "spearman"), [v[0]]).to_dict()]}
            for g, v in zip(groups, runs)]
    agg = aggregate(rows, b=4000)
    a = agg[ScoreKey("probe", "l", "depth", "spearman")]
    assert a.n == 3 and a.runs == 6
    lo, hi = U.bootstrap_ci(pp, b=4000)
    assert a.low[0] == pytest.approx(lo[0]) and a.high[0] == pytest.approx(hi[0])


def test_paired_comparison_on_a_constructed_case():
    """a - b is pure noise around 0 up to step 4 and 0.3 + noise from step 5: the paired bootstrap finds the
    probe above from step 5 and not before; the means may cross earlier by chance, the interval must not."""
    rng = np.random.default_rng(1)
    G, S = 40, 10
    b = rng.uniform(0, 1, (G, S))
    shift = np.where(np.arange(S) >= 5, 0.3, 0.0)
    a = b + shift + rng.normal(0, 0.05, (G, S)) * (np.arange(S) < 5) + rng.normal(0, 0.1, (G, S)) * (np.arange(S) >= 5)
    a[:, :5] = b[:, :5] - 0.2 + rng.normal(0, 0.05, (G, 5))  # clearly below before step 5
    d = U.paired(a, b, U.resample(G, 4000))
    assert (d["p"][5:] < 0.001).all() and (d["p"][:5] > 0.99).all()
    assert int(U.first_stays(d["low"] > 0)) == 5
    np.testing.assert_allclose(d["mean"], (a - b).mean(0))


def test_first_stays_reach_and_beats():
    assert U.first_stays(np.array([True, False, True, True])) == 2
    assert U.first_stays(np.array([True, True, False])) == 3  # never: S
    assert U.first_stays(np.array([[1, 1, 1], [0, 1, 0]], bool)).tolist() == [0, 3]
    assert reach_step(np.array([0.1, 0.7, 0.5, 0.8, 0.9]), 0.6) == 3
    assert reach_step(np.array([0.9, 0.1]), 0.6) is None
    assert beats_step(np.array([0.2, 0.5, 0.6]), np.array([0.3, 0.4, 0.6])) is None  # ties are not beating
    assert beats_step(np.array([0.2, 0.5, 0.7]), np.array([0.3, 0.4, 0.6])) == 1


def test_common_footing_on_constructed_curves():
    """The off-the-shelf curve ends at 1.0 and the probe at 0.8: one bar (0.72) for both; the off-the-shelf
    curve passes it at step 3, the probe at step 1; the probe stays above it until step 3 only, so it does not
    beat it from any step on; it beats a flat 0.3 baseline from step 1."""
    probe = np.array([0.2, 0.75, 0.78, 0.8, 0.8])
    ots = np.array([0.1, 0.45, 0.6, 0.95, 1.0])
    base = np.full(5, 0.3)
    rows = []
    rng = np.random.default_rng(0)
    for i in range(30):  # 30 prompts scattered tightly around the curves
        e = rng.normal(0, 0.01, 5)
        rows.append({"index": i, "scores": [Score(ScoreKey(s, "l", "mask", "dice"), list(c + e)).to_dict()
                                            for s, c in (("probe", probe), ("off-the-shelf", ots), ("base", base))]})
    agg = aggregate(rows, b=2000)
    keys = {k: ScoreKey(k, "l", "mask", "dice") for k in ("probe", "off-the-shelf", "base")}
    f = common_footing(agg, keys, "dice")
    assert f["bars"]["relative"]["value"] == pytest.approx(0.72, abs=0.01)
    assert f["reaches_relative_bar"]["probe"]["step"] == 1 and f["reaches_relative_bar"]["off-the-shelf"]["step"] == 3
    assert f["reaches_absolute_bar"]["off-the-shelf"]["step"] == 2 and f["reaches_absolute_bar"]["base"]["step"] is None
    assert f["own_final_emergence"]["off-the-shelf"]["step"] == 3  # 0.9 of its own 1.0
    assert f["probe_beats"]["off-the-shelf"]["step_means"] is None
    assert f["probe_beats"]["base"]["step_means"] == 1 and f["probe_beats"]["base"]["step_significant"] == 1
    assert f["reaches_relative_bar"]["probe"]["ci"] == [1, 1]


def test_rmse_against_a_direct_least_squares_fit():
    rng = np.random.default_rng(2)
    target = rng.uniform(2, 5, 64)
    pred = np.stack([3 * target + 1 + rng.normal(0, 0.5, 64), rng.normal(0, 1, 64), np.ones(64)])
    t = (target - target.min()) / (target.max() - target.min())
    want = []
    for row in pred:
        A = np.stack([row, np.ones_like(row)], 1)
        coef, *_ = np.linalg.lstsq(A, t, rcond=None)
        want.append(np.sqrt(np.mean((A @ coef - t) ** 2)))
    np.testing.assert_allclose(rmse_rows(pred, target), want, atol=1e-12)
    assert rmse_rows((3 * target + 1)[None], target)[0] == pytest.approx(0, abs=1e-12)


def test_seeds_are_derived_from_the_file_and_stay_in_the_split():
    ps = [Prompt(4, "a", 10, "train"), Prompt(9, "b", 2**32 - 1, "test")]
    runs = with_seeds(ps, 3)
    assert [(r.index, r.seed_no, r.split) for r in runs] == [(4, 0, "train"), (4, 1, "train"), (4, 2, "train"),
                                                            (9, 0, "test"), (9, 1, "test"), (9, 2, "test")]
    assert [r.seed for r in runs[:3]] == [10, 10 + SEED_STRIDE, 10 + 2 * SEED_STRIDE]
    assert runs[4].seed == SEED_STRIDE - 1  # wraps within the 32-bit seed range
    assert len({r.run_id for r in runs}) == 6 and with_seeds(ps, 1) == ps


def test_wilson_interval_against_scipy():
    from scipy.stats import binomtest

    from ldm_explore.backend.probing.uncertainty import wilson

    for k, n in ((0, 10), (3, 10), (83, 100), (100, 100), (1, 1)):
        want = binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert wilson(k, n) == pytest.approx((want.low, want.high), abs=1e-12), (k, n)
