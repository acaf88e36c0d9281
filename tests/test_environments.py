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
    with pytest.raises(ValueError, match="scenario: unknown name 'S7'"):
        get_scenario("S7")


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
