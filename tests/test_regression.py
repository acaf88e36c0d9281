"""Series ridge fits against explicit least squares, and the sequential fit against a naive loop."""

import numpy as np

from bayesdesign.basis import cosine_features, prior_scales
from bayesdesign.regression import SeriesRidge, init_stats, sequential_predictions, update_stats


def _ridge(phi, y, pen):
    return np.linalg.solve(phi.T @ phi + np.diag(pen), phi.T @ y)


def test_basis_is_orthonormal_under_uniform():
    u = ((np.arange(20000) + 0.5) / 20000)[:, None]
    phi = cosine_features(u, 6)
    np.testing.assert_allclose(phi.T @ phi / len(u), np.eye(7), atol=1e-6)


def test_prior_scales_follow_smoothness():
    s = prior_scales(2, 3, beta=1.0, scale=2.0)
    per_coord = 2.0 * np.array([2.0, 3.0, 4.0]) ** -1.5  # c (j + 1)^-(beta + 1/2)
    np.testing.assert_allclose(s, np.concatenate([[2.0], per_coord, per_coord]))


def test_mean_and_variance_fits_match_explicit_solutions(rng):
    fit = SeriesRidge(([0.0], [2.0]), n_terms=5)
    x = rng.uniform(0, 2, size=(3, 40, 1))
    a = rng.integers(0, 2, size=(3, 40))
    y = 100.0 + 3 * x[..., 0] + rng.standard_normal((3, 40)) * (1 + a)
    stats = update_stats(init_stats(3, fit.n_feat), fit.features(x), a, y)
    xq = rng.uniform(0, 2, size=(3, 7, 1))
    mean, var = fit.moments(stats, fit.features(xq))
    for b in range(3):
        for arm in (0, 1):
            w = a[b] == arm
            phi = fit.features(x[b, w])
            coef = _ridge(phi, y[b, w], fit.penalty)
            c = y[b, w].mean()
            coef2 = _ridge(phi, (y[b, w] - c) ** 2, fit.penalty)
            pq = fit.features(xq[b])
            m_ref = pq @ coef
            # the 1e-8 intercept penalty acts on re-centred data in `moments`: equal to ~1e-9
            np.testing.assert_allclose(mean[b, arm], m_ref, rtol=1e-8)
            m_c = pq @ _ridge(phi, y[b, w] - c, fit.penalty)  # mean fit about the arm mean
            np.testing.assert_allclose(var[b, arm], pq @ coef2 - m_c**2, rtol=1e-9, atol=1e-10)
            np.testing.assert_allclose(fit.mean_coef(stats)[b, arm], coef, rtol=1e-8, atol=1e-10)


def test_sequential_predictions_use_past_units_only(rng):
    fit = SeriesRidge(([0.0, -1.0], [1.0, 1.0]), n_terms=3)
    t = 30
    x = np.stack([rng.uniform(0, 1, (2, t)), rng.uniform(-1, 1, (2, t))], -1)
    a = rng.integers(0, 2, size=(2, t))
    y = rng.standard_normal((2, t)) + x[..., 0]
    m, n_prev = sequential_predictions(fit, x, a, y)
    for b in range(2):
        for s in range(t):
            for arm in (0, 1):
                w = a[b, :s] == arm
                phi = fit.features(x[b, :s][w]).reshape(-1, fit.n_feat)
                coef = _ridge(phi, y[b, :s][w], fit.penalty)
                assert n_prev[b, s, arm] == w.sum()
                np.testing.assert_allclose(m[b, s, arm], fit.features(x[b, s]) @ coef, rtol=1e-8, atol=1e-10)
