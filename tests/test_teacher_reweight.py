"""The conjugate teachers' reweighted second-moment regression (``TeacherConfig.reweight``)."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

import bayesdesign as bd
from bayesdesign.design import simulate
from bayesdesign.teachers import TeacherConfig, make_teacher
from bayesdesign.teachers.conjugate import _centred, _regressions, _weighted_centred, unit_weights


def _history(rng, env, n):
    x = env.sample_covariates(rng, n)
    a = rng.integers(0, 2, n).astype(float)
    return x, a, env.sample_outcomes(rng, x, a)


def test_unit_weights_by_hand():
    """w = clip((v^2 / (s^4 + 2 s^2 (m - c)^2))^(n / (n + n0)), 0.05, 20)."""
    got = unit_weights(
        sd=np.array([1.0, 1.0, 2.0, 1.0, 1.0]),
        mean=np.array([0.0, 1.0, 0.0, 0.0, 0.0]),
        c=np.zeros(5),
        v_hat=np.array([2.0, 1.0, 1.0, 100.0, 0.01]),
        n=np.array([50.0, 1e9, 0.0, 1e9, 1e9]),
        n0=50.0,
    )
    np.testing.assert_allclose(got, [2.0, 1.0 / 3.0, 1.0, 20.0, 0.05], rtol=1e-6)


def test_weighted_statistics_and_evidence_match_a_direct_weighted_regression(rng, monkeypatch):
    """The weighted sums are those of the weights the teacher drew, and the reweighted model's log
    evidence is the Gaussian marginal likelihood of r_i = (y_i - c)^2 - v0 with noise 2 v^2 / w_i."""
    teacher = make_teacher("conjugate", "beta1", TeacherConfig(reweight=20.0))
    drawn = []
    original = teacher.unit_weights
    monkeypatch.setattr(teacher, "unit_weights", lambda *a: drawn.append(original(*a)) or drawn[-1])
    env = bd.get_scenario("S10")
    x, a, y = _history(rng, env, 120)
    state = teacher.update(teacher.init(1), x[None], a[None], y[None], np.full((1, 120), 0.5))
    w = np.concatenate(drawn)
    assert w.shape == (120,) and w.std() > 0.05  # the weights do differ on S10
    phi = teacher.features(x[None])[0]
    prior = teacher.prior
    args = _centred(prior, state, teacher.config.prior_obs)
    weighted = _weighted_centred(prior, state)
    res, _ = _regressions(teacher._arrays, teacher._both, *(v[0] for v in args), [v[0] for v in weighted])
    for arm in (0, 1):
        sel = a == arm
        gram = (w[sel, None] * phi[sel]).T @ phi[sel]
        np.testing.assert_allclose(state.weighted.stats.gram[0, arm], gram, rtol=1e-12)
        c = y[sel].mean()
        kappa = teacher.config.prior_obs
        v_hat = (((y[sel] - c) ** 2).sum() + kappa * prior.v0[arm]) / (sel.sum() + kappa)
        r = (y[sel] - c) ** 2 - prior.v0[arm]
        cov_prior = (phi[sel] * prior.s_var[arm, 0] ** 2) @ phi[sel].T
        models = ((2 * v_hat**2 * np.ones(sel.sum()), res[arm][1][2][0]), (2 * v_hat**2 / w[sel], res[arm][1][2][1]))
        for noise, ev in models:
            direct = multivariate_normal(np.zeros(sel.sum()), cov_prior + np.diag(noise)).logpdf(r)
            assert float(ev) == pytest.approx(direct, rel=2e-4)


def test_state_does_not_depend_on_how_units_are_grouped(rng):
    teacher = make_teacher("mixture", "unit-free", TeacherConfig(reweight=50.0))
    x, a, y = _history(rng, bd.get_scenario("S10"), 60)
    pi = np.full((1, 60), 0.5)
    whole = teacher.update(teacher.init(1), x[None], a[None], y[None], pi)
    parts = teacher.init(1)
    for lo, hi in ((0, 7), (7, 8), (8, 60)):
        parts = teacher.update(parts, x[None, lo:hi], a[None, lo:hi], y[None, lo:hi], pi[:, lo:hi])
    for got, want in zip(parts.weighted.stats, whole.weighted.stats, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(parts.weighted.log_w, whole.weighted.log_w, rtol=1e-12)
    hist = bd.History(x, a, y, pi[0])
    at_once = teacher.propensity_at(whole, x[None, :5])[0]
    np.testing.assert_allclose(teacher.propensity(hist, x[:5]), at_once, rtol=1e-12)


def test_update_reuses_the_posterior_of_the_decision_just_made(rng, monkeypatch):
    """Deciding a unit and then adding it evaluates the posterior once, and the state is the one
    a fresh evaluation gives (also when a decision at other units came in between)."""
    teacher = make_teacher("mixture", "unit-free", TeacherConfig(reweight=50.0))
    x, a, y = _history(rng, bd.get_scenario("S10"), 40)
    state = teacher.update(teacher.init(2), x[None, :30].repeat(2, 0), a[None, :30].repeat(2, 0),
                           y[None, :30].repeat(2, 0), np.full((2, 30), 0.5))
    xn, an, yn = x[None, 30:31].repeat(2, 0), np.array([[0.0], [1.0]]), y[None, 30:31].repeat(2, 0)
    assert teacher.slab > 0  # computed once, on a posterior of its own
    calls = []
    original = teacher._posterior_view
    monkeypatch.setattr(teacher, "_posterior_view", lambda *args, **kw: calls.append(1) or original(*args, **kw))
    pi = teacher.propensity_at(state, xn)
    cached = teacher.update(state, xn, an, yn, pi)
    assert len(calls) == 1
    teacher._last = None
    fresh = teacher.update(state, xn, an, yn, pi)
    assert len(calls) == 2
    np.testing.assert_array_equal(cached.weighted.log_w, fresh.weighted.log_w)
    assert np.abs(fresh.weighted.log_w).sum() > 0
    teacher.propensity_at(state, x[None, 31:32].repeat(2, 0))  # another covariate: no reuse
    np.testing.assert_array_equal(teacher.update(state, xn, an, yn, pi).weighted.log_w, fresh.weighted.log_w)


def test_reweighted_design_ignores_the_outcome_units():
    env = bd.get_scenario("S10")
    moved = bd.rescale(env, [0.0], [1.0], shift=1000.0, scale=25.0)
    design = "teacher:mixture:unit-free:reweight"
    base = simulate(env, [design], horizon=150, reps=2, seed=3)
    other = simulate(moved, [design], horizon=150, reps=2, seed=3)
    np.testing.assert_allclose(other.pi.sel(design=design), base.pi.sel(design=design), atol=2e-5)


def test_reweighting_tracks_a_jumping_variance_better(rng):
    """On S10 (the variance jumps 25-fold across four cells) the reweighted teacher's probabilities
    are nearer the Neyman allocation than the unweighted teacher's on the same histories."""
    env = bd.get_scenario("S10")
    xq = np.linspace(0.02, 0.98, 49)[:, None]
    s0, s1 = env.sd(xq, 0), env.sd(xq, 1)
    neyman = s1 / (s0 + s1)
    errors = {0.0: [], 50.0: []}
    for _ in range(3):
        x, a, y = _history(rng, env, 600)
        for n0 in errors:
            teacher = make_teacher("mixture", "unit-free", TeacherConfig(reweight=n0))
            state = teacher.update(teacher.init(1), x[None], a[None], y[None], np.full((1, 600), 0.5))
            errors[n0].append(np.abs(teacher.posterior_outputs(state, xq[None])["pi"][0] - neyman).mean())
    assert np.mean(errors[50.0]) < 0.85 * np.mean(errors[0.0])


def test_reweight_is_refused_where_it_is_not_implemented():
    with pytest.raises(ValueError, match="reweight: .*continuous outcome families.*family bernoulli"):
        make_teacher("conjugate", "binary", TeacherConfig(reweight=50.0))
    with pytest.raises(ValueError, match="reweight"):
        make_teacher("nuts", "beta1", TeacherConfig(reweight=50.0, rule="sd", spike=0.0))
    with pytest.raises(ValueError, match="reweight: expected a finite number"):
        TeacherConfig(reweight=-1.0)
    assert bd.make_design("teacher:mixture:unit-free:reweight", bd.get_scenario("S2"), 100).config.reweight == 50.0
