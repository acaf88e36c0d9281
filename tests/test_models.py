"""Models compiled from prior files: task simulation and NumPyro conditioning, checked against
independent computations (the S4 scenario, numpy/scipy densities, closed-form regression)."""

from __future__ import annotations

import jax
import numpy as np
import numpyro
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import log_density
from scipy import stats
from scipy.special import expit

from bayesdesign.basis import cosine_features, prior_scales
from bayesdesign.design.environment import is_task_distribution
from bayesdesign.design.runner import draw_experiments
from bayesdesign.design.scenarios import SeriesPriorTasks
from bayesdesign.efficiency import truth
from bayesdesign.models import (
    BernoulliTaskBatch,
    PriorTasks,
    StudentTTaskBatch,
    known_variance_model,
    numpyro_model,
    prior_arrays,
    sample_tasks,
)
from bayesdesign.spec import PriorSpec, list_priors, load_prior

ALL = list_priors()


def _unique_specs():
    seen, out = set(), []
    for name in ALL:
        spec = load_prior(name)
        if spec.hash() not in seen:
            seen.add(spec.hash())
            out.append(name)
    return out


def _data(spec: PriorSpec, seed: int = 0, n: int = 50, pad: int = 10):
    """One task from the prior and ``n`` units (plus ``pad`` NaN-padded rows) in unit coordinates."""
    rng = np.random.default_rng(seed)
    env, _ = sample_tasks(spec, rng, 1, smoothness_class=0 if spec.is_mixture else None)
    x = env.sample_covariates(rng, n + pad)
    a = np.tile([0, 1], (n + pad) // 2 + 1)[: n + pad]
    y = env.sample_outcomes(rng, x[None], a[None])[0]
    mask = np.arange(n + pad) < n
    y = np.where(mask, y, np.nan)
    xq = np.linspace(*spec.bounds, 7)  # (7, d) query points in user units, for the truth
    return env, spec.to_unit(x), a, y, mask, xq, spec.to_unit(xq)


# ----------------------------------------------------------------------------- simulation


@pytest.mark.parametrize("name", ALL)
def test_every_prior_draws_tasks(name):
    spec = load_prior(name)
    tasks = PriorTasks(spec)
    assert is_task_distribution(tasks) and tasks.d == spec.d and tasks.name == spec.name
    rng = np.random.default_rng(1)
    env, classes = sample_tasks(spec, rng, 8)
    assert env.n_tasks == 8 and classes.shape == (8,)
    assert set(classes) <= set(range(len(spec.classes)))
    x = np.stack([env.sample_covariates(rng, 30) for _ in range(8)])
    lo, hi = spec.bounds
    assert x.shape == (8, 30, spec.d) and np.all((x >= lo) & (x <= hi))
    for arm in (0, 1):
        y = env.sample_outcomes(rng, x, arm)
        mu, sd = env.mean(x, arm), env.sd(x, arm)
        assert y.shape == mu.shape == sd.shape == (8, 30)
        assert np.all(np.isfinite(y)) and np.all(sd > 0)
        if spec.family == "bernoulli":
            assert set(np.unique(y)) <= {0.0, 1.0} and np.all((mu > 0) & (mu < 1))
    assert np.asarray(env.ate).shape == (8,)
    # the runner accepts a prior file as a scenario, and the efficiency bounds are finite
    env2, xs, y0, y1, _ = draw_experiments(PriorTasks(name), horizon=20, reps=3, seed=0)
    assert xs.shape == (3, 20, spec.d) and np.all(np.isfinite(y0)) and np.all(np.isfinite(y1))
    tr = truth(env2)
    assert np.all(np.isfinite(tr.v_star)) and np.all(tr.v_uniform >= tr.v_star - 1e-9)


def test_beta1_gives_the_s4_tasks():
    env, classes = sample_tasks(load_prior("beta1"), np.random.default_rng(7), 50)
    s4 = SeriesPriorTasks().sample_tasks(np.random.default_rng(7), 50)
    assert type(env).__name__ == "SeriesTaskBatch" and np.all(classes == 0)
    np.testing.assert_allclose(env.theta_mean, s4.theta_mean, rtol=1e-12)
    np.testing.assert_allclose(env.theta_logsd, s4.theta_logsd, rtol=1e-12)
    # other settings of S4 give coefficients with the series prior's scales c (j + 1)^-(beta + 1/2)
    s = SeriesPriorTasks(beta=2.0, n_terms=4, mean_scale=0.5, logsd_scale=0.3).sample_tasks(
        np.random.default_rng(8), 20_000)
    j = np.arange(5.0)
    np.testing.assert_allclose(s.theta_mean.std(0), np.broadcast_to(0.5 * np.r_[1, (j[1:] + 1) ** -2.5], (2, 5)),
                               rtol=0.04)
    np.testing.assert_allclose(s.theta_logsd.std(0), np.broadcast_to(0.3 * np.r_[1, (j[1:] + 1) ** -2.5], (2, 5)),
                               rtol=0.04)


def test_coefficient_scales_offsets_and_padding():
    """Empirical sd of the drawn coefficients against basis.prior_scales, per arm and part."""
    spec = load_prior("treated-control")
    env, _ = sample_tasks(spec, np.random.default_rng(3), 20_000)
    expect = {
        ("mean", 1): (prior_scales(1, 10, 1.0, 1.0), 0.5),
        ("log_sd", 1): (prior_scales(1, 10, 1.0, 0.5), 0.0),
        ("mean", 0): (np.r_[prior_scales(1, 5, 2.0, 0.5), np.zeros(5)], 0.0),
        ("log_sd", 0): (np.r_[prior_scales(1, 5, 2.0, 0.25), np.zeros(5)], -0.5),
    }
    for (part, arm), (sd, offset) in expect.items():
        theta = (env.theta_mean if part == "mean" else env.theta_logsd)[:, arm]
        np.testing.assert_allclose(theta.std(axis=0), sd, rtol=0.03)
        mean = theta.mean(axis=0)
        assert abs(mean[0] - offset) < 4 * sd[0] / np.sqrt(20_000)
    # the ATE is the difference of the intercepts: 0.5 on average
    assert abs(env.ate.mean() - 0.5) < 4 * np.hypot(1.0, 0.5) / np.sqrt(20_000)


def test_smoothness_mixture_classes():
    spec = load_prior("smoothness-mixture")
    n = 8000
    env, classes = sample_tasks(spec, np.random.default_rng(5), n)
    freq = np.bincount(classes, minlength=4) / n
    assert np.all(np.abs(freq - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n))
    for k, beta in enumerate([0.5, 1.0, 2.0, 4.0]):
        theta = env.theta_mean[classes == k, 0]
        np.testing.assert_allclose(theta.std(axis=0)[:4], prior_scales(1, 10, beta)[:4], rtol=0.08)
    env, classes = sample_tasks(spec, np.random.default_rng(5), 2000, smoothness_class=3)
    assert np.all(classes == 3)
    np.testing.assert_allclose(env.theta_mean[:, 1].std(axis=0)[:3], prior_scales(1, 10, 4.0)[:3],
                               rtol=0.08)
    with pytest.raises(ValueError, match="smoothness_class"):
        sample_tasks(spec, np.random.default_rng(0), 3, smoothness_class=4)


def test_student_t_noise_has_the_declared_sd_and_shape():
    env, _ = sample_tasks(load_prior("student-t"), np.random.default_rng(2), 1)
    assert isinstance(env, StudentTTaskBatch) and env.df == 3.0
    x = np.full((1, 200_000, 1), 0.3)
    resid = (env.sample_outcomes(np.random.default_rng(4), x, 1) - env.mean(x, 1)) / env.sd(x, 1)
    q = np.array([0.05, 0.25, 0.75, 0.95])
    expect = stats.t.ppf(q, 3) * np.sqrt(1.0 / 3.0)  # t_3 scaled to unit variance
    np.testing.assert_allclose(np.quantile(resid, q), expect, atol=0.015)
    # with lighter tails the sample sd converges: it is the declared sd
    spec = load_prior("student-t").to_dict()
    spec["outcome"]["df"] = 30.0
    env, _ = sample_tasks(PriorSpec.from_dict(spec), np.random.default_rng(2), 1)
    y = env.sample_outcomes(np.random.default_rng(4), x, 0)
    np.testing.assert_allclose(y.std(), env.sd(x, 0)[0, 0], rtol=0.01)


def test_bernoulli_tasks_on_user_units():
    spec = load_prior("binary")
    env, _ = sample_tasks(spec, np.random.default_rng(6), 4)
    inner = env.env
    assert isinstance(inner, BernoulliTaskBatch) and env.bounds[0][0] == 18.0
    ages = np.array([18.0, 30.0, 49.0, 80.0])
    x = np.broadcast_to(ages[None, :, None], (4, 4, 1))
    f = np.einsum("tnf,tf->tn", cosine_features((x - 18.0) / 62.0, 10), inner.theta_mean[:, 1])
    np.testing.assert_allclose(env.mean(x, 1), expit(f), rtol=1e-12)
    np.testing.assert_allclose(env.sd(x, 1), np.sqrt(expit(f) * (1 - expit(f))), rtol=1e-12)
    # outcome frequencies match the probabilities
    xx = np.full((4, 40_000, 1), 49.0)
    freq = env.sample_outcomes(np.random.default_rng(8), xx, 0).mean(axis=1)
    p = env.mean(xx[:, :1], 0)[:, 0]
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / 40_000))
    # ATE by quadrature against Monte Carlo over uniform ages
    u = np.random.default_rng(9).uniform(size=(200_000, 1))
    phi = cosine_features(u, 10)
    mc = (expit(phi @ inner.theta_mean[:, 1].T) - expit(phi @ inner.theta_mean[:, 0].T)).mean(0)
    np.testing.assert_allclose(env.ate, mc, atol=3e-3)


