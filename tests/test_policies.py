"""Baseline designs: the incremental and history forms agree, and each follows its published rule."""

import numpy as np
import pytest

from bayesdesign.design import History, get_scenario, make_design, rescale, simulate
from bayesdesign.design.baselines import ClipOGD, ClipOGDSC, ClipSMT, ExploreThenNeyman, PluginNeyman
from bayesdesign.design.environment import FunctionEnvironment
from bayesdesign.efficiency import neyman
from bayesdesign.spec import PriorSpec, load_prior
from bayesdesign.teachers import SAFE, make_teacher

UNIT = ([0.0], [1.0])


def _history(rng, env, n):
    x = env.sample_covariates(rng, n)
    a = rng.integers(0, 2, n)
    y = env.sample_outcomes(rng, x, a)
    return History(x, a.astype(float), y, np.full(n, 0.5))


@pytest.mark.parametrize(
    "name", ["uniform", "oracle", "explore-then-neyman", "clip-ogd", "clip-smt", "clip-ogd-sc", "plugin-neyman"]
)
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


def _feed(pol, ys, arms):
    """Probabilities a non-contextual policy gives each unit while it is fed (y, a) one by one."""
    state, out = pol.init(1), []
    z = np.zeros((1, 1, 1))
    for y, a in zip(ys, arms, strict=True):
        out.append(float(pol.propensity_at(state, z)[0, 0]))
        state = pol.update(state, z, np.array([[a]]), np.array([[y]]), np.array([[out[-1]]]))
    return np.array(out)


def test_clip_smt_follows_the_published_rule(rng):
    """Neopane, Ramdas & Singh: Neyman rule of running mean squares, clipped at 0.5 t^(-1/3)."""
    ys, arms = rng.normal(0.3, [1.0, 2.0], size=(40, 2)), rng.integers(0, 2, 40)
    y = ys[np.arange(40), arms]
    got = _feed(ClipSMT(UNIT, standardize=False), y, arms)
    for t in range(40):  # units seen before unit t + 1
        m = [np.mean(y[:t][arms[:t] == a] ** 2) if np.any(arms[:t] == a) else 0.0 for a in (0, 1)]
        p = 0.5 if m[0] + m[1] == 0 else np.sqrt(m[1]) / (np.sqrt(m[1]) + np.sqrt(m[0]))
        c = 0.5 * max(t, 1) ** (-1 / 3)
        assert got[t] == pytest.approx(np.clip(p, c, 1 - c)), t


def test_clip_ogd_sc_follows_the_published_update():
    """Noarov et al.: step 1/(alpha (s+1)), clip 1/exp(log(s+2)^(1/4)) for the unit of 0-based index s."""
    ys, arms = [0.3, -0.4, 0.2, 0.5, -0.1, 0.7], [1, 0, 0, 1, 1, 0]
    got = _feed(ClipOGDSC(UNIT, alpha=0.49, standardize=False), ys, arms)
    p, g = 0.5, 0.0
    for s, (y, a) in enumerate(zip(ys, arms, strict=True)):
        dl = 1 / np.exp(np.log(s + 2) ** 0.25)
        p = float(np.clip(p - g / (0.49 * (s + 1)), dl, 1 - dl))
        assert got[s] == pytest.approx(p), s
        g = -(y**2) / p**3 if a == 1 else y**2 / (1 - p) ** 3


@pytest.mark.parametrize("name", ["clip-smt", "clip-ogd-sc"])
def test_non_contextual_designs_reach_the_best_constant_within_their_clip(name):
    """Two arms with sds 1 and 2 (no covariate effect): the probability tends to 2/3, and every
    probability respects the published clip."""
    env = FunctionEnvironment(
        "two-point",
        mu=(lambda u: np.zeros(u.shape[:-1]), lambda u: np.full(u.shape[:-1], 5.0)),
        sigma=(lambda u: np.ones(u.shape[:-1]), lambda u: np.full(u.shape[:-1], 2.0)),
    )
    ds = simulate(env, [name], horizon=3000, reps=16, seed=4, keep_units=16)
    pi = ds.pi.sel(design=name).values
    assert abs(pi[:, -500:].mean() - 2 / 3) < 0.02
    assert abs(pi[:, :20].mean() - 2 / 3) > 0.05  # it learns: early on it is not there yet
    n = np.arange(1, 3001)
    if name == "clip-smt":
        c = np.where(n > 1, 0.5 * np.maximum(n - 1, 1) ** (-1 / 3), 0.5)
    else:
        c = 1 / np.exp(np.log(n + 1) ** 0.25)
    assert np.all(pi >= c - 1e-12) and np.all(pi <= 1 - c + 1e-12)


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
    designs = ["uniform", "explore-then-neyman", "clip-ogd", "clip-smt", "clip-ogd-sc", "plugin-neyman"]
    base = simulate(get_scenario("S2"), designs, horizon=300, reps=4, seed=3)
    moved = simulate(rescale(get_scenario("S2"), [10.0], [50.0], shift=1000.0, scale=25.0), designs, 300, 4, seed=3)
    np.testing.assert_allclose(moved.pi, base.pi, atol=1e-6)
    np.testing.assert_allclose(moved.tau_hat / 25.0, base.tau_hat, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(moved.se / 25.0, base.se, rtol=1e-5)


def test_designs_on_covariates_in_their_own_units_do_not_depend_on_them():
    """S8 lives on days in [0, 365] and orders in [0, 50], in dollars; on the unit square in cents
    every design allocates the same."""
    designs = ["plugin-neyman", "clip-smt", "teacher:mixture:checkout:safe"]
    base = simulate(get_scenario("S8"), designs, horizon=200, reps=3, seed=5)
    env = rescale(get_scenario("S8"), [0.0, 0.0], [1.0, 1.0], scale=100.0)
    assert list(env.bounds[1]) == [1.0, 1.0]
    spec = load_prior("checkout").to_dict()
    spec["covariates"] = [{"name": n, "low": 0.0, "high": 1.0} for n in ("days", "orders")]
    teacher = make_teacher("mixture", PriorSpec.from_dict(spec), SAFE)
    moved = simulate(env, designs[:2] + [teacher], 200, 3, seed=5)
    np.testing.assert_allclose(moved.pi.values[:2], base.pi.values[:2], atol=1e-6)
    np.testing.assert_allclose(moved.pi.values[2], base.pi.values[2], atol=2e-5)


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
