r"""Simulation-based calibration (SBC) of the teachers (Talts et al. 2018; Modrák et al. 2023).

If tasks are drawn from the prior, :math:`\theta \sim p(\theta)`, a history :math:`H` is simulated
from the task, and :math:`\tilde\theta^{(1..L)}` are *independent* draws of the posterior
:math:`p(\theta \mid H)`, then the rank of the truth among the draws,

.. math::
    r = \#\{\ell : \tilde\theta^{(\ell)} < \theta\} \in \{0, \dots, L\},

is uniform on :math:`\{0..L\}` for every scalar function of :math:`\theta`. A posterior that is
too narrow piles ranks at both ends, one that is too wide in the middle, a biased one at one end.

Here the functions are the teacher's decision quantities at a query covariate :math:`x_q` drawn
uniformly per simulation: :math:`\sigma_a(x_q)` (what the posterior Neyman rule averages) and
:math:`\mu_a(x_q)`, both arms. Per simulation: a task from :func:`bayesdesign.models.sample_tasks`,
``units`` units with uniform assignment (:math:`\pi = 1/2`), one fit. The fits are vectorized
over simulations: the NUTS and SVI teachers fit all histories of a batch in one ``jax.vmap``-ed
program (:meth:`~bayesdesign.teachers._sampling.SampledTeacher.update` with one refit at
``units``); the conjugate teacher draws from its closed-form working posterior
(:meth:`~bayesdesign.teachers.conjugate.ConjugateTeacher.posterior`).

Draws are taken **before the variance floor** for the sampling teachers (the floor is a design
device, not part of the model). NUTS draws are autocorrelated: ``thin`` keeps every ``thin``-th of
``draws * thin`` draws, so that the ``draws`` kept are close to independent: on ``beta2`` with
100 units the smallest bulk ESS over the coefficients was 300 of 400 draws on average (130 at
worst, still above the 100 draws kept). The fits' ESS are stored (``fit_ess``, ``fit_ess_tail``)
so this can be checked. The conjugate teacher's :math:`\sigma_a` is its plug-in
:math:`\sqrt{\max(r_a(x) - (m_a(x) - c_a)^2, \text{floor}\cdot v_0)}` from two Gaussian
working regressions, not a posterior under the prior's model: its SBC measures how far that
plug-in is from one, and is expected to fail on heteroskedastic priors.

The result (:func:`run_sbc`) is an ``xarray.Dataset`` with ``attrs["kind"] = "sbc"``: ranks
``(sim, quantity, query)``, truths, the per-fit diagnostics, and per quantity the verdict of
:func:`~bayesdesign.diagnostics.ecdf.uniformity_check`.
"""

from __future__ import annotations

import json
import time

import numpy as np
import xarray as xr

from ..design.environment import evaluate
from ..design.policy import History
from ..parallel import map_chunks
from ..spec import PriorSpec, load_prior
from .ecdf import uniformity_check

__all__ = ["QUANTITIES", "sbc_ranks", "simulate_histories", "teacher_draws", "run_sbc", "sbc_verdict"]

QUANTITIES = ("sigma_0", "sigma_1", "mu_0", "mu_1")
BACKENDS = ("nuts", "svi", "conjugate")


