r"""Cosine series bases on the unit cube and their smoothness scales.

On :math:`[0, 1]` the basis is :math:`\phi_0 = 1`, :math:`\phi_j(u) = \sqrt{2}\cos(\pi j u)`
(orthonormal under the uniform measure). A Gaussian-series prior of smoothness :math:`\beta`
puts :math:`\theta_j \sim N(0, c^2 (j + 1)^{-(2\beta + 1)})` on the coefficients, so larger
:math:`\beta` gives smoother draws. For :math:`d > 1` covariates the series is additive: one
intercept plus :math:`J` terms per coordinate, so a design matrix has :math:`1 + dJ` columns.

Covariates in user units :math:`x \in [\text{low}, \text{high}]` are mapped to the unit cube by
:func:`to_unit` before the basis is evaluated.
"""

from __future__ import annotations

import math
import sys

import numpy as np

__all__ = ["to_unit", "cosine_terms", "cosine_features", "n_features", "prior_scales", "series_eval", "SQRT2"]

SQRT2 = math.sqrt(2.0)


def to_unit(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map ``x`` of shape ``(..., d)`` from the box ``[low, high]`` to ``[0, 1]^d`` (clipped)."""
    low = np.asarray(low, dtype=float)
    high = np.asarray(high, dtype=float)
    return np.clip((np.asarray(x, dtype=float) - low) / (high - low), 0.0, 1.0)


def n_features(d: int, n_terms: int) -> int:
    """Columns of the additive design matrix: an intercept plus ``n_terms`` per coordinate."""
    return 1 + d * n_terms


def _namespace(u):
    """The array library of ``u``: torch or ``jax.numpy`` for their arrays (already imported when
    such an array exists), NumPy for anything else."""
    top = type(u).__module__.split(".")[0]
    if top == "torch":
        return sys.modules["torch"]
    if top in ("jax", "jaxlib"):
        return sys.modules["jax.numpy"]
    return np


def _frequencies(xp, u, n_terms: int):
    if xp is np:
        return np.arange(1, n_terms + 1, dtype=float)
    if xp.__name__ == "torch":
        return xp.arange(1, n_terms + 1, dtype=u.dtype, device=u.device)
    return xp.arange(1, n_terms + 1, dtype=u.dtype)


def cosine_terms(u, n_terms: int, scale: float = SQRT2):
    r"""The non-constant terms :math:`\text{scale} \cdot \cos(\pi j u_c)`, ``j = 1..J`` for each
    coordinate ``c`` in turn: ``(..., d)`` -> ``(..., d J)``.

    ``u`` may be a NumPy, torch or JAX array; the result is of the same kind (and dtype and device),
    so the teachers (NumPy, JAX), the NumPyro models and the student (torch) share this one basis.
    ``scale = sqrt 2`` is the orthonormal basis; the student's pooled moments use other scales.
    """
    xp = _namespace(u)
    if xp is np:
        u = np.asarray(u, dtype=float)
    terms = xp.cos(math.pi * u[..., :, None] * _frequencies(xp, u, n_terms))  # (..., d, J)
    if scale != 1.0:
        terms = scale * terms
    return terms.reshape(*u.shape[:-1], u.shape[-1] * n_terms)


def cosine_features(u, n_terms: int, scale: float = SQRT2):
    r"""Additive cosine features of unit-cube points.

    Parameters
    ----------
    u : array (..., d) in :math:`[0, 1]^d` (NumPy, torch or JAX).
    n_terms : number :math:`J` of non-constant terms per coordinate.
    scale : the terms' factor (default :math:`\sqrt 2`: orthonormal under the uniform measure).

    Returns
    -------
    array (..., 1 + d J): :math:`[1, \phi_1(u_1), ..., \phi_J(u_1), \phi_1(u_2), ...]`.
    """
    xp = _namespace(u)
    if xp is np:
        u = np.asarray(u, dtype=float)
    return xp.concatenate([xp.ones_like(u[..., :1]), cosine_terms(u, n_terms, scale)], -1)


def prior_scales(d: int, n_terms: int, beta: float, scale: float = 1.0) -> np.ndarray:
    r"""Prior standard deviations :math:`c (j + 1)^{-(\beta + 1/2)}` of each feature's coefficient.

    The intercept has index :math:`j = 0`; each coordinate repeats the scales of
    :math:`j = 1..J`, matching the column order of :func:`cosine_features`.
    """
    j = np.arange(1, n_terms + 1, dtype=float)
    per_coord = scale * (j + 1.0) ** -(beta + 0.5)
    return np.concatenate([[scale], np.tile(per_coord, d)])


def series_eval(theta: np.ndarray, u: np.ndarray, n_terms: int) -> np.ndarray:
    """Evaluate series with coefficients ``theta`` (..., F) at ``u`` (..., n, d) -> (..., n)."""
    phi = cosine_features(u, n_terms)
    return np.einsum("...nf,...f->...n", phi, theta)
