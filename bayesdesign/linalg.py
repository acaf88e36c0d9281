"""Small dense linear algebra in plain ``jax.numpy`` (``fori_loop`` over the matrix size).

The teachers solve many tiny systems (``F = 1 + d J``, about 11). Written as loops of
elementwise work they avoid batched LAPACK custom calls: portable to any backend, fast for tiny
matrices, and free of a deadlock that jaxlib 0.10.2's CPU runtime showed here when batched
``cholesky``/``solve_triangular`` calls ran inside larger jitted programs on two cores (the
program hung idle at a few hundred tasks).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

__all__ = ["cholesky", "solve_lower", "solve_upper_t", "cho_solve"]


def cholesky(a: jnp.ndarray) -> jnp.ndarray:
    """Lower Cholesky factor of symmetric positive definite ``a`` (..., n, n)."""
    n = a.shape[-1]
    idx = jnp.arange(n)

    def body(j, chol):
        row = lax.dynamic_index_in_dim(chol, j, axis=-2, keepdims=False)  # (..., n), zero from j on
        s = lax.dynamic_index_in_dim(a, j, axis=-1, keepdims=False) - jnp.einsum("...ik,...k->...i", chol, row)
        d = jnp.sqrt(lax.dynamic_index_in_dim(s, j, axis=-1, keepdims=False))
        col = jnp.where(idx >= j, s / d[..., None], 0.0)
        return lax.dynamic_update_index_in_dim(chol, col[..., None], j, axis=-1)

    return lax.fori_loop(0, n, body, jnp.zeros_like(a))


def solve_lower(l: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Solve ``l x = b`` for lower-triangular ``l`` (..., n, n) and ``b`` (..., n, m)."""
    n = l.shape[-1]

    def body(i, x):
        li = lax.dynamic_index_in_dim(l, i, axis=-2, keepdims=False)  # (..., n)
        acc = lax.dynamic_index_in_dim(b, i, axis=-2, keepdims=False) - jnp.einsum("...k,...km->...m", li, x)
        lii = lax.dynamic_index_in_dim(li, i, axis=-1, keepdims=False)
        return lax.dynamic_update_index_in_dim(x, (acc / lii[..., None])[..., None, :], i, axis=-2)

    return lax.fori_loop(0, n, body, jnp.zeros_like(b))


def solve_upper_t(l: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Solve ``l^T x = b`` for lower-triangular ``l`` (..., n, n) and ``b`` (..., n, m)."""
    n = l.shape[-1]

    def body(k, x):
        i = n - 1 - k
        ci = lax.dynamic_index_in_dim(l, i, axis=-1, keepdims=False)  # column i of l = row i of l^T
        acc = lax.dynamic_index_in_dim(b, i, axis=-2, keepdims=False) - jnp.einsum("...k,...km->...m", ci, x)
        lii = lax.dynamic_index_in_dim(ci, i, axis=-1, keepdims=False)
        return lax.dynamic_update_index_in_dim(x, (acc / lii[..., None])[..., None, :], i, axis=-2)

    return lax.fori_loop(0, n, body, jnp.zeros_like(b))


def cho_solve(l: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Solve ``(l l^T) x = b`` given the lower Cholesky factor ``l``."""
    return solve_upper_t(l, solve_lower(l, b))
