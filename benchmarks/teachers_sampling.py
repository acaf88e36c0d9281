"""The sampling teachers (NUTS, SVI): cost per decision, NUTS vectorized over tasks vs one task at a
time, and the efficiency of their designs on scenarios S2, S3, S4 at T = 2000.

    python benchmarks/teachers_sampling.py            # about 30 minutes on 2 cores (96 replications)
    python benchmarks/teachers_sampling.py --quick    # CI: a few minutes (T = 500, few replications)

(a) Cost: wall time of one refit of one task (cold: ``num_warmup`` adaptation steps from the
    prior median; warm: from the previous fit's last draw, step size and mass matrix), of one
    decision (``decide`` for one task and one query), and the teacher's total time in an
    experiment per unit and task (from (c)).
(b) NUTS vectorized over B tasks (one ``jax.vmap``-ed program) against the same compiled algorithm
    run on one task at a time (``chunk=1``), on the same histories: tasks refitted per second,
    and the lockstep factor (mean over iterations of the largest trajectory in the batch over the
    mean trajectory).
(c) ``simulate`` with the NUTS, SVI and conjugate teacher designs (prior ``beta1``), common random
    numbers, the oracle as reference: MSE ratio, design variance ratio, 95% coverage.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from _common import DOC, md_table, stamp, write_section

from bayesdesign.design import get_scenario, simulate
from bayesdesign.summary import summarize
from bayesdesign.teachers import TeacherConfig
from bayesdesign.teachers.nuts import NUTSTeacher
from bayesdesign.teachers.svi import SVITeacher

PRIOR = "beta1"


class Timed:
    """Wraps a sequential policy and accumulates the wall time of its ``update``/``propensity_at``."""

    def __init__(self, policy):
        self.policy, self.name, self.seconds = policy, policy.name, 0.0

    def _timed(self, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.seconds += time.perf_counter() - t0
        return out

    def init(self, batch):
        return self._timed(self.policy.init, batch)

    def update(self, state, x, a, y, pi):
        return self._timed(self.policy.update, state, x, a, y, pi)

    def propensity_at(self, state, x):
        return self._timed(self.policy.propensity_at, state, x)

    def propensity(self, history, x):
        return self.policy.propensity(history, x)


def _history(seed: int, batch: int, n: int):
    env = get_scenario("S2")
    rng = np.random.default_rng(seed)
    x = env.sample_covariates(rng, batch * n).reshape(batch, n, 1)
    a = (rng.uniform(size=(batch, n)) < 0.5).astype(np.int32)
    y = np.stack([env.sample_outcomes(rng, x[b], a[b]) for b in range(batch)])
    return x, a, y


def _filled(teacher, x, a, y):
    b, n, _ = x.shape
    st = teacher.init(b)
    cap = n if teacher.max_units is None else teacher.max_units
    pad = ((0, 0), (0, cap - n))
    return st._replace(t=n, x=np.pad(x, pad + ((0, 0),)), a=np.pad(a, pad), y=np.pad(y, pad),
                       mask=np.pad(np.ones((b, n), bool), pad))


def _timed_refit(teacher, state, n, warm, reps=1):
    teacher.refit(state, n, warm=warm)  # compile
    t0 = time.perf_counter()
    for _ in range(reps):
        out, stats = teacher.refit(state, n, warm=warm)
    return (time.perf_counter() - t0) / reps, out, stats


def cost(n: int, quick: bool) -> list[dict]:
    """(a): refit and decision wall times for one task."""
    rows = []
    x, a, y = _history(1, 1, n)
    xq = np.full((1, 1, 1), 0.3)
    for name, teacher in (
        ("nuts", NUTSTeacher(PRIOR, max_units=1024)),
        ("svi (AutoNormal)", SVITeacher(PRIOR, max_units=1024)),
        ("svi (laplace)", SVITeacher(PRIOR, guide="laplace", max_units=1024)),
    ):
        st = _filled(teacher, x, a, y)
        cold_s, fitted, _ = _timed_refit(teacher, st, n - 100, warm=False)
        warm_s, fitted, _ = _timed_refit(teacher, fitted, n, warm=True, reps=1 if quick else 3)
        teacher.decide(fitted, xq)
        t0 = time.perf_counter()
        k = 50 if quick else 200
        for _ in range(k):
            teacher.decide(fitted, xq)
        dec = (time.perf_counter() - t0) / k
        rows.append({"teacher": name, "history": n, "cold_fit_s": cold_s, "warm_refit_s": warm_s,
                     "decide_ms": 1e3 * dec})
        print(rows[-1], flush=True)
    return rows


def _mcmc_one_at_a_time(x, a, y, n: int) -> tuple[float, float]:
    """Seconds per task and mean divergences of plain ``numpyro.infer.MCMC`` (cold, 300 + 300) on each
    task's padded history: what one would run without the teacher."""
    import jax
    from numpyro.infer import MCMC, NUTS

    from bayesdesign.models import numpyro_model
    from bayesdesign.spec import load_prior

    spec = load_prior(PRIOR)
    mcmc = MCMC(NUTS(numpyro_model(spec)), num_warmup=300, num_samples=300, progress_bar=False, jit_model_args=True)
    mask = np.arange(x.shape[1]) < n
    xq = np.full((1, 1), 0.5)
    mcmc.run(jax.random.PRNGKey(0), x[0], a[0], y[0], mask, xq)  # compile
    t0 = time.perf_counter()
    div = 0
    for b in range(x.shape[0]):
        mcmc.run(jax.random.PRNGKey(b), x[b], a[b], y[b], mask, xq)
        div += int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return (time.perf_counter() - t0) / x.shape[0], div / x.shape[0]


