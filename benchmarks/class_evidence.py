"""The model's own smoothness-class posterior of the sampling teachers (teachers.evidence).

Tasks drawn from the ``smoothness-mixture`` prior, units assigned with probability 1/2, the NUTS
teacher fitted at the refit points of a trace run (a cold fit, then warm refits; its defaults
otherwise). At each refit, per batch of tasks:

- the CPU time of the NUTS fits of all classes and of the importance-sampling evidence
  (compiled programs warmed up first; compilation reported separately);
- the Pareto k-hat of the evidence weights (worst class per task) and the tasks that fell back
  to the conjugate weights;
- the total variation between the conjugate working model's class posterior and the model's own;
- the Monte Carlo error of the model's class posterior: total variation between two evidence
  estimates from independent proposal draws, and the median absolute difference of their log Z;
- for comparison, the k-hat and log Z spread of a proposal scaled by the draws' covariance
  instead of the Hessian (the last three columns).

Prints a markdown table and writes it to the section ``class-evidence`` of ``--doc`` (default
docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np
from _common import DOC, md_table, stamp, write_section

from bayesdesign.design.environment import evaluate
from bayesdesign.design.policy import History
from bayesdesign.models import sample_tasks
from bayesdesign.spec import load_prior
from bayesdesign.teachers import TeacherConfig
from bayesdesign.teachers import evidence as ev
from bayesdesign.teachers._sampling import capacity, task_keys
from bayesdesign.teachers.nuts import NUTSTeacher


def _cpu(fn, *args):
    t0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - t0, time.perf_counter() - w0


def run(tasks: int, horizon: int, refit_every: int, seed: int) -> tuple[list[dict], dict]:
    spec = load_prior("smoothness-mixture")
    env, _ = sample_tasks(spec, np.random.default_rng(seed), tasks)
    rng = np.random.default_rng(seed + 1)
    x = env.sample_covariates(rng, tasks * horizon).reshape(tasks, horizon, spec.d)
    a = (rng.uniform(size=(tasks, horizon)) < 0.5).astype(np.int32)
    y = np.where(a == 1, evaluate(env, "sample_outcomes", x, 1, rng), evaluate(env, "sample_outcomes", x, 0, rng))
    teacher = NUTSTeacher(spec, TeacherConfig(), refit_every=refit_every, seed=seed)
    state = teacher.init(tasks)
    cap = capacity(horizon, None)
    pad = ((0, 0), (0, cap - horizon))
    state = state._replace(t=horizon, x=np.pad(x, (*pad, (0, 0))), a=np.pad(a, pad), y=np.pad(y, pad),
                           mask=np.pad(np.ones((tasks, horizon), bool), pad))
    log_w = np.log(spec.weights)
    rows, compile_s = [], {"fit": 0.0, "evidence": 0.0}
    warm = None
    for n in range(refit_every, horizon, refit_every):
        feats = teacher._padded(state, n)
        keys = task_keys(seed, n, teacher.n_classes, tasks)
        # first call at this padded length compiles; time the second
        res, c1, _ = _cpu(teacher._fit, warm, feats, keys)
        _, c1e, _ = _cpu(teacher.log_evidence, feats, res.flat, keys)
        res, fit_cpu, _ = _cpu(teacher._fit, warm, feats, keys)
        (lz, kh), ev_cpu, _ = _cpu(teacher.log_evidence, feats, res.flat, keys)
        compile_s["fit"] += c1 - fit_cpu
        compile_s["evidence"] += c1e - ev_cpu
        other = jax.vmap(jax.vmap(lambda k: jax.random.fold_in(k, 1)))(keys)
        lz2, _ = teacher.log_evidence(feats, res.flat, other)
        lz_cov, kh_cov = teacher.log_evidence(feats, res.flat, other, laplace=False)
        lz_cov2, _ = teacher.log_evidence(feats, res.flat, keys, laplace=False)
        model = ev.class_posterior(log_w, lz)
        model2 = ev.class_posterior(log_w, lz2)
        h = History(x[:, :n], a[:, :n].astype(float), y[:, :n], np.full((tasks, n), 0.5))
        conj = teacher._conjugate.class_posterior(h)
        worst = kh.max(1)
        tv = 0.5 * np.abs(model - conj).sum(1)
        rows.append({
            "units": n,
            "fit CPU s": fit_cpu,
            "evidence CPU s": ev_cpu,
            "evidence / fit": ev_cpu / fit_cpu,
            "k-hat median": float(np.median(worst)),
            "k-hat max": float(np.max(worst)),
            "k-hat > 0.7": int((~(worst <= ev.KHAT_MAX)).sum()),
            "TV conjugate-model mean": float(tv.mean()),
            "TV max": float(tv.max()),
            "TV MC (two estimates) max": float(0.5 * np.abs(model - model2).sum(1).max()),
            "log Z MC spread median": float(np.median(np.abs(lz - lz2))),
            "draws' cov: k-hat median": float(np.median(kh_cov.max(1))),
            "draws' cov: k-hat > 0.7": int((~(kh_cov.max(1) <= ev.KHAT_MAX)).sum()),
            "draws' cov: log Z MC spread median": float(np.median(np.abs(lz_cov - lz_cov2))),
        })
        warm = res.warm
    return rows, compile_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run for CI (4 tasks, 100 units)")
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=200)
    ap.add_argument("--refit-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=987)
    ap.add_argument("--doc", default=str(DOC), help="markdown file whose class-evidence section is written")
    args = ap.parse_args()
    if args.quick:
        args.tasks, args.horizon = 4, 100
    t0 = time.perf_counter()
    rows, compile_s = run(args.tasks, args.horizon, args.refit_every, args.seed)
    cols = list(rows[0])
    body = "\n\n".join([
        "## Class evidence (`benchmarks/class_evidence.py`)",
        stamp(),
        f"`python benchmarks/class_evidence.py --tasks {args.tasks} --horizon {args.horizon} --refit-every "
        f"{args.refit_every} --seed {args.seed}`: NUTS teacher (defaults) on `smoothness-mixture`, "
        f"{args.tasks} tasks, units at pi = 1/2; CPU seconds per refit of all tasks and 4 classes "
        f"(compiled; compilation: fits {compile_s['fit']:.1f} s, evidence {compile_s['evidence']:.1f} s). "
        f"Wall time {time.perf_counter() - t0:.0f} s.",
        md_table(rows, cols),
    ])
    print(body)
    write_section("class-evidence", body, doc=Path(args.doc))


if __name__ == "__main__":
    main()
