"""Conjugate and mixture teachers: labels per second, time per decision, and the teacher designs'
MSE ratio and coverage on S2-S4. (NUTS and SVI: benchmarks/teachers_sampling.py.)

    python benchmarks/teachers.py            # 500 replications, T = 2000
    python benchmarks/teachers.py --quick    # CI: small sizes
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np
from _common import DOC, md_table, stamp, write_section

import bayesdesign as bd
from bayesdesign.summary import summarize
from bayesdesign.teachers import make_teacher
from bayesdesign.teachers.conjugate import _centred, conjugate_decide


def _history(teacher, tasks, n, rng):
    env = bd.get_scenario("S2")
    x = env.sample_covariates(rng, tasks * n).reshape(tasks, n, 1)
    a = (rng.uniform(size=(tasks, n)) < 0.5).astype(float)
    y = np.where(
        a == 1, env.mean(x.reshape(-1, 1), 1).reshape(tasks, n), env.mean(x.reshape(-1, 1), 0).reshape(tasks, n)
    )
    y = y + rng.standard_normal((tasks, n))
    return teacher.fold(bd.History(x, a, y, np.full((tasks, n), 0.5)))[0]


def labels_per_second(backend, prior, tasks, queries, repeats=7):
    """Teacher probabilities per second from the jitted kernel, histories of 500 units; median of repeats."""
    teacher = make_teacher(backend, prior)
    rng = np.random.default_rng(0)
    state = _history(teacher, tasks, 500, rng)
    args = _centred(teacher.prior, state, teacher.config.prior_obs)
    phi = jax.numpy.asarray(teacher.features(rng.uniform(size=(tasks, queries, 1))), jax.numpy.float32)
    run = lambda: conjugate_decide(teacher._arrays, teacher._floor, teacher._both, phi, *args)["pi"].block_until_ready()  # noqa: E731
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return tasks * queries / float(np.median(times))


def decision_latency(backend, prior, n=1000, repeats=200):
    """Median seconds of one decision (batch 1, one query) with a history of ``n`` units, from state."""
    teacher = make_teacher(backend, prior)
    state = _history(teacher, 1, n, np.random.default_rng(1))
    x = np.array([[[0.3]]])
    teacher.propensity_at(state, x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        teacher.propensity_at(state, x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.quantile(times, 0.99))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--doc", default=str(DOC))
    args = ap.parse_args(argv)
    reps = args.reps or (20 if args.quick else 500)
    horizon = 300 if args.quick else 2000
    t_all = time.time()
    speed = []
    for backend, prior in (("conjugate", "beta1"), ("mixture", "smoothness-mixture")):
        lps = labels_per_second(backend, prior, tasks=256 if args.quick else 1024, queries=64 if args.quick else 256)
        p50, p99 = decision_latency(backend, prior, repeats=20 if args.quick else 200)
        speed.append(
            {
                "teacher": f"{backend}:{prior}",
                "labels_per_s": f"{lps:,.0f}",
                "decision_p50_ms": 1e3 * p50,
                "decision_p99_ms": 1e3 * p99,
            }
        )
        print(speed[-1], flush=True)
    designs = ["uniform", "plugin-neyman", "teacher:conjugate:beta1", "teacher:mixture:smoothness-mixture"]
    rows = []
    for sc in ("S2", "S3", "S4"):
        t0 = time.time()
        ds = bd.simulate(bd.get_scenario(sc), designs, horizon=horizon, reps=reps, seed=0, keep_units=0)
        for name, r in summarize(ds).iterrows():
            cov = r["coverage"]
            rows.append(
                {
                    "scenario": sc,
                    "design": name,
                    "mse_ratio": r["mse_ratio"],
                    "design_var_ratio": r["design_var_ratio"],
                    "coverage": f"{cov:.3f} ± {np.sqrt(cov * (1 - cov) / reps):.3f}",
                    "mean_abs_pi_error": r["mean_abs_pi_error"],
                }
            )
        print(f"{sc}: {time.time() - t0:.0f} s", flush=True)
    body = (
        "## Conjugate and mixture teachers (`benchmarks/teachers.py`)\n\n"
        f"{stamp()} {time.time() - t_all:.0f} s in all.\n\n"
        "Labels per second: posterior Neyman probabilities from the jitted, vmapped kernel for "
        f"{1024 if not args.quick else 256} tasks x {256 if not args.quick else 64} queries, "
        "histories of 500 units "
        "(median of 7 calls). Decision latency: one unit, one query, history of 1000 units, from the "
        "state (statistics update excluded), Python overhead included.\n\n"
        + md_table(speed, ["teacher", "labels_per_s", "decision_p50_ms", "decision_p99_ms"])
        + f"\n\nTeacher designs, T = {horizon}, {reps} replications, seed 0, refit every unit; oracle = 1.\n\n"
        + md_table(rows, ["scenario", "design", "mse_ratio", "design_var_ratio", "coverage", "mean_abs_pi_error"])
    )
    write_section("teachers" + ("-quick" if args.quick else ""), body, Path(args.doc))
    print(body)


if __name__ == "__main__":
    main()