def vectorized(batch: int, n: int, quick: bool) -> list[dict]:
    """(b): tasks refitted per second, vectorized over ``batch`` tasks vs one at a time."""
    rows = []
    x, a, y = _history(2, batch, n)
    variants = [("default (warm_warmup 100, max_tree_depth 4)", {})]
    if not quick:
        variants += [
            ("max_tree_depth 10 (NumPyro's default)", {"max_tree_depth": 10}),
            ("max_tree_depth 5", {"max_tree_depth": 5}),
            ("warm_warmup 50", {"warm_warmup": 50}),
        ]
    for label, kw in variants:
        times = {}
        for chunk in (None, 4, 1) if not quick else (None, 1):
            teacher = NUTSTeacher(PRIOR, max_units=1024, chunk=chunk, **kw)
            st = _filled(teacher, x, a, y)
            fitted, _ = teacher.refit(st, n - 100, warm=False)
            sec, out, stats = _timed_refit(teacher, fitted, n, warm=True)
            steps = stats["tree_size"][:, 0, 0]  # (B, S)
            size = batch if chunk is None else chunk
            per_call = steps[: batch // size * size].reshape(-1, size, steps.shape[-1])
            times[chunk] = sec
            ess = out.diagnostics["ess"]
            rows.append({
                "variant": label, "tasks_per_call": batch if chunk is None else chunk, "B": batch,
                "seconds": sec, "tasks_per_s": batch / sec,
                "leapfrogs_per_draw": float(steps.mean()),
                "lockstep_factor": float(per_call.max(1).mean() / steps.mean()),
                "min_ess": float(np.mean(ess)), "rhat": float(np.max(out.diagnostics["rhat"])),
                "divergences": int(out.diagnostics["divergences"].sum()),
            })
            print(rows[-1], flush=True)
        for r in rows[-len(times):]:
            r["speedup_vs_one_at_a_time"] = times[1] / r["seconds"]
    sec, div = _mcmc_one_at_a_time(x, a, y, n)
    rows.append({
        "variant": "plain numpyro MCMC per task, cold 300 + 300", "tasks_per_call": 1, "B": batch,
        "seconds": sec * batch, "tasks_per_s": 1 / sec, "leapfrogs_per_draw": float("nan"),
        "lockstep_factor": 1.0, "min_ess": float("nan"), "rhat": float("nan"), "divergences": int(div * batch),
        "speedup_vs_one_at_a_time": float("nan"),
    })
    print(rows[-1], flush=True)
    return rows


def efficiency(scenarios, horizon: int, reps: dict, seed: int, batch_size: int, refit_every: int) -> list[dict]:
    """(c): the teacher designs on the scenarios."""
    rows = []
    cfg = TeacherConfig()
    for sc in scenarios:
        t0 = time.time()
        designs = [
            Timed(NUTSTeacher(PRIOR, cfg, refit_every=refit_every)),
            Timed(SVITeacher(PRIOR, cfg, refit_every=refit_every)),
        ]
        r = reps[sc]
        ds = simulate(get_scenario(sc), [*designs, "teacher:conjugate:beta1", "uniform"], horizon=horizon, reps=r,
                      seed=seed, batch_size=batch_size, keep_units=0)
        tab = summarize(ds)
        secs = {d.name: d.seconds for d in designs}
        for name, row in tab.iterrows():
            cov = row["coverage"]
            rows.append({
                "scenario": sc, "T": horizon, "reps": r, "design": name,
                "mse_ratio": row["mse_ratio"], "design_var_ratio": row["design_var_ratio"],
                "coverage": f"{cov:.3f} ± {np.sqrt(cov * (1 - cov) / r):.3f}",
                "mean_abs_pi_error": row["mean_abs_pi_error"],
                "teacher_ms_per_unit": 1e3 * secs[name] / (r * horizon) if name in secs else float("nan"),
            })
        print(f"{sc}: {time.time() - t0:.0f} s", flush=True)
        print(md_table(rows[-len(tab):], list(rows[-1])), flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run for CI")
    ap.add_argument("--reps", default=None, help="replications per scenario, e.g. 96 or S2=96,S3=64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenarios", default="S2,S3,S4")
    ap.add_argument("--batch", type=int, default=16, help="tasks in the vectorized NUTS comparison")
    ap.add_argument("--refit-every", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=10, help="units assigned per decision in simulate")
    ap.add_argument("--parts", default="a,b,c", help="which parts to run")
    ap.add_argument("--doc", default=str(DOC), help="markdown file to write the section into")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    scenarios = args.scenarios.split(",")
    default = 8 if args.quick else 96
    reps = dict.fromkeys(scenarios, default)
    if args.reps:
        if "=" in args.reps:
            reps.update({k: int(v) for k, v in (p.split("=") for p in args.reps.split(","))})
        else:
            reps = dict.fromkeys(scenarios, int(args.reps))
    horizon = 500 if args.quick else 2000
    t0 = time.time()
    load0 = os.getloadavg()[0]
    out = {}
    if "a" in parts:
        out["cost"] = cost(1000, args.quick)
    if "b" in parts:
        out["vectorized"] = vectorized(args.batch, 1000, args.quick)
    if "c" in parts:
        out["efficiency"] = efficiency(scenarios, horizon, reps, args.seed, args.batch_size, args.refit_every)
    total = time.time() - t0
    sections = [
        "## Sampling teachers (`benchmarks/teachers_sampling.py`)\n\n"
        f"{stamp()} {total:.0f} s in all{' (--quick)' if args.quick else ''}. Prior `{PRIOR}`; NUTS: 300 warmup "
        "(cold) / 100 (warm refits) steps, 300 draws, diagonal mass matrix, max_tree_depth 4; SVI: AutoNormal, "
        "2000 Adam steps (cold) / 500 (warm), 200 draws. Load average (1 min) at start and end: "
        f"{load0:.1f}, {os.getloadavg()[0]:.1f} (above 2, other jobs shared the two cores and wall times are "
        "upper bounds)."
    ]
    if "cost" in out:
        sections.append(
            "**(a) Cost for one task** (history of 1000 units; cold fit on 900 units, warm refit on 1000 units "
            "from it; `decide`: one query):\n\n"
            + md_table(out["cost"], ["teacher", "history", "cold_fit_s", "warm_refit_s", "decide_ms"])
        )
    if "vectorized" in out:
        sections.append(
            f"**(b) NUTS vectorized over tasks** (warm refit of {args.batch} tasks at 1000 units, padded to 1024; "
            "`tasks_per_call` 1 runs the same compiled algorithm one task at a time):\n\n"
            + md_table(out["vectorized"], ["variant", "tasks_per_call", "seconds", "tasks_per_s",
                                           "speedup_vs_one_at_a_time", "leapfrogs_per_draw", "lockstep_factor",
                                           "min_ess", "rhat", "divergences"])
        )
    if "efficiency" in out:
        sections.append(
            f"**(c) Designs**, T = {horizon}, refit every {args.refit_every} units, {args.batch_size} units per "
            "decision, seed {seed}; `teacher_ms_per_unit`: the teacher's wall time (refits and decisions, all "
            "replications in lockstep) per unit and replication:\n\n".replace("{seed}", str(args.seed))
            + md_table(out["efficiency"], ["scenario", "T", "reps", "design", "mse_ratio", "design_var_ratio",
                                           "coverage", "mean_abs_pi_error", "teacher_ms_per_unit"])
        )
    body = "\n\n".join(sections)
    write_section("teachers-sampling" + ("-quick" if args.quick else ""), body, Path(args.doc))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    print(body)


if __name__ == "__main__":
    main()
