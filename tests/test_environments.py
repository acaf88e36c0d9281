"""Scenario truths against closed forms and quadrature; the replay environment's claims."""

import numpy as np
import pandas as pd
import pytest
from scipy import integrate

from bayesdesign.design import get_scenario, rescale, simulate
from bayesdesign.design.replay import ReplayEnvironment
from bayesdesign.efficiency import truth


def test_s2_bounds_match_closed_forms():
    tr = truth(get_scenario("S2"))
    e2 = np.e**2 - np.e**-2
    assert tr.v_star[0] == pytest.approx(2 + e2 / 2, rel=1e-6)  # E[(e^{2x-1} + e^{1-2x})^2]
    assert tr.v_uniform[0] == pytest.approx(e2, rel=1e-6)
    assert tr.v_uniform[0] / tr.v_star[0] == pytest.approx(1.289, abs=1e-3)
    assert tr.ate[0] == pytest.approx(1.0)


def test_s3_uniform_and_best_constant_ratios():
    env = get_scenario("S3")
    tr = truth(env)
    s1 = lambda x: 3.0 if x > 0.7 else 0.5  # noqa: E731
    q = lambda f: integrate.quad(f, 0, 1, points=[0.7])[0]  # noqa: E731
    var_tau = q(lambda x: (x - 0.5) ** 2)
    v_star = q(lambda x: (s1(x) + 1) ** 2) + var_tau
    e1, e0 = q(lambda x: s1(x) ** 2), 1.0
    p = np.sqrt(e1) / (np.sqrt(e1) + np.sqrt(e0))
    best_const = e1 / p + e0 / (1 - p) + var_tau
    assert tr.v_star[0] == pytest.approx(v_star, rel=1e-4)
    assert tr.v_uniform[0] / tr.v_star[0] == pytest.approx(1.21, abs=0.01)
    assert best_const / v_star == pytest.approx(1.14, abs=0.01)


def test_noise_families_have_the_declared_moments(rng):
    x = np.full((200_000, 1), 0.25)
    for name in ("S5", "S6"):
        env = get_scenario(name)
        for arm in (0, 1):
            y = env.sample_outcomes(rng, x, arm)
            assert y.mean() == pytest.approx(env.mean(x[:1], arm)[0], abs=0.01)
            assert y.std() == pytest.approx(env.sd(x[:1], arm)[0], rel=0.03)
    assert get_scenario("S5").sd(np.array([[0.5]]), 1)[0] == pytest.approx(0.5)


def test_s4_prior_tasks_are_heterogeneous_enough(rng):
    batch = get_scenario("S4").sample_tasks(rng, 400)
    u = np.linspace(0, 1, 101)[None, :, None].repeat(400, 0)
    ratio = batch.sd(u, 1) / batch.sd(u, 0)
    lo, hi = np.quantile(ratio, [0.1, 0.9])
    assert 0.2 < lo < 0.4 and 2.5 < hi < 4.5  # ratios of the arms' sds span about 0.3 to 3
    tr = truth(batch)
    assert tr.v_uniform.mean() / tr.v_star.mean() > 1.1  # complete randomization is clearly beaten
    quad = (batch.mean(u, 1) - batch.mean(u, 0))[:, :-1].mean(1)  # left Riemann sum
    np.testing.assert_allclose(batch.ate, quad, atol=0.03)


def test_rescaled_environment_maps_units(rng):
    env = rescale(get_scenario("S2"), low=[10.0], high=[50.0], shift=1000.0, scale=25.0)
    x = env.sample_covariates(rng, 1000)
    assert x.min() >= 10 and x.max() <= 50
    assert env.mean(np.array([[30.0]]), 1)[0] == pytest.approx(1000 + 25 * 1.5)
    assert env.sd(np.array([[30.0]]), 1)[0] == pytest.approx(25.0)
    assert env.ate == pytest.approx(25.0)
    with pytest.raises(ValueError, match="bounds: expected low < high"):
        rescale(get_scenario("S2"), low=[1.0], high=[1.0])
    with pytest.raises(ValueError, match="scenario: unknown name 'S11'"):
        get_scenario("S11")


def _bounds_by_scipy(s1, s0, tau, dims):
    """V*, V_1/2 and the best constant design's V by adaptive scipy quadrature of closed forms
    over the unit square (``dims = 2``) or interval."""
    if dims == 1:
        q = lambda f: integrate.quad(f, 0, 1, limit=200)[0]  # noqa: E731
    else:
        q = lambda f: integrate.dblquad(lambda v, u: f(u, v), 0, 1, 0, 1, epsabs=1e-10)[0]  # noqa: E731
    e_tau = q(tau)
    var_tau = q(lambda *z: (tau(*z) - e_tau) ** 2)
    v_star = q(lambda *z: (s1(*z) + s0(*z)) ** 2) + var_tau
    e1, e0 = q(lambda *z: s1(*z) ** 2), q(lambda *z: s0(*z) ** 2)
    p = np.sqrt(e1) / (np.sqrt(e1) + np.sqrt(e0))
    return v_star, 2 * (e1 + e0) + var_tau, e1 / p + e0 / (1 - p) + var_tau, e_tau


