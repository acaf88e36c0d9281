"""The NUTS teacher against independent truths: the closed-form posterior of the known-variance
model (float64 numpy), the oracle Neyman rule on scenario S2, the conjugate teacher; and against
itself: incremental vs folded state, warm vs cold fits, vectorized vs one task at a time.

Sizes are small (one padded length, 512, and few distinct compiled programs) so the file runs in
about a minute on two cores; Monte Carlo comparisons use 4 standard errors from the draws' ESS.
"""

import numpy as np
import pytest
from _sampling_cases import known_variance_case, known_variance_posterior, s2_history
from numpyro.diagnostics import effective_sample_size

import bayesdesign as bd
from bayesdesign.teachers import TeacherConfig, make_teacher
from bayesdesign.teachers.nuts import NUTSTeacher

XQ = np.array([[0.15], [0.5], [0.85]])
N = 400
SETTINGS = {"num_warmup": 200, "num_samples": 300, "refit_every": 100, "max_units": 512}


def _s2_history(seed, n=N, batch=None):
    return s2_history(seed, n, batch)


def _batched(h):
    return bd.History(*(np.asarray(v)[None] for v in h))


def _mc(teacher, state, xq):
    """Posterior means of mu_a and of the floored sigma_a at xq, with Monte Carlo standard errors
    (draw sd / sqrt(ESS)); arrays (B, 2, Q)."""
    mean, sd = teacher.draws_at(state, np.broadcast_to(xq, (state.x.shape[0], *xq.shape)))
    sd = np.maximum(sd, teacher.floor_sd[:, None])
    out = []
    for v in (mean[:, 0], sd[:, 0]):  # (B, S, 2, Q)
        with np.errstate(invalid="ignore", divide="ignore"):  # constant draws (a known sd): se 0
            ess = np.stack([effective_sample_size(v[b][None]) for b in range(v.shape[0])])
        out.append((v.mean(1), np.nan_to_num(v.std(1) / np.sqrt(ess))))
    return out


def _assert_mc_close(a, b, k=4.0):
    (ma, sa), (mb, sb) = a, b
    tol = k * np.sqrt(sa**2 + sb**2)
    assert np.all(np.abs(ma - mb) < tol), (ma, mb, tol)


@pytest.fixture(scope="module")
def teacher():
    return NUTSTeacher("beta1", TeacherConfig(burn_in=10), **SETTINGS)


@pytest.fixture(scope="module")
def cold(teacher):
    """One cold fit on 400 units of S2 (pi = 1/2), folded in one update."""
    h = _s2_history(3)
    state, squeeze = teacher.fold(h)
    assert squeeze and state.t == N and state.fit_n == N
    return h, state


def test_known_variance_posterior_mean_matches_closed_form(tmp_path, monkeypatch):
    """On the known-variance mean model (a user model here, so the generic path is exercised) the
    posterior of mu_a(x) is Gaussian in closed form: precision Phi^T Phi / sigma^2 + diag(s^-2)."""
    spec, h = known_variance_case(tmp_path, monkeypatch, "kv_model_nuts_test")
    n = len(h)
    t = NUTSTeacher(spec, TeacherConfig(burn_in=0), num_warmup=200, num_samples=500, refit_every=n, max_units=64)
    state, _ = t.fold(h)
    xq = np.linspace(0, 1, 7)[:, None]
    (m, se), _ = _mc(t, state, xq)
    out = t.decide(state, xq[None])
    np.testing.assert_allclose(out["mean"], m, rtol=1e-5, atol=1e-6)
    for arm in (0, 1):
        ref, q_sd = known_variance_posterior(h, xq, arm)
        np.testing.assert_array_less(np.abs(m[0, arm] - ref), 4.0 * se[0, arm])
        assert np.all(se[0, arm] < 0.15 * q_sd)  # the check has power: MC error well below the posterior sd
    assert state.diagnostics["divergences"][0] == 0


