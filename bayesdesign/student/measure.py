"""Measurements of a trained student (not tests): imitation error on held-out traces and decision latency.

``python -m bayesdesign.student.measure STUDENT [--traces HELDOUT.nc] [--history 1000] [--json]``
prints both as JSON. ``STUDENT`` is a checkpoint folder or a shipped name (``pretrained``), as for
:func:`~bayesdesign.student.policy.load_policy`. The imitation error compares the student with the
teacher on (task, step, query) examples of a traces file the student was not trained on, and, for
a student with a conjugate layer, the same architecture with its learned corrections zeroed
(:func:`zero_corrections`: the closed-form layer alone, i.e. the untrained student): ``pi_mae``
against ``pi_mae_untrained`` says what training learned beyond the working model. The latency is
the wall-clock time of one decision (one covariate, batch 1, one CPU thread, cached history of
``history`` units), alone and together with appending the decided unit to the cache. ``--json``
prints one flat object (``pi_mae``, ``pi_mae_untrained``, ..., ``latency``); ``--no-latency`` skips
the timing.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_student
from .data import TraceDataset, load_traces
from .distil import _validation_batches, evaluate
from .model import StudentModel
from .policy import StudentPolicy, resolve_student_path

__all__ = ["imitation_error", "decision_latency", "zero_corrections"]

_METRICS = ("pi_mae", "pi_mae_raw", "gate_tv")


def zero_corrections(model: StudentModel) -> StudentModel:
    """A copy of ``model`` with its learned corrections to the conjugate layer zeroed: the experts'
    output weights and biases, the gate's last layer, and the evidence weight back at the teacher's
    0.25. Its outputs are the closed-form layer's alone (the state training starts from)."""
    if model.conj is None:
        raise ValueError(
            "student: the plain network (n_terms 0) has no conjugate layer, so no corrections to zero"
        )
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in (out.expert_w, out.expert_b, out.gate[-1].weight, out.gate[-1].bias):
            p.zero_()
        out.var_evidence.fill_(0.25)
    return out


def _student_folder(student: str | Path) -> Path:
    """A checkpoint folder, or a shipped student's name as :func:`load_policy` accepts it."""
    return resolve_student_path(str(student))


def imitation_error(student_dir: str | Path, traces: str | Path, batch_size: int = 64,
                    max_examples: int = 1000, seed: int = 0, untrained: bool = True) -> dict[str, float]:
    """Mean |pi_student - pi_teacher| over a held-out traces file, by history size and overall.

    ``pi_mae``: with burn-in and clip applied to both (the probabilities the designs would use);
    ``pi_mae_raw``: unclipped ratios; ``gate_tv``: total variation between gate and teacher class
    posterior. At most ``max_examples`` (task, step) examples per history bin (a seeded subset);
    the overall figures weight the bins by their share of all examples. With ``untrained`` and a
    conjugate layer, the same figures of :func:`zero_corrections` (suffix ``_untrained``) on the
    same examples. ``student_dir`` may be a shipped name (``pretrained``).
    """
    st = load_student(_student_folder(student_dir))
    models = {"": st.model}
    if untrained and st.model.conj is not None:
        models["_untrained"] = zero_corrections(st.model)
    arrays, _ = load_traces(traces, st.scaling)
    if arrays.attrs.get("prior_hash") != st.meta.get("prior_hash"):
        raise ValueError(f"{traces}: traces of another prior than the student's")
    full = TraceDataset([arrays])
    n = arrays.n_obs[full.index[:, 2]]
    out: dict[str, float] = {}
    totals: dict[str, float] = {}
    bins = {"n<100": (0, 100), "100<=n<500": (100, 500), "n>=500": (500, 10**9)}
    for name, (lo, hi) in bins.items():
        keep = (n >= lo) & (n < hi)
        if not keep.any():
            continue
        sub = TraceDataset([arrays])
        sub.index = full.index[keep]
        batches = _validation_batches(sub, batch_size, max_examples, seed)
        share = float(keep.mean())
        for suffix, model in models.items():
            res = evaluate(model, sub, batches, st.teacher_config)
            for k in _METRICS:
                out[f"{k}{suffix}[{name}]"] = res[k]
                totals[k + suffix] = totals.get(k + suffix, 0.0) + share * res[k]
    out.update(totals)
    return out


def decision_latency(student_dir: str | Path, history: int = 1000, repeats: int = 300, threads: int = 1,
                     seed: int = 0, backend: str = "auto") -> dict[str, float]:
    """Median and 90th percentile (ms) of one decision at a cached history of ``history`` units
    (``backend`` as in :class:`~bayesdesign.student.policy.StudentPolicy`)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        policy = StudentPolicy(load_student(_student_folder(student_dir)), backend=backend)
        rng = np.random.default_rng(seed)
        lo, hi = policy.low, policy.high
        x = lo + (hi - lo) * rng.uniform(size=(1, history + repeats, policy.d))
        a = (rng.uniform(size=(1, history + repeats)) < 0.5).astype(np.int8)
        y = rng.normal(size=(1, history + repeats))
        h = slice(0, history)
        state = policy.update(policy.init(1), x[:, h], a[:, h], y[:, h], np.full((1, history), 0.5))
        decide, step = [], []
        for i in range(history, history + repeats):
            t0 = time.perf_counter()
            p = policy.propensity_at(state, x[:, i : i + 1])
            t1 = time.perf_counter()
            state = policy.update(state, x[:, i : i + 1], a[:, i : i + 1], y[:, i : i + 1], p)
            t2 = time.perf_counter()
            decide.append(t1 - t0)
            step.append(t2 - t0)
    finally:
        torch.set_num_threads(old)
    ms = lambda v, q: float(np.percentile(v, q) * 1e3)  # noqa: E731
    return {"history": history, "threads": threads, "backend": backend,
            "decide_p50_ms": ms(decide, 50), "decide_p90_ms": ms(decide, 90),
            "decide_and_append_p50_ms": ms(step, 50), "decide_and_append_p90_ms": ms(step, 90)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("student", help="checkpoint folder, or a shipped student's name (pretrained)")
    ap.add_argument("--traces", help="held-out traces file (another seed than the training traces)")
    ap.add_argument("--history", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--backend", choices=["auto", "engine", "torch"], default="auto",
                    help="the compiled engine (auto on the CPU) or the torch model")
    ap.add_argument("--max-examples", type=int, default=1000, help="(task, step) examples per history bin")
    ap.add_argument("--json", action="store_true",
                    help="one flat JSON object: pi_mae, pi_mae_untrained, ... and latency")
    ap.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    args = ap.parse_args(argv)
    res: dict = {}
    if not args.no_latency:
        res["latency"] = decision_latency(args.student, args.history, args.repeats, backend=args.backend)
    if args.traces:
        imitation = imitation_error(args.student, args.traces, max_examples=args.max_examples)
        if args.json:
            res = {**imitation, **res}
        else:
            res["imitation"] = imitation
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
