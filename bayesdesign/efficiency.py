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

import math
from typing import NamedTuple

import numpy as np

from .basis import _namespace

__all__ = [
    "Truth",
    "truth",
    "neyman",
    "safe_rule",
    "log_odds",
    "RULES",
    "log_odds_settings",
    "ATOM_SAFE",
    "atom_settings",
    "extremes_init",
    "extremes_update",
    "has_atom",
    "atom_note",
    "slab_grid",
    "slab_sd",
    "design_variance",
    "oracle_error_control",
]


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


def safe_rule(
    log_sd_mean: np.ndarray, log_sd_sd: np.ndarray, k: float, spike: float = 0.0, slab: float = 1.0
) -> np.ndarray:
    r"""The log-odds rule from the posterior mean and sd of :math:`\log\sigma_a` (``(..., 2, Q)``,
    arms independent), with :math:`m, s` those of the Neyman log-odds
    :math:`\delta = \log\sigma_1 - \log\sigma_0`:

    .. math::
        \pi = \text{sigmoid}\big((1 - p_0)\,\text{sign}(m)\max(|m| - k s, 0)\big).

    With :math:`k = 0` and ``spike = 0`` the sigmoid of the posterior mean of :math:`\delta`;
    :math:`k > 0` is the safe rule (``TeacherConfig.safe``). ``spike`` :math:`= \rho > 0` is the
    prior probability of a spike at :math:`\delta(x) = 0` (the arms' sds equal at :math:`x`,
    nothing to gain there) beside the working model's continuous prior
    :math:`N(0, s_0^2)`, :math:`s_0` = ``slab`` (:func:`slab_sd`). By the Savage--Dickey
    density ratio the posterior probability of the spike is

    .. math::
        p_0 = \text{sigmoid}\!\left(\log\frac{\rho}{1 - \rho} + \log\frac{s_0}{s}
              - \frac{m^2}{2 s^2}\right),

    and :math:`(1 - p_0) m` is the posterior mean of :math:`\delta` under the spike-and-slab
    prior: where the data are as likely with equal sds the design stays near 1/2, and the spike
    loses its weight as soon as the posterior separates the arms' sds."""
    m = log_sd_mean[..., 1, :] - log_sd_mean[..., 0, :]
    s = np.sqrt(log_sd_sd[..., 1, :] ** 2 + log_sd_sd[..., 0, :] ** 2)
    return 1.0 / (1.0 + np.exp(-log_odds(m, s, k, spike, slab)))


def log_odds(m, s, k: float = 0.0, spike: float = 0.0, slab: float = 1.0):
    """The shrunk log-odds :math:`(1 - p_0)\\,\text{sign}(m)\\max(|m| - k s, 0)` of
    :func:`safe_rule` from the posterior mean ``m`` and sd ``s`` of the Neyman log-odds: NumPy,
    torch or JAX arrays (the student's conjugate layer calls it on tensors)."""
    xp = _namespace(m)
    excess = xp.abs(m) - k * s
    shrunk = xp.sign(m) * 0.5 * (excess + xp.abs(excess))
    if spike > 0:
        s = s + 1e-12
        log_odds0 = math.log(spike / (1.0 - spike)) + math.log(slab) - xp.log(s) - 0.5 * (m / s) ** 2
        shrunk = shrunk * 0.5 * (1.0 - xp.tanh(0.5 * log_odds0))
    return shrunk


def log_odds_settings(config) -> tuple[float, float]:
    """``(k, spike)`` of the log-odds rule a teacher configuration (a ``TeacherConfig`` or its
    dict, as stored in traces and checkpoints) follows, or ``(-1, 0)`` for the ``sd`` rule.

    A dict missing ``rule`` or ``spike`` was written before they existed and reads as ``"sd"``
    and 0 (the defaults then). ``safe > 0`` or ``spike > 0`` is the log-odds rule whatever
    ``rule`` says."""
    c = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    safe, spike = float(c.get("safe", 0.0)), float(c.get("spike", 0.0))
    if safe > 0 or spike > 0 or c.get("rule", "sd") == "log_sd":
        return safe, spike
    return -1.0, 0.0


ATOM_SAFE = 0.5
r"""The safe rule's :math:`k` on outcomes with an atom (:func:`has_atom`, :func:`atom_settings`)."""


def atom_settings(k: float, spike: float) -> tuple[float, float]:
    r"""``(k, spike)`` of the rule on outcomes with an atom: the log-odds rule with
    :math:`k \ge` :data:`ATOM_SAFE` and the configured spike (``k = -1``, the Neyman ratio, becomes
    :data:`ATOM_SAFE` too). The second-moment regression is then the robust one as well
    (``TeacherConfig.robust``): a Gaussian working model has no atoms, and on outcomes that have one
    (a zero-heavy revenue, most units buying nothing) the Gaussian variance of :math:`(Y - c)^2`
    makes the posterior of the sds far too sure, so the rule chases noise (docs/concepts.md,
    *outcomes with an atom*)."""
    return max(float(k), ATOM_SAFE), float(spike)


def extremes_init(batch: int) -> np.ndarray:
    """Running extremes of no outcome, ``(batch, 4)``: minimum, its count, maximum, its count."""
    out = np.zeros((batch, 4))
    out[:, 0], out[:, 2] = np.inf, -np.inf
    return out


