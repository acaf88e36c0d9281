"""The closed-form teacher against an independent float64 Bayesian linear regression, scipy's
Gaussian marginal likelihood, and the class that generated prior draws."""

import numpy as np
import pytest
from _environments import TwoCovariates
from scipy import stats

import bayesdesign as bd
from bayesdesign.basis import cosine_features
from bayesdesign.design import simulate
from bayesdesign.models import sample_tasks
from bayesdesign.spec import PriorSpec, load_prior
from bayesdesign.teachers import TeacherConfig, make_teacher
from bayesdesign.teachers.conjugate import ConjugateTeacher, prior_from_spec


def _two_class_spec():
    return PriorSpec.from_dict(
        {
            "name": "two",
            "covariates": [{"name": "x", "low": -2.0, "high": 2.0}],
            "arms": {
                "shared": {
                    "mean": {"terms": 6, "scale": 1.5, "offset": 0.3},
                    "log_sd": {"terms": 6, "scale": 0.4, "offset": -0.2},
                }
            },
            "smoothness": {"choices": [0.5, 3.0], "weights": [0.3, 0.7]},
        }
    )


def _history(rng, n, spec, noise=0.8):
    x = rng.uniform(-2, 2, size=(n, 1))
    a = rng.integers(0, 2, n).astype(float)
    y = np.sin(2 * x[:, 0]) + a + noise * rng.standard_normal(n)
    return bd.History(x, a, y, np.full(n, 0.5))


def _evidence(prior, spec, h, with_variance):
    """log p(H | k) of the working models, from scipy's Gaussian densities (float64)."""
    log_ev = np.zeros(2)
    for arm in (0, 1):
        sel = h.a == arm
        phi = cosine_features(spec.to_unit(h.x[sel]), prior.n_terms)
        y = h.y[sel]
        c = y.mean()
        v_hat = (((y - c) ** 2).sum() + 5.0 * prior.v0[arm]) / (sel.sum() + 5.0)
        for k in range(2):
            e0 = np.r_[1.0, np.zeros(phi.shape[1] - 1)]
            cov = v_hat * np.eye(len(y)) + phi @ np.diag(prior.s_mean[arm, k] ** 2) @ phi.T
            log_ev[k] += stats.multivariate_normal(phi @ (prior.off_mean[arm] * e0), cov).logpdf(y)
            if with_variance:
                cov = 2 * v_hat**2 * np.eye(len(y)) + phi @ np.diag(prior.s_var[arm, k] ** 2) @ phi.T
                log_ev[k] += stats.multivariate_normal(phi @ (prior.v0[arm] * e0), cov).logpdf((y - c) ** 2)
    return log_ev


def test_mean_posterior_and_class_weights_match_float64_references(rng):
    spec = _two_class_spec()
    prior = prior_from_spec(spec)
    h = _history(rng, 40, spec)
    xq = np.linspace(-2, 2, 9)[:, None]
    for lam in (0.0, 1.0):
        teacher = ConjugateTeacher(spec, TeacherConfig(burn_in=0), variance_evidence=lam)
        state, _ = teacher.fold(bd.History(*(v[None] for v in h)))
        out = teacher.decide(state, xq[None])
        log_post = np.log([0.3, 0.7]) + _evidence(prior, spec, h, with_variance=lam == 1.0)
        post = np.exp(log_post - log_post.max())
        np.testing.assert_allclose(out["class_prob"][0], post / post.sum(), atol=2e-3)
        if lam == 0.0:
            assert 0.02 < post[0] / post.sum() < 0.98  # the classes are not trivially separated here
    # posterior mean of mu_a(x) (class-averaged) from the raw-precision solve in float64
    mean_ref = np.zeros((2, len(xq)))
    for arm in (0, 1):
        sel = h.a == arm
        phi = cosine_features(spec.to_unit(h.x[sel]), prior.n_terms)
        y = h.y[sel]
        v_hat = (((y - y.mean()) ** 2).sum() + 5.0 * prior.v0[arm]) / (sel.sum() + 5.0)
        pq = cosine_features(spec.to_unit(xq), prior.n_terms)
        for k in range(2):
            s2 = prior.s_mean[arm, k] ** 2
            mu0 = np.r_[prior.off_mean[arm], np.zeros(len(s2) - 1)]
            prec = np.diag(1 / s2) + phi.T @ phi / v_hat
            coef = np.linalg.solve(prec, mu0 / s2 + phi.T @ y / v_hat)
            mean_ref[arm] += post[k] / post.sum() * (pq @ coef)
    np.testing.assert_allclose(out["mean"][0], mean_ref, atol=2e-3)


def test_probability_is_the_clipped_posterior_neyman_rule():
    """Against the truth, not the teacher's own sbar: with 400 units of constant arm sds the
    probability is near the Neyman rule sd_1 / (sd_1 + sd_0) of the true sds, and where that rule
    is extreme it sits exactly on the clip level 1/2 t^(-1/3) of the 401st unit (0.0678)."""
    teacher = ConjugateTeacher(load_prior("beta1"), TeacherConfig(burn_in=15))
    rng = np.random.default_rng(0)
    xq = np.linspace(0.2, 0.8, 5)[:, None]
    eps = 0.5 * 401 ** (-1 / 3)
    for s1, s0, want in ((2.0, 1.0, 2 / 3), (1.0, 2.0, 1 / 3), (0.1, 6.0, eps), (6.0, 0.1, 1 - eps)):
        x = rng.uniform(size=(400, 1))
        a = (rng.uniform(size=400) < 0.5).astype(float)
        y = np.sin(3 * x[:, 0]) + np.where(a == 1, s1, s0) * rng.standard_normal(400)
        h = bd.History(x, a, y, np.full(400, 0.5))
        pi = teacher.propensity(h, xq)
        if want in (eps, 1 - eps):
            np.testing.assert_allclose(pi, want, rtol=1e-9)
        else:
            assert abs(pi.mean() - want) < 0.03 and np.abs(pi - want).max() < 0.07, (s1, s0, pi)
        assert np.all(teacher.propensity(bd.History(*(v[:14] for v in h)), xq) == 0.5)  # burn-in


