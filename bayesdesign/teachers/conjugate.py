r"""The closed-form posterior Neyman teacher (and its smoothness mixture), jitted and vmapped.

Working model, per arm :math:`a` and smoothness class :math:`k` (DESIGN.md, *Conjugate teacher*):
two Bayesian linear regressions on the cosine basis of the prior file, with Gaussian working
likelihoods,

.. math::
    Y = \mu_a(x) + \text{noise},\ \text{Var} = \hat v_a; \qquad
    (Y - c_a)^2 = r_a(x) + \text{noise},\ \text{Var} = 2 \hat v_a^2,

where :math:`c_a` is the arm's running mean, :math:`r_a(x) = E[(Y - c_a)^2 \mid x]` and
:math:`\hat v_a = (\sum (y - c_a)^2 + \kappa v_0) / (n_a + \kappa)` is the plug-in noise
variance shrunk to the prior's typical variance :math:`v_0 = \exp(2\,\text{offset}_{\log\sigma})`
with :math:`\kappa` pseudo-observations. Coefficient priors are the file's series priors: the
mean series as written; the second moment gets intercept :math:`v_0` and scales
:math:`2 v_0 e^{2\bar s^2} c_{\log\sigma}(j+1)^{-(\beta_k + 1/2)}`: the delta method for
:math:`\sigma^2 = e^{2 f}`, :math:`d\sigma^2 = 2\sigma^2 df`, taken at the prior mean
:math:`E\sigma^2 = v_0 e^{2\bar s^2}` (:math:`\bar s^2` the prior variance of :math:`\log\sigma`
at a point, capped at :data:`MAX_LOG_SD_VAR` = 1: beyond it the lognormal mean
:math:`e^{2\bar s^2}` explodes, e.g. :math:`e^{11}` for a log-sd scale of 1.5, the float32
solve loses the posterior and the design returned NaN; every shipped prior has
:math:`\bar s^2 < 1`, so the cap changes none of them). Taken at the median :math:`v_0`
instead, the prior was about 2.4 times too tight for scenario S2's variance function and the
teacher design's variance ratio rose from 1.011 to 1.024 (S3: 1.026 to 1.042). Then

.. math::
    \sigma^2_{a,k}(x) = \max\!\big(r_{a,k}(x) - (m_{a,k}(x) - c_a)^2,\ \text{floor}\cdot v_0\big),
    \qquad \bar s_a(x) = \sum_k P(k \mid H)\, E[\sigma_{a,k}(x) \mid H, k],

where the posterior of :math:`r - (m - c)^2` is taken Gaussian (its mean, and its variance by the
delta method) and the expectations of :math:`\sigma` and :math:`\log\sigma` (the amortized
posterior the student learns) are computed by 20-node Gauss-Hermite quadrature, the floor
applied inside: so :math:`\bar s` is a posterior mean of :math:`\sigma`, not the plug-in
:math:`\sqrt{E\sigma^2}`.

with :math:`P(k \mid H) \propto w_k \prod_a p(y_a \mid k)\, p(r_a \mid k)^{\lambda}` from the
closed-form marginal likelihoods of the mean and (tempered by :math:`\lambda`,
``variance_evidence``, default 0.25) the second-moment regression. The second-moment working
likelihood (constant variance :math:`2\hat v^2` for :math:`(Y - c)^2`) is far from exact, so at
full weight it made the class posterior overconfident on prior draws (mean top probability 0.96
for 85% accuracy at 1000 units); without it (:math:`\lambda = 0`) the class ignores the variance
function and on S3 (smooth means, discontinuous variance) picked the smoothest classes and
oversmoothed the variance jump. At :math:`\lambda = 0.25`: 0.92 for 91% accuracy on prior
draws, and the :math:`\beta = 1` class on S3. Everything is a function of the statistics
:math:`\sum \phi\phi^\top, \sum \phi y, \sum \phi y^2, \sum y^3, \sum y^4`, so one history costs
a few :math:`F \times F` Cholesky factorizations whatever its length.

**Reweighted second-moment regression** (``TeacherConfig.reweight`` :math:`= n_0 > 0`). The
constant noise variance :math:`2\hat v_a^2` is far from :math:`\text{Var}((Y - c_a)^2 \mid x) =
2\sigma_a^4(x) + 4\sigma_a^2(x)(\mu_a(x) - c_a)^2` when the variance jumps (scenario S10: 25-fold),
so the regression is swamped by the noisy cells and the class posterior with it. Beside it the
teacher then fits the same regression with noise variance :math:`2\hat v_a^2 / w_i` for unit
:math:`i`, the weight fixed when the unit arrives from the posterior of the units before it
(:func:`unit_weights`; prequential, so the weighted statistics stay sums), and averages the two
working models by their marginal likelihoods, as it averages the smoothness classes (the classes
double; :math:`P(k \mid H)` is reported summed over the two). Where the arms' variance is
constant the unweighted model keeps the evidence and the design is unchanged (S1).

Numerics: the regressions are solved in whitened coordinates :math:`\theta = S z`,
:math:`z \sim N(0, I)`, :math:`S = \text{diag(prior sds)}`, so the posterior precision
:math:`I + S G S / v` is well conditioned even where the raw prior precision spans ten orders of
magnitude (smooth classes), and float32 suffices.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import linalg
from ..basis import cosine_features, prior_scales
from ..design.policy import History, SequentialPolicy
from ..efficiency import (
    atom_settings,
    extremes_init,
    extremes_update,
    has_atom,
    log_odds_settings,
    safe_rule,
    slab_grid,
    slab_sd,
)
from ..regression import SeriesStats, init_stats, update_stats
from ..spec import load_prior
from .base import TeacherConfig

__all__ = [
    "ConjugatePrior",
    "prior_from_spec",
    "ConjugateTeacher",
    "TeacherState",
    "conjugate_decide",
    "pooled_location_scale",
    "safe_rule",
    "standardized_state",
    "variance_nodes",
]


class ConjugatePrior(NamedTuple):
    """Arrays of a prior file's series priors, padded to a common feature count ``F``.

    ``s_mean``, ``s_var`` (2, K, F): prior sds of the mean and second-moment coefficients per
    arm and class (0 for padding); ``off_mean`` (2,), ``v0`` (2,), ``log_w`` (K,).
    """

    s_mean: np.ndarray
    s_var: np.ndarray
    off_mean: np.ndarray
    v0: np.ndarray
    log_w: np.ndarray
    n_terms: int
    d: int


MAX_LOG_SD_VAR = 1.0
r"""Cap on the prior variance of :math:`\log\sigma` at a point in the delta method of the second
moment's prior scales (module docstring)."""

