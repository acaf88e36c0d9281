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

__all__ = ["Truth", "truth", "neyman", "safe_rule", "RULES", "log_odds_shrinkage", "design_variance"]


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


RULES = ("sd", "log_sd")
r"""The posterior Neyman rules of the teachers: ``sd`` (:math:`\bar s_1 / (\bar s_1 + \bar s_0)`,
:math:`\bar s_a = E[\sigma_a \mid H]`) and ``log_sd`` (:func:`safe_rule`: the sigmoid of the
posterior mean of the Neyman log-odds :math:`\log\sigma_1 - \log\sigma_0`, shrunk when
``safe > 0``)."""


def safe_rule(log_sd_mean: np.ndarray, log_sd_sd: np.ndarray, k: float) -> np.ndarray:
    r"""The log-odds rule :math:`\text{sigmoid}(\text{sign}(m)\max(|m| - k s, 0))` from the
    posterior mean and sd of :math:`\log\sigma_a` (``(..., 2, Q)``, arms independent), with
    :math:`m, s` those of :math:`\log\sigma_1 - \log\sigma_0`: with :math:`k = 0` the sigmoid of
    the posterior mean of the Neyman log-odds, with :math:`k > 0` the safe rule (see
    ``TeacherConfig.safe``)."""
    m = log_sd_mean[..., 1, :] - log_sd_mean[..., 0, :]
    s = np.sqrt(log_sd_sd[..., 1, :] ** 2 + log_sd_sd[..., 0, :] ** 2)
    shrunk = np.sign(m) * np.maximum(np.abs(m) - k * s, 0.0)
    return 1.0 / (1.0 + np.exp(-shrunk))


def log_odds_shrinkage(config) -> float:
    """The :math:`k` of the log-odds rule a teacher configuration (a ``TeacherConfig`` or its dict,
    as stored in traces and checkpoints; a missing ``rule`` is ``"sd"``) follows, or -1 for the
    ``sd`` rule. ``safe > 0`` is the log-odds rule whatever ``rule`` says, as it was before
    ``rule`` existed."""
    c = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    safe = float(c.get("safe", 0.0))
    return safe if (safe > 0 or c.get("rule", "sd") == "log_sd") else -1.0


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