def test_posterior_draws_agree_with_the_closed_form(rng):
    env = bd.get_scenario("S2")
    teacher = make_teacher("conjugate", "beta1")
    x = env.sample_covariates(rng, 800)
    a = rng.integers(0, 2, 800)
    h = bd.History(x, a.astype(float), env.sample_outcomes(rng, x, a), np.full(800, 0.5))
    xq = np.array([[0.1], [0.5], [0.9]])
    idata = teacher.posterior(h, xq, draws=4000, seed=1)
    assert dict(idata.posterior.sizes) == {"chain": 1, "draw": 4000, "arm": 2, "query": 3}
    state, _ = teacher.fold(bd.History(*(v[None] for v in h)))
    out = teacher.decide(state, xq[None])
    np.testing.assert_allclose(idata.posterior["mean"].mean(("chain", "draw")), out["mean"][0], atol=0.02)
    ls = idata.posterior["log_sd"]
    np.testing.assert_allclose(ls.mean(("chain", "draw")), out["log_sd_mean"][0], atol=0.05)
    np.testing.assert_allclose(ls.std(("chain", "draw")), out["log_sd_sd"][0], rtol=0.25)
    # and the posterior has learned the truth
    np.testing.assert_allclose(np.exp(out["log_sd_mean"][0, 1]), env.sd(xq, 1), rtol=0.2)


def test_mixture_class_posterior_concentrates_on_the_generating_class():
    spec = load_prior("smoothness-mixture")
    teacher = make_teacher("mixture", spec)
    rng = np.random.default_rng(5)
    env, cls = sample_tasks(spec, rng, 120)
    x = rng.uniform(size=(120, 1000, 1))
    a = (rng.uniform(size=(120, 1000)) < 0.5).astype(float)
    y = np.where(a == 1, env.sample_outcomes(rng, x, 1), env.sample_outcomes(rng, x, 0))
    mass = []
    for n in (20, 200, 1000):
        p = teacher.class_posterior(bd.History(x[:, :n], a[:, :n], y[:, :n], np.full((120, n), 0.5)))
        mass.append(p[np.arange(120), cls].mean())
    assert mass[0] < mass[1] < mass[2]
    assert mass[0] < 0.45 and mass[2] > 0.75
    with pytest.raises(ValueError, match="teacher 'mixture' needs a prior with a smoothness block"):
        make_teacher("mixture", "beta1")


def test_teacher_as_a_design_and_bounds_check():
    ds = simulate(bd.get_scenario("S2"), ["teacher:conjugate:beta1"], horizon=300, reps=8, seed=0, batch_size=5)
    pi = ds.pi.sel(design="teacher:conjugate:beta1")
    assert np.all(pi[:, :10] == 0.5) and np.all((pi > 0) & (pi < 1))
    wide = bd.rescale(bd.get_scenario("S2"), [0.0], [5.0])
    box = r"covariate box \(low \[0.0\], high \[5.0\]\) is not inside the bounds declared by prior .*beta1.yaml"
    with pytest.raises(ValueError, match=r"'teacher:conjugate:beta1': the environment's " + box):
        simulate(wide, ["teacher:conjugate:beta1"], horizon=20, reps=1)
    # a teacher object gets the same checks as its name
    teacher = make_teacher("conjugate", "beta1")
    with pytest.raises(ValueError, match=r"'teacher:conjugate': the environment's " + box):
        simulate(wide, [teacher], horizon=20, reps=1)
    with pytest.raises(ValueError, match=r"dimension mismatch: .* 1 covariate\(s\), the environment has 2"):
        simulate(TwoCovariates(), [teacher], horizon=20, reps=1)
    with pytest.raises(ValueError, match="teacher: unknown backend 'hmc'"):
        simulate(bd.get_scenario("S2"), ["teacher:hmc:beta1"], horizon=20, reps=1)


def test_separate_classes_factorize_and_pick_a_smooth_mean_beside_a_rough_variance():
    """``unit-free-flex`` (``smoothness.separate``) on S10 (a linear mean, a variance that jumps):
    the mean and second-moment evidences depend on their own class only, so the 4 x 4 class
    posterior is the outer product of its margins (a mixed-up index breaks it), and the linear
    mean gets a smooth class."""
    env = bd.get_scenario("S10")
    rng = np.random.default_rng(3)
    b, n = 16, 800
    x = env.sample_covariates(rng, b * n).reshape(b, n, 1)
    a = (rng.uniform(size=(b, n)) < 0.5).astype(float)
    y = np.where(a == 1, env.sample_outcomes(rng, x, 1), env.sample_outcomes(rng, x, 0))
    teacher = make_teacher("mixture", "unit-free-flex")
    p = teacher.class_posterior(bd.History(x, a, y, np.full((b, n), 0.5))).reshape(b, 4, 4)
    mean_cls, var_cls = p.sum(2), p.sum(1)
    np.testing.assert_allclose(p, mean_cls[:, :, None] * var_cls[:, None, :], atol=1e-4)
    assert mean_cls[:, 2:].sum(1).mean() > 0.8  # beta 2 or 4 for the linear mean
    assert (1 - var_cls.max(1)).mean() < 0.2 and (1 - mean_cls.max(1)).mean() < 0.2  # not a flat posterior
