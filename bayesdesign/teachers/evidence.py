r"""Marginal likelihoods of a model from its own posterior draws: the class posterior of a
smoothness mixture under the prior's full model.

A sampling teacher fits each smoothness class :math:`k` of a mixture with its own model and
needs :math:`P(k \mid H) \propto w_k\, Z_k`, :math:`Z_k = p(y \mid k) = \int p(y, z \mid k)\,dz`.
The class is not a sampler variable, so :math:`Z_k` is estimated by importance sampling from a
proposal fitted to the class's posterior draws in the unconstrained space (where the log joint
:math:`\log p(y, z)` includes the Jacobian of the constraining transform, so :math:`\int` over
:math:`z` is the evidence):

.. math::
    q_k = t_\nu\big(\hat\mu_k,\ c^2 H_k^{-1}\big), \qquad
    z^{(m)} \sim q_k, \qquad
    \hat Z_k = \frac1M \sum_{m=1}^M \tilde w^{(m)}, \quad
    \log w^{(m)} = \log p(y, z^{(m)}) - \log q_k(z^{(m)}),

with :math:`\hat\mu_k` the mean of the draws, :math:`H_k` the Hessian of
:math:`-\log p(y, z \mid k)` there (the draws' covariance where it is not positive definite),
:math:`c` a small inflation of the scale (default 1.1), :math:`\nu = 8` and :math:`\tilde w`
the Pareto-smoothed weights (PSIS, :func:`arviz.psislw`). The multivariate-t proposal with a
widened scale keeps the weights bounded where the posterior has heavier tails than its Laplace
approximation. The Pareto shape :math:`\hat k` of the weights' tail is the diagnostic: above
0.7 the estimate is not reliable (Vehtari et al., 2024) and the teacher falls back to the
conjugate class posterior for that task (see :class:`~bayesdesign.teachers._sampling.SampledTeacher`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy.special import gammaln

__all__ = ["Proposal", "EvidenceWarning", "KHAT_MAX", "fit_proposal", "draw_proposal", "proposal_noise", "hessian_fn",
           "log_joint_fn", "smoothed_log_mean", "log_evidence", "class_posterior"]


class EvidenceWarning(UserWarning):
    """An importance-sampling evidence was not trusted (Pareto :math:`\\hat k` above :data:`KHAT_MAX`)."""


KHAT_MAX = 0.7
"""Pareto :math:`\\hat k` above which an importance-sampling evidence is not trusted."""


class Proposal(NamedTuple):
    """Multivariate-t proposals, one per leading index: ``mean`` (..., D), lower Cholesky factor
    ``chol`` (..., D, D) of the scale matrix, degrees of freedom ``df`` (``inf``: Gaussian)."""

    mean: np.ndarray
    chol: np.ndarray
    df: float


def fit_proposal(z: np.ndarray, hessian: np.ndarray | None = None, inflate: float = 1.1,
                 df: float = 8.0) -> Proposal:
    r"""Proposal fitted to draws ``z`` (..., S, D) of unconstrained latents.

    Location: the draws' mean :math:`\hat\mu`. Scale: :math:`c^2 H^{-1}`, :math:`c` = ``inflate``,
    with ``hessian`` :math:`H` (..., D, D) the Hessian of :math:`-\log p(y, z)` at :math:`\hat\mu`
    (a Laplace scale at the posterior mean); where :math:`H` is not positive definite, or
    ``hessian`` is None, the draws' covariance shrunk towards its diagonal with weight
    :math:`D / (S + D)`. The Hessian is the default because the sample covariance of a few hundred
    draws in tens of dimensions is too noisy (on the ``smoothness-mixture`` prior, 44
    coefficients and 300 NUTS draws, it left most weights with :math:`\hat k` above 0.7:
    docs/teachers_sampling.md).
    """
    z = np.asarray(z, np.float64)
    s, d = z.shape[-2:]
    if s < 2:
        raise ValueError(f"draws: the evidence needs at least 2 posterior draws per fit, got {s}")
    mean = z.mean(-2)
    c = z - mean[..., None, :]
    cov = np.einsum("...si,...sj->...ij", c, c) / (s - 1)
    diag = np.einsum("...ii->...i", cov)
    lam = d / (s + d)
    cov = (1.0 - lam) * cov + lam * (diag[..., None] * np.eye(d))
    cov = cov + 1e-9 * np.maximum(diag.max(-1), 1e-12)[..., None, None] * np.eye(d)
    if hessian is not None:
        h = np.asarray(hessian, np.float64)
        h = 0.5 * (h + np.swapaxes(h, -1, -2))
        pd = np.linalg.eigvalsh(h).min(-1) > 0
        if pd.any():
            inv = np.linalg.inv(np.where(pd[..., None, None], h, np.eye(d)))
            cov = np.where(pd[..., None, None], 0.5 * (inv + np.swapaxes(inv, -1, -2)), cov)
    return Proposal(mean, np.linalg.cholesky(inflate**2 * cov), float(df))


def hessian_fn(potential_gen, unravel):
    """``f(feats, a, y, mask, z) -> H``: the Hessian (B, D, D) of :math:`-\\log p(y, z)` at flat
    unconstrained ``z`` (B, D), the data with a leading task axis B; jitted and vectorized."""

    def one(feats, a, y, mask, z):
        energy = potential_gen(feats, a, y, mask)
        return jax.hessian(lambda zz: energy(unravel(zz)))(z)

    return jax.jit(jax.vmap(one))


def draw_proposal(q: Proposal, eps: np.ndarray, gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Draws and their log densities: ``eps`` (..., M, D) standard normal, ``gamma`` (..., M)
    :math:`\chi^2_\nu / \nu` variates (ignored for a Gaussian proposal); returns
    :math:`z = \mu + L\varepsilon/\sqrt{g}` (..., M, D) and :math:`\log q(z)` (..., M)."""
    eps = np.asarray(eps, np.float64)
    d = eps.shape[-1]
    logdet = np.log(np.einsum("...ii->...i", q.chol)).sum(-1)[..., None]
    r2 = (eps**2).sum(-1)
    if np.isinf(q.df):
        g = np.ones_like(r2)
        logq = -0.5 * d * np.log(2 * np.pi) - logdet - 0.5 * r2
    else:
        g = np.asarray(gamma, np.float64)
        nu = q.df
        logq = (gammaln(0.5 * (nu + d)) - gammaln(0.5 * nu) - 0.5 * d * np.log(nu * np.pi) - logdet
                - 0.5 * (nu + d) * np.log1p(r2 / g / nu))
    z = q.mean[..., None, :] + np.einsum("...ij,...mj->...mi", q.chol, eps) / np.sqrt(g)[..., None]
    return z, logq


