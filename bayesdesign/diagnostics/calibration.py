r"""Calibration of a student (and, for reference, of its teacher) on held-out traces.

Three checks, on a traces file the student was not trained on (``bayesdesign traces`` with
another seed), each task drawn from the prior:

- **PIT of the log-sd posterior.** The student outputs an amortized Gaussian posterior
  :math:`\log\sigma_a(x_q) \mid H \approx N(m, s^2)` (``log_sd_mean``, ``log_sd_sd``). If it is
  calibrated, the probability integral transform of the truth,
  :math:`\text{PIT} = \Phi((\log\sigma_a(x_q) - m) / s)`, is uniform on (0, 1) over prior
  draws. The teacher's own ``log_sd_mean``/``log_sd_sd`` in the traces get the same check, as a
  reference: the student cannot be better calibrated than what it imitates (and both describe
  the *floored* :math:`\sigma`, so truths below the variance floor give PIT near 0). PIT values
  of one task are dependent (same function, nested histories), and the simultaneous ECDF band
  assumes independent values, so the verdict uses **one value per task** (a seeded random step
  with at least one unit, arm and query).
- **Gate reliability.** For a smoothness mixture, the gate's :math:`P(k \mid H)` is a forecast of
  the class that generated the task (``task_class``). Predictions are binned (all classes pooled,
  ``bins`` equal-width bins); in a calibrated forecaster the observed frequency of the class
  in each bin equals the mean predicted probability. The **expected calibration error**
  :math:`\text{ECE} = \sum_b \frac{n_b}{N} |\bar y_b - \bar p_b|` summarizes the gap.
- **Imitation error by history length**: mean :math:`|\pi_{\text{student}} - \pi_{\text{teacher}}|`
  per refit step (``n_obs``), with the teacher's burn-in and clip applied to the student as a
  design would (``imitation_error``) and unclipped (``imitation_error_raw``).

:func:`student_calibration` returns an ``xarray.Dataset`` with ``attrs["kind"] =
"student-calibration"``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr
from scipy.stats import norm

from ..design.policy import ClipSchedule
from ..io import load_dataset
from .ecdf import eval_points, uniformity_check

if TYPE_CHECKING:
    from ..student.checkpoint import Student
    from ..student.data import TraceArrays

__all__ = ["pit_gaussian", "expected_calibration_error", "student_outputs", "student_calibration"]


def pit_gaussian(truth, mean, sd) -> np.ndarray:
    r""":math:`\Phi((\text{truth} - \text{mean}) / \text{sd})` (arrays broadcast; ``sd`` > 0, a zero sd
    gives 0, 1/2 or 1)."""
    truth, mean, sd = (np.asarray(v, dtype=float) for v in (truth, mean, sd))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (truth - mean) / sd
    z = np.where(sd > 0, z, np.sign(truth - mean) * np.inf)
    return norm.cdf(z)


def expected_calibration_error(prob, outcome, bins: int = 10) -> dict:
    """ECE of probability forecasts ``prob`` of binary events ``outcome`` (same shape).

    Returns ``ece`` and per bin ``pred`` (mean forecast), ``freq`` (observed frequency), ``count``
    (NaN for empty bins), over ``bins`` equal-width bins of [0, 1].
    """
    p = np.asarray(prob, dtype=float).ravel()
    o = np.asarray(outcome, dtype=float).ravel()
    if p.shape != o.shape or p.size == 0:
        raise ValueError(
            f"prob, outcome: expected two non-empty arrays of one shape, got {np.shape(prob)}, {np.shape(outcome)}"
        )
    if np.any((p < 0) | (p > 1)):
        raise ValueError("prob: expected probabilities in [0, 1]")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pred = np.bincount(idx, weights=p, minlength=bins) / count
        freq = np.bincount(idx, weights=o, minlength=bins) / count
    ece = float(np.nansum(count / count.sum() * np.abs(freq - pred)))
    return {"ece": ece, "pred": pred, "freq": freq, "count": count}


def student_outputs(student: Student, arrays: TraceArrays, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Run a loaded student (:func:`~bayesdesign.student.load_student`) on every (task, step) of
    :class:`~bayesdesign.student.data.TraceArrays`: ``pi`` (T, S, Q), ``log_sd_mean``,
    ``log_sd_sd`` (T, S, 2, Q), ``class_prob`` (T, S, K)."""
    import torch  # lazy: torch loads only for a student check

    model = student.model
    model.eval()
    n_tasks, n_steps = arrays.pi_raw.shape[:2]
    out = {"pi": [], "log_sd_mean": [], "log_sd_sd": [], "class_prob": []}
    with torch.no_grad():
        for s in range(n_steps):
            n = int(arrays.n_obs[s])
            parts = {k: [] for k in out}
            for lo in range(0, n_tasks, batch_size):
                sl = slice(lo, lo + batch_size)
                res = model(
                    torch.from_numpy(np.ascontiguousarray(arrays.u[sl, :n])),
                    torch.from_numpy(np.ascontiguousarray(arrays.a[sl, :n])),
                    torch.from_numpy(np.ascontiguousarray(arrays.y[sl, :n])),
                    torch.from_numpy(np.ascontiguousarray(arrays.uq[sl, s])),
                )
                for k in out:
                    parts[k].append(res[k].double().cpu().numpy())
            for k in out:
                out[k].append(np.concatenate(parts[k]))
    return {k: np.stack(v, 1) for k, v in out.items()}


