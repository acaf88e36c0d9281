"""The asymptotic confidence sequence: its boundary against Robbins' mixture martingale computed by
quadrature, rho against a numerical minimiser, running moments against prefix means, and
time-uniform coverage on iid data (where the Wald interval, looked at every unit, fails)."""

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from bayesdesign.confseq import confidence_sequence, covers_always, margin, rho_for, width_ratio


@pytest.mark.parametrize("n,rho,alpha", [(10, 0.3, 0.05), (500, 0.06, 0.05), (2000, 0.02, 0.1)])
def test_margin_is_where_the_normal_mixture_martingale_reaches_one_over_alpha(n, rho, alpha):
    s = n * float(margin(n, rho, alpha))  # the sum S_n at the boundary, unit variance

    def integrand(lam):
        return np.exp(lam * s - lam**2 * n / 2) * stats.norm.pdf(lam, scale=rho)

    mixture, _ = integrate.quad(integrand, -20 * rho, 20 * rho, limit=200)
    assert mixture == pytest.approx(1 / alpha, rel=1e-6)


@pytest.mark.parametrize("n_star,alpha", [(100, 0.05), (2000, 0.05), (2000, 0.01)])
def test_rho_minimises_the_width_at_n_star(n_star, alpha):
    best = optimize.minimize_scalar(lambda r: margin(n_star, r, alpha), bounds=(1e-4, 5), method="bounded",
                                    options={"xatol": 1e-10})
    assert rho_for(n_star, alpha) == pytest.approx(best.x, rel=1e-4)
    assert width_ratio(n_star, n_star, alpha) < width_ratio([n_star / 4, 4 * n_star], n_star, alpha).min()


def test_running_moments_match_prefix_statistics(rng):
    G = rng.normal(2.0, 3.0, size=60)
    scored = np.ones(60, bool)
    scored[:5] = False
    cs = confidence_sequence(G, scored, rho=0.1, min_scores=10)
    for t in (14, 30, 59):
        prefix = G[5 : t + 1]
        half = prefix.std() * margin(len(prefix), 0.1)
        assert cs.estimate[t] == pytest.approx(prefix.mean())
        assert cs.lower[t] == pytest.approx(prefix.mean() - half)
        assert cs.n[t] == len(prefix)
    assert np.isnan(cs.estimate[:5]).all()
    assert np.isinf(cs.upper[:14]).all() and np.isfinite(cs.upper[14])


def test_time_uniform_coverage_on_iid_data(rng):
    reps, T = 2000, 500
    for X in (rng.normal(size=(reps, T)), rng.exponential(size=(reps, T)) - 1.0):
        cs = confidence_sequence(X, n_star=T)
        cover = covers_always(cs, 0.0).mean()
        assert cover >= 0.95 - 2.6 * np.sqrt(0.05 * 0.95 / reps)
        # the Wald interval looked at after every unit from the 10th on does not hold
        n = np.arange(1, T + 1)
        mean = np.cumsum(X, 1) / n
        sd = np.sqrt(np.maximum(np.cumsum(X * X, 1) / n - mean**2, 0))
        wald = (np.abs(mean) <= 1.96 * sd / np.sqrt(n))[:, 9:].all(1).mean()
        assert wald < 0.75


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="alpha"):
        rho_for(100, alpha=1.5)
    with pytest.raises(ValueError, match="n_star"):
        rho_for(0)
    with pytest.raises(ValueError, match="scored"):
        confidence_sequence(np.zeros(5), np.ones(4, bool))
    with pytest.raises(ValueError, match="min_scores"):
        confidence_sequence(np.zeros(5), min_scores=1)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["S2", "S5"])
def test_cs_coverage_of_aipw_under_adaptive_designs(scenario):
    from bayesdesign import get_scenario, simulate
    from bayesdesign.summary import summarize

    reps = 500
    table = summarize(simulate(get_scenario(scenario), ["uniform", "plugin-neyman"], horizon=2000, reps=reps, seed=3))
    assert (table["cs_coverage"] >= 0.95 - 2.6 * np.sqrt(0.05 * 0.95 / reps)).all(), table