_WORKING_PARTS = {"hurdle_lognormal": ("log_amount", "log_amount_sd")}


def prior_from_spec(spec, mean: str | None = None, log_sd: str | None = "log_sd") -> ConjugatePrior:
    """Compile a :class:`~bayesdesign.spec.PriorSpec` with series priors into arrays.

    ``mean`` and ``log_sd`` name the two series of the working model (default: the family's
    ``mean`` and ``log_sd``; ``log_amount`` and ``log_amount_sd`` for ``hurdle_lognormal``, whose
    working model is this one on :math:`\\log Y` of the positive outcomes); ``log_sd=None`` (and
    family bernoulli) is the Bernoulli working model of a logit series ``mean``. Every
    compiled prior of a spec has the spec's largest ``terms`` (:attr:`PriorSpec.n_terms`), so
    they share one feature map.

    Bernoulli outcomes use the Gaussian working model on the probability scale: mean offset
    :math:`\\text{sigmoid}(\\text{offset})`, mean scales times 1/4 (the logistic slope at 0),
    :math:`v_0 = p_0 (1 - p_0)` and second-moment scales :math:`v_0 \\cdot \\text{scale}`.
    """
    if spec.model is not None:
        raise ValueError(f"{spec.source}: the conjugate teacher needs series priors; this prior names a model")
    if mean is None:
        mean, log_sd = _WORKING_PARTS.get(spec.family, ("mean", log_sd))
    bernoulli = spec.family == "bernoulli" or log_sd is None
    n_terms = spec.n_terms
    d, k_cls = spec.d, len(spec.classes)
    f = 1 + d * n_terms
    s_mean, s_var = np.zeros((2, k_cls, f)), np.zeros((2, k_cls, f))
    off, v0 = np.zeros(2), np.zeros(2)

    def padded(sp, beta, scale):
        s = prior_scales(d, sp.terms, beta, scale).reshape(-1)
        out = np.zeros(f)
        out[0] = s[0]
        blocks = s[1:].reshape(d, sp.terms)
        out[1:] = np.pad(blocks, ((0, 0), (0, n_terms - sp.terms))).reshape(-1)
        return out

    for a in (0, 1):
        for k in range(k_cls):
            m = spec.series(a, mean, k if spec.is_mixture else None)
            if bernoulli:
                p0 = 1.0 / (1.0 + np.exp(-m.offset))
                off[a], v0[a] = p0, p0 * (1 - p0)
                s_mean[a, k] = padded(m, m.beta, 0.25 * m.scale)
                s_var[a, k] = padded(m, m.beta, v0[a] * m.scale)
            else:
                ls = spec.series(a, log_sd, k if spec.is_mixture else None)
                off[a], v0[a] = m.offset, np.exp(2.0 * ls.offset)
                s_mean[a, k] = padded(m, m.beta, m.scale)
                s_ls = padded(ls, ls.beta, ls.scale)
                s_var[a, k] = s_ls * 2.0 * v0[a] * np.exp(2.0 * min(np.sum(s_ls**2), MAX_LOG_SD_VAR))
    return ConjugatePrior(s_mean, s_var, off, v0, np.log(spec.weights), n_terms, d)


def _standardize_sums(stats: SeriesStats, m3, m4, c: np.ndarray, s: np.ndarray):
    r"""Sums of :math:`\phi z^p` and :math:`z^3, z^4` for :math:`z = (y - c)/s` from those of ``y``
    (binomial expansions; ``c``, ``s`` (B,)). Also for weighted sums (each term times its unit's weight)."""
    n, m1, m2 = stats.count, stats.b1[..., 0], stats.b2[..., 0]
    ca, sa = c[:, None], s[:, None]  # (B, 1) over arms
    col0 = stats.gram[..., 0]
    b1 = (stats.b1 - ca[..., None] * col0) / sa[..., None]
    b2 = (stats.b2 - 2 * ca[..., None] * stats.b1 + (ca**2)[..., None] * col0) / (sa**2)[..., None]
    z3 = (m3 - 3 * ca * m2 + 3 * ca**2 * m1 - ca**3 * n) / sa**3
    z4 = (m4 - 4 * ca * m3 + 6 * ca**2 * m2 - 4 * ca**3 * m1 + ca**4 * n) / sa**4
    return SeriesStats(stats.gram, b1, b2), z3, z4


