r"""The experiment runner: every design on the same tasks, covariates, potential outcomes and
assignment uniforms (common random numbers), scored by the same AIPW estimator.

Replications run in lockstep: a policy's state holds all of them and each decision is one
vectorized call. With ``batch_size = b`` the design is refitted every ``b`` units (units in a
batch are assigned with the state after the previous batch).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from .. import __version__
from ..confseq import aipw_confseq, covers_always
from ..efficiency import design_variance, neyman, oracle_error_control, truth
from ..estimation import aipw, wald_interval
from ..regression import nuisance_fitter
from ..validation import check_finite, check_in_bounds, check_shape
from .environment import evaluate, is_task_distribution
from .policy import History, IncrementalPolicy, check_policy_fits
from .registry import make_design

__all__ = ["simulate", "run_design", "draw_experiments"]


def draw_experiments(env, horizon: int, reps: int, seed: int):
    """Tasks, covariates ``x`` (R, T, d), potential outcomes ``y0, y1`` and uniforms ``u`` (R, T)."""
    if horizon < 10:
        raise ValueError(f"horizon: expected at least 10 units, got {horizon}")
    if reps < 1:
        raise ValueError(f"reps: expected at least 1 replication, got {reps}")
    s_task, s_cov, s_out, s_assign = np.random.SeedSequence(seed).spawn(4)
    if is_task_distribution(env):
        env = env.sample_tasks(np.random.default_rng(s_task), reps)
    d = int(env.d)
    x = np.asarray(env.sample_covariates(np.random.default_rng(s_cov), reps * horizon), dtype=float)
    check_shape("environment.sample_covariates", x, (reps * horizon, d))
    check_finite("environment.sample_covariates", x)
    low, high = (np.asarray(b, dtype=float) for b in env.bounds)
    check_in_bounds("environment.sample_covariates", x, low, high)
    x = x.reshape(reps, horizon, d)
    rng = np.random.default_rng(s_out)
    y1 = check_finite("environment.sample_outcomes(arm=1)", evaluate(env, "sample_outcomes", x, 1, rng))
    y0 = check_finite("environment.sample_outcomes(arm=0)", evaluate(env, "sample_outcomes", x, 0, rng))
    u = np.random.default_rng(s_assign).uniform(size=(reps, horizon))
    return env, x, y0, y1, u


class _HistoryAdapter:
    """Runs a plain :class:`Policy` (``propensity(history, x)`` only), one replication at a time."""

    def __init__(self, policy, d: int):
        self.policy, self.d = policy, d
        self.name = getattr(policy, "name", type(policy).__name__)

    def init(self, batch):
        return [History.empty(self.d) for _ in range(batch)]

    def update(self, state, x, a, y, pi):
        return [
            History(*(np.concatenate([h_v, new[i]]) for h_v, new in zip(h, (x, a, y, pi), strict=True)))
            for i, h in enumerate(state)
        ]

    def propensity_at(self, state, x):
        return np.stack([np.asarray(self.policy.propensity(h, x[i]), dtype=float) for i, h in enumerate(state)])


def run_design(policy, x, y0, y1, u, batch_size: int = 1, progress: bool = False, label: str = ""):
    """Run one design on pre-drawn experiments; returns ``pi``, ``a``, ``y`` (R, T)."""
    r, t, d = x.shape
    if not isinstance(policy, IncrementalPolicy):
        policy = _HistoryAdapter(policy, d)
    name = getattr(policy, "name", label)
    pi = np.empty((r, t))
    state = policy.init(r)
    starts = range(0, t, batch_size)
    for s in tqdm(starts, desc=label or name, disable=not progress, leave=False):
        xb = x[:, s : s + batch_size]
        p = np.asarray(policy.propensity_at(state, xb), dtype=float)
        if p.shape != xb.shape[:-1]:
            raise ValueError(f"design {name!r}: propensity returned shape {p.shape}, expected {xb.shape[:-1]}")
        if not np.all((p > 0) & (p < 1)):
            raise ValueError(f"design {name!r}: propensity must lie strictly inside (0, 1) (unit {s})")
        ab = (u[:, s : s + batch_size] < p).astype(np.int8)
        yb = np.where(ab == 1, y1[:, s : s + batch_size], y0[:, s : s + batch_size])
        pi[:, s : s + batch_size] = p
        state = policy.update(state, xb, ab, yb, p)
    a = (u < pi).astype(np.int8)
    return pi, a, np.where(a == 1, y1, y0)


def simulate(
    env,
    designs: Sequence,
    horizon: int = 2000,
    reps: int = 500,
    seed: int = 0,
    batch_size: int = 1,
    keep_units: int | None = None,
    progress: bool = False,
    fitter_kwargs: dict | None = None,
) -> xr.Dataset:
    """Run ``designs`` on ``env`` and score them with the shared AIPW estimator.

    Parameters
    ----------
    env : an :class:`~bayesdesign.design.environment.Environment` (or a task distribution,
        which gives one task per replication). Scoring needs ``mean``, ``sd`` and ``ate``.
    designs : design names (see :func:`~bayesdesign.design.registry.make_design`) or policies.
        The oracle is added when absent, as the reference of every MSE ratio.
    horizon, reps, seed : units per experiment, replications, and the seed of everything random.
    batch_size : refit every ``batch_size`` units.
    keep_units : keep per-unit records of only the first ``keep_units`` replications.

    Returns
    -------
    xarray.Dataset with per-replication ``tau_hat, se, covered, design_var, abs_pi_err`` and
    ``cs_covered`` (the anytime-valid confidence sequence of :mod:`~bayesdesign.confseq`, tuned
    for ``horizon``, holds the ATE at every look) and ``error_control`` (the control variate of
    :func:`~bayesdesign.efficiency.oracle_error_control`) (dims ``design, rep``) and
    ``ate, v_star, v_uniform, var_tau`` (``rep``), and per-unit records
    ``x, a, y, pi, G, scored, pi_star, sd1, sd0`` over ``(design,) unit_rep, t`` where
    ``unit_rep`` indexes the first ``keep_units`` replications (all by default).
    """
    started = time.time()
    env_run, x, y0, y1, u = draw_experiments(env, horizon, reps, seed)
    has_truth = all(hasattr(env_run, k) for k in ("sd", "mean", "ate"))
    names = [dsg if isinstance(dsg, str) else getattr(dsg, "name", type(dsg).__name__) for dsg in designs]
    designs = list(designs)
    if has_truth and "oracle" not in names:
        designs.append("oracle")
        names.append("oracle")
    if len(set(names)) != len(names):
        raise ValueError(f"designs: names must be unique, got {names}")
    fitter = nuisance_fitter(env_run.bounds, **(fitter_kwargs or {}))
    if has_truth:
        tr = type(truth(env_run))(*(np.broadcast_to(v, (reps,)) for v in truth(env_run)))
        sd1, sd0 = evaluate(env_run, "sd", x, 1), evaluate(env_run, "sd", x, 0)
        mu1, mu0 = evaluate(env_run, "mean", x, 1), evaluate(env_run, "mean", x, 0)
        pi_star = neyman(sd1, sd0)
    keep = reps if keep_units is None else min(keep_units, reps)
    per_unit = {k: [] for k in ("pi", "a", "y", "G", "scored")}
    per_rep = {k: [] for k in ("tau_hat", "se", "design_var", "abs_pi_err", "cs_covered", "error_control")}
    for name, dsg in zip(names, designs, strict=True):
        if isinstance(dsg, str):
            policy = make_design(dsg, env_run, horizon=horizon)
        else:
            check_policy_fits(dsg, env_run, name)
            policy = dsg
        pi, a, y = run_design(policy, x, y0, y1, u, batch_size, progress, label=name)
        res = aipw(x, a, y, pi, bounds=env_run.bounds, fitter=fitter)
        for k, v in (("pi", pi), ("a", a), ("y", y), ("G", res.G), ("scored", res.scored)):
            per_unit[k].append(v[:keep])
        per_rep["tau_hat"].append(res.estimate)
        per_rep["se"].append(res.se)
        if has_truth:
            per_rep["design_var"].append(design_variance(pi, sd1, sd0).mean(-1) + tr.var_tau)
            per_rep["abs_pi_err"].append(np.abs(pi - pi_star).mean(-1))
            per_rep["cs_covered"].append(covers_always(aipw_confseq(res, n_star=horizon), tr.ate))
            per_rep["error_control"].append(oracle_error_control(a, y, pi, mu1, mu0, sd1, sd0, res.scored, tr.ate))
    dims_u, dims_r = ("design", "unit_rep", "t"), ("design", "rep")
    data = {k: (dims_u, np.stack(v)) for k, v in per_unit.items()}
    data["x"] = (("unit_rep", "t", "covariate"), x[:keep])
    data.update({k: (dims_r, np.stack(v)) for k, v in per_rep.items() if v})
    lo, hi = wald_interval(data["tau_hat"][1], data["se"][1])
    if has_truth:
        ate = np.broadcast_to(tr.ate, (reps,))
        data["covered"] = (dims_r, (lo <= ate) & (ate <= hi))
        data.update(
            ate=("rep", ate),
            v_star=("rep", tr.v_star),
            v_uniform=("rep", tr.v_uniform),
            var_tau=("rep", tr.var_tau),
            pi_star=(("unit_rep", "t"), pi_star[:keep]),
            sd1=(("unit_rep", "t"), sd1[:keep]),
            sd0=(("unit_rep", "t"), sd0[:keep]),
        )
    ds = xr.Dataset(
        data,
        coords={
            "design": names,
            "rep": np.arange(reps),
            "t": np.arange(horizon),
            "covariate": [f"x{j}" for j in range(x.shape[-1])],
        },
    )
    ds.attrs.update(
        environment=str(getattr(env, "name", type(env).__name__)),
        horizon=horizon,
        reps=reps,
        seed=seed,
        batch_size=batch_size,
        kept_reps=keep,
        seconds=round(time.time() - started, 2),
        bayesdesign_version=__version__,
    )
    return ds