def test_s7_three_covariates_in_their_units(rng):
    env = get_scenario("S7")
    assert env.d == 3 and list(env.bounds[1]) == [365.0, 50.0, 1.0]
    x = env.sample_covariates(rng, 5000)
    assert x[:, 0].max() > 300 and x[:, 1].max() > 40 and x[:, 2].max() <= 1
    decoy = x.copy()
    decoy[:, 2] = rng.uniform(size=len(x))
    for arm in (0, 1):  # nothing depends on the decoy
        np.testing.assert_array_equal(env.mean(x, arm), env.mean(decoy, arm))
        np.testing.assert_array_equal(env.sd(x, arm), env.sd(decoy, arm))
    s1 = lambda u, v: np.exp(1.2 * u - 0.6 + 0.3 * np.cos(np.pi * v))  # noqa: E731
    s0 = lambda u, v: np.exp(0.6 - 1.2 * u)  # noqa: E731
    v_star, v_unif, v_const, ate = _bounds_by_scipy(s1, s0, lambda u, v: 0.5 + 0.5 * u, 2)
    tr = truth(env)
    assert tr.v_star[0] == pytest.approx(v_star, rel=1e-5)
    assert tr.v_uniform[0] == pytest.approx(v_unif, rel=1e-5)
    assert tr.ate[0] == pytest.approx(ate, rel=1e-6)
    assert v_unif / v_star == pytest.approx(1.125, abs=5e-4)  # DESIGN.md section 4
    assert v_const / v_star == pytest.approx(1.124, abs=5e-4)
    # days = 73 (u = 0.2), orders = 10 (v = 0.2): the closed forms in the box's units
    pt = np.array([[73.0, 10.0, 0.9]])
    assert env.sd(pt, 1)[0] == pytest.approx(s1(0.2, 0.2))
    assert env.mean(pt, 1)[0] - env.mean(pt, 0)[0] == pytest.approx(0.6)


def _hurdle(u, v, a):
    p = 1 / (1 + np.exp(-(-2 + 2 * v + 0.3 * a)))
    m, s = 3.5 + 0.5 * v, (0.3 + u) if a else (1.3 - u)
    mean = p * np.exp(m + s**2 / 2)
    return mean, np.sqrt(p * np.exp(2 * m + 2 * s**2) - mean**2), p


def test_s8_revenue_moments_match_monte_carlo(rng):
    env = get_scenario("S8")
    # outcomes drawn at one point: their mean, sd and share of zeros against the closed forms
    pt = np.array([[182.5, 25.0]])  # u = v = 0.5
    for arm in (0, 1):
        y = env.sample_outcomes(rng, np.repeat(pt, 400_000, 0), arm)
        mean, sd, p = _hurdle(0.5, 0.5, arm)
        assert (y == 0).mean() == pytest.approx(1 - p, abs=0.003)
        assert y.mean() == pytest.approx(mean, rel=0.01)
        assert y.std() == pytest.approx(sd, rel=0.03)
        assert env.mean(pt, arm)[0] == pytest.approx(mean) and env.sd(pt, arm)[0] == pytest.approx(sd)
    s = lambda a: (lambda u, v: _hurdle(u, v, a)[1])  # noqa: E731
    tau = lambda u, v: _hurdle(u, v, 1)[0] - _hurdle(u, v, 0)[0]  # noqa: E731
    v_star, v_unif, _, ate = _bounds_by_scipy(s(1), s(0), tau, 2)
    tr = truth(env)
    assert tr.v_star[0] == pytest.approx(v_star, rel=1e-5)
    assert tr.v_uniform[0] / tr.v_star[0] == pytest.approx(1.26, abs=0.005)
    assert tr.ate[0] == pytest.approx(ate, rel=1e-5) and tr.ate[0] == pytest.approx(3.9, abs=0.05)
    x = env.sample_covariates(rng, 200_000)
    y0, y1 = env.sample_outcomes(rng, x, 0), env.sample_outcomes(rng, x, 1)
    assert y0.mean() == pytest.approx(19.0, rel=0.03) and y1.mean() == pytest.approx(23.0, rel=0.03)
    assert 0.65 < (np.r_[y0, y1] == 0).mean() < 0.75  # about 70% zeros


def test_s9_s10_ratios_against_closed_forms():
    s1 = lambda x: np.exp(1.5 * (2 * x - 1) ** 3)  # noqa: E731
    v_star, v_unif, _, _ = _bounds_by_scipy(s1, lambda x: 1 / s1(x), lambda x: 0.5, 1)
    tr = truth(get_scenario("S9"))
    assert tr.v_star[0] == pytest.approx(v_star, rel=1e-6)
    assert tr.v_uniform[0] / tr.v_star[0] == pytest.approx(1.33, abs=0.006)
    tr = truth(get_scenario("S10"))
    assert tr.v_star[0] == pytest.approx(2.4**2)  # sigma_1 + sigma_0 = 2.4 everywhere
    assert tr.v_uniform[0] == pytest.approx(2 * (2.0**2 + 0.4**2))
    env = get_scenario("S10")
    cells = np.array([[0.1], [0.3], [0.6], [0.9]])
    np.testing.assert_allclose(env.sd(cells, 1), [0.4, 2.0, 0.4, 2.0])
    np.testing.assert_allclose(env.sd(cells, 0), [2.0, 0.4, 2.0, 0.4])