# ----------------------------------------------------------------------------- NumPyro models


def _expected_theta(series, d: int, big_j: int, z: np.ndarray) -> np.ndarray:
    """Coefficients from standard-normal ``z`` using basis.prior_scales, padded to ``big_j``."""
    own = prior_scales(1, series.terms, series.beta, series.scale)
    per = np.r_[own[1:], np.zeros(big_j - series.terms)]
    sd = np.r_[own[0], np.tile(per, d)]
    return series.offset * (np.arange(sd.size) == 0) + sd * z


@pytest.mark.parametrize("name", ["beta1.yaml", "student-t.yaml", "binary.yaml", "treated-control.yaml"])
def test_log_density_matches_scipy(name):
    """The model's joint log density at fixed latents equals an independent numpy/scipy one, and
    padded (masked, NaN) rows change nothing."""
    spec = load_prior(name)
    _, u, a, y, mask, _, xq = _data(spec, seed=11)
    big_j, f = spec.n_terms, 1 + spec.d * spec.n_terms
    rng = np.random.default_rng(12)
    params = {"z_mean": rng.standard_normal((2, f))}
    if spec.family != "bernoulli":
        params["z_logsd"] = rng.standard_normal((2, f))
    model = numpyro_model(spec)
    lp, tr = log_density(model, (u, a, y, mask, xq), {}, params)
    lp_trunc, _ = log_density(model, (u[mask], a[mask], y[mask], mask[mask], xq), {}, params)

    phi = cosine_features(u[mask], big_j)
    am, yy = a[mask], y[mask]
    th_m = np.stack([_expected_theta(spec.arm(k).mean, spec.d, big_j, params["z_mean"][k])
                     for k in (0, 1)])
    fm = np.sum(phi * th_m[am], axis=1)
    expect = stats.norm.logpdf(np.concatenate([v.ravel() for v in params.values()])).sum()
    phi_q = cosine_features(xq, big_j)
    if spec.family == "bernoulli":
        expect += stats.bernoulli.logpmf(yy, expit(fm)).sum()
        q_mean = expit(th_m @ phi_q.T)
        q_sd = np.sqrt(q_mean * (1 - q_mean))
    else:
        th_s = np.stack([_expected_theta(spec.arm(k).log_sd, spec.d, big_j, params["z_logsd"][k])
                         for k in (0, 1)])
        sd = np.exp(np.sum(phi * th_s[am], axis=1))
        if spec.family == "gaussian":
            expect += stats.norm.logpdf(yy, fm, sd).sum()
        else:
            df = spec.outcome.df
            expect += stats.t.logpdf(yy, df, fm, sd * np.sqrt((df - 2) / df)).sum()
        q_mean, q_sd = th_m @ phi_q.T, np.exp(th_s @ phi_q.T)
    np.testing.assert_allclose(float(lp), expect, rtol=2e-5)
    np.testing.assert_allclose(float(lp_trunc), expect, rtol=2e-5)
    np.testing.assert_allclose(np.asarray(tr["mean"]["value"]), q_mean, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(np.asarray(tr["sd"]["value"]), q_sd, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("name", _unique_specs())
def test_every_prior_compiles_to_a_model(name):
    """Every shipped prior compiles: a prior draw (y = None) has the documented sites and shapes,
    and the model's coefficient scales are basis.prior_scales of the file's series."""
    spec = load_prior(name)
    k = 0 if spec.is_mixture else None
    _, u, a, _, mask, _, uq = _data(spec)
    model = numpyro_model(spec, smoothness_class=k)
    tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(u, a, None, mask, uq)
    f = 1 + spec.d * spec.n_terms
    first = spec.parts[0]  # 'mean', or 'purchase' for hurdle_lognormal; its site has the part's name
    assert tr["mean"]["value"].shape == tr["sd"]["value"].shape == (2, 7)
    assert tr[f"theta_{first}"]["value"].shape == tr[f"z_{first}"]["value"].shape == (2, f)
    assert tr["y"]["value"].shape == (60,) and not tr["y"]["is_observed"]
    assert ("z_logsd" in tr) == (spec.family in ("gaussian", "student_t"))
    assert np.all(np.isfinite(tr["mean"]["value"])) and np.all(tr["sd"]["value"] > 0)
    theta = np.asarray(tr[f"theta_{first}"]["value"])
    z = np.asarray(tr[f"z_{first}"]["value"])
    for arm in (0, 1):
        sp = spec.series(arm, first, k)
        expect = _expected_theta(sp, spec.d, spec.n_terms, z[arm])
        np.testing.assert_allclose(theta[arm], expect, rtol=1e-5, atol=1e-7)
    own = spec.series(0, first, k)  # a mixture's class beta replaces the series' own
    cls = spec.classes[0]  # with smoothness.separate a pair: the location series' beta first
    if spec.is_mixture:
        assert own.beta == (cls[0] if spec.separate else cls)
    else:
        assert own.beta == spec.arm(0).model_dump()[first]["beta"]
    _, sd = prior_arrays(spec, first, k)
    np.testing.assert_allclose(sd[0, : own.terms + 1], prior_scales(1, own.terms, own.beta, own.scale))


def _assert_covers(draws, env, xq, z_max=4.0, log_mean=False):
    """The truth lies within ``z_max`` posterior sds of the posterior mean at every query point
    (for the sd on the log scale, where its posterior is close to normal; with ``log_mean`` the
    mean too: a hurdle lognormal's mean is positive and its posterior skewed like the sd's)."""
    for site, fn, tf in (("mean", env.mean, np.log if log_mean else np.asarray), ("sd", env.sd, np.log)):
        true = tf(np.stack([fn(xq[None], arm)[0] for arm in (0, 1)]))
        post = tf(draws[site])
        z = np.abs(post.mean(0) - true) / post.std(0)
        assert np.all(z < z_max), (site, z)


def _nuts(model, args, warmup=150, samples=150, seed=0):
    mc = MCMC(NUTS(model), num_warmup=warmup, num_samples=samples, progress_bar=False)
    mc.run(jax.random.PRNGKey(seed), *args)
    return {k: np.asarray(v) for k, v in mc.get_samples().items()}


@pytest.mark.parametrize("name", ["beta1.yaml", "student-t.yaml", "binary.yaml"])
def test_nuts_conditions_every_family(name):
    """Short NUTS on 50 simulated units (10 more padded): the sites have the documented shapes
    and the posterior covers the task's true means and sds at the query points.

    One prior per likelihood (each NUTS run costs a few seconds of XLA compilation); the other
    shipped priors differ only in the prior arrays, checked by the log-density and prior-draw
    tests, and are all conditioned by the slow test below."""
    spec = load_prior(name)
    env, u, a, y, mask, xq, uq = _data(spec, seed=3)
    draws = _nuts(numpyro_model(spec, smoothness_class=0 if spec.is_mixture else None),
                  (u, a, y, mask, uq))
    assert draws["mean"].shape == draws["sd"].shape == (150, 2, 7)
    assert draws["theta_mean"].shape == (150, 2, 1 + spec.d * spec.n_terms)
    _assert_covers(draws, env, xq)


@pytest.mark.slow
@pytest.mark.parametrize("name", _unique_specs())
def test_nuts_conditions_every_shipped_prior(name):
    spec = load_prior(name)
    env, u, a, y, mask, xq, uq = _data(spec, seed=4)
    draws = _nuts(numpyro_model(spec, smoothness_class=0 if spec.is_mixture else None),
                  (u, a, y, mask, uq))
    assert draws["mean"].shape == draws["sd"].shape == (150, 2, 7)
    _assert_covers(draws, env, xq, log_mean=spec.family == "hurdle_lognormal")


def test_known_variance_nuts_matches_closed_form():
    """NUTS on the known-variance model against the Bayesian linear regression posterior:
    precision Phi^T Phi / sigma^2 + diag(1 / s^2), mean = cov (Phi^T y / sigma^2 + m / s^2)."""
    spec = load_prior("treated-control")  # offsets and zero-padded scales exercise the prior
    sigma = np.array([0.4, 0.8])
    rng = np.random.default_rng(21)
    n = 50
    u = rng.uniform(size=(n + 6, 1))
    a = rng.integers(0, 2, size=n + 6)
    y = np.sin(3 * u[:, 0]) + a + sigma[a] * rng.standard_normal(n + 6)
    mask = np.arange(n + 6) < n
    xq = np.linspace(0, 1, 9)[:, None]
    draws = _nuts(known_variance_model(spec, sigma), (u, a, y, mask, xq),
                  warmup=300, samples=1000, seed=1)
    assert draws["mean"].shape == (1000, 2, 9)
    np.testing.assert_allclose(draws["sd"][0], np.repeat(sigma[:, None], 9, axis=1), rtol=1e-6)

    phi_q = cosine_features(xq, 10)
    for arm in (0, 1):
        sp = spec.arm(arm).mean
        own = prior_scales(1, sp.terms, sp.beta, sp.scale)
        keep = own.size  # coefficients beyond `terms` are fixed at zero by the prior
        m0 = np.r_[sp.offset, np.zeros(keep - 1)]
        sel = mask & (a == arm)
        phi = cosine_features(u[sel], 10)[:, :keep]
        prec = phi.T @ phi / sigma[arm] ** 2 + np.diag(1.0 / own**2)
        cov = np.linalg.inv(prec)
        mean = cov @ (phi.T @ y[sel] / sigma[arm] ** 2 + m0 / own**2)
        q_mean = phi_q[:, :keep] @ mean
        q_sd = np.sqrt(np.einsum("qf,fg,qg->q", phi_q[:, :keep], cov, phi_q[:, :keep]))
        s = draws["mean"][:, arm]
        ess = effective_sample_size(s[None])  # (9,)
        tol = 4.0 * q_sd / np.sqrt(ess)
        np.testing.assert_array_less(np.abs(s.mean(0) - q_mean), tol)
        np.testing.assert_allclose(s.std(0), q_sd, rtol=0.15)


def test_mixture_model_needs_a_class_and_user_models_pass_through():
    with pytest.raises(ValueError, match="smoothness_class"):
        numpyro_model(load_prior("smoothness-mixture"))
    with pytest.raises(ValueError, match="bernoulli"):
        known_variance_model(load_prior("binary"), 1.0)
    spec = PriorSpec.from_dict({"name": "u", "covariates": [{"name": "x", "low": 0, "high": 1}],
                                "model": "_user_models:dose_response"})
    import _user_models

    assert numpyro_model(spec) is _user_models.dose_response