def pooled_location_scale(st: SeriesStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pooled mean ``c`` and sd ``s`` (B,) of the outcomes summed in ``st``, and whether they
    are defined (two distinct outcomes so far; where not, ``c = 0, s = 1``)."""
    n, m1, m2 = st.count, st.b1[..., 0], st.b2[..., 0]
    n_tot = n.sum(-1)
    c = np.where(n_tot > 0, m1.sum(-1) / np.maximum(n_tot, 1.0), 0.0)
    var = m2.sum(-1) / np.maximum(n_tot, 1.0) - c**2
    ok = (n_tot > 1) & (var > 1e-12 * np.maximum(c**2, 1e-300))
    s = np.where(ok, np.sqrt(np.where(ok, var, 1.0)), 1.0)
    return np.where(ok, c, 0.0), s, ok


def standardized_state(state: TeacherState) -> tuple[TeacherState, np.ndarray, np.ndarray]:
    r"""The statistics of :math:`z = (y - c)/s`, with :math:`c, s` the pooled mean and sd of the
    outcomes so far (per task; :math:`c = 0, s = 1` before two distinct outcomes), exactly:
    :math:`\sum\phi z = (b_1 - c \sum\phi)/s`, :math:`\sum\phi z^2 = (b_2 - 2 c b_1 + c^2 \sum\phi)/s^2`
    and the binomial expansions of :math:`\sum z^3, \sum z^4` (the weighted statistics too, with
    the same :math:`c, s`). Returns the state, ``c``, ``s`` (B,)."""
    st = state.stats
    c, s, _ = pooled_location_scale(st)
    weighted = state.weighted
    if weighted is not None:
        weighted = WeightedStats(*_standardize_sums(weighted.stats, weighted.m3, weighted.m4, c, s), weighted.log_w)
    return TeacherState(state.t, *_standardize_sums(st, state.m3, state.m4, c, s), state.ext, weighted), c, s


class WeightedStats(NamedTuple):
    r"""The reweighted second-moment regression's statistics (``TeacherConfig.reweight``): the
    series statistics, third and fourth power sums with every unit's terms times its weight
    :math:`w_i` (:func:`unit_weights`), and :math:`\sum \log w_i` per arm (B, 2)."""

    stats: SeriesStats
    m3: np.ndarray
    m4: np.ndarray
    log_w: np.ndarray


class TeacherState(NamedTuple):
    """Units seen ``t``, the per-arm series statistics and third and fourth power sums (B, 2), and
    the running extremes of the outcomes (:func:`~bayesdesign.efficiency.extremes_update`, (B, 4)),
    and the reweighted statistics (:class:`WeightedStats`; ``None`` unless ``reweight`` is on)."""

    t: int
    stats: SeriesStats
    m3: np.ndarray
    m4: np.ndarray
    ext: np.ndarray | None = None
    weighted: WeightedStats | None = None


def _second_moment_sums(stats: SeriesStats, m3, m4, c, v0):
    r"""The second-moment regression's :math:`\sum \phi (r - v_0)` and :math:`\sum (r - v_0)^2`,
    :math:`r = (y - c)^2`, and :math:`\sum r^2`, :math:`\sum r` (per arm) from power sums of ``y``
    (binomial expansions; the same for weighted sums)."""
    n, m1, m2, col0 = stats.count, stats.b1[..., 0], stats.b2[..., 0], stats.gram[..., 0]
    g_r = stats.b2 - 2 * c[..., None] * stats.b1 + (c**2)[..., None] * col0 - v0[:, None] * col0
    syy = np.maximum(m2 - 2 * c * m1 + c**2 * n, 0.0)
    sum_r2 = m4 - 4 * c * m3 + 6 * c**2 * m2 - 4 * c**3 * m1 + c**4 * n
    ee_r = np.maximum(sum_r2, 0.0) - 2 * v0 * syy + v0**2 * n
    return g_r, ee_r, sum_r2, syy


def _centred(prior: ConjugatePrior, state: TeacherState, prior_obs: float, robust=False):
    """Sufficient statistics re-centred in float64, as float32 arrays for the jitted solve;
    ``robust`` (a bool, or one per task) asks for the robust second-moment variance."""
    st = state.stats
    n = st.count
    m1, m2 = st.b1[..., 0], st.b2[..., 0]
    col0 = st.gram[..., 0]
    c = np.where(n > 0, m1 / np.maximum(n, 1), prior.off_mean)
    off, v0 = prior.off_mean, prior.v0
    g_m = st.b1 - off[:, None] * col0
    ee_m = m2 - 2 * off * m1 + off**2 * n
    g_r, ee_r, sum_r2, syy = _second_moment_sums(st, state.m3, state.m4, c, v0)
    v_hat = (syy + prior_obs * v0) / (n + prior_obs)
    f32 = lambda v: jnp.asarray(v, dtype=jnp.float32)  # noqa: E731
    r_var = 2.0 * v_hat**2  # Var((Y - c)^2) of a Gaussian
    robust = np.asarray(robust, bool).reshape(-1, 1) if np.ndim(robust) else bool(robust)
    if np.any(robust):  # the arm's kurtosis, shrunk to the Gaussian 3 with the same pseudo-observations
        kurt = (np.maximum(sum_r2, 0.0) + prior_obs * 3.0 * v0**2) / (n + prior_obs) / v_hat**2
        r_var = np.where(robust, np.maximum(kurt - 1.0, 0.5) * v_hat**2, r_var)
    return tuple(map(f32, (st.gram, g_m, ee_m, g_r, ee_r, n, c, v_hat, r_var)))


def _weighted_centred(prior: ConjugatePrior, state: TeacherState):
    r"""The reweighted second-moment regression's statistics (:class:`WeightedStats`), centred at
    the arms' running means :math:`c_a` as :func:`_centred` centres the unweighted ones: the
    weighted Gram matrix, :math:`\sum w \phi ((y - c)^2 - v_0)`, :math:`\sum w ((y - c)^2 - v_0)^2`
    and :math:`\sum \log w` (float32), or ``None`` without weighted statistics."""
    ws = state.weighted
    if ws is None:
        return None
    n = state.stats.count
    c = np.where(n > 0, state.stats.b1[..., 0] / np.maximum(n, 1), prior.off_mean)
    g_r, ee_r, _, _ = _second_moment_sums(ws.stats, ws.m3, ws.m4, c, prior.v0)
    return tuple(jnp.asarray(v, dtype=jnp.float32) for v in (ws.stats.gram, g_r, ee_r, ws.log_w))


def _blr(gram, g, ee, n, v, s):
    """Whitened Bayesian linear regression for all classes: posterior mean of z, Cholesky factor
    of the posterior precision, log marginal likelihood. ``s`` (K, F); the rest one arm's stats."""
    f = gram.shape[-1]
    prec = jnp.eye(f) + s[:, :, None] * gram[None] * s[:, None, :] / v
    chol = linalg.cholesky(prec)
    h = s * g[None] / v
    zbar = linalg.cho_solve(chol, h[..., None])[..., 0]
    logdet = 2.0 * jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)
    logev = -0.5 * (n * jnp.log(2 * jnp.pi * v) + logdet + ee / v - (h * zbar).sum(-1))
    return zbar, chol, logev


