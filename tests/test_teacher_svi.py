"""The SVI teacher against independent truths: the closed-form posterior of the known-variance
model (float64 numpy; the Laplace and full-rank guides are exact there, the mean-field one has
the exact mean), the oracle Neyman rule on scenario S2 and the conjugate teacher; and against
itself: incremental vs folded state, warm vs cold fits, vectorized vs one task at a time, the
smoothness mixture's mixing with the conjugate class weights (the model's own weights are tested
in test_class_evidence.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _sampling_cases import known_variance_case, known_variance_posterior, s2_history

import bayesdesign as bd
from bayesdesign.spec import PriorSpec
from bayesdesign.teachers import TeacherConfig, make_teacher
from bayesdesign.teachers._sampling import task_keys
from bayesdesign.teachers.svi import SVITeacher

XQ = np.array([[0.15], [0.5], [0.85]])
N = 400
SETTINGS = {"num_steps": 1500, "num_draws": 400, "refit_every": 100, "max_units": 512}


def _s2_history(seed, n=N, batch=None):
    return s2_history(seed, n, batch)


def _oracle(u):
    return np.exp(2 * u - 1) / (np.exp(2 * u - 1) + np.exp(1 - 2 * u))


@pytest.fixture(scope="module")
def teacher():
    return SVITeacher("beta1", TeacherConfig(burn_in=10), **SETTINGS)


@pytest.fixture(scope="module")
def cold(teacher):
    h = _s2_history(3)
    state, _ = teacher.fold(h)
    assert state.fit_n == N
    return h, state


@pytest.mark.parametrize("guide", ["normal", "mvn", "laplace"])
def test_known_variance_posterior_matches_closed_form(guide, tmp_path, monkeypatch):
    """Posterior of mu_a(x) under the known-variance mean model (a user model: the generic path).
    Mean: every guide within 0.1 posterior sd + 4 MC standard errors. Sd: the Laplace and
    full-rank guides within 10% (exact family); the mean-field sd is not the posterior's."""
    spec, h = known_variance_case(tmp_path, monkeypatch, "kv_model_svi_test")
    n = len(h)
    t = SVITeacher(
        spec, TeacherConfig(burn_in=0), guide=guide, num_steps=3000, num_draws=2000, refit_every=n, max_units=64
    )
    state, _ = t.fold(h)
    xq = np.linspace(0, 1, 7)[:, None]
    mean, _ = t.draws_at(state, xq[None])
    draws = mean[0, 0]  # (S, 2, Q)
    for arm in (0, 1):
        ref, q_sd = known_variance_posterior(h, xq, arm)
        err = np.abs(draws[:, arm].mean(0) - ref)
        np.testing.assert_array_less(err, 0.1 * q_sd + 4 * draws[:, arm].std(0) / np.sqrt(draws.shape[0]))
        if guide != "normal":
            np.testing.assert_allclose(draws[:, arm].std(0), q_sd, rtol=0.1)


def test_s2_probability_near_oracle_and_conjugate(teacher, cold):
    h, state = cold
    out = teacher.decide(state, XQ[None])
    # on these 400 units the conjugate teacher itself sits 0.046 from the oracle at x = 0.15
    np.testing.assert_array_less(np.abs(out["pi"][0] - _oracle(XQ[:, 0])), 0.06)
    conj = make_teacher("conjugate", "beta1")
    cstate, _ = conj.fold(bd.History(*(v[None] for v in h)))
    np.testing.assert_array_less(np.abs(out["pi"][0] - conj.decide(cstate, XQ[None])["pi"][0]), 0.03)
    np.testing.assert_allclose(out["pi"], out["sbar"][:, 1] / out["sbar"].sum(1))
    assert np.isfinite(teacher.diagnostics(state)["loss"]).all()


