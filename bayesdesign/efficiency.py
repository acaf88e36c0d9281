r"""Semiparametric efficiency of fixed designs, from an environment's truth.

For a design :math:`\pi`,

.. math::
    V(\pi) = E\left[\frac{\sigma_1^2(X)}{\pi(X)} + \frac{\sigma_0^2(X)}{1 - \pi(X)}
             + (\tau(X) - \tau)^2\right],

minimised by the Neyman rule :math:`\pi^* = \sigma_1 / (\sigma_1 + \sigma_0)` with
:math:`V^* = E[(\sigma_1 + \sigma_0)^2] + \mathrm{Var}\,\tau(X)`; complete randomization gives
:math:`V_{1/2} = 2 E[\sigma_1^2 + \sigma_0^2] + \mathrm{Var}\,\tau(X)`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Truth", "truth", "neyman", "design_variance"]


class Truth(NamedTuple):
    """Per-task truth: ``ate``, ``v_star``, ``v_uniform``, ``var_tau``, each ``(tasks,)``."""

    ate: np.ndarray
    v_star: np.ndarray
    v_uniform: np.ndarray
    var_tau: np.ndarray


def neyman(sd1: np.ndarray, sd0: np.ndarray) -> np.ndarray:
    r"""The Neyman rule :math:`\sigma_1 / (\sigma_1 + \sigma_0)` (1/2 where both are zero)."""
    tot = sd1 + sd0
    return np.where(tot > 0, sd1 / np.where(tot > 0, tot, 1.0), 0.5)


def truth(env, n_mc: int = 200_000, seed: int = 0) -> Truth:
    """Efficiency bounds of ``env`` by quadrature when it offers one (``env.quadrature()``
    returning nodes and weights, not ``None``), else by Monte Carlo over ``n_mc`` covariate draws.

    A task batch (``env.n_tasks``) gives one value per task.
    """
    q = env.quadrature() if hasattr(env, "quadrature") else None  # None: the environment has none
    if q is not None:
        x, w = q
    else:
        x = env.sample_covariates(np.random.default_rng(seed), n_mc)
        w = np.full(x.shape[0], 1.0 / x.shape[0])
    tasks = getattr(env, "n_tasks", None)
    if tasks:
        x = np.broadcast_to(x, (tasks, *x.shape))
    s1, s0 = env.sd(x, 1), env.sd(x, 0)
    tau_x = env.mean(x, 1) - env.mean(x, 0)
    ate_q = tau_x @ w
    var_tau = ((tau_x - ate_q[..., None] if tasks else tau_x - ate_q) ** 2) @ w
    v_star = ((s1 + s0) ** 2) @ w + var_tau
    v_unif = 2.0 * (s1**2 + s0**2) @ w + var_tau
    ate = np.asarray(env.ate, dtype=float) if hasattr(env, "ate") else ate_q
    n = tasks or 1
    return Truth(*(np.broadcast_to(np.asarray(v, float), (n,)).copy() for v in (ate, v_star, v_unif, var_tau)))


def design_variance(pi: np.ndarray, sd1: np.ndarray, sd0: np.ndarray) -> np.ndarray:
    r"""Per-unit :math:`\sigma_1^2/\pi + \sigma_0^2/(1 - \pi)` implied by realised allocations."""
    return sd1**2 / pi + sd0**2 / (1.0 - pi)