def _predict(phi, s, zbar, chol):
    """Posterior mean and variance of the series at query features ``phi`` (Q, F), per class."""
    a = s[:, None, :] * phi[None]  # (K, Q, F)
    mean = (a * zbar[:, None, :]).sum(-1)
    w = linalg.solve_lower(chol, jnp.swapaxes(a, -1, -2))  # (K, F, Q)
    return mean, (w**2).sum(-2)


_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(20)
_GH_X, _GH_W = jnp.asarray(_GH_X, jnp.float32), jnp.asarray(_GH_W / _GH_W.sum(), jnp.float32)


def arm_moments(prior_arrays, a: int, phi_q, gram, g_m, ee_m, g_r, ee_r, n, c, v_hat, r_var):
    """One arm's two regressions at query features ``phi_q`` (Q, F), per class (K, Q): posterior
    mean ``mu`` and variance ``mu_var`` of the mean function; Gaussian approximation ``var``,
    ``var_var`` of the posterior of :math:`\\sigma^2 = r - (\\mu - c)^2` (delta method, before the
    floor); the log evidences ``ev_m``, ``ev_r`` (K,). Arguments as in :func:`conjugate_decide`."""
    s_mean, _, off, _, _ = prior_arrays
    zm, lm, ev_m = _blr(gram[a], g_m[a], ee_m[a], n[a], v_hat[a], s_mean[a])
    mu, mu_var = _predict(phi_q, s_mean[a], zm, lm)
    mu = mu + off[a]
    var, var_var, ev_r = _variance_moments(prior_arrays, a, phi_q, gram, g_r, ee_r, n, c, r_var, mu, mu_var)
    return mu, mu_var, var, var_var, ev_m, ev_r


def _variance_moments(prior_arrays, a: int, phi_q, gram, g_r, ee_r, n, c, r_var, mu, mu_var):
    """The second-moment regression of :func:`arm_moments` (its own Gram matrix ``gram``: the
    reweighted one's is weighted) given the mean function's posterior ``mu``, ``mu_var``: ``var``,
    ``var_var``, ``ev_r``."""
    _, s_var, _, v0, _ = prior_arrays
    zr, lr, ev_r = _blr(gram[a], g_r[a], ee_r[a], n[a], r_var[a], s_var[a])
    r, r_pvar = _predict(phi_q, s_var[a], zr, lr)
    r = r + v0[a]
    var = r - (mu - c[a]) ** 2  # (K, Q) posterior mean of sigma^2, before the floor
    var_var = r_pvar + 4.0 * (mu - c[a]) ** 2 * mu_var
    return var, var_var, ev_r


def mix_log_sd(p_k, ls_k, ls_var_k):
    r"""Mean and sd (2, Q) of :math:`\log\sigma_a` under the class mixture: class weights ``p_k``
    (K,), class-conditional means ``ls_k`` and variances ``ls_var_k`` (2, K, Q), moment-matched."""
    ls_mean = (p_k[None, :, None] * ls_k).sum(1)
    ls_sd = jnp.sqrt(jnp.maximum((p_k[None, :, None] * (ls_var_k + ls_k**2)).sum(1) - ls_mean**2, 0.0))
    return ls_mean, ls_sd


def variance_nodes(var, var_var, lo, lognormal):
    r"""Gauss-Hermite nodes of :math:`\sigma^2` (``var.shape + (20,)``, weights ``_GH_W``) from the
    working posterior's mean ``var`` and variance ``var_var`` of :math:`\sigma^2`, floored at ``lo``.

    ``lognormal = None`` (or 0): the working model's normal law :math:`N(\text{var},
    \text{var\_var})` (``None`` skips the other law's work). ``lognormal = 1``
    (``TeacherConfig.variance_law = "lognormal"``): the lognormal law with the same mean (floored
    at ``lo``) and variance, :math:`\log\sigma^2 \sim N(\log m - \tau^2/2, \tau^2)`,
    :math:`\tau^2 = \log(1 + \text{var\_var}/m^2)`. A variance is positive and the prior
    is normal on :math:`\log\sigma`; the normal law puts the mass it gives to negative variances on
    the floor, so a small, uncertain variance gets a posterior mean sd well above the
    lognormal's."""
    normal = var[..., None] + jnp.sqrt(var_var)[..., None] * _GH_X
    if lognormal is None:
        return jnp.maximum(normal, lo)
    m = jnp.maximum(var, lo)
    t2 = jnp.log1p(var_var / m**2)
    log_nodes = (jnp.log(m) - 0.5 * t2)[..., None] + jnp.sqrt(t2)[..., None] * _GH_X
    return jnp.maximum(jnp.where(lognormal > 0, jnp.exp(log_nodes), normal), lo)


