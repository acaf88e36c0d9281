"""Distillation: train a student on teacher traces (AdamW, warm-up + cosine, held-out tasks).

:func:`distil` is the whole procedure behind ``bayesdesign distil``. It is deterministic for a
seed on a given device and thread count (the weights' initialisation uses ``seed`` in a forked RNG,
batches come from a ``torch.Generator`` seeded with ``seed``, there is no dropout), checkpoints
every ``checkpoint_every`` steps, and a rerun with the same arguments resumes from the last
checkpoint (optimizer moments and sampler state included) to the same weights an uninterrupted
run gives. ``max_seconds`` stops early (a wall-clock budget: the result then depends on speed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..design.policy import ClipSchedule
from ..io import atomic_path, write_text
from ..spec import PriorSpec, load_prior
from ..teachers.base import TeacherConfig
from ..teachers.conjugate import prior_from_spec
from ..traces import generate_traces
from .checkpoint import save_student
from .conjugate import layer_prior
from .data import StepBatchSampler, TraceArrays, TraceDataset, load_traces, split_tasks
from .data import swap_arms as swap_batch_arms
from .losses import DEFAULT_WEIGHTS, distil_losses
from .model import StudentConfig, StudentModel
from .policy import load_policy
from .scaling import InputScaling

__all__ = ["distil", "DistilResult", "evaluate"]

STATE_TENSORS, STATE_JSON = "train_state.safetensors", "train_state.json"
# arguments that may change between a run and its resumption without changing the result
_RESUME_FREE = {"progress", "device", "checkpoint_every", "max_seconds", "resume"}


@dataclass
class DistilResult:
    """Where the student went, its final metrics and the validation history (one dict per check)."""

    path: Path
    metrics: dict
    history: list[dict] = field(default_factory=list)


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 5% at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))


def _to(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _forward(model: StudentModel, batch: dict) -> dict[str, torch.Tensor]:
    return model(batch["u"], batch["a"], batch["y"], batch["uq"], batch["mask"])


def in_context_targets(batch: dict) -> dict:
    r"""The log-sd labels of ``batch`` in the units of a student that standardizes outcomes in
    context (``StudentConfig.standardize``): its :math:`\log\sigma_a(x)` heads describe
    :math:`(y - c_n)/s_n`, with :math:`c_n, s_n` the pooled mean and sd of the history's ``n``
    outcomes (:func:`~bayesdesign.student.conjugate.standardize_sums`; :math:`s_n = 1` before two
    distinct outcomes), so the labels :math:`\log\sigma` (truth and teacher posterior mean, in
    outcome units) become :math:`\log\sigma - \log s_n`. The probability is a ratio of sds and
    needs no change."""
    y = batch["y"].double()
    m = torch.ones_like(y) if batch["mask"] is None else batch["mask"].double()
    n = m.sum(1)
    c = (m * y).sum(1) / n.clamp(min=1.0)
    var = (m * y * y).sum(1) / n.clamp(min=1.0) - c**2
    ok = (n > 1) & (var > 1e-12 * (c**2).clamp(min=1e-300))
    log_s = torch.where(ok, 0.5 * torch.log(torch.where(ok, var, torch.ones_like(var))), torch.zeros_like(var))
    shift = log_s.to(batch["log_sd_mean"].dtype)[:, None, None]
    out = dict(batch, log_sd_mean=batch["log_sd_mean"] - shift)
    if "true_log_sd" in batch:
        out["true_log_sd"] = batch["true_log_sd"] - shift
    return out


def _labels(model: StudentModel, batch: dict) -> dict:
    """The batch's labels in the student's own units (:func:`in_context_targets` when it standardizes)."""
    return in_context_targets(batch) if model.cfg.standardize else batch


@torch.no_grad()
def evaluate(
    model: StudentModel, dataset: TraceDataset, batches: list[list[int]], teacher_config: dict, device="cpu",
    weights: dict | None = None,
) -> dict[str, float]:
    """Mean losses and imitation metrics over ``batches`` of ``dataset``.

    ``pi_mae_raw``: mean |pi_student - pi_raw| (unclipped); ``pi_mae``: mean |pi_student' -
    pi_query| with the teacher's burn-in and clip applied to the student (the probability a design
    would use); ``gate_tv``: mean total variation between gate and ``class_prob``, and
    ``gate_tv_200`` the same over histories of at least 200 units.
    """
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    clip = ClipSchedule(**teacher_config["clip"]) if "clip" in teacher_config else ClipSchedule()
    burn_in = int(teacher_config.get("burn_in", 0))
    model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}

    def add(k, v, n):
        sums[k] = sums.get(k, 0.0) + float(v) * n
        counts[k] = counts.get(k, 0.0) + n

    for idx in batches:
        batch = _to(dataset.batch(idx), device)
        out = _forward(model, batch)
        terms = distil_losses(out, _labels(model, batch))
        nb = len(idx)
        for k, v in terms.items():
            add(k, v, nb)
        add("loss", sum(w[k] * terms[k] for k in terms if w[k]), nb)
        p = out["pi"].double().cpu().numpy()
        n = batch["n"].cpu().numpy()[:, None]
        add("pi_mae_raw", np.abs(p - batch["pi_raw"].cpu().numpy()).mean(), nb)
        used = np.where(n < burn_in, 0.5, clip.clip(p, n + 1))
        add("pi_mae", np.abs(used - batch["pi_query"].cpu().numpy()).mean(), nb)
        tv = 0.5 * (out["class_prob"] - batch["class_prob"]).abs().sum(-1).cpu().numpy()
        add("gate_tv", tv.mean(), nb)
        big = n[:, 0] >= 200
        if big.any():
            add("gate_tv_200", tv[big].mean(), int(big.sum()))
    model.train()
    return {k: sums[k] / counts[k] for k in sums}


def _validation_batches(ds: TraceDataset, batch_size: int, max_examples: int, seed: int) -> list[list[int]]:
    """A fixed subset of validation examples, grouped by (file, step) into batches."""
    rng = np.random.default_rng(seed)
    idx = np.arange(len(ds))
    if len(idx) > max_examples:
        idx = np.sort(rng.choice(idx, size=max_examples, replace=False))
    key = ds.index[idx, 0] * 100_000 + ds.index[idx, 2]
    out = []
    for k in np.unique(key):
        members = idx[key == k]
        out += [members[i : i + batch_size].tolist() for i in range(0, len(members), batch_size)]
    return out


def _check_compatible(files: list[TraceArrays], paths: list[Path]) -> None:
    ref = files[0].attrs
    for f, p in zip(files[1:], paths[1:], strict=True):
        for key in ("prior_hash", "teacher_config"):
            if f.attrs.get(key) != ref.get(key):
                raise ValueError(
                    f"traces: {p} has a different {key} from {paths[0]}; a student imitates one teacher of one prior"
                )
        if f.n_classes != files[0].n_classes or f.u.shape[-1] != files[0].u.shape[-1]:
            raise ValueError(f"traces: {p} has other class or covariate dimensions than {paths[0]}")


def _check_working_prior(working, first: TraceArrays, scaling: InputScaling) -> None:
    """Refuse a working prior that does not fit the traces (their covariates, classes and units)."""
    where = f"working_prior {working.source}"
    if working.arms is None:
        raise ValueError(f"{where}: expected a series prior (the conjugate layer's working model), got a user model")
    if working.d != first.u.shape[-1]:
        raise ValueError(f"{where}: dimension mismatch: it has {working.d} covariate(s), the traces "
                         f"{first.u.shape[-1]}")
    k = len(prior_from_spec(working).log_w)
    if k != first.n_classes:
        raise ValueError(f"{where}: it has {k} smoothness class(es), the traces' teacher {first.n_classes}; "
                         "a working model needs the teacher's classes (one for a user model)")
    if not working.outcome.standardize:
        raise ValueError(f"{where}: expected a unit-free prior (outcome.standardize: true, e.g. unit-free-2): the "
                         "student then standardizes outcomes in context, whatever the traces' units")
    if scaling.y_offset != (0.0, 0.0) or scaling.y_scale != (1.0, 1.0):
        raise ValueError(f"{where}: the traces' prior states outcome offsets; a unit-free working "
                         "prior needs the outcomes unscaled (a unit-free or user-model prior)")


def _save_train_state(out: Path, opt: torch.optim.Optimizer, gen: torch.Generator, info: dict) -> None:
    sd = opt.state_dict()
    tensors = {"generator": gen.get_state()}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            tensors[f"opt.{pid}.{name}"] = torch.as_tensor(v).detach().cpu().contiguous()
    with atomic_path(out / STATE_TENSORS) as tmp:
        save_file(tensors, str(tmp))
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    write_text(out / STATE_JSON, json.dumps({**info, "param_groups": groups}, indent=1))


def _load_train_state(out: Path, opt: torch.optim.Optimizer, gen: torch.Generator) -> dict:
    info = json.loads((out / STATE_JSON).read_text())
    tensors = load_file(str(out / STATE_TENSORS))
    gen.set_state(tensors.pop("generator"))
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in info.pop("param_groups")]
    opt.load_state_dict({"state": state, "param_groups": groups})
    return info


def distil(
    traces: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    steps: int = 2000,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    warmup: int = 100,
    seed: int = 0,
    val_fraction: float = 0.1,
    val_every: int = 250,
    val_examples: int = 2048,
    checkpoint_every: int = 500,
    resume: bool = True,
    device: str | None = None,
    progress: bool = True,
    architecture: dict | None = None,
    loss_weights: dict | None = None,
    max_seconds: float | None = None,
    dagger_rounds: int = 0,
    dagger_tasks: int = 256,
    working_prior=None,
    swap_arms: bool = False,
) -> DistilResult:
    """Train a student on teacher traces and save it to ``out_dir`` (see
    :mod:`bayesdesign.student.checkpoint` for the format).

    Parameters
    ----------
    traces : one or more traces files (``bayesdesign traces``) of the same prior and teacher.
    out_dir : checkpoint folder; holds ``model.safetensors``, ``config.json`` and the training state.
    steps, batch_size : optimizer steps and examples (task, step pairs) per step; each example
        carries all its queries.
    lr, weight_decay, warmup : AdamW; learning rate warmed up linearly over ``warmup`` steps, then
        cosine-decayed to 5% of ``lr`` at ``steps``.
    seed : initialisation, task split and batch order.
    val_fraction : fraction of each file's tasks held out for validation (never trained on).
    val_every, val_examples : validate every ``val_every`` steps (and at the end) on a fixed subset
        of at most ``val_examples`` held-out examples.
    checkpoint_every : save weights and training state every so many steps (and at the end).
    resume : continue from the training state in ``out_dir`` when there is one (its arguments must
        match, apart from ``progress``, ``device``, ``checkpoint_every``, ``max_seconds``); with
        ``False`` an existing state is overwritten.
    device : ``'cpu'``, ``'cuda'``...; default CUDA when available, else CPU.
    architecture : overrides of :class:`~bayesdesign.student.model.StudentConfig` fields
        (``d`` and ``n_classes`` come from the traces).
    loss_weights : overrides of :data:`~bayesdesign.student.losses.DEFAULT_WEIGHTS`
        (``pi``, ``log_sd``, ``gate_soft``, ``gate_hard``).
    max_seconds : stop (and save) after this much wall-clock time.
    dagger_rounds, dagger_tasks : DAgger. At ``dagger_rounds`` evenly spaced points of the run
        the current student is rolled out as the design on ``dagger_tasks`` fresh prior tasks
        (horizon, queries and refit points of the first traces file), the teacher of the traces
        labels the histories the student created (:func:`~bayesdesign.traces.generate_traces`
        with ``design=``), and the new traces (``out_dir/dagger-R.nc``, kept, so a resumed run
        reuses them) join the training set; validation stays on the held-out teacher histories.

    working_prior : a series prior (path, shipped name or spec) whose conjugate teacher is the
        student's **working model**: its conjugate layer (:mod:`bayesdesign.student.conjugate`)
        solves that prior's regressions and the network learns corrections to them. Default: the
        traces' own prior for a Gaussian, Student-t or Bernoulli series prior; none for a user model
        or a ``hurdle_lognormal`` prior (the plain network, outcomes unscaled). Give one to distil a
        teacher of those with a closed-form start, e.g. a one-class unit-free series prior such as
        ``bayesdesign/examples_models/revenue-working.yaml`` for two covariates. It must have the
        traces' number of covariates and smoothness classes; with ``outcome.standardize``
        (unit-free) the student standardizes outcomes in context, and its log-sd heads learn
        :func:`in_context_targets`.

    swap_arms : train on each batch with the arms exchanged half of the time
        (:func:`~bayesdesign.student.data.swap_arms`): for a prior that treats the arms alike, which
        is checked for a series prior (arm 0's series equal arm 1's) and the user's claim for a
        user model.

    Returns
    -------
    DistilResult with the folder, final validation metrics and the validation history.
    """
    paths = [Path(traces)] if isinstance(traces, str | Path) else [Path(p) for p in traces]
    if not paths:
        raise ValueError("traces: expected at least one traces file")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps, batch_size: expected positive integers, got {steps}, {batch_size}")
    if dagger_rounds < 0 or dagger_tasks < 1:
        raise ValueError(f"dagger_rounds, dagger_tasks: expected >= 0 and >= 1, got {dagger_rounds}, {dagger_tasks}")
    out = Path(out_dir)
    working = working_prior if working_prior is None or hasattr(working_prior, "hash") else load_prior(working_prior)
    args = {
        "traces": [str(p) for p in paths], "steps": steps, "batch_size": batch_size, "lr": lr,
        "weight_decay": weight_decay, "warmup": warmup, "seed": seed, "val_fraction": val_fraction,
        "val_every": val_every, "val_examples": val_examples, "architecture": dict(architecture or {}),
        "loss_weights": dict(loss_weights or {}),
        **({"working_prior": working.hash()} if working is not None else {}),
        **({"swap_arms": True} if swap_arms else {}),
        **({"dagger_rounds": dagger_rounds, "dagger_tasks": dagger_tasks} if dagger_rounds else {}),
    }
    weights = {**DEFAULT_WEIGHTS, **(loss_weights or {})}
    unknown = set(weights) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise ValueError(f"loss_weights: unknown terms {sorted(unknown)}; expected {sorted(DEFAULT_WEIGHTS)}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    first, scaling = load_traces(paths[0])
    files = [first] + [load_traces(p, scaling)[0] for p in paths[1:]]
    _check_compatible(files, paths)
    lacking = [str(p) for p, f in zip(paths, files, strict=True) if f.true_log_sd is None]
    if lacking and weights["log_sd_true"] > 0:
        raise ValueError(
            f"{lacking[0]}: no true_log_sd (traces from an older version?); the loss term log_sd_true needs it. "
            "Regenerate the traces, or pass loss_weights={'log_sd_true': 0, 'log_sd': 1} to imitate the "
            "teacher's log-sd posterior instead"
        )
    splits = [split_tasks(f.n_tasks, val_fraction, seed) for f in files]
    train_ds = TraceDataset(files, [s[0] for s in splits])
    val_ds = TraceDataset(files, [s[1] for s in splits])
    val_batches = _validation_batches(val_ds, batch_size, val_examples, seed) if len(val_ds) else []
    teacher_config = json.loads(first.attrs.get("teacher_config", "{}"))
    if float(teacher_config.get("reweight", 0.0)):
        raise ValueError(
            f"{paths[0]}: the traces' teacher has reweight={teacher_config['reweight']} (the reweighted "
            "second-moment regression), which the torch student does not implement, so it cannot be trained "
            "on them; generate traces with reweight=0"
        )

    spec = PriorSpec.from_dict(json.loads(first.attrs["prior"]), source=str(paths[0]))
    if working is not None:
        _check_working_prior(working, first, scaling)
    swap = bool(swap_arms)
    if swap and spec.arms is not None and spec.arm(0) != spec.arm(1):
        raise ValueError(f"swap_arms: the prior {spec.name!r} ({paths[0]}) gives the arms different series; "
                         "exchanging them is not a draw of the same prior")
    layer_spec = working if working is not None else (spec if spec.has_mean_series else None)
    n_terms = prior_from_spec(layer_spec).n_terms if layer_spec is not None else 0
    standardize = layer_spec is not None and bool(layer_spec.outcome.standardize)
    cfg = StudentConfig(
        **{"d": first.u.shape[-1], "n_classes": first.n_classes, "n_terms": n_terms,
           "standardize": standardize, **(architecture or {})}
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StudentModel(cfg)
    if model.conj is not None:
        if cfg.n_terms != n_terms:
            raise ValueError(
                f"architecture n_terms: expected 0 or the working prior's {n_terms} series terms, got {cfg.n_terms}"
            )
        model.conj.set_prior(layer_prior(layer_spec), teacher_config)
    if cfg.standardize and not scaling.in_context:
        scaling = dataclasses.replace(scaling, in_context=True)
    model.to(dev).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "expert_w" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "expert_w" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        foreach=True,
    )
    gen = torch.Generator().manual_seed(seed)
    sampler = StepBatchSampler(train_ds, batch_size, gen)
    rounds = {steps * r // (dagger_rounds + 1): r for r in range(1, dagger_rounds + 1)}
    train_files, train_tasks = list(files), [s[0] for s in splits]

    def aggregate(r: int) -> tuple[TraceDataset, StepBatchSampler]:
        """Add the DAgger traces of round ``r`` (generated now unless a previous run left them)."""
        path = out / f"dagger-{r}.nc"
        if not path.is_file():
            checkpoint(done_steps[0], metrics)
            _dagger_traces(out, path, first, spec, teacher_config, dagger_tasks, seed + 7919 * r, progress)
        extra = load_traces(path, scaling)[0]
        _check_compatible([first, extra], [paths[0], path])
        train_files.append(extra)
        train_tasks.append(np.arange(extra.n_tasks))
        ds = TraceDataset(train_files, train_tasks)
        return ds, StepBatchSampler(ds, batch_size, gen)

    start, history, earlier_seconds = 0, [], 0.0
    if resume and (out / STATE_JSON).is_file():
        info = json.loads((out / STATE_JSON).read_text())
        old = {k: v for k, v in info.get("args", {}).items() if k not in _RESUME_FREE}
        if old != args:
            diff = sorted(k for k in set(args) | set(old) if old.get(k) != args.get(k))
            raise ValueError(
                f"{out}: a training run with other arguments is here (differs in {diff}); "
                "use another folder, the same arguments, or resume=False to start over"
            )
        model.load_state_dict(load_file(str(out / "model.safetensors")))
        info = _load_train_state(out, opt, gen)
        start, history = int(info["step"]), list(info.get("history", []))
        earlier_seconds = float(info.get("seconds", 0.0))

    meta = {
        "prior": json.loads(first.attrs["prior"]),
        "prior_hash": first.attrs.get("prior_hash"),
        "scaling": scaling.to_dict(),
        "teacher": first.attrs.get("teacher"),
        "teacher_config": teacher_config,
        "traces": [
            {"path": str(p), "tasks": f.n_tasks, "horizon": int(f.u.shape[1]), "seed": f.attrs.get("seed")}
            for p, f in zip(paths, files, strict=True)
        ],
        "training": args,
        **({"working_prior": working.to_dict(), "working_prior_hash": working.hash()} if working is not None else {}),
    }

    def checkpoint(step: int, metrics: dict) -> None:
        seconds = round(earlier_seconds + time.time() - started, 1)  # wall-clock training time, all runs
        save_student(out, model, {**meta, "metrics": {"step": step, **metrics}, "history": history,
                                  "train_seconds": seconds})
        _save_train_state(out, opt, gen, {"step": step, "args": args, "history": history, "seconds": seconds})

    done_steps = [start]
    started = time.time()
    if start == 0 and val_batches:  # the untrained model, the reference for the validation curve
        history = [{"step": 0, "train_loss": None, **{f"val_{k}": v for k, v in evaluate(
            model, val_ds, val_batches, teacher_config, dev, weights).items()}}]
    metrics: dict = history[-1] if history else {}
    for b, r in sorted(rounds.items()):
        if b <= start:  # resumed at or past this round
            train_ds, sampler = aggregate(r)
    running = None
    bar = tqdm(total=steps, initial=start, desc="distil", unit="step", disable=not progress)
    for step in range(start, steps):
        done_steps[0] = step
        if step in rounds and step > start:
            train_ds, sampler = aggregate(rounds[step])
        for g in opt.param_groups:
            g["lr"] = lr * _lr_factor(step, steps, warmup)
        batch = train_ds.batch(sampler.next())
        if swap and bool(torch.rand((), generator=gen) < 0.5):
            batch = swap_batch_arms(batch)
        batch = _to(batch, dev)
        terms = distil_losses(_forward(model, batch), _labels(model, batch))
        loss = sum(weights[k] * terms[k] for k in terms if weights[k])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lv = float(loss.detach())
        running = lv if running is None else 0.95 * running + 0.05 * lv
        bar.update(1)
        done = step + 1
        last = done == steps or (max_seconds is not None and time.time() - started > max_seconds)
        if val_batches and (done % val_every == 0 or last):
            metrics = {"step": done, "train_loss": running,
                       **{f"val_{k}": v for k, v in evaluate(model, val_ds, val_batches, teacher_config, dev,
                                                             weights).items()}}
            history.append(metrics)
            bar.set_postfix(loss=f"{running:.4f}", val=f"{metrics['val_loss']:.4f}",
                            mae=f"{metrics['val_pi_mae_raw']:.4f}")
        elif done % 10 == 0:
            bar.set_postfix(loss=f"{running:.4f}")
        if done % checkpoint_every == 0 or last:
            checkpoint(done, metrics)
        if last:
            break
    bar.close()
    return DistilResult(out, metrics, history)


def _dagger_traces(out: Path, path: Path, first: TraceArrays, spec, teacher_config: dict, tasks: int, seed: int,
                   progress: bool) -> Path:
    """Roll out the student saved in ``out`` as the design; the traces' teacher labels (DAgger)."""
    return generate_traces(
        spec,
        first.attrs["teacher"],
        tasks=tasks,
        horizon=int(first.attrs.get("horizon", first.u.shape[1])),
        queries=int(first.attrs.get("queries", first.uq.shape[2])),
        refit_every=int(first.attrs.get("refit_every", first.n_obs[1] if first.n_steps > 1 else first.u.shape[1])),
        out=path,
        seed=seed,
        progress=progress,
        teacher_config=TeacherConfig.from_dict(teacher_config),
        design=load_policy(out),
    )