def test_s2_probability_near_oracle_and_conjugate(teacher, cold):
    h, state = cold
    out = teacher.decide(state, XQ[None])
    u = XQ[:, 0]
    pi_star = np.exp(2 * u - 1) / (np.exp(2 * u - 1) + np.exp(1 - 2 * u))
    np.testing.assert_array_less(np.abs(out["pi"][0] - pi_star), 0.05)
    conj = make_teacher("conjugate", "beta1")
    cstate, _ = conj.fold(_batched(h))
    np.testing.assert_array_less(np.abs(out["pi"][0] - conj.decide(cstate, XQ[None])["pi"][0]), 0.03)
    assert out["sbar"].shape == out["mean"].shape == out["log_sd_sd"].shape == (1, 2, 3)
    np.testing.assert_allclose(out["pi"], out["sbar"][:, 1] / out["sbar"].sum(1))
    diag = teacher.diagnostics(state)
    assert diag["divergences"][0] == 0 and diag["rhat"][0] < 1.05 and diag["ess"][0] > 50


def test_warm_refits_and_incremental_state_agree_with_a_cold_fit(teacher, cold):
    h, state_cold = cold
    state = teacher.init(1)
    for lo in range(0, N, 100):  # fits at 100 (cold), 200, 300, 400 (warm-started)
        sl = slice(lo, lo + 100)
        state = teacher.update(state, h.x[None, sl], h.a[None, sl], h.y[None, sl], h.pi[None, sl])
    assert state.fit_n == N and state.warm is not None
    warm_mc, cold_mc = _mc(teacher, state, XQ), _mc(teacher, state_cold, XQ)
    for w, c in zip(warm_mc, cold_mc, strict=True):
        _assert_mc_close(w, c)
    # propensity(history, x) folds the history: the same cold fit, clipped
    p_fold = teacher.propensity(h, XQ)
    np.testing.assert_allclose(p_fold, teacher.clip.clip(teacher.decide(state_cold, XQ[None])["pi"][0], N + 1))
    np.testing.assert_allclose(teacher.propensity_at(state, XQ[None])[0], p_fold, atol=0.02)
    # between refits the draws are held: 50 more units change nothing
    more = _s2_history(4, 50)
    later = teacher.update(state, more.x[None], more.a[None], more.y[None], more.pi[None])
    assert later.fit_n == N and later.t == N + 50
    np.testing.assert_array_equal(teacher.decide(later, XQ[None])["pi"], teacher.decide(state, XQ[None])["pi"])
    # burn-in: exactly 1/2, and decide still answers (prior draws)
    early = teacher.update(teacher.init(1), h.x[None, :5], h.a[None, :5], h.y[None, :5], h.pi[None, :5])
    assert early.fit_n == 0 and np.all(teacher.propensity_at(early, XQ[None]) == 0.5)
    assert np.all(np.isfinite(teacher.decide(early, XQ[None])["pi"]))


def test_vectorized_over_tasks_matches_one_task_at_a_time(teacher, cold):
    h1, state1 = cold
    hb = _s2_history(8, batch=2)
    hb = bd.History(*(np.concatenate([np.asarray(v1)[None], vb]) for v1, vb in zip(h1, hb, strict=True)))
    state_b, _ = teacher.fold(hb)  # three tasks in one vectorized fit
    alone = [state1] + [teacher.fold(bd.History(*(v[b] for v in hb)))[0] for b in (1, 2)]
    batch_mc = _mc(teacher, state_b, XQ)
    for b, st in enumerate(alone):
        for vb, v1 in zip(batch_mc, _mc(teacher, st, XQ), strict=True):
            _assert_mc_close((vb[0][b], vb[1][b]), (v1[0][0], v1[1][0]))
    assert teacher.diagnostics(state_b)["divergences"].shape == (3,)