class _UserEnvironment:
    """A user's environment with the truth but no quadrature: mu_1 = x, mu_0 = 0, sd_1 = 1 + x, sd_0 = 1."""

    d, bounds = 1, (np.zeros(1), np.ones(1))
    ate = 0.5

    def sample_covariates(self, rng, n):
        return rng.uniform(size=(n, 1))

    def sample_outcomes(self, rng, x, arm):
        return self.mean(x, arm) + self.sd(x, arm) * rng.standard_normal(x.shape[:-1])

    def mean(self, x, arm):
        return np.where(np.asarray(arm) == 1, x[..., 0], 0.0)

    def sd(self, x, arm):
        return np.where(np.asarray(arm) == 1, 1.0 + x[..., 0], 1.0)


def test_rescale_works_on_a_user_environment():
    env = rescale(_UserEnvironment(), low=[10.0], high=[50.0], shift=3.0, scale=2.0)
    tr = truth(env)  # Monte Carlo: the user's environment has no quadrature
    # closed forms in the new units: sd_1 + sd_0 = 2 (2 + U), tau(x) = 2 U with U uniform
    assert tr.ate[0] == pytest.approx(1.0)
    assert tr.var_tau[0] == pytest.approx(4 / 12, rel=0.01)
    assert tr.v_star[0] == pytest.approx(4 * 19 / 3 + 4 / 12, rel=0.01)
    ds = simulate(env, ["uniform"], horizon=100, reps=4, seed=0)
    assert float(ds.v_star[0]) == pytest.approx(tr.v_star[0])


def _trial_table(rng, n=400):
    x = rng.uniform(size=(n, 2))
    a = rng.integers(0, 2, n)
    y = np.where(a == 1, 2 * x[:, 0], x[:, 1]) + (0.5 + a * x[:, 0]) * rng.standard_normal(n)
    return pd.DataFrame({"age": x[:, 0], "income": 1000 * x[:, 1], "arm": a, "y": y})


def test_replay_reproduces_its_neighbour_means_and_sds(rng):
    df = _trial_table(rng)
    env = ReplayEnvironment(df, ["age", "income"], arm="arm", outcome="y", k=12)
    xq = df[["age", "income"]].to_numpy()[:5]
    z = df[["age", "income"]].to_numpy() / df[["age", "income"]].to_numpy().std(0)
    for arm in (0, 1):
        sub = (df.arm == arm).to_numpy()
        for i in range(5):
            dist = np.linalg.norm(z[sub] - z[i], axis=1)
            nb = df.y.to_numpy()[sub][np.argsort(dist)[:12]]
            assert env.mean(xq[i : i + 1], arm)[0] == pytest.approx(nb.mean())
            assert env.sd(xq[i : i + 1], arm)[0] == pytest.approx(nb.std())
        draws = env.sample_outcomes(rng, np.repeat(xq[:1], 50_000, 0), arm)
        assert draws.mean() == pytest.approx(env.mean(xq[:1], arm)[0], abs=0.02)
        assert draws.std() == pytest.approx(env.sd(xq[:1], arm)[0], rel=0.03)
    ate = np.mean(env.mean(df[["age", "income"]].to_numpy(), 1) - env.mean(df[["age", "income"]].to_numpy(), 0))
    assert env.ate == pytest.approx(ate)
    x = env.sample_covariates(rng, 100)
    assert {tuple(r) for r in x} <= {tuple(r) for r in df[["age", "income"]].to_numpy()}


def test_replay_bad_tables(rng, tmp_path):
    df = _trial_table(rng, 60)
    with pytest.raises(ValueError, match=r"table: missing column 'treated'"):
        ReplayEnvironment(df, ["age"], arm="treated")
    with pytest.raises(ValueError, match=r"column 'arm': a replay needs units in both arms"):
        ReplayEnvironment(df.assign(arm=1), ["age"], arm="arm")
    with pytest.raises(ValueError, match=r"expected arms coded 0 \(control\) and 1 \(treated\), found \[3\]"):
        ReplayEnvironment(df.assign(arm=np.where(df.arm == 1, 3, 0)), ["age"], arm="arm")
    with pytest.raises(ValueError, match=r"^k: expected 1 <= k <="):
        ReplayEnvironment(df, ["age"], arm="arm", k=1000)
    path = tmp_path / "trial.csv"
    df.assign(y=np.where(np.arange(60) == 7, np.nan, df.y)).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"trial.csv: column 'y': expected finite numbers"):
        ReplayEnvironment(path, ["age"], arm="arm")