def extremes_update(ext: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The running extremes (:func:`extremes_init`) after outcomes ``y`` (B, m; NaN: none): the
    smallest and largest outcome so far and how many outcomes equal each (exact ties)."""
    y = np.asarray(y, float)
    if y.shape[-1] == 0:
        return ext
    nan = np.isnan(y)  # padding: no outcome; an all-NaN row changes nothing
    out = np.array(ext, float, copy=True)
    for col, new in ((0, np.where(nan, np.inf, y).min(-1)), (2, np.where(nan, -np.inf, y).max(-1))):
        ties = (y == new[:, None]).sum(-1)
        old = out[:, col]
        moved = new < old if col == 0 else new > old
        out[:, col + 1] = np.where(moved, ties, out[:, col + 1] + np.where(new == old, ties, 0))
        out[:, col] = np.where(moved, new, old)
    return out


def has_atom(ext: np.ndarray, n, share: float) -> np.ndarray:
    r"""Whether the outcomes so far have an atom at an extreme, ``(B,)``: at least two of the ``n``
    outcomes (a number, or one per row), and at least ``share`` of them, equal the smallest (or the
    largest) one. Exact ties
    have probability 0 under a continuous outcome law, so this never fires on one; it is unchanged
    by :math:`y \to c + s y`. ``share = 0`` turns it off."""
    top = np.maximum(ext[:, 1], ext[:, 3])
    return (share > 0) & (top >= np.maximum(2.0, share * np.asarray(n, float)))


def atom_note(y: np.ndarray, share: float, design: str) -> str | None:
    """A sentence for an analysis when the outcomes ``y`` (n,) have an atom (:func:`has_atom` with
    ``share``, the design's ``TeacherConfig.atom``), saying that design ``design`` decided by the
    rule for them; ``None`` otherwise."""
    y = np.asarray(y, float).reshape(1, -1)
    ext = extremes_update(extremes_init(1), y)
    if not share or not has_atom(ext, y.shape[1], share)[0]:
        return None
    col = 1 if ext[0, 1] >= ext[0, 3] else 3
    return (
        f"{int(ext[0, col])} of {y.shape[1]} outcomes equal {ext[0, col - 1]:g} (an atom): design {design} "
        "decided by its rule for outcomes with an atom (the robust sds and the safe rule; docs/concepts.md, "
        "'Outcomes with an atom'); a prior of family hurdle_lognormal models zero-heavy revenue and gains more"
    )


SLAB_POINTS = 64


def slab_grid(d: int) -> np.ndarray:
    """The fixed points (``SLAB_POINTS``, d) of the unit cube where :func:`slab_sd` averages."""
    if d == 1:
        return (np.arange(SLAB_POINTS) + 0.5)[:, None] / SLAB_POINTS
    return np.random.default_rng(0).uniform(size=(SLAB_POINTS, d))


def slab_sd(log_sd_sd: np.ndarray) -> float:
    r"""The prior sd :math:`s_0` of the Neyman log-odds at a point, from the prior sd of
    :math:`\log\sigma_a` at the :func:`slab_grid` points (``(..., 2, Q)``, before any unit):
    the root mean square over the points of :math:`\sqrt{s_{\log\sigma_1}^2 + s_{\log\sigma_0}^2}`."""
    v = np.asarray(log_sd_sd, float).reshape(-1, 2, np.shape(log_sd_sd)[-1])
    return float(np.sqrt((v**2).sum(1).mean()))


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


def oracle_error_control(a, y, pi, mu1, mu0, sd1, sd0, scored, ate) -> np.ndarray:
    r"""A control variate for :math:`T \cdot \text{MSE}`: per replication (B,)
    :math:`C = T (\hat\tau^* - \tau)^2 - \frac{T}{T_s^2} \sum_{t \in S} \big[(\tau(X_t) - \tau)^2
    + \sigma_1^2(X_t)/\pi_t + \sigma_0^2(X_t)/(1 - \pi_t)\big]`, with :math:`\hat\tau^*` the AIPW
    estimate over the scored units :math:`S` (``scored`` (B, T), :math:`T_s = |S|`) with the *true*
    arm means ``mu1``, ``mu0`` (B, T) as nuisances.

    Its scores :math:`\tau(X_t) - \tau + \xi_t`, :math:`\xi_t = a_t (y_t - \mu_1)/\pi_t - (1 - a_t)(y_t
    - \mu_0)/(1 - \pi_t)`, are martingale differences with conditional variance the bracket (the
    propensity and the scoring are fixed before the unit arrives), so :math:`E[C] = 0`. And
    :math:`\hat\tau - \hat\tau^*` is only the nuisance error, so :math:`T(\hat\tau - \tau)^2 - C` has
    the mean of :math:`T(\hat\tau - \tau)^2` and a far smaller spread: an estimate of the realized
    :math:`T \cdot \text{MSE}` that needs a fraction of the replications
    (:func:`~bayesdesign.summary.summarize`, ``realized_over_design_cv``).
    """
    tau = np.asarray(ate, float)
    tau_x = mu1 - mu0
    g = tau_x + a * (y - mu1) / pi - (1 - a) * (y - mu0) / (1.0 - pi)
    n = scored.sum(-1)
    horizon = scored.shape[-1]
    est = np.where(scored, g, 0.0).sum(-1) / n
    bracket = (tau_x - tau[:, None]) ** 2 + design_variance(pi, sd1, sd0)
    return horizon * (est - tau) ** 2 - horizon * np.where(scored, bracket, 0.0).sum(-1) / n**2
