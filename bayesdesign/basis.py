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

import numpy as np

__all__ = ["to_unit", "cosine_features", "n_features", "prior_scales", "series_eval"]


def to_unit(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map ``x`` of shape ``(..., d)`` from the box ``[low, high]`` to ``[0, 1]^d`` (clipped)."""
    low = np.asarray(low, dtype=float)
    high = np.asarray(high, dtype=float)
    return np.clip((np.asarray(x, dtype=float) - low) / (high - low), 0.0, 1.0)


def n_features(d: int, n_terms: int) -> int:
    """Columns of the additive design matrix: an intercept plus ``n_terms`` per coordinate."""
    return 1 + d * n_terms


def cosine_features(u: np.ndarray, n_terms: int) -> np.ndarray:
    r"""Additive cosine features of unit-cube points.

    Parameters
    ----------
    u : array (..., d) in :math:`[0, 1]^d`.
    n_terms : number :math:`J` of non-constant terms per coordinate.

    Returns
    -------
    array (..., 1 + d J): :math:`[1, \phi_1(u_1), ..., \phi_J(u_1), \phi_1(u_2), ...]`.
    """
    u = np.asarray(u, dtype=float)
    j = np.arange(1, n_terms + 1, dtype=float)
    terms = np.sqrt(2.0) * np.cos(np.pi * u[..., :, None] * j)  # (..., d, J)
    flat = terms.reshape(*u.shape[:-1], u.shape[-1] * n_terms)
    return np.concatenate([np.ones((*u.shape[:-1], 1)), flat], axis=-1)


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
