"""Metrics against scipy.stats, including ties and degenerate cases."""

import numpy as np
import pytest
from scipy import stats

from ldm_explore.backend.probing.metrics import dice, dice_rows, pearson, pearson_rows, spearman, spearman_rows


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(16, 16))
    b = a * 0.5 + rng.normal(size=(16, 16))
    b_ties = np.round(b, 0)  # many ties: average ranks needed
    assert pearson(a, b) == pytest.approx(stats.pearsonr(a.ravel(), b.ravel())[0], abs=1e-12)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    assert spearman(a, b_ties) == pytest.approx(stats.spearmanr(a.ravel(), b_ties.ravel())[0], abs=1e-12)


def test_dice():
    a = np.zeros((8, 8), bool)
    b = np.zeros((8, 8), bool)
    a[:4] = True
    b[2:6] = True
    assert dice(a, b) == pytest.approx(2 * 16 / (32 + 32))
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0
    assert dice(np.zeros(4, bool), np.zeros(4, bool)) == 1.0


def test_constant_map_has_zero_correlation():
    assert pearson(np.ones(10), np.arange(10)) == 0.0


def test_rows_forms_match_scipy_per_row():
    rng = np.random.default_rng(7)
    t = np.round(rng.normal(size=200), 1)
    P = rng.normal(size=(6, 200)) + t
    P[2] = np.round(P[2])  # ties in a prediction row too
    sp = spearman_rows(P, t)
    pe = pearson_rows(P, t)
    for i in range(6):
        assert sp[i] == pytest.approx(stats.spearmanr(P[i], t)[0], abs=1e-12)
        assert pe[i] == pytest.approx(stats.pearsonr(P[i], t)[0], abs=1e-12)
    m = rng.random((4, 50)) > 0.5
    d = dice_rows(m, m[0])
    assert d[0] == 1.0 and all(d[i] == pytest.approx(dice(m[i], m[0])) for i in range(4))