def proposal_noise(keys, num: int, dim: int, df: float) -> tuple[np.ndarray, np.ndarray]:
    """Standard normal ``eps`` (B, num, dim) and :math:`\\chi^2_\\nu/\\nu` ``gamma`` (B, num)
    from per-task PRNG keys (B,) (a function of each task's key only)."""

    def one(key):
        k1, k2 = jax.random.split(jax.random.fold_in(key, 0x65766964))  # "evid"
        eps = jax.random.normal(k1, (num, dim))
        g = jax.random.gamma(k2, 0.5 * df, (num,)) * 2.0 / df if np.isfinite(df) else jnp.ones(num)
        return eps, g

    eps, g = jax.vmap(one)(keys)
    return np.asarray(eps, np.float64), np.asarray(g, np.float64)


def log_joint_fn(potential_gen, unravel, units_per_block: int = 16384):
    r"""``f(feats, a, y, mask, z) -> log p(y, z)``: ``z`` (B, M, D) flat unconstrained latents,
    the data with a leading task axis B; jitted, vectorized over tasks and over blocks of draws
    (``lax.map``, at most 128 draws and ``units_per_block`` unit evaluations per task and block), so
    memory stays near ``B * units_per_block`` likelihood terms whatever the history length."""

    def one(feats, a, y, mask, z):
        energy = potential_gen(feats, a, y, mask)
        block = max(1, min(128, units_per_block // max(a.shape[0], 1), z.shape[0]))
        return -lax.map(lambda zz: energy(unravel(zz)), z, batch_size=block)

    return jax.jit(jax.vmap(one))


def smoothed_log_mean(log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""PSIS estimate of :math:`\log \frac1M \sum_m w^{(m)}`, the Pareto :math:`\hat k` and the
    delta-method Monte Carlo standard error of the plain estimate,
    :math:`\mathrm{sd}(w) / (\bar w \sqrt M)`, over the last axis of ``log_w`` (..., M).
    Non-finite weights give ``nan`` and :math:`\hat k = \infty`."""
    import arviz as az  # lazy: ArviZ (about a second) only when evidences are computed

    log_w = np.asarray(log_w, np.float64)
    lead, m = log_w.shape[:-1], log_w.shape[-1]
    flat = log_w.reshape(-1, m)
    out, se = np.full(flat.shape[0], np.nan), np.full(flat.shape[0], np.nan)
    khat = np.full(flat.shape[0], np.inf)
    ok = np.isfinite(flat).all(-1)
    if ok.any():
        smoothed, k = az.psislw(flat[ok], normalize=False)
        mx = smoothed.max(-1, keepdims=True)
        out[ok] = mx[:, 0] + np.log(np.exp(smoothed - mx).mean(-1))
        khat[ok] = k
        w = np.exp(flat[ok] - flat[ok].max(-1, keepdims=True))
        se[ok] = w.std(-1) / w.mean(-1) / np.sqrt(m)
    return out.reshape(lead), khat.reshape(lead), se.reshape(lead)


_FNS: dict = {}


def _compiled(parts, kind: str):
    """``log_joint_fn`` / ``hessian_fn`` of ``parts``, compiled once per ModelParts object (the
    cache holds the object, so its id is not reused)."""
    key = (id(parts), kind)
    if key not in _FNS:
        make = log_joint_fn if kind == "log_joint" else hessian_fn
        _FNS[key] = (parts, make(parts.potential_gen, parts.unravel))
    return _FNS[key][1]


def log_evidence(parts, data: tuple, flat: np.ndarray, keys, num: int = 1000, inflate: float = 1.1,
                 df: float = 8.0, laplace: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Importance-sampling :math:`\log p(y)` of the model ``parts``
    (:class:`~bayesdesign.teachers._sampling.ModelParts`) for B tasks.

    ``data``: ``(feats, a, y, mask)`` with a leading task axis B (the arguments of
    ``parts.fit_model``); ``flat`` (B, S, D): posterior draws of the flat unconstrained latents;
    ``keys`` (B,): PRNG keys of the proposal draws; ``num``: proposal draws :math:`M` per task.
    Returns the PSIS estimate, Pareto :math:`\hat k` and Monte Carlo standard error, each (B,)
    (see the module notes and :func:`smoothed_log_mean`). ``laplace=False`` scales the proposal
    by the draws' covariance instead of the Hessian (for comparison: see :func:`fit_proposal`).
    """
    flat = np.asarray(flat, np.float64)
    hess = None
    if laplace:
        hess = np.asarray(_compiled(parts, "hessian")(*data, jnp.asarray(flat.mean(1), jnp.float32)), np.float64)
    q = fit_proposal(flat, hess, inflate, df)
    eps, g = proposal_noise(keys, int(num), flat.shape[-1], q.df)
    z, logq = draw_proposal(q, eps, g)
    logp = np.asarray(_compiled(parts, "log_joint")(*data, jnp.asarray(z, jnp.float32)), np.float64)
    return smoothed_log_mean(logp - logq)


def class_posterior(log_weights: np.ndarray, log_z: np.ndarray) -> np.ndarray:
    r""":math:`P(k \mid H) = w_k Z_k / \sum_j w_j Z_j` from prior ``log_weights`` (K,) and log
    evidences ``log_z`` (..., K)."""
    lp = np.asarray(log_weights, np.float64) + np.asarray(log_z, np.float64)
    lp = lp - lp.max(-1, keepdims=True)
    p = np.exp(lp)
    return p / p.sum(-1, keepdims=True)