def sbc_ranks(draws: np.ndarray, truth: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    r"""Rank of ``truth`` (...) among ``draws`` (..., L): :math:`\#\{\tilde\theta < \theta\}`
    plus a uniform share of the ties (draws equal to the truth, e.g. at a variance floor), so that
    ranks stay uniform on ``0..L`` for a calibrated posterior with atoms."""
    draws = np.asarray(draws, dtype=float)
    truth = np.asarray(truth, dtype=float)[..., None]
    if draws.shape[:-1] != truth.shape[:-1]:
        raise ValueError(f"draws, truth: expected shapes (..., L) and (...), got {draws.shape} and {truth.shape[:-1]}")
    less = (draws < truth).sum(-1)
    ties = (draws == truth).sum(-1)
    if ties.any():
        rng = rng or np.random.default_rng(0)
        less = less + rng.integers(0, ties + 1)
    return less.astype(np.int64)


def simulate_histories(spec, sims: int, units: int, queries: int = 1, seed: int = 0) -> dict:
    """``sims`` tasks from the prior and ``units`` units of each with uniform assignment.

    Returns a dict: ``history`` (a batched :class:`~bayesdesign.design.policy.History`),
    ``x_query`` (sims, queries, d) uniform in the covariate box, ``truth`` (sims, 4, queries) in
    the order of :data:`QUANTITIES`, ``task_class`` (sims,).
    """
    from ..models import sample_tasks  # lazy: JAX loads only when SBC runs, not to read SBC files

    if sims < 2 or units < 1 or queries < 1:
        raise ValueError(
            f"sims, units, queries: expected sims >= 2, units >= 1, queries >= 1, got {sims}, {units}, {queries}"
        )
    s_task, s_x, s_a, s_y, s_q = np.random.SeedSequence(seed).spawn(5)
    env, classes = sample_tasks(spec, np.random.default_rng(s_task), sims)
    d = spec.d
    x = env.sample_covariates(np.random.default_rng(s_x), sims * units).reshape(sims, units, d)
    a = (np.random.default_rng(s_a).uniform(size=(sims, units)) < 0.5).astype(float)
    rng_y = np.random.default_rng(s_y)
    y1 = evaluate(env, "sample_outcomes", x, 1, rng_y)
    y0 = evaluate(env, "sample_outcomes", x, 0, rng_y)
    y = np.where(a == 1, y1, y0)
    xq = env.sample_covariates(np.random.default_rng(s_q), sims * queries).reshape(sims, queries, d)
    truth = np.stack([evaluate(env, m, xq, arm) for m, arm in (("sd", 0), ("sd", 1), ("mean", 0), ("mean", 1))], 1)
    return {
        "history": History(x, a, y, np.full((sims, units), 0.5)),
        "x_query": xq,
        "truth": truth,
        "task_class": classes,
    }


def teacher_draws(
    backend: str,
    spec,
    history,
    x_query: np.ndarray,
    draws: int,
    thin: int = 4,
    seed: int = 0,
    teacher_kwargs: dict | None = None,
    chunk: int | None = None,
) -> tuple[np.ndarray, dict]:
    r"""``draws`` posterior draws per simulation of :data:`QUANTITIES` at ``x_query``.

    Returns ``(values, diagnostics)``: ``values`` (sims, 4, Q, draws); ``diagnostics`` arrays
    (sims,) of the fits (NUTS: ``divergences``, ``rhat``, ``ess`` (smallest bulk ESS over the
    coefficients, of the ``draws * thin`` kept before thinning); SVI: ``loss``).
    """
    from ..teachers import TeacherConfig, make_teacher  # lazy: JAX, as above

    if backend not in BACKENDS:
        raise ValueError(f"teacher: expected one of {list(BACKENDS)}, got {backend!r}")
    if draws < 1 or thin < 1:
        raise ValueError(f"draws, thin: expected positive integers, got {draws}, {thin}")
    kwargs = dict(teacher_kwargs or {})
    config = kwargs.pop("config", None) or TeacherConfig(burn_in=0)
    sims, units = history.y.shape
    if backend == "conjugate":
        teacher = make_teacher("conjugate", spec, config, **kwargs)
        return conjugate_draws(teacher, history, x_query, draws, np.random.default_rng([seed, 3])), {}
    kwargs.setdefault("refit_every", units)
    kwargs.setdefault("early_refits", False)
    kwargs.setdefault("seed", seed)
    if backend == "nuts":
        kwargs.setdefault("num_samples", draws * thin)
        if chunk is not None:
            kwargs.setdefault("chunk", chunk)
    else:
        thin = 1
        kwargs.setdefault("num_draws", draws)
    teacher = make_teacher(backend, spec, config, **kwargs)
    if teacher.fit_size(units) != units:
        raise ValueError(
            f"teacher_kwargs: the teacher must fit once on all {units} units "
            f"(refit_every={teacher.refit_every}, burn_in={teacher.config.burn_in})"
        )
    state = teacher.update(teacher.init(sims), history.x, history.a, history.y, history.pi)
    mean, sd = teacher.draws_at(state, x_query)  # (B, K, S, 2, Q), sd before the floor
    if mean.shape[1] != 1:
        raise ValueError(f"prior {spec.name!r}: SBC of a smoothness mixture needs one class; fix the class")
    vals = np.concatenate([sd[:, 0], mean[:, 0]], 2)[:, ::thin]  # (B, L, 4, Q)
    vals = vals[:, :draws]
    return np.moveaxis(vals, 1, -1), {k: np.asarray(v) for k, v in teacher.diagnostics(state).items()}


def conjugate_draws(teacher, history, x_query: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    r"""Draws of :data:`QUANTITIES` from the conjugate teacher's working posterior for a batch of
    histories at once: values (B, 4, Q, draws).

    The same draws as :meth:`~bayesdesign.teachers.conjugate.ConjugateTeacher.posterior`
    (coefficients :math:`z \sim N(\bar z, P^{-1})` of the whitened mean and second-moment
    regressions, :math:`\sigma^2 = \max(r - (m - c)^2, \text{floor}\cdot v_0)`), with the
    regressions solved for every history in one vmapped call (``posterior`` solves one history per
    call). Single-class priors only.
    """
    import jax  # lazy: as above

    from ..teachers.conjugate import _centred, _regressions  # lazy: JAX, as above

    if getattr(teacher, "reweight", 0):
        raise ValueError("reweight: SBC draws the unweighted working posterior; run it with TeacherConfig(reweight=0)")
    state, _ = teacher.fold(history)
    args = _centred(teacher.prior, state, teacher.config.prior_obs)
    res, _ = jax.jit(jax.vmap(_regressions, in_axes=(None, None, *([0] * len(args)))))(
        teacher._arrays, teacher._both, *args
    )
    c = np.asarray(args[6], float)  # (B, 2)
    phi = teacher.features(np.asarray(x_query, float))  # (B, Q, F)
    b, q = phi.shape[:2]
    out = np.empty((b, 4, q, draws))
    pr = teacher.prior
    for a in (0, 1):
        fns = []
        for (zbar, chol, _), s, base in (
            (res[a][0], pr.s_mean[a, 0], pr.off_mean[a]),
            (res[a][1], pr.s_var[a, 0], pr.v0[a]),
        ):
            zbar, chol = np.asarray(zbar, float)[:, 0], np.asarray(chol, float)[:, 0]  # (B, F), (B, F, F)
            eps = rng.standard_normal((b, zbar.shape[-1], draws))
            z = zbar[..., None] + np.linalg.solve(np.swapaxes(chol, -1, -2), eps)  # (B, F, draws)
            fns.append(base + np.einsum("bqf,bfs->bqs", phi * s, z))
        mu, r = fns
        out[:, 2 + a] = mu
        out[:, a] = np.sqrt(np.maximum(r - (mu - c[:, a, None, None]) ** 2, teacher.config.floor * pr.v0[a]))
    return out


def run_sbc(
    prior,
    teacher: str = "nuts",
    sims: int = 200,
    units: int = 50,
    queries: int = 1,
    draws: int = 100,
    thin: int = 4,
    seed: int = 0,
    prob: float = 0.95,
    teacher_kwargs: dict | None = None,
    batch: int | None = None,
    progress: bool = False,
    workers: int = 1,
    ray_address: str | None = None,
) -> xr.Dataset:
    r"""SBC of ``teacher`` on ``prior``: ``sims`` simulations of ``units`` units each.

    ``draws``: posterior draws per simulation (ranks in ``0..draws``); ``thin``: NUTS keeps every
    ``thin``-th draw; ``batch``: simulations fitted per vectorized call (default all);
    ``teacher_kwargs``: passed to the teacher (``config=`` a
    :class:`~bayesdesign.teachers.base.TeacherConfig`; default ``burn_in=0``); ``workers`` /
    ``ray_address``: fit the batches as Ray tasks (:func:`bayesdesign.parallel.map_chunks`; each
    batch keeps its seed, so the result does not depend on the worker count). Returns the
    dataset described in the module notes.
    """

    spec = prior if hasattr(prior, "hash") else load_prior(prior)
    if spec.is_mixture:
        raise ValueError(
            f"prior {spec.name!r}: SBC needs a prior with one smoothness class (a mixture's class is "
            "mixed by the teacher, not sampled)"
        )
    if spec.family == "bernoulli":
        raise ValueError(f"prior {spec.name!r}: SBC here checks sigma_a and mu_a of Gaussian-family priors")
    started = time.time()
    sim = simulate_histories(spec, sims, units, queries, seed)
    batch = sims if batch is None else int(batch)
    chunks = []
    for lo in range(0, sims, batch):
        sl = slice(lo, lo + batch)
        h = type(sim["history"])(*(v[sl] for v in sim["history"]))
        chunks.append((teacher, spec, h, sim["x_query"][sl], draws, thin, seed + lo, teacher_kwargs))
    res = map_chunks(teacher_draws, chunks, workers=workers, address=ray_address,
                     sizes=[c[2].y.shape[0] for c in chunks], progress=progress, desc=f"SBC ({teacher})", unit="sim")
    vals, diags = [r[0] for r in res], [r[1] for r in res]
    values = np.concatenate(vals)
    ranks = sbc_ranks(values, sim["truth"], np.random.default_rng([seed, 7]))
    data = {
        "rank": (("sim", "quantity", "query"), ranks),
        "truth": (("sim", "quantity", "query"), sim["truth"]),
        "post_mean": (("sim", "quantity", "query"), values.mean(-1)),
        "post_sd": (("sim", "quantity", "query"), values.std(-1)),
        "x_query": (("sim", "query", "covariate"), sim["x_query"]),
    }
    for k in diags[0]:
        data[f"fit_{k}"] = (("sim",), np.concatenate([dg[k] for dg in diags]).astype(float))
    ds = xr.Dataset(data, coords={"quantity": list(QUANTITIES), "covariate": spec.covariate_names})
    ds.attrs.update(
        kind="sbc",
        teacher=teacher,
        prior_name=spec.name,
        prior_hash=spec.hash(),
        prior=json.dumps(spec.to_dict()),
        sims=sims,
        units=units,
        queries=queries,
        num_draws=draws,
        thin=thin if teacher == "nuts" else 1,
        seed=seed,
        prob=prob,
        teacher_kwargs=json.dumps({k: v for k, v in (teacher_kwargs or {}).items() if k != "config"}, default=str),
        teacher_config=json.dumps(_config_dict(teacher_kwargs), default=str),
        seconds=round(time.time() - started, 2),
    )
    return sbc_verdict(ds)


def _config_dict(teacher_kwargs: dict | None) -> dict:
    from ..teachers import TeacherConfig  # lazy: JAX, as above

    cfg = (teacher_kwargs or {}).get("config") or TeacherConfig(burn_in=0)
    return cfg.to_dict()


def sbc_verdict(ds: xr.Dataset, prob: float | None = None) -> xr.Dataset:
    """Add the per-quantity uniformity verdicts to an SBC dataset (ranks pooled over queries).

    Variables ``passed``, ``outside``, ``max_excess``, ``ks`` (quantity) and ``ecdf``, ``band_lower``,
    ``band_upper`` (quantity, z); attrs ``passed`` (all quantities, 0/1) and ``verdict`` (text).
    Each band has level ``1 - (1 - prob) / 4`` (Bonferroni over the four quantities).
    """
    prob = float(ds.attrs.get("prob", 0.95) if prob is None else prob)
    n_draws = int(ds.attrs["num_draws"])
    quantities = [str(q) for q in ds.quantity.values]
    res = {q: uniformity_check(ds["rank"].sel(quantity=q).values, n_draws, prob, len(quantities)) for q in quantities}
    z = res[quantities[0]]["z"]
    out = ds.drop_vars(
        [
            v
            for v in ("passed", "outside", "max_excess", "ks", "ecdf", "band_lower", "band_upper", "z")
            if v in ds.variables
        ]
    )
    out = out.assign(
        passed=("quantity", np.array([res[q]["passed"] for q in quantities])),
        outside=("quantity", np.array([res[q]["outside"] for q in quantities])),
        max_excess=("quantity", np.array([res[q]["max_excess"] for q in quantities])),
        ks=("quantity", np.array([res[q]["ks"] for q in quantities])),
        ecdf=(("quantity", "z"), np.stack([res[q]["ecdf"] for q in quantities])),
        band_lower=(("quantity", "z"), np.stack([res[q]["lower"] for q in quantities])),
        band_upper=(("quantity", "z"), np.stack([res[q]["upper"] for q in quantities])),
    ).assign_coords(z=z)
    ok = all(res[q]["passed"] for q in quantities)
    failed = [q for q in quantities if not res[q]["passed"]]
    out.attrs.update(
        passed=int(ok),
        band_level=res[quantities[0]]["level"],
        verdict=(
            "uniform: every quantity's rank ECDF inside its simultaneous band"
            if ok
            else f"not uniform: {', '.join(failed)} outside the simultaneous band"
        ),
    )
    return out


def summary_rows(ds: xr.Dataset) -> list[dict]:
    """One row per quantity: passed, share of points outside the band, largest excess, KS distance,
    mean posterior sd and mean |posterior mean - truth|."""
    rows = []
    for q in ds.quantity.values:
        sel = ds.sel(quantity=q)
        rows.append(
            {
                "quantity": str(q),
                "passed": bool(sel.passed),
                "outside": float(sel.outside),
                "max_excess": float(sel.max_excess),
                "ks": float(sel.ks),
                "post_sd": float(sel.post_sd.mean()),
                "abs_err": float(np.abs(sel.post_mean - sel.truth).mean()),
            }
        )
    return rows


def constant_sd_prior(spec, scale: float = 1e-9):
    r"""``spec`` with every ``log_sd`` series collapsed to its offset (prior scale ``scale``):
    :math:`\sigma_a(x) = e^{\text{offset}_a}` known and constant, the setting where the conjugate
    teacher's mean regression (with ``prior_obs`` large, so :math:`\hat v_a = v_{0,a} =
    \sigma_a^2`) is the exact posterior of :math:`\mu_a`."""
    spec = spec if hasattr(spec, "hash") else load_prior(spec)
    d = spec.to_dict()
    for arm in d.get("arms", {}).values():
        if arm.get("log_sd"):
            arm["log_sd"]["scale"] = scale
    d["name"] = f"{spec.name}-constant-sd"
    d["description"] = f"{spec.name} with a known constant sd (log_sd scale {scale:g})"
    return PriorSpec.from_dict(d, source=f"{spec.source} (constant sd)")


def known_variance_config(prior_obs: float = 1e12):
    """A :class:`~bayesdesign.teachers.base.TeacherConfig` whose plug-in noise variance is the
    prior's :math:`v_0` whatever the data (``prior_obs`` pseudo-observations), no burn-in."""
    from ..teachers import TeacherConfig  # lazy: JAX, as above

    return TeacherConfig(burn_in=0, prior_obs=prior_obs)
