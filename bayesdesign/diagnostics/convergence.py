r"""Convergence of NUTS fits: :math:`\hat R`, bulk and tail ESS, divergences, with thresholds.

For draws :math:`\theta^{(c, s)}` of ``C`` chains of ``S`` draws (Vehtari et al. 2021, as ArviZ
computes them):

- **rank-normalized split** :math:`\hat R` compares the variance between split chains with the
  variance within them; :math:`\hat R > 1.01` means the chains have not mixed (different means,
  stuck chains) and the draws do not yet describe the posterior;
- **bulk ESS**: effective sample size of the rank-normalized draws, the number of independent
  draws worth of information about the centre of the posterior (means, medians);
- **tail ESS**: the smaller ESS of the indicators :math:`\theta \le q_{0.05}` and
  :math:`\theta \le q_{0.95}`, information about the tails (interval endpoints). Below
  :math:`100 \cdot C` (we use 400) Monte Carlo error in quantiles is not negligible;
- **divergences**: NUTS trajectories whose energy error blew up; even one means the sampler met
  geometry it could not follow (a funnel, a hard boundary) and the draws may be biased there.

:data:`THRESHOLDS` holds the warning levels: :math:`\hat R > 1.01`, ESS < 400, any divergence.
:func:`convergence_summary` computes everything with ArviZ from an ``InferenceData`` (one call
broadcasts over every dimension other than ``chain`` and ``draw``); :func:`convergence_flags`
applies the thresholds and :func:`warn_if_unconverged` raises a :class:`ConvergenceWarning`
naming what failed. :func:`ess_tail` is a vectorized twin of ArviZ's tail ESS for many tasks at
once (checked against ArviZ in the tests), used where a teacher records diagnostics per task.
Fitting the NUTS teacher to one history and checking the fit is :mod:`bayesdesign.diagnostics.fit`
(this module imports no teacher: the NUTS teacher imports it).
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

__all__ = [
    "THRESHOLDS",
    "ConvergenceWarning",
    "convergence_summary",
    "convergence_flags",
    "warn_if_unconverged",
    "ess_tail",
]

THRESHOLDS = {"rhat": 1.01, "ess_bulk": 400.0, "ess_tail": 400.0, "divergences": 0}


class ConvergenceWarning(UserWarning):
    """A NUTS fit failed a convergence threshold (see :data:`THRESHOLDS`)."""


def convergence_summary(idata, var_names: list[str] | None = None) -> xr.Dataset:
    r"""R-hat, bulk and tail ESS of every posterior variable, and the divergence count.

    ``idata``: an ArviZ ``InferenceData`` (or anything :func:`arviz.convert_to_inference_data`
    accepts, e.g. a dict of arrays ``(chain, draw, ...)``) with at least 4 draws per chain.
    Returns a dataset with ``rhat_<var>``, ``ess_bulk_<var>``, ``ess_tail_<var>`` over each
    variable's own dims, and the scalars ``divergences`` (post-warmup divergent transitions, 0
    when the fit has no ``sample_stats.diverging``), ``chains``, ``draws``, and the worst values
    ``rhat_max``, ``ess_bulk_min``, ``ess_tail_min``.
    """
    import arviz as az  # lazy: ArviZ takes about a second; the NUTS teacher imports this module

    idata = az.convert_to_inference_data(idata)
    post = idata.posterior
    if var_names is not None:
        missing = [v for v in var_names if v not in post]
        if missing:
            raise ValueError(f"var_names: {missing} not in the posterior (has {list(post.data_vars)})")
        post = post[var_names]
    if post.sizes.get("draw", 0) < 4:
        raise ValueError(f"posterior: expected at least 4 draws per chain, got {post.sizes.get('draw', 0)}")
    rhat = az.rhat(post)
    bulk = az.ess(post, method="bulk")
    tail = az.ess(post, method="tail")
    out = xr.Dataset()
    for v in post.data_vars:
        out[f"rhat_{v}"] = rhat[v]
        out[f"ess_bulk_{v}"] = bulk[v]
        out[f"ess_tail_{v}"] = tail[v]
    div = 0
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        div = int(np.asarray(idata.sample_stats["diverging"]).sum())
    worst = lambda ds, f: float(f(np.concatenate([np.ravel(ds[v].values) for v in ds.data_vars])))  # noqa: E731
    out["divergences"] = div
    out["chains"] = int(post.sizes["chain"])
    out["draws"] = int(post.sizes["draw"])
    out["rhat_max"] = worst(rhat, np.nanmax)
    out["ess_bulk_min"] = worst(bulk, np.nanmin)
    out["ess_tail_min"] = worst(tail, np.nanmin)
    return out


def convergence_flags(
    rhat, ess_bulk=None, ess_tail=None, divergences=None, thresholds: dict | None = None
) -> dict[str, np.ndarray]:
    r"""Threshold flags, elementwise (arrays broadcast; ``None`` or NaN: not checked).

    Returns ``rhat_high`` (:math:`\hat R` > 1.01), ``ess_bulk_low``, ``ess_tail_low`` (< 400),
    ``divergent`` (> 0) and ``any`` (their union), boolean arrays.
    """
    th = {**THRESHOLDS, **(thresholds or {})}

    def cmp(v, op, level):
        if v is None:
            return np.asarray(False)
        v = np.asarray(v, dtype=float)
        with np.errstate(invalid="ignore"):
            return np.where(np.isnan(v), False, op(v, level))

    flags = {
        "rhat_high": cmp(rhat, np.greater, th["rhat"]),
        "ess_bulk_low": cmp(ess_bulk, np.less, th["ess_bulk"]),
        "ess_tail_low": cmp(ess_tail, np.less, th["ess_tail"]),
        "divergent": cmp(divergences, np.greater, th["divergences"]),
    }
    flags["any"] = np.logical_or.reduce(np.broadcast_arrays(*flags.values()))
    return flags


def messages(summary: xr.Dataset, thresholds: dict | None = None) -> list[str]:
    """One line per failed threshold of a :func:`convergence_summary`."""
    th = {**THRESHOLDS, **(thresholds or {})}
    s = {k: float(summary[k]) for k in ("rhat_max", "ess_bulk_min", "ess_tail_min", "divergences")}
    f = convergence_flags(s["rhat_max"], s["ess_bulk_min"], s["ess_tail_min"], s["divergences"], th)
    out = []
    if f["rhat_high"]:
        out.append(f"R-hat {s['rhat_max']:.3f} > {th['rhat']}: the chains disagree; run longer or reparameterize")
    if f["ess_bulk_low"]:
        out.append(f"bulk ESS {s['ess_bulk_min']:.0f} < {th['ess_bulk']:.0f}: posterior means carry Monte Carlo error")
    if f["ess_tail_low"]:
        out.append(f"tail ESS {s['ess_tail_min']:.0f} < {th['ess_tail']:.0f}: interval endpoints are noisy")
    if f["divergent"]:
        out.append(
            f"{int(s['divergences'])} divergent transitions: the draws may be biased; raise "
            "target_accept_prob or max_tree_depth"
        )
    return out


def warn_if_unconverged(summary: xr.Dataset, context: str = "NUTS fit", thresholds: dict | None = None) -> list[str]:
    """Issue a :class:`ConvergenceWarning` per failed threshold; returns the messages."""
    msgs = messages(summary, thresholds)
    for m in msgs:
        warnings.warn(f"{context}: {m}", ConvergenceWarning, stacklevel=2)
    return msgs


def _split(x: np.ndarray) -> np.ndarray:
    """(C, S, ...) -> (2C, S // 2, ...): each chain cut in two halves (the middle draw of an odd
    chain dropped), as ArviZ does."""
    c, s = x.shape[:2]
    h = s // 2
    return np.concatenate([x[:, :h], x[:, s - h :]], axis=0)


def ess_tail(x: np.ndarray) -> np.ndarray:
    r"""Tail ESS of draws ``x`` (chain, draw, ...), vectorized over the trailing dims.

    :math:`\min(\mathrm{ESS}(I(x \le q_{0.05})), \mathrm{ESS}(I(x \le q_{0.95})))` on split
    chains, quantiles over all draws: ArviZ's definition, equal to ArviZ up to rounding (0.1%),
    with NumPyro's :func:`~numpyro.diagnostics.effective_sample_size` (Geyer's initial monotone
    sequence) applied to every trailing element at once."""
    from numpyro.diagnostics import effective_sample_size  # lazy: loads JAX, which the other checks need not

    x = np.asarray(x, dtype=float)
    if x.ndim < 2 or x.shape[1] < 4:
        raise ValueError(f"x: expected draws (chain, draw, ...) with at least 4 draws, got shape {x.shape}")
    flat = x.reshape(x.shape[0] * x.shape[1], -1)
    out = []
    for p in (0.05, 0.95):
        q = np.quantile(flat, p, axis=0)
        ind = (x <= q.reshape(x.shape[2:])).astype(float)
        ind = _split(ind)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ess = np.asarray(effective_sample_size(ind))
        const = ind.std(axis=(0, 1)) == 0  # all draws on one side: ArviZ reports the draw count
        out.append(np.where(const, x.shape[0] * x.shape[1], ess))
    return np.minimum(*out)


def trace_variables(per_step: list[dict], n_tasks: int, thresholds: dict | None = None) -> dict:
    """Traces variables from a sampling teacher's per-step diagnostics.

    ``per_step[s]``: ``teacher.diagnostics(state)`` of the fit behind step ``s`` (arrays (B,);
    empty before the first fit). Returns ``fit_<name>`` (task, step) float32 (NaN where no fit)
    for every diagnostic, and, when R-hat/ESS/divergences are among them, int8 flags (task, step)
    ``fit_rhat_high``, ``fit_ess_bulk_low``, ``fit_ess_tail_low``, ``fit_divergent`` and their
    union ``fit_flagged``: 1 where the fit failed that threshold of :data:`THRESHOLDS` (0 where
    there was no fit to check). The teachers keep one chain of a few hundred draws per task, so
    the ESS flags are expected there; R-hat and divergences are the ones to filter on.
    """
    names = sorted({k for d in per_step for k in d})
    steps = len(per_step)
    out = {}
    arrays = {}
    for k in names:
        arr = np.full((n_tasks, steps), np.nan, dtype=np.float32)
        for s, d in enumerate(per_step):
            if k in d:
                arr[:, s] = np.asarray(d[k], dtype=float).reshape(n_tasks, -1)[:, 0]
        arrays[k] = arr
        out[f"fit_{k}"] = (("task", "step"), arr)
    if {"rhat", "ess", "divergences"} & set(names):
        flags = convergence_flags(
            arrays.get("rhat"), arrays.get("ess"), arrays.get("ess_tail"), arrays.get("divergences"), thresholds
        )
        for k in ("rhat_high", "ess_bulk_low", "ess_tail_low", "divergent", "any"):
            name = "fit_flagged" if k == "any" else f"fit_{k}"
            out[name] = (("task", "step"), np.broadcast_to(flags[k], (n_tasks, steps)).astype(np.int8))
    return out