def _arm_terms(prior_arrays, floor, a, phi_q, args, weighted, lognormal):
    """Per class (K, or 2K with the reweighted model appended): the arm's mean function, posterior
    mean sd, mean and variance of the log sd, and log evidence (both regressions, the second one
    tempered later); ``lognormal`` as in :func:`variance_nodes`."""
    _, _, _, v0, _ = prior_arrays
    mu, mu_var, var, var_var, ev_m, ev_r = arm_moments(prior_arrays, a, phi_q, *args)
    if weighted is not None:
        gram_w, g_rw, ee_rw, log_w = weighted
        _, _, _, _, _, n, c, _, r_var = args
        var_w, var_var_w, ev_rw = _variance_moments(
            prior_arrays, a, phi_q, gram_w, g_rw, ee_rw, n, c, r_var, mu, mu_var
        )
        # unit i's noise variance is 2 v^2 / w_i: its density carries + log(w_i) / 2
        mu, ev_m = jnp.concatenate([mu, mu]), jnp.concatenate([ev_m, ev_m])
        var, var_var = jnp.concatenate([var, var_w]), jnp.concatenate([var_var, var_var_w])
        ev_r = jnp.concatenate([ev_r, ev_rw + 0.5 * log_w[a]])
    v = variance_nodes(var, var_var, floor * v0[a], lognormal)
    sd_k = (jnp.sqrt(v) * _GH_W).sum(-1)
    ls = 0.5 * jnp.log(v)
    ls_m = (ls * _GH_W).sum(-1)
    ls_v = jnp.maximum((ls**2 * _GH_W).sum(-1) - ls_m**2, 0.0)
    return mu, sd_k, ls_m, ls_v, ev_m, ev_r


def _one_task(prior_arrays, floor, both, phi_q, gram, g_m, ee_m, g_r, ee_r, n, c, v_hat, r_var, weighted, lognormal):
    log_w = prior_arrays[4]
    k = log_w.shape[0]
    args = (gram, g_m, ee_m, g_r, ee_r, n, c, v_hat, r_var)
    out = [_arm_terms(prior_arrays, floor, a, phi_q, args, weighted, lognormal) for a in (0, 1)]
    if weighted is not None:  # the unweighted and reweighted working models, equally likely a priori
        log_w = jnp.concatenate([log_w, log_w]) - jnp.log(2.0)
    log_post = log_w + (out[0][4] + both * out[0][5]) + (out[1][4] + both * out[1][5])
    p_k = jax.nn.softmax(log_post)  # (K,) or (2K,)
    sbar = jnp.stack([(p_k[:, None] * o[1]).sum(0) for o in out])  # (2, Q)
    pi = sbar[1] / (sbar[1] + sbar[0])
    ls_mean, ls_sd = mix_log_sd(p_k, jnp.stack([o[2] for o in out]), jnp.stack([o[3] for o in out]))
    mean = jnp.stack([(p_k[:, None] * o[0]).sum(0) for o in out])
    class_prob = p_k[:k] + p_k[k:] if weighted is not None else p_k
    return {"pi": pi, "sbar": sbar, "class_prob": class_prob, "log_sd_mean": ls_mean, "log_sd_sd": ls_sd,
            "mean": mean}


@jax.jit
def conjugate_decide(prior_arrays, floor, both, phi_q, gram, g_m, ee_m, g_r, ee_r, n, c, v_hat, r_var, weighted=None,
                     lognormal=None):
    r"""Posterior Neyman quantities for a batch of tasks: every array has a leading task axis
    except ``prior_arrays``, ``floor`` and ``both`` (the weight of the second-moment evidence in
    the class posterior); ``weighted`` (:func:`_weighted_centred`, or ``None``) adds the
    reweighted second-moment model; ``lognormal`` (B,) picks the law of :math:`\sigma^2` per task
    (:func:`variance_nodes`; ``None``, the default: the normal law in every task). Returns ``pi``
    (B, Q) unclipped, ``sbar``, ``mean``, ``log_sd_mean``, ``log_sd_sd`` (B, 2, Q) and
    ``class_prob`` (B, K)."""
    fn = partial(_one_task, prior_arrays, floor, both)
    return jax.vmap(fn)(phi_q, gram, g_m, ee_m, g_r, ee_r, n, c, v_hat, r_var, weighted, lognormal)


def _regressions(prior_arrays, both, gram, g_m, ee_m, g_r, ee_r, n, c, v_hat, r_var, weighted=None):
    """Per arm the mean and second-moment regressions ``(zbar, chol, logev)`` per class, and the
    class posterior; with ``weighted`` the reweighted second-moment model's classes follow the
    unweighted ones (2K in all, the mean regression repeated)."""
    s_mean, s_var, off, v0, log_w = prior_arrays
    res = []
    for a in (0, 1):
        mean = _blr(gram[a], g_m[a], ee_m[a], n[a], v_hat[a], s_mean[a])
        second = _blr(gram[a], g_r[a], ee_r[a], n[a], r_var[a], s_var[a])
        if weighted is not None:
            gram_w, g_rw, ee_rw, lw = weighted
            zw, cw, ew = _blr(gram_w[a], g_rw[a], ee_rw[a], n[a], r_var[a], s_var[a])
            mean = tuple(jnp.concatenate([v, v]) for v in mean)
            second = (jnp.concatenate([second[0], zw]), jnp.concatenate([second[1], cw]),
                      jnp.concatenate([second[2], ew + 0.5 * lw[a]]))
        res.append((mean, second))
    if weighted is not None:
        log_w = jnp.concatenate([log_w, log_w]) - jnp.log(2.0)
    log_post = log_w + sum(m[2] + both * r[2] for m, r in res)
    return res, jax.nn.softmax(log_post)


