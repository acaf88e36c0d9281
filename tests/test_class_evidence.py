"""The model's own class posterior of a smoothness mixture (teachers.evidence): the importance-
sampling evidence against the closed-form marginal likelihood of Bayesian linear regression
(float64 numpy), and the NUTS and SVI teachers' class weights against the exact class posterior
on a mixture whose noise sd is known (so the evidence is closed-form), where the conjugate working
model's weights are measurably different.
"""

import warnings

import jax
import numpy as np
import pytest
from _sampling_cases import SIGMA, known_variance_case
from scipy.stats import multivariate_normal

import bayesdesign as bd
from bayesdesign.basis import cosine_features
from bayesdesign.models import prior_arrays
from bayesdesign.spec import PriorSpec, load_prior
from bayesdesign.teachers import TeacherConfig, make_teacher
from bayesdesign.teachers import evidence as ev
from bayesdesign.teachers._sampling import model_parts
from bayesdesign.teachers.nuts import NUTSTeacher
from bayesdesign.teachers.svi import SVITeacher

KNOWN_SD = 0.5
N = 40


def _blr_log_evidence(x, a, y, loc, sd, sigma, n_terms):
    """log N(y; Phi m, Phi diag(s^2) Phi^T + sigma^2 I), summed over the arms."""
    total = 0.0
    for arm in (0, 1):
        sel = a == arm
        phi = cosine_features(x[sel], n_terms)
        cov = phi @ np.diag(sd[arm] ** 2) @ phi.T + sigma[arm] ** 2 * np.eye(sel.sum())
        total += multivariate_normal(phi @ loc[arm], cov).logpdf(y[sel])
    return total


def test_importance_sampling_evidence_matches_the_closed_form(tmp_path, monkeypatch):
    """Known-variance model (user-model path): log p(y) within 4 Monte Carlo standard errors (plus
    float32 round-off) of the closed form, from exact posterior draws."""
    spec, h = known_variance_case(tmp_path, monkeypatch, "kv_model_evidence_test")
    parts = model_parts(spec)
    assert parts.latent_names == ("z_mean",)
    beta1 = load_prior("beta1")
    loc, sd = prior_arrays(beta1, "mean")
    x, a, y = h.x, h.a.astype(int), h.y
    exact = _blr_log_evidence(x, a, y, loc, sd, SIGMA, beta1.n_terms)
    rng = np.random.default_rng(0)
    draws = []
    for arm in (0, 1):  # exact posterior of z_mean[arm]: precision I + A^T A / sigma^2, A = Phi diag(s)
        sel = a == arm
        phi = cosine_features(x[sel], beta1.n_terms)
        big_a = phi * sd[arm]
        prec = np.eye(phi.shape[1]) + big_a.T @ big_a / SIGMA[arm] ** 2
        mean = np.linalg.solve(prec, big_a.T @ (y[sel] - phi @ loc[arm]) / SIGMA[arm] ** 2)
        chol = np.linalg.cholesky(prec)
        draws.append(mean + np.linalg.solve(chol.T, rng.standard_normal((phi.shape[1], 400))).T)
    flat = np.stack(draws, 1).reshape(400, -1)  # (S, 2F): z_mean raveled arm by arm
    data = tuple(np.asarray(v)[None] for v in (x.astype(np.float32), a, y.astype(np.float32), np.ones(len(y), bool)))
    log_z, khat, se = ev.log_evidence(parts, data, flat[None], jax.random.PRNGKey(3)[None], num=2000)
    assert khat[0] < 0.5 and se[0] < 0.05  # reliable, and the check below has power
    assert abs(log_z[0] - exact) < 4 * se[0] + 0.01, (log_z[0], exact, se[0])
    # a proposal centred off the posterior still estimates the same evidence (the draws only place q)
    log_z2, _, se2 = ev.log_evidence(parts, data, flat[None] + 0.3, jax.random.PRNGKey(4)[None], num=2000)
    assert abs(log_z2[0] - exact) < 4 * se2[0] + 0.01


def _known_sd_mixture():
    """Two smoothness classes, noise sd known (log-sd series of scale 1e-4 around log 0.5): the
    class evidence is the closed-form Bayesian linear regression one."""
    return PriorSpec.from_dict(
        {
            "name": "known-sd-mixture",
            "covariates": [{"name": "x", "low": 0, "high": 1}],
            "arms": {
                "shared": {
                    "mean": {"terms": 6, "scale": 1.0},
                    "log_sd": {"terms": 1, "scale": 1e-4, "offset": float(np.log(KNOWN_SD))},
                }
            },
            "smoothness": {"choices": [0.5, 3.0], "weights": [0.5, 0.5]},
        }
    )


def _history(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(N, 1))
    a = rng.integers(0, 2, N)
    y = 0.6 * np.cos(2 * np.pi * x[:, 0]) + 0.3 * a + KNOWN_SD * rng.standard_normal(N)
    return bd.History(x, a.astype(float), y, np.full(N, 0.5))


