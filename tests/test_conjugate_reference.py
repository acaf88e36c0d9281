"""The conjugate regression has three implementations, one per runtime: JAX (the teacher,
``teachers.conjugate._blr``), torch float64 (the student's layer, ``ConjugateLayer.fit``) and
Numba (the engine, ``engine._conj_fit_arm``). Each is checked here against one reference:
Bayesian linear regression in covariance form, with the evidence from SciPy's multivariate normal
density (no whitening, no sufficient statistics)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import stats

from bayesdesign.basis import cosine_features
from bayesdesign.spec import load_prior
from bayesdesign.student.conjugate import layer_prior
from bayesdesign.student.engine import Engine, _conj_fit_arm
from bayesdesign.student.model import StudentConfig, StudentModel
from bayesdesign.teachers.conjugate import _blr, prior_from_spec

PRIOR_OBS = 5.0  # pseudo-observations of the plug-in noise variance (v0 = 1 in the student's units)


def reference(phi, t, s, v):
    """Posterior mean of theta ~ N(0, diag(s^2)) given t ~ N(phi theta, v I), and log p(t)."""
    cov = np.diag(s**2)
    post_cov = np.linalg.inv(np.linalg.inv(cov) + phi.T @ phi / v)
    coef = post_cov @ phi.T @ t / v
    ev = stats.multivariate_normal(np.zeros(len(t)), v * np.eye(len(t)) + phi @ cov @ phi.T).logpdf(t)
    return coef, ev


@pytest.fixture(scope="module")
def case():
    spec = load_prior("smoothness-mixture")  # four classes: four prior scales per regression
    prior = layer_prior(spec)
    n_terms = prior_from_spec(spec).n_terms
    rng = np.random.default_rng(5)
    n = 60
    u = rng.uniform(size=(n, 1))
    a = (rng.uniform(size=n) < 0.5).astype(float)
    y = np.sin(4 * u[:, 0]) * a + (0.5 + u[:, 0]) * rng.standard_normal(n)
    want, inputs = {}, {}  # (arm, regression) -> [(coef, ev) per class], and the regression's data
    for arm in (0, 1):
        phi, ya = cosine_features(u[a == arm], n_terms), y[a == arm]
        c = ya.mean()
        v_hat = (((ya - c) ** 2).sum() + PRIOR_OBS) / (len(ya) + PRIOR_OBS)
        targets = ((ya, v_hat, prior["s_mean"]), ((ya - c) ** 2 - 1.0, 2 * v_hat**2, prior["s_var"]))
        for reg, (t, v, s) in enumerate(targets):
            inputs[arm, reg] = (phi, t, v, s[arm])
            want[arm, reg] = [reference(phi, t, s[arm, k], v) for k in range(s.shape[1])]
    return spec, prior, n_terms, u, a, y, want, inputs


def _model(spec, prior, n_terms):
    torch.manual_seed(0)
    model = StudentModel(StudentConfig(d=1, n_classes=len(spec.classes), n_terms=n_terms, d_model=32)).eval()
    model.conj.set_prior(prior, {"floor": 0.05, "prior_obs": PRIOR_OBS})
    return model


def test_torch_layer_against_the_reference(case):
    spec, prior, n_terms, u, a, y, want, _ = case
    layer = _model(spec, prior, n_terms).conj
    sums = layer.unit_stats(torch.as_tensor(u[None]), torch.as_tensor(a[None]), torch.as_tensor(y[None])).sum(1)
    fit = layer.fit(sums)
    for (arm, reg), per_class in want.items():
        for k, (coef, _) in enumerate(per_class):
            np.testing.assert_allclose(fit.coef[0, arm, reg, k].numpy(), coef, rtol=1e-8, atol=1e-10)
    for reg, ev in ((0, fit.ev_mean), (1, fit.ev_var)):  # summed over arms
        ref = [want[0, reg][k][1] + want[1, reg][k][1] for k in range(len(spec.classes))]
        np.testing.assert_allclose(ev[0].numpy(), ref, rtol=1e-9)


def test_numba_engine_against_the_reference(case):
    spec, prior, n_terms, u, a, y, want, _ = case
    model = _model(spec, prior, n_terms)
    w = Engine(model).weights
    sums = model.conj.unit_stats(torch.as_tensor(u[None]), torch.as_tensor(a[None]), torch.as_tensor(y[None])).sum(1)
    kk, f = len(spec.classes), 1 + n_terms
    coef, cov, cm, ev = np.zeros((4 * kk, f)), np.zeros((4 * kk, f, f)), np.zeros(2), np.zeros((2, 2, kk))
    for arm in (0, 1):
        _conj_fit_arm(w, sums[0].view(2, -1)[arm].numpy().copy(), arm, False, coef, cov, cm, ev)
    for (arm, reg), per_class in want.items():
        for k, (ref_coef, ref_ev) in enumerate(per_class):
            np.testing.assert_allclose(coef[(arm * 2 + reg) * kk + k], ref_coef, rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(ev[arm, reg, k], ref_ev, rtol=1e-9)


def test_jax_teacher_against_the_reference(case):
    want, inputs = case[-2:]
    f32 = lambda z: jnp.asarray(z, jnp.float32)  # noqa: E731
    for key, (phi, t, v, s) in inputs.items():
        zbar, _, logev = _blr(f32(phi.T @ phi), f32(phi.T @ t), f32(t @ t), f32(len(t)), f32(v), f32(s))
        for k, (ref_coef, ref_ev) in enumerate(want[key]):
            np.testing.assert_allclose(s[k] * np.asarray(zbar[k]), ref_coef, rtol=2e-3, atol=2e-3)
            np.testing.assert_allclose(float(logev[k]), ref_ev, rtol=1e-4)