WEIGHT_RANGE = (0.05, 20.0)
"""Bounds of the reweighted second-moment regression's unit weights (:func:`unit_weights`)."""


def unit_weights(sd, mean, c, v_hat, n, n0: float) -> np.ndarray:
    r"""The weight of a unit in the reweighted second-moment regression (``TeacherConfig.reweight``),

    .. math::
        w = \text{clip}\Big(\Big[\frac{\hat v_a^2}{\hat\sigma^4 + 2 \hat\sigma^2 (\hat\mu - c_a)^2}
            \Big]^{n_a / (n_a + n_0)}, 0.05, 20\Big),

    the ratio of the working model's constant noise variance :math:`2\hat v_a^2` of
    :math:`(Y - c_a)^2` to its variance at the unit's covariate under the current posterior
    (:math:`\hat\sigma = \bar s_a(x)`, :math:`\hat\mu = E[\mu_a(x) \mid H]`), shrunk to 1 while
    its arm has few units (:math:`n_a` of them, :math:`n_0` pseudo-units). Arguments (B,) in the
    working model's units; invariant to :math:`y \to c + s y`."""
    sd2 = np.maximum(np.asarray(sd, float) ** 2, 1e-300)
    ratio = np.asarray(v_hat, float) ** 2 / (sd2**2 + 2.0 * sd2 * (np.asarray(mean, float) - c) ** 2)
    n = np.asarray(n, float)
    return np.clip(ratio ** (n / (n + n0)), *WEIGHT_RANGE)