def _one_per_task(n_tasks: int, n_obs: np.ndarray, shape: tuple[int, int], rng) -> tuple:
    steps = np.flatnonzero(n_obs > 0)
    if steps.size == 0:
        raise ValueError("traces: every step has an empty history; nothing to calibrate")
    return (
        np.arange(n_tasks),
        rng.choice(steps, n_tasks),
        rng.integers(0, shape[0], n_tasks),
        rng.integers(0, shape[1], n_tasks),
    )


def student_calibration(
    student_dir: str | Path, traces: str | Path, bins: int = 10, prob: float = 0.95, seed: int = 0, batch_size: int = 64
) -> xr.Dataset:
    """PIT, gate reliability and imitation error of the student in ``student_dir`` on held-out
    ``traces`` (see the module notes). The traces must come from the student's prior."""
    from ..student.checkpoint import load_student  # lazy: torch (as above)
    from ..student.data import load_traces

    started = time.time()
    st = load_student(student_dir)
    arrays, _ = load_traces(traces, st.scaling)
    if arrays.attrs.get("prior_hash") != st.meta.get("prior_hash"):
        raise ValueError(
            f"{traces}: traces of another prior ({arrays.attrs.get('prior_name')}) than the student's ({st.spec.name})"
        )
    ds = load_dataset(traces)
    for v in ("true_log_sd", "task_class", "pi_query"):
        if v not in ds:
            raise ValueError(f"{traces}: traces without {v!r}; regenerate them with `bayesdesign traces`")
    out = student_outputs(st, arrays, batch_size)
    truth = ds.true_log_sd.values.astype(float)  # (T, S, 2, Q)
    n_tasks = truth.shape[0]
    rng = np.random.default_rng(seed)
    t_i, s_i, a_i, q_i = _one_per_task(n_tasks, arrays.n_obs, truth.shape[2:], rng)
    pick = lambda v: v[t_i, s_i, a_i, q_i]  # noqa: E731
    sources = {
        "student": (out["log_sd_mean"], out["log_sd_sd"], out["class_prob"]),
        "teacher": (
            ds.log_sd_mean.values.astype(float),
            ds.log_sd_sd.values.astype(float),
            ds.class_prob.values.astype(float),
        ),
    }
    z = eval_points(None)
    k_cls = out["class_prob"].shape[-1]
    onehot = (arrays.task_class[:, None, None] == np.arange(k_cls)[None, None, :]).astype(float)
    onehot = np.broadcast_to(onehot, out["class_prob"].shape)
    res: dict = {
        k: []
        for k in (
            "pit",
            "pit_passed",
            "pit_outside",
            "pit_ks",
            "ecdf",
            "band_lower",
            "band_upper",
            "ece",
            "rel_pred",
            "rel_freq",
            "rel_count",
            "pit_all_mean",
            "pit_all_sd",
        )
    }
    level = None
    for mean, sd, cp in sources.values():
        pit_all = pit_gaussian(truth, mean, sd)
        pit = pick(pit_all)
        chk = uniformity_check(pit, None, prob)
        level = chk["level"]
        rel = expected_calibration_error(cp, onehot, bins)
        if k_cls == 1:  # one class: the gate is always certain and right, its ECE says nothing
            rel["ece"] = float("nan")
        for k, v in (
            ("pit", pit),
            ("pit_passed", chk["passed"]),
            ("pit_outside", chk["outside"]),
            ("pit_ks", chk["ks"]),
            ("ecdf", chk["ecdf"]),
            ("band_lower", chk["lower"]),
            ("band_upper", chk["upper"]),
            ("ece", rel["ece"]),
            ("rel_pred", rel["pred"]),
            ("rel_freq", rel["freq"]),
            ("rel_count", rel["count"]),
            ("pit_all_mean", pit_all.mean()),
            ("pit_all_sd", pit_all.std()),
        ):
            res[k].append(v)
    cfg = st.teacher_config
    clip = ClipSchedule(**cfg["clip"]) if "clip" in cfg else ClipSchedule()
    burn_in = int(cfg.get("burn_in", 0))
    n_obs = arrays.n_obs
    used = np.where(n_obs[None, :, None] < burn_in, 0.5, clip.clip(out["pi"], n_obs[None, :, None] + 1))
    imit = np.abs(used - arrays.pi_query).mean((0, 2))
    imit_raw = np.abs(out["pi"] - arrays.pi_raw).mean((0, 2))
    data = {
        k: (("source",), np.asarray(res[k]))
        for k in ("pit_passed", "pit_outside", "pit_ks", "ece", "pit_all_mean", "pit_all_sd")
    }
    data.update(
        pit=(("source", "task"), np.stack(res["pit"])),
        ecdf=(("source", "z"), np.stack(res["ecdf"])),
        band_lower=(("source", "z"), np.stack(res["band_lower"])),
        band_upper=(("source", "z"), np.stack(res["band_upper"])),
        rel_pred=(("source", "bin"), np.stack(res["rel_pred"])),
        rel_freq=(("source", "bin"), np.stack(res["rel_freq"])),
        rel_count=(("source", "bin"), np.stack(res["rel_count"])),
        imitation_error=(("step",), imit),
        imitation_error_raw=(("step",), imit_raw),
        n_obs=(("step",), n_obs),
    )
    cal = xr.Dataset(data, coords={"source": list(sources), "z": z, "bin": np.arange(bins)})
    passed = bool(res["pit_passed"][0])
    cal.attrs.update(
        kind="student-calibration",
        student=str(student_dir),
        traces=str(traces),
        prior_name=st.spec.name,
        prior_hash=st.meta.get("prior_hash", ""),
        prob=prob,
        band_level=level,
        n_classes=k_cls,
        imitation_error_mean=float(np.abs(used - arrays.pi_query).mean()),
        passed=int(passed),
        verdict=(
            f"student PIT {'uniform' if passed else 'not uniform'} "
            f"(teacher reference: {'uniform' if res['pit_passed'][1] else 'not uniform'}); "
            + (
                f"gate ECE {res['ece'][0]:.3f} (teacher {res['ece'][1]:.3f}); "
                if k_cls > 1
                else "no gate ECE (the prior has one smoothness class); "
            )
            + f"mean imitation error {float(np.abs(used - arrays.pi_query).mean()):.4f}"
        ),
        seconds=round(time.time() - started, 2),
    )
    return cal