def _exact_class_posterior(spec, h):
    lz = np.array([
        _blr_log_evidence(h.x, h.a.astype(int), h.y, *prior_arrays(spec, "mean", k), np.full(2, KNOWN_SD), spec.n_terms)
        for k in range(2)
    ])
    p = np.exp(lz - lz.max())
    return p / p.sum()


@pytest.fixture(scope="module")
def mixture_fit():
    """Histories (seeds 0 and 20) where the exact class posterior is (0.46, 0.54) and
    (0.77, 0.23) and the conjugate working model's is (0.17, 0.83) and (0.32, 0.68)."""
    spec = _known_sd_mixture()
    hs = [_history(s) for s in (0, 20)]
    hb = bd.History(*(np.stack(v) for v in zip(*hs, strict=True)))
    teacher = NUTSTeacher(spec, TeacherConfig(burn_in=10), num_warmup=150, num_samples=200, refit_every=N,
                          max_units=64)
    state, _ = teacher.fold(hb)
    exact = np.stack([_exact_class_posterior(spec, h) for h in hs])
    conj = make_teacher("mixture", spec).class_posterior(hb)
    return spec, hb, teacher, state, exact, conj


def test_nuts_class_weights_are_the_models_own_class_posterior(mixture_fit):
    spec, hb, teacher, state, exact, conj = mixture_fit
    assert teacher.class_weights == "model"
    tv = lambda p, q: 0.5 * np.abs(p - q).sum(-1)  # noqa: E731
    assert np.all(tv(conj, exact) > 0.25)  # the conjugate weights would fail the next line
    np.testing.assert_array_less(tv(state.class_prob, exact), 0.05)
    diag = teacher.diagnostics(state)
    assert np.all(diag["evidence_khat"] < ev.KHAT_MAX) and np.all(diag["evidence_fallback"] == 0)
    np.testing.assert_allclose(diag["evidence_tv"], tv(state.class_prob, conj), rtol=1e-6)
    # decisions mix the class moments with these weights
    xq = np.array([[[0.2], [0.7]]] * 2)
    out = teacher.decide(state, xq)
    _, sd = teacher.draws_at(state, xq)
    sbar_k = np.maximum(sd, teacher.floor_sd[:, None]).mean(2)  # (B, K, 2, Q)
    np.testing.assert_allclose(out["sbar"], np.einsum("bk,bkaq->baq", state.class_prob, sbar_k), rtol=1e-6)


@pytest.mark.slow
def test_svi_class_weights_are_the_models_own_class_posterior(mixture_fit):
    """The same evidence from the SVI guide's draws (they only place the proposal); slow only for
    compiling the SVI fits (about 35 s on the shared 2 cores)."""
    spec, hb, _, _, exact, _ = mixture_fit
    t = SVITeacher(spec, TeacherConfig(burn_in=10), num_steps=300, num_draws=100, refit_every=N, max_units=64)
    state, _ = t.fold(hb)
    np.testing.assert_array_less(0.5 * np.abs(state.class_prob - exact).sum(-1), 0.05)


def test_conjugate_class_weights_on_request(mixture_fit):
    spec, hb, _, _, _, conj = mixture_fit
    t = NUTSTeacher(spec, TeacherConfig(burn_in=10), num_warmup=150, num_samples=200, refit_every=N, max_units=64,
                    class_weights="conjugate")
    state, _ = t.fold(hb)
    np.testing.assert_allclose(state.class_prob, conj, rtol=1e-6)
    assert "evidence_khat" not in t.diagnostics(state)


def test_unreliable_evidence_falls_back_to_the_conjugate_weights_with_a_warning(mixture_fit):
    """Draws far from the posterior put the proposal where the posterior has no mass: k-hat above
    0.7, and that task's weights are the conjugate ones, flagged and warned about."""
    spec, hb, teacher, state, exact, conj = mixture_fit
    feats = teacher._padded(state, N)
    keys = jax.random.split(jax.random.PRNGKey(0), 4).reshape(2, 2, -1)
    good = np.concatenate([state.draws[k].reshape(2, 2, 200, -1) for k in teacher.parts[0].latent_names], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ev.EvidenceWarning)
        _, ref = teacher._model_class_prob(feats, good, keys, conj, N)
    bad = good.copy()
    bad[1] += 6.0  # task 1: every coefficient 6 prior sds off
    with pytest.warns(ev.EvidenceWarning, match="1 of 2 tasks on 40 units"):
        prob, diag = teacher._model_class_prob(feats, bad, keys, conj, N)
    assert diag["evidence_fallback"].tolist() == [0.0, 1.0] and diag["evidence_khat"][1] > ev.KHAT_MAX
    np.testing.assert_array_equal(prob[1], conj[1])
    assert ref["evidence_fallback"][0] == 0 and not np.allclose(prob[0], conj[0])


@pytest.mark.parametrize("kwargs, name", [({"class_weights": "both"}, "class_weights"),
                                          ({"evidence_draws": 5}, "evidence_draws")])
def test_bad_settings_name_the_setting(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_teacher("nuts", "smoothness-mixture", **kwargs)