def test_posterior_is_inference_data_with_divergences(teacher, cold):
    h, state = cold
    idata = teacher.posterior(h, XQ, draws=300)
    assert dict(idata.posterior.sizes) == {"chain": 1, "draw": 300, "arm": 2, "query": 3}
    assert set(idata.posterior.data_vars) == {"mean", "sd", "log_sd"}
    assert idata.sample_stats["diverging"].shape == (1, 300)
    # the same cold fit (same keys) as the folded state
    out = teacher.decide(state, XQ[None])
    np.testing.assert_allclose(idata.posterior["mean"].mean(("chain", "draw")), out["mean"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(idata.posterior["sd"].mean(("chain", "draw")), out["sbar"][0], rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"refit_every": 0}, "refit_every"),
        ({"num_samples": 0}, "num_samples"),
        ({"num_warmup": 0}, "num_warmup"),
        ({"num_chains": 1.5}, "num_chains"),
        ({"target_accept_prob": 1.0}, "target_accept_prob"),
        ({"max_units": 0}, "max_units"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_teacher("nuts", "beta1", **kwargs)


def test_history_longer_than_max_units_is_an_error(teacher):
    h = _s2_history(5, 520)
    with pytest.raises(ValueError, match="max_units"):
        teacher.fold(h)


def test_refit_schedule_is_a_function_of_t():
    from bayesdesign.teachers._sampling import capacity, fit_size

    ts = (0, 9, 10, 19, 20, 45, 80, 199, 200, 399, 400)
    assert [fit_size(t, 200, 10) for t in ts] == [0, 0, 10, 10, 20, 40, 80, 160, 200, 200, 400]
    assert [fit_size(t, 200, 10, early_refits=False) for t in ts] == [0, 0, 10, 10, 10, 10, 10, 10, 200, 200, 400]
    assert [capacity(n, None) for n in (0, 10, 64, 65, 1000, 1025)] == [64, 64, 64, 128, 1024, 2048]
    assert capacity(10, 512) == 512


def test_several_chains_pool_draws_and_report_rhat():
    import arviz as az

    h = _s2_history(3, n=60)
    t = NUTSTeacher(
        "beta1", TeacherConfig(burn_in=0), num_warmup=100, num_samples=100, num_chains=3, refit_every=60, max_units=64
    )
    idata = t.posterior(h, XQ, draws=300)
    assert dict(idata.posterior.sizes) == {"chain": 3, "draw": 100, "arm": 2, "query": 3}
    assert idata.sample_stats["diverging"].shape == (3, 100)
    assert float(az.rhat(idata.posterior["mean"]).to_array().max()) < 1.1
    state, _ = t.fold(h)
    assert state.draws["z_mean"].shape == (1, 1, 300, 2, 11) and state.warm.z.shape == (1, 1, 3, 44)
    diag = t.diagnostics(state)
    assert diag["rhat"][0] < 1.1 and diag["ess"][0] > 50


@pytest.mark.parametrize("name", ["beta1", "student-t", "binary", "treated-control"])
def test_fast_series_density_equals_the_prior_model(name):
    """The samplers' fit_model (features computed once per fit) has the log density of
    models.numpyro_model at the same latents, padding included."""
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    from bayesdesign.models import numpyro_model
    from bayesdesign.spec import load_prior
    from bayesdesign.teachers._sampling import _featurize, model_parts

    spec = load_prior(name)
    parts = model_parts(spec)
    rng = np.random.default_rng(2)
    n = 40
    u = rng.uniform(size=(n, spec.d)).astype(np.float32)
    a = rng.integers(0, 2, n)
    y = (rng.uniform(size=n) < 0.5).astype(np.float32) if spec.family == "bernoulli" else rng.normal(size=n)
    mask = np.arange(n) < 33
    u[~mask], y = np.nan, np.where(mask, y, np.nan).astype(np.float32)  # padding may hold anything
    latent = {k: jnp.asarray(rng.normal(size=(2, 1 + spec.d * spec.n_terms)), jnp.float32) for k in parts.latent_names}
    ref, _ = log_density(numpyro_model(spec), (u, a, y, mask, u[:2] * 0 + 0.5), {}, latent)
    feats = _featurize(parts.featurize, *(jnp.asarray(v)[None] for v in (u, a, y, mask)))
    fast, _ = log_density(parts.fit_model, tuple(v[0] for v in feats), {}, latent)
    np.testing.assert_allclose(float(fast), float(ref), rtol=1e-5)
