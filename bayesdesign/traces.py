r"""Teacher traces: prior-simulated experiments run by a teacher, with its labels at query points.

For each task drawn from the prior, the teacher runs the experiment as the design (refitting every
``refit_every`` units); at every refit point :math:`s` (after :math:`n_s = s \cdot b` units) it
labels ``queries`` fresh covariates with its probability and its posterior of
:math:`\log\sigma_a`. These are the training data of the student.

Schema (an ``xarray.Dataset``; documented in ``docs/traces.md``):

===================  ==============================  =============================================
variable             dims                            meaning
===================  ==============================  =============================================
``x``                task, unit, covariate           covariates of the experiment's units
``a, y, pi``         task, unit                      arm, outcome, probability the teacher used
``n_obs``            step                            units in the history at each refit point
``x_query``          task, step, query, covariate    query covariates
``pi_query``         task, step, query               teacher probability (burn-in, clip applied)
``pi_raw``           task, step, query               unclipped posterior Neyman ratio
``log_sd_mean/sd``   task, step, arm, query          posterior mean / sd of :math:`\log\sigma_a`
``mean``             task, step, arm, query          posterior mean of :math:`\mu_a`
``true_log_sd``      task, step, arm, query          the task's true :math:`\log\sigma_a(x_q)`
``true_pi``          task, step, query               the task's oracle Neyman probability
``class_prob``       task, step, class               :math:`P(k \mid H)` (mixture priors)
``task_class``       task                            the class that generated the task
``fit_*``            task, step                      sampling teachers: diagnostics of the fit
                                                     behind the step's labels (``fit_rhat``,
                                                     ``fit_ess``, ``fit_ess_tail``,
                                                     ``fit_divergences``, ``fit_flagged``, ...)
===================  ==============================  =============================================

Attributes record the prior (JSON and hash), the teacher backend and configuration, the seed.
Generation is vectorized over the tasks of a chunk and written chunk by chunk; an interrupted
run resumes from the chunks already written, with the same seeds, so no task is lost or repeated.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import xarray as xr

from . import __version__
from .design.environment import evaluate
from .diagnostics.convergence import trace_variables
from .efficiency import neyman
from .io import load_dataset, save_dataset, write_text
from .models import sample_tasks
from .parallel import map_chunks
from .spec import load_prior
from .teachers import make_teacher

__all__ = ["generate_traces", "simulate_chunk", "trace_chunk"]


def _class_coords(spec) -> list:
    """The ``class`` coordinate: each class's beta (NaN without a mixture), or with
    ``smoothness.separate`` the label ``'beta_mean/beta_sd'``."""
    if spec.separate:
        return [f"{j:g}/{k:g}" for j, k in spec.classes]
    return [float(c) if c is not None else np.nan for c in spec.classes]


def simulate_chunk(
    teacher, spec, n_tasks: int, horizon: int, queries: int, refit_every: int, seed, design=None
) -> xr.Dataset:
    """Run ``teacher`` on ``n_tasks`` prior draws in lockstep and label queries at each refit.

    With ``design`` (a :class:`~bayesdesign.design.policy.SequentialPolicy`, e.g. a student) the
    design assigns the units instead (each block of ``refit_every`` units with its state at the
    block's start, as a batched design) and the teacher only labels the queries: the histories a
    student creates itself, labelled by its teacher (DAgger)."""
    if horizon % refit_every:
        raise ValueError(f"refit_every: expected a divisor of the horizon {horizon}, got {refit_every}")
    s_task, s_x, s_y, s_u, s_q = np.random.SeedSequence(seed).spawn(5)
    env, classes = sample_tasks(spec, np.random.default_rng(s_task), n_tasks)
    d = spec.d
    x = env.sample_covariates(np.random.default_rng(s_x), n_tasks * horizon).reshape(n_tasks, horizon, d)
    rng_y = np.random.default_rng(s_y)
    y1 = evaluate(env, "sample_outcomes", x, 1, rng_y)
    y0 = evaluate(env, "sample_outcomes", x, 0, rng_y)
    u = np.random.default_rng(s_u).uniform(size=(n_tasks, horizon))
    steps = horizon // refit_every
    xq = env.sample_covariates(np.random.default_rng(s_q), n_tasks * steps * queries).reshape(
        n_tasks, steps, queries, d
    )
    out = {k: [] for k in ("pi_query", "pi_raw", "log_sd_mean", "log_sd_sd", "mean", "class_prob")}
    pi = np.empty((n_tasks, horizon))
    fit_diag = []  # per step: the sampler diagnostics of the fit behind the step's labels
    state = teacher.init(n_tasks)
    dstate = design.init(n_tasks) if design is not None else None
    for s in range(steps):
        lo, hi = s * refit_every, (s + 1) * refit_every
        xs = np.concatenate([x[:, lo:hi], xq[:, s]], axis=1)
        res = teacher.decide(state, xs) if state.t >= teacher.config.burn_in else None
        raw = res["pi"] if res is not None else np.full(xs.shape[:-1], 0.5)
        clipped = teacher.clip.clip(raw, state.t + 1) if res is not None else raw
        pi[:, lo:hi] = clipped[:, :refit_every] if design is None else design.propensity_at(dstate, x[:, lo:hi])
        if res is None:  # burn-in: still record the posterior the teacher would have
            res = teacher.decide(state, xs)
        out["pi_query"].append(clipped[:, refit_every:])
        out["pi_raw"].append(res["pi"][:, refit_every:])
        for k in ("log_sd_mean", "log_sd_sd", "mean"):
            out[k].append(res[k][..., refit_every:])
        out["class_prob"].append(res.get("class_prob", np.ones((n_tasks, 1))))
        fit_diag.append(teacher.diagnostics(state) if hasattr(teacher, "diagnostics") else {})
        if s == steps - 1:
            break  # a refit on the whole history would label nothing
        a = (u[:, lo:hi] < pi[:, lo:hi]).astype(np.int8)
        y = np.where(a == 1, y1[:, lo:hi], y0[:, lo:hi])
        state = teacher.update(state, x[:, lo:hi], a, y, pi[:, lo:hi])
        if design is not None:
            dstate = design.update(dstate, x[:, lo:hi], a, y, pi[:, lo:hi])
    a = (u < pi).astype(np.int8)
    flat = xq.reshape(n_tasks, steps * queries, d)
    true_ls = np.stack([np.log(evaluate(env, "sd", flat, arm)) for arm in (0, 1)], 1).reshape(
        n_tasks, 2, steps, queries
    )
    true_pi = neyman(np.exp(true_ls[:, 1]), np.exp(true_ls[:, 0]))
    f32 = np.float32
    data = {
        "x": (("task", "unit", "covariate"), x.astype(f32)),
        "a": (("task", "unit"), a),
        "y": (("task", "unit"), np.where(a == 1, y1, y0).astype(f32)),
        "pi": (("task", "unit"), pi.astype(f32)),
        "n_obs": (("step",), np.arange(steps) * refit_every),
        "x_query": (("task", "step", "query", "covariate"), xq.astype(f32)),
        "pi_query": (("task", "step", "query"), np.stack(out["pi_query"], 1).astype(f32)),
        "pi_raw": (("task", "step", "query"), np.stack(out["pi_raw"], 1).astype(f32)),
        "true_pi": (("task", "step", "query"), true_pi.transpose(0, 1, 2).astype(f32)),
        "class_prob": (("task", "step", "class"), np.stack(out["class_prob"], 1).astype(f32)),
        "task_class": (("task",), classes.astype(np.int16)),
    }
    for k in ("log_sd_mean", "log_sd_sd", "mean"):
        data[k] = (("task", "step", "arm", "query"), np.stack(out[k], 1).astype(f32))
    data["true_log_sd"] = (("task", "step", "arm", "query"), true_ls.transpose(0, 2, 1, 3).astype(f32))
    if any(fit_diag):  # NUTS/SVI: fit_rhat, fit_ess, fit_ess_tail, fit_divergences, ..., fit_flagged
        data.update(trace_variables(fit_diag, n_tasks))
    return xr.Dataset(data, coords={"arm": [0, 1], "covariate": spec.covariate_names})


def _jsonable(obj) -> dict:
    return json.loads(json.dumps(obj, default=str))


def _manifest(spec, teacher, backend, kwargs, tasks, horizon, queries, refit_every, chunk, seed, design) -> dict:
    return {
        "design": design,
        "prior_hash": spec.hash(),
        "prior": spec.to_dict(),
        "teacher": backend,
        "teacher_config": _jsonable(teacher.config.to_dict()),
        "teacher_kwargs": _jsonable(kwargs),
        "tasks": tasks,
        "horizon": horizon,
        "queries": queries,
        "refit_every": refit_every,
        "chunk_tasks": chunk,
        "seed": seed,
    }


_TEACHERS: dict = {}


def _chunk_teacher(spec, backend: str, config, kwargs: dict):
    """The teacher of a run, built once per process (each Ray worker builds its own)."""

    key = json.dumps([spec.hash(), backend, None if config is None else config.to_dict(), kwargs],
                     sort_keys=True, default=str)
    if key not in _TEACHERS:
        _TEACHERS.clear()  # one run's teacher at a time: compiled programs are cached by the teachers' modules
        try:
            _TEACHERS[key] = make_teacher(backend, spec, config, **kwargs)
        except TypeError as err:  # an unknown setting of this backend
            raise ValueError(
                f"teacher_kwargs: {sorted(kwargs)} are not all settings of teacher {backend!r} ({err})"
            ) from err
    return _TEACHERS[key]


def trace_chunk(spec, backend: str, config, kwargs: dict, size: int, horizon: int, queries: int, refit_every: int,
                seed, first_task: int, path: str, design=None) -> str:
    """Generate one chunk of ``size`` tasks with seed ``seed`` and write it atomically to ``path``
    (tasks numbered from ``first_task``): the unit of work of :func:`generate_traces`, run in this
    process or in a Ray worker (:func:`bayesdesign.parallel.map_chunks`)."""
    teacher = _chunk_teacher(spec, backend, config, kwargs)
    ds = simulate_chunk(teacher, spec, size, horizon, queries, refit_every, seed=seed, design=design)
    ds = ds.assign_coords(task=np.arange(first_task, first_task + size))
    save_dataset(ds, path)
    return str(path)


def generate_traces(
    prior,
    backend: str,
    tasks: int,
    horizon: int,
    queries: int,
    out,
    refit_every: int = 50,
    chunk_tasks: int = 256,
    seed: int = 0,
    progress: bool = False,
    teacher_kwargs: dict | None = None,
    teacher_config=None,
    design=None,
    workers: int = 1,
    ray_address: str | None = None,
) -> Path:
    """Generate traces into ``out`` (netCDF), resumably, on this process or on Ray.

    ``teacher_config`` (a :class:`~bayesdesign.teachers.base.TeacherConfig`) overrides the
    defaults; ``design`` (a policy) assigns the units instead of the teacher, which then only
    labels (see :func:`simulate_chunk`); its ``name`` is recorded.

    Chunks of ``chunk_tasks`` tasks go to ``OUT.parts/`` as they finish (each written atomically,
    with seed ``(seed, chunk index)``); a manifest there must match the arguments of a resumed
    run. When every chunk is present they are concatenated into ``out`` and the parts removed.
    ``workers > 1`` runs the chunks as Ray tasks on a local Ray instance started for the run,
    ``ray_address`` on an existing cluster (:func:`bayesdesign.parallel.map_chunks`); the traces
    are the same whatever the worker count.
    """
    if tasks < 1 or horizon < 1 or queries < 1:
        raise ValueError(f"tasks, horizon, queries: expected positive integers, got {tasks}, {horizon}, {queries}")
    if horizon % refit_every:
        raise ValueError(f"refit_every: expected a divisor of the horizon {horizon}, got {refit_every}")
    if design is not None and (workers != 1 or ray_address is not None):
        raise ValueError("workers: a design (DAgger rollouts) runs in this process only; use workers=1")
    spec = prior if hasattr(prior, "hash") else load_prior(prior)
    kwargs = dict(teacher_kwargs or {})
    if backend in ("nuts", "svi"):  # sampling teachers refit at the trace's refit points
        kwargs.setdefault("refit_every", refit_every)
    teacher = _chunk_teacher(spec, backend, teacher_config, kwargs)  # validates the arguments here
    out = Path(out)
    parts = out.with_name(out.name + ".parts")
    design_name = None if design is None else str(getattr(design, "name", type(design).__name__))
    manifest = _manifest(spec, teacher, backend, kwargs, tasks, horizon, queries, refit_every, chunk_tasks, seed,
                         design_name)
    mpath = parts / "manifest.json"
    if mpath.exists():
        old = json.loads(mpath.read_text())
        if old != manifest:
            diff = sorted(k for k in manifest if old.get(k) != manifest[k])
            raise ValueError(
                f"{parts}: an interrupted run with other arguments is here (differs in {diff}); "
                "remove the folder or rerun with the same arguments"
            )
    else:
        parts.mkdir(parents=True, exist_ok=True)
        write_text(mpath, json.dumps(manifest, indent=1))
    n_chunks = -(-tasks // chunk_tasks)
    todo, sizes, done = [], [], 0
    for i in range(n_chunks):
        path = parts / f"chunk-{i:05d}.nc"
        size = min(chunk_tasks, tasks - i * chunk_tasks)
        if path.exists():
            done += size
            continue
        todo.append((spec, backend, teacher_config, kwargs, size, horizon, queries, refit_every, [seed, i],
                     i * chunk_tasks, str(path), design))
        sizes.append(size)
    map_chunks(trace_chunk, todo, workers=workers, address=ray_address, sizes=sizes, progress=progress,
               desc=f"traces ({backend})", unit="task", initial=done, total=tasks)
    full = xr.concat(
        [load_dataset(parts / f"chunk-{i:05d}.nc") for i in range(n_chunks)],
        dim="task",
        data_vars="minimal",
        coords="minimal",
        compat="override",
    )
    full = full.assign_coords({"class": _class_coords(spec)})
    full.attrs.update(
        prior=json.dumps(spec.to_dict()),
        prior_hash=spec.hash(),
        prior_name=spec.name,
        teacher=backend,
        teacher_config=json.dumps(manifest["teacher_config"]),
        teacher_kwargs=json.dumps(manifest["teacher_kwargs"]),
        seed=seed,
        horizon=horizon,
        refit_every=refit_every,
        queries=queries,
        bayesdesign_version=__version__,
        **({"design": design_name} if design_name else {}),
    )
    save_dataset(full, out)
    shutil.rmtree(parts)
    return out
