"""Baseline designs: the incremental and history forms agree, and each follows its published rule."""

import numpy as np
import pytest

from bayesdesign.design import History, get_scenario, make_design, rescale, simulate
from bayesdesign.design.baselines import ClipOGD, ExploreThenNeyman, PluginNeyman
from bayesdesign.efficiency import neyman

UNIT = ([0.0], [1.0])


def _history(rng, env, n):
    x = env.sample_covariates(rng, n)
    a = rng.integers(0, 2, n)
    y = env.sample_outcomes(rng, x, a)
    return History(x, a.astype(float), y, np.full(n, 0.5))


@pytest.mark.parametrize("name", ["uniform", "oracle", "explore-then-neyman", "clip-ogd", "plugin-neyman"])
def test_history_and_incremental_forms_agree(name, rng):
    env = get_scenario("S2")
    h = _history(rng, env, 300)
    pol = make_design(name, env, horizon=600)
    xq = rng.uniform(size=(7, 1))
    direct = pol.propensity(h, xq)
    state = pol.init(1)
    for s in range(0, 300, 37):  # the same units fed in uneven chunks
        sl = slice(s, s + 37)
        state = pol.update(state, h.x[None, sl], h.a[None, sl], h.y[None, sl], h.pi[None, sl])
    np.testing.assert_allclose(pol.propensity_at(state, xq[None])[0], direct, rtol=1e-10)
    assert direct.shape == (7,) and np.all((direct > 0) & (direct < 1))


def test_oracle_is_the_neyman_rule_of_the_true_sds():
    env = get_scenario("S2")
    x = np.linspace(0, 1, 11)[:, None]
    pi = make_design("oracle", env, 100).propensity(History.empty(1), x)
    np.testing.assert_allclose(pi, np.exp(2 * x[:, 0] - 1) / (np.exp(2 * x[:, 0] - 1) + np.exp(1 - 2 * x[:, 0])))


def test_clip_ogd_follows_the_published_update():
    pol = ClipOGD(UNIT, horizon=100, standardize=False)
    eta, delta = 0.1, lambda t: 0.5 * t ** (-1 / np.sqrt(5 * np.log(100)))
    state = pol.init(1)
    p, ys, arms = 0.5, [0.3, -0.4, 0.2, 0.5], [1, 0, 0, 1]
    for t, (y, a) in enumerate(zip(ys, arms, strict=True), start=1):
        assert pol.propensity_at(state, np.zeros((1, 1, 1)))[0, 0] == pytest.approx(p)
        g = -(y**2) / p**3 if a == 1 else y**2 / (1 - p) ** 3
        p = float(np.clip(p - eta * g, delta(t + 1), 1 - delta(t + 1)))
        state = pol.update(state, np.zeros((1, 1, 1)), np.array([[a]]), np.array([[y]]), np.array([[0.5]]))
    assert pol.propensity_at(state, np.zeros((1, 1, 1)))[0, 0] == pytest.approx(p)


def test_explore_then_neyman_pilot_then_fixed_rule(rng):
    env = get_scenario("S2")
    pol = ExploreThenNeyman(env.bounds, horizon=1000, pilot_fraction=0.2)
    x = rng.uniform(size=(4, 1))
    assert np.all(pol.propensity(_history(rng, env, 199), x) == 0.5)
    h = _history(rng, env, 400)
    after_pilot = pol.propensity(History(*(v[:200] for v in h)), x)
    later = pol.propensity(h, x)  # units after the pilot do not change the rule
    np.testing.assert_allclose(later, after_pilot)
    assert np.all(np.abs(later - 0.5) > 0.01)


def test_plugin_neyman_learns_the_neyman_rule(rng):
    env = get_scenario("S2")
    pol = PluginNeyman(env.bounds)
    x = np.linspace(0.02, 0.98, 25)[:, None]
    pi = pol.propensity(_history(rng, env, 6000), x)
    target = neyman(env.sd(x, 1), env.sd(x, 0))
    assert np.abs(pi - target).mean() < 0.03


def test_designs_do_not_depend_on_units(rng):
    """Shifting and scaling outcomes and moving covariates to [10, 50] leaves every design unchanged."""
    designs = ["uniform", "explore-then-neyman", "clip-ogd", "plugin-neyman"]
    base = simulate(get_scenario("S2"), designs, horizon=300, reps=4, seed=3)
    moved = simulate(rescale(get_scenario("S2"), [10.0], [50.0], shift=1000.0, scale=25.0), designs, 300, 4, seed=3)
    np.testing.assert_allclose(moved.pi, base.pi, atol=1e-6)
    np.testing.assert_allclose(moved.tau_hat / 25.0, base.tau_hat, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(moved.se / 25.0, base.se, rtol=1e-5)


class Constant:
    """A user's policy: only the protocol method, no incremental state."""

    def __init__(self, p):
        self.p, self.seen = p, []

    def propensity(self, history, x):
        self.seen.append(len(history))
        return np.full(len(x), self.p)


def test_user_policy_through_the_protocol_and_bad_output():
    pol = Constant(0.3)
    ds = simulate(get_scenario("S1"), [pol], horizon=40, reps=2, seed=0)
    assert np.all(ds.pi.sel(design="Constant") == 0.3)
    assert pol.seen[:3] == [0, 0, 1]  # rep 0 at t=0, rep 1 at t=0, rep 0 at t=1
    with pytest.raises(ValueError, match=r"design 'Constant': propensity must lie strictly inside \(0, 1\)"):
        simulate(get_scenario("S1"), [Constant(1.0)], horizon=40, reps=2, seed=0)
    with pytest.raises(ValueError, match=r"design: unknown name 'greedy'"):
        simulate(get_scenario("S1"), ["greedy"], horizon=40, reps=2)