def test_warm_refits_and_incremental_state_agree_with_a_cold_fit(teacher, cold):
    h, state_cold = cold
    state = teacher.init(1)
    for lo in range(0, N, 100):
        sl = slice(lo, lo + 100)
        state = teacher.update(state, h.x[None, sl], h.a[None, sl], h.y[None, sl], h.pi[None, sl])
    assert state.fit_n == N and state.warm is not None
    warm, cold_out = teacher.decide(state, XQ[None]), teacher.decide(state_cold, XQ[None])
    np.testing.assert_allclose(warm["pi"], cold_out["pi"], atol=0.01)
    np.testing.assert_allclose(warm["mean"], cold_out["mean"], atol=0.05)
    np.testing.assert_allclose(warm["log_sd_mean"], cold_out["log_sd_mean"], atol=0.05)
    p_fold = teacher.propensity(h, XQ)
    np.testing.assert_allclose(p_fold, teacher.clip.clip(cold_out["pi"][0], N + 1))
    np.testing.assert_allclose(teacher.propensity_at(state, XQ[None])[0], p_fold, atol=0.01)


def test_vectorized_fit_matches_one_task_at_a_time(teacher):
    """The compiled vectorized fit on three tasks equals three single-task calls with the same keys."""
    hb = _s2_history(8, n=200, batch=3)
    state = teacher.init(3)
    state = state._replace(
        t=200,
        x=np.pad(hb.x, ((0, 0), (0, 312), (0, 0))),
        a=np.pad(hb.a, ((0, 0), (0, 312))).astype(np.int32),
        y=np.pad(hb.y, ((0, 0), (0, 312))),
    )
    feats = teacher._padded(state, 200)[0]
    keys = task_keys(0, 200, 1, 3)[0]
    fn = teacher._fit_fn(0, teacher.settings(False), False)
    batch = fn(keys, *feats)
    for b in range(3):
        one = fn(keys[b : b + 1], *(v[b : b + 1] for v in feats))
        np.testing.assert_allclose(np.asarray(one.z[0]), np.asarray(batch.z[b]), atol=2e-3)


def test_mixture_weights_come_from_the_conjugate_class_posterior_on_request():
    spec = PriorSpec.from_dict(
        {
            "name": "two-classes",
            "covariates": [{"name": "x", "low": 0, "high": 1}],
            "arms": {"shared": {"mean": {"terms": 10, "scale": 1.0}, "log_sd": {"terms": 10, "scale": 0.6}}},
            "smoothness": {"choices": [0.5, 2.0], "weights": [0.3, 0.7]},
        }
    )
    t = SVITeacher(spec, TeacherConfig(burn_in=10), num_steps=300, num_draws=100, refit_every=100, max_units=128,
                   class_weights="conjugate")  # the model's own weights: tests/test_class_evidence.py
    h = _s2_history(6, n=100)
    state, _ = t.fold(h)
    conj = make_teacher("mixture", spec)
    np.testing.assert_allclose(state.class_prob[0], conj.class_posterior(h), rtol=1e-6)
    out = t.decide(state, XQ[None])
    assert out["class_prob"].shape == (1, 2) and state.draws["z_mean"].shape == (1, 2, 100, 2, 11)
    mean, sd = t.draws_at(state, XQ[None])
    sbar_k = np.maximum(sd, t.floor_sd[:, None]).mean(2)[0]  # (K, 2, Q)
    np.testing.assert_allclose(out["sbar"][0], np.einsum("k,kaq->aq", state.class_prob[0], sbar_k), rtol=1e-6)


def test_posterior_is_inference_data(teacher, cold):
    h, state = cold
    idata = teacher.posterior(h, XQ, draws=400)
    assert dict(idata.posterior.sizes) == {"chain": 1, "draw": 400, "arm": 2, "query": 3}
    out = teacher.decide(state, XQ[None])
    np.testing.assert_allclose(idata.posterior["mean"].mean(("chain", "draw")), out["mean"][0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"guide": "flow"}, "guide"),
        ({"refit_every": 0}, "refit_every"),
        ({"num_steps": 0}, "num_steps"),
        ({"num_draws": 0}, "num_draws"),
        ({"lr": -0.1}, "lr"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_teacher("svi", "beta1", **kwargs)


def test_decide_is_jax_free_of_tracers_after_many_calls(teacher, cold):
    """Decisions are plain numpy and repeatable (the guide's prototype was set outside vmap)."""
    _, state = cold
    a = teacher.decide(state, XQ[None])["pi"]
    b = teacher.decide(state, jnp.asarray(XQ[None]))["pi"]
    assert isinstance(a, np.ndarray) and not isinstance(a, jax.Array)
    np.testing.assert_array_equal(a, b)