class ConjugateTeacher(SequentialPolicy):
    r"""Closed-form posterior Neyman teacher of a prior file (a smoothness mixture when the file
    declares one). A :class:`~bayesdesign.design.policy.SequentialPolicy`: the runner advances
    many experiments in lockstep; ``propensity(history, x)`` serves one.

    Parameters
    ----------
    spec : a :class:`~bayesdesign.spec.PriorSpec` (or a path / shipped name, loaded with
        :func:`~bayesdesign.spec.load_prior`).
    config : :class:`~bayesdesign.teachers.base.TeacherConfig`.
    variance_evidence : weight :math:`\lambda \in [0, 1]` of the second-moment regression's
        marginal likelihood in the smoothness-class posterior.

    A ``hurdle_lognormal`` prior has its own working model,
    :class:`~bayesdesign.teachers.hurdle.HurdleConjugateTeacher` (a subclass, the same
    parameters); :func:`~bayesdesign.teachers.hurdle.conjugate_teacher` (and ``make_teacher``)
    choose the class by the prior's family, and this class refuses such a prior.
    """

    name = "teacher:conjugate"

    def __init__(self, spec, config: TeacherConfig | None = None, variance_evidence: float = 0.25):
        self.spec = spec if hasattr(spec, "hash") else load_prior(spec)
        if self.spec.family == "hurdle_lognormal" and type(self) is ConjugateTeacher:
            raise ValueError(
                f"{self.spec.source}: a hurdle_lognormal prior has its own conjugate teacher: use "
                "make_teacher('conjugate', prior) or bayesdesign.teachers.hurdle.HurdleConjugateTeacher"
            )
        self.config = config or TeacherConfig()
        super().__init__(self.spec.bounds, self.config.clip)
        self.box_origin = f"the bounds declared by prior {self.spec.source}"
        self.prior = prior_from_spec(self.spec)
        p = self.prior
        self._arrays = tuple(jnp.asarray(v, jnp.float32) for v in (p.s_mean, p.s_var, p.off_mean, p.v0, p.log_w))
        self._floor = jnp.float32(self.config.floor)
        if not 0.0 <= variance_evidence <= 1.0:
            raise ValueError(f"variance_evidence: expected a weight in [0, 1], got {variance_evidence}")
        self.variance_evidence = variance_evidence
        self._both = jnp.float32(variance_evidence)
        self.standardize = bool(self.spec.outcome.standardize)
        self.robust = self.config.robust
        self.atom_share = self.config.atom if self.spec.family in ("gaussian", "student_t") else 0.0
        self.reweight = float(self.config.reweight)
        self._last = None  # (state, features, posterior, statistics) of the last decision, reweight only
        if self.config.variance_law != "normal" and self.spec.family not in ("gaussian", "student_t"):
            raise ValueError(
                f"variance_law: {self.config.variance_law!r} is for the continuous outcome families (gaussian, "
                f"student_t); prior {self.spec.source} has family {self.spec.family}: use variance_law='normal'"
            )
        if self.reweight and self.spec.family not in ("gaussian", "student_t"):
            raise ValueError(
                f"reweight: the reweighted second-moment regression is for continuous outcome families "
                f"(gaussian, student_t); prior {self.spec.source} has family {self.spec.family}: use reweight=0"
            )

    def _view(self, state: TeacherState) -> tuple[TeacherState, np.ndarray, np.ndarray]:
        """The state the posterior is computed from, and the outcome location and scale (B,)."""
        if self.standardize:
            return standardized_state(state)
        b = state.m3.shape[0]
        return state, np.zeros(b), np.ones(b)

    @property
    def n_feat(self) -> int:
        return 1 + self.prior.d * self.prior.n_terms

    def features(self, x: np.ndarray) -> np.ndarray:
        return cosine_features(self.spec.to_unit(x), self.prior.n_terms)

    def init(self, batch: int) -> TeacherState:
        z = np.zeros((batch, 2))
        weighted = None
        if self.reweight:
            weighted = WeightedStats(init_stats(batch, self.n_feat), z.copy(), z.copy(), z.copy())
        return TeacherState(0, init_stats(batch, self.n_feat), z, z.copy(), extremes_init(batch), weighted)

    def update(self, state: TeacherState, x, a, y, pi) -> TeacherState:
        """Add units ``x`` (B, m, d), ``a``, ``y`` (B, m). With ``reweight`` one unit at a time, each
        unit's weight from the posterior of the units before it (:meth:`unit_weights`), so the
        state does not depend on how the units are grouped into calls."""
        a = np.asarray(a, dtype=float)
        y = np.asarray(y, dtype=float)
        phi = self.features(x)
        if not self.reweight:
            return self._add(state, phi, a, y)
        for j in range(y.shape[-1]):
            phj, aj, yj = phi[:, j : j + 1], a[:, j : j + 1], y[:, j : j + 1]
            w = self.unit_weights(state, phj, aj[:, 0])
            ws = state.weighted
            onehot = np.stack([1.0 - aj[:, 0], aj[:, 0]], axis=1)  # (B, 2)
            arm = onehot * w[:, None]
            weighted = WeightedStats(
                update_stats(ws.stats, phj, aj, yj, keep=w[:, None]),
                ws.m3 + arm * yj**3,
                ws.m4 + arm * yj**4,
                ws.log_w + onehot * np.log(w)[:, None],
            )
            state = self._add(state, phj, aj, yj)._replace(weighted=weighted)
        return state

    def _add(self, state: TeacherState, phi, a, y) -> TeacherState:
        """The unweighted statistics with units of features ``phi`` (B, m, F) added."""
        w = np.stack([1.0 - a, a], axis=1)  # (B, 2, m)
        return TeacherState(
            state.t + y.shape[-1],
            update_stats(state.stats, phi, a, y),
            state.m3 + (w * (y**3)[:, None]).sum(-1),
            state.m4 + (w * (y**4)[:, None]).sum(-1),
            extremes_update(state.ext if state.ext is not None else extremes_init(len(y)), y),
            state.weighted,
        )

    def unit_weights(self, state: TeacherState, phi: np.ndarray, a: np.ndarray) -> np.ndarray:
        """The weights (B,) of units arriving with features ``phi`` (B, 1, F) (:meth:`features`) in
        arms ``a`` (B,) under the current posterior (:func:`unit_weights`, in the working model's units).
        The posterior of the decision just made at these units is reused (the runner and the
        service decide a unit's probability from the state it then updates). For a prior with
        ``outcome.standardize`` the weight is 1 while the working model's units are undefined
        (before two distinct outcomes, :func:`pooled_location_scale`): a posterior in the
        outcome's own units would make the weight depend on them."""
        last = self._last
        if last is not None and last[0] is state and last[1].shape == phi.shape and np.array_equal(last[1], phi):
            out, args = last[2], last[3]
        else:
            out, args = self._posterior_view(state, phi)
        idx = np.asarray(a, dtype=int)[:, None]
        pick = lambda v: np.take_along_axis(np.asarray(v, dtype=float).reshape(len(idx), 2), idx, 1)[:, 0]  # noqa: E731
        w = unit_weights(
            pick(out["sbar"][..., 0]), pick(out["mean"][..., 0]), pick(args[6]), pick(args[7]), pick(args[5]),
            self.reweight,
        )
        return np.where(pooled_location_scale(state.stats)[2], w, 1.0) if self.standardize else w

    def atom_rows(self, state: TeacherState) -> np.ndarray:
        """Whether each task's outcomes so far have an atom (``TeacherConfig.atom``, which
        ``atom_share`` holds for continuous families and 0 for others), (B,)."""
        if not self.atom_share or state.ext is None:
            return np.zeros(state.m3.shape[0], bool)
        return has_atom(state.ext, state.t, self.atom_share)

    def decide(self, state: TeacherState, x: np.ndarray) -> dict[str, np.ndarray]:
        """All posterior quantities at queries ``x`` (B, Q, d) (see :func:`conjugate_decide`), in
        the outcome's units (a standardizing prior's are mapped back); ``pi`` is the rule's the
        configuration names (:meth:`apply_rule`), so traces record the rule the teacher follows."""
        return self.apply_rule(self.posterior_outputs(state, x))

    def posterior_outputs(self, state: TeacherState, x: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`decide` with ``pi`` the Neyman ratio of :math:`\bar s_a` whatever the rule, and
        ``atom`` (B,): whether the rule is the one for outcomes with an atom (:meth:`apply_rule`)."""
        view, c, s = self._view(state)
        phi = self.features(x)
        out, args = self._posterior_view(state, phi, view)
        if self.reweight:  # the next update's weights come from this posterior (unit_weights)
            self._last = (state, phi, {k: out[k] for k in ("sbar", "mean")}, args)
        if self.standardize:
            out["mean"] = c[:, None, None] + s[:, None, None] * out["mean"]
            out["sbar"] = s[:, None, None] * out["sbar"]
            out["log_sd_mean"] = np.log(s)[:, None, None] + out["log_sd_mean"]
        return out

    def _posterior_view(self, state: TeacherState, phi: np.ndarray, view: TeacherState | None = None,
                        law: bool | None = None):
        """:func:`conjugate_decide` at query features ``phi`` (B, Q, F) in the working model's units
        (standardized ones for a prior with ``outcome.standardize``), with ``atom`` (B,) added, and
        the :func:`_centred` statistics it was computed from; ``law`` (default: the configuration's)
        whether the law of the variance is the lognormal one where the atom rule does not fire."""
        view = self._view(state)[0] if view is None else view
        atom = self.atom_rows(state)
        args = _centred(self.prior, view, self.config.prior_obs, self.robust or atom)
        lognormal = (self.lognormal if law is None else law) & ~atom  # the atom rule's is the normal law
        res = conjugate_decide(
            self._arrays, self._floor, self._both, jnp.asarray(phi, jnp.float32), *args,
            _weighted_centred(self.prior, view), jnp.asarray(lognormal, jnp.float32) if lognormal.any() else None,
        )
        out = {k: np.asarray(v, dtype=float) for k, v in res.items()}
        out["atom"] = atom
        return out, args

    def apply_rule(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Replace ``out["pi"]`` by the log-odds rule's (:func:`~bayesdesign.efficiency.safe_rule`)
        when the configuration asks for it (``rule='log_sd'``, ``safe > 0`` or ``spike > 0``), and
        in tasks whose outcomes have an atom (``out["atom"]``) by the rule for them
        (:func:`~bayesdesign.efficiency.atom_settings`)."""
        k, spike = log_odds_settings(self.config)
        if k >= 0:
            out["pi"] = safe_rule(out["log_sd_mean"], out["log_sd_sd"], k, spike, self.slab)
        atom = out.get("atom")
        if atom is not None and atom.any():
            gated = safe_rule(out["log_sd_mean"], out["log_sd_sd"], *atom_settings(k, spike), self.slab_of(False))
            out["pi"] = np.where(atom[:, None], gated, out["pi"])
        return out

    @property
    def lognormal(self) -> bool:
        """Whether the configuration's law of the variance is the lognormal one."""
        return self.config.variance_law == "lognormal"

    @property
    def slab(self) -> float:
        """The prior sd of the Neyman log-odds at a point (:func:`~bayesdesign.efficiency.slab_sd`),
        the slab of the spike-and-slab rule: this teacher's posterior before any unit (1 when the
        configuration has no spike), under the configuration's law of the variance."""
        return self.slab_of(self.lognormal)

    def slab_of(self, lognormal: bool) -> float:
        """:attr:`slab` under the lognormal (``True``) or the normal law of the variance (the atom
        rule's)."""
        if self.config.spike <= 0:
            return 1.0
        slabs = self.__dict__.setdefault("_slabs", {})
        if lognormal not in slabs:
            x = self.low + slab_grid(self.d) * (self.high - self.low)
            if lognormal == self.lognormal:  # a subclass's own posterior (hurdle)
                out = self.posterior_outputs(self.init(1), x[None])
            else:  # the normal law beside a lognormal configuration (continuous families only)
                out, _ = self._posterior_view(self.init(1), self.features(x[None]), law=lognormal)
            slabs[lognormal] = slab_sd(out["log_sd_sd"])
        return slabs[lognormal]

    def _raw(self, state, x):
        if state.t < self.config.burn_in:
            return np.full(x.shape[:-1], 0.5)
        return self.decide(state, x)["pi"]

    def class_posterior(self, history: History) -> np.ndarray:
        """:math:`P(k \\mid H)` over the prior's smoothness classes, ``(K,)`` (or (B, K))."""
        state, squeeze = self.fold(history)
        p = self.decide(state, np.zeros((state.m3.shape[0], 1, self.prior.d)))["class_prob"]
        return p[0] if squeeze else p

    def posterior(self, history: History, x_query: np.ndarray, draws: int = 500, seed: int = 0):
        """Posterior draws of ``mean``, ``sd``, ``log_sd`` at ``x_query`` (Q, d) under the working
        model, with the smoothness class drawn from :math:`P(k \\mid H)`; an ArviZ
        ``InferenceData`` with dims ``(chain, draw, arm, query)``."""
        import arviz as az  # lazy: ArviZ (about a second) only for posterior()

        state, _ = self.fold(
            History(*(np.asarray(v)[None] if np.ndim(v) == (1 if i else 2) else v for i, v in enumerate(history)))
        )
        state, loc, sc = self._view(state)
        args = _centred(self.prior, state, self.config.prior_obs, self.robust or self.atom_rows(state))
        weighted = _weighted_centred(self.prior, state)
        res, p_k = _regressions(
            self._arrays, self._both, *(v[0] for v in args), None if weighted is None else [v[0] for v in weighted]
        )
        c = np.asarray(args[6][0], float)
        phi = self.features(np.asarray(x_query, float))
        rng = np.random.default_rng(seed)
        p_k = np.asarray(p_k, dtype=float)  # normalised in float64: numpy checks the sum to 1e-8
        k = rng.choice(len(p_k), size=draws, p=p_k / p_k.sum())
        out = {"mean": np.empty((draws, 2, len(phi))), "sd": np.empty((draws, 2, len(phi)))}
        reps = len(p_k) // len(self.prior.log_w)  # 2 with the reweighted model's classes
        for a in (0, 1):
            fns = []
            for (zbar, chol, _), s, base in (
                (res[a][0], np.tile(self.prior.s_mean[a], (reps, 1)), self.prior.off_mean[a]),
                (res[a][1], np.tile(self.prior.s_var[a], (reps, 1)), self.prior.v0[a]),
            ):
                zbar, chol = np.asarray(zbar, float), np.asarray(chol, float)
                eps = rng.standard_normal((draws, zbar.shape[-1]))
                z = zbar[k] + np.linalg.solve(np.swapaxes(chol[k], -1, -2), eps[..., None])[..., 0]
                fns.append(base + (z * s[k]) @ phi.T)
            mu, r = fns
            out["mean"][:, a] = mu
            out["sd"][:, a] = np.sqrt(np.maximum(r - (mu - c[a]) ** 2, self.config.floor * self.prior.v0[a]))
        out["mean"] = loc[0] + sc[0] * out["mean"]
        out["sd"] = sc[0] * out["sd"]
        post = {k2: v[None] for k2, v in out.items()}
        post["log_sd"] = np.log(post["sd"])
        dims = {v: ["arm", "query"] for v in post}
        return az.from_dict(
            posterior=post,
            dims=dims,
            coords={"arm": [0, 1], "query": np.arange(len(phi))},
            attrs={"teacher": self.name, "prior_hash": self.spec.hash()},
        )
