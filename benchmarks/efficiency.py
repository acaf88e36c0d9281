"""Every design on scenarios S1-S10 at T = 300, 500 and 2000: MSE ratio to the oracle, design
variance ratio, realized T * MSE over the design variance, 95% coverage (with its binomial
standard error), bias.

Designs: the baselines (with `clip-smt` and `clip-ogd-sc`), the mixture teacher on a shipped
prior that need not know the outcome's units (`unit-free` for one covariate, `checkout` for S8's
days and orders, `checkout-score` for S7's three covariates; its default spike-and-slab
log-odds rule), the same with the safe rule (`:safe`), with the log-odds rule without the spike
(`:log-odds`), with the Neyman ratio of posterior mean sds (`:sd`, the default before the
spike) and with the reweighted second-moment regression (`:reweight`), on S8 also the hurdle teacher of the shipped
revenue prior (`teacher:conjugate:revenue-hurdle`), and `student:pretrained` (the shipped
unit-free student for the scenario's number of covariates, `teacher:mixture:unit-free-flex:lognormal`
in network form since 2026-12-01; a scenario it cannot run is skipped with the reason printed).

    python benchmarks/efficiency.py                          # 1000 replications (hours on 2 cores)
    python benchmarks/efficiency.py --reps 500 --horizons 300,500 --jobs 2
    python benchmarks/efficiency.py --quick                  # CI: 60 replications, T = 500, S1-S6
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np
from _common import DOC, ROOT, md_table, stamp, write_section

from bayesdesign.design import get_scenario, simulate
from bayesdesign.summary import FIELDS, summarize

DESIGNS = ["uniform", "explore-then-neyman", "clip-ogd", "clip-smt", "clip-ogd-sc", "plugin-neyman", "oracle"]
PRIORS = {"S7": "checkout-score", "S8": "checkout"}
"""The shipped prior of the mixture teacher per scenario (``unit-free`` otherwise)."""

RATIO_FIELDS = ("mse_ratio", *(f for f in FIELDS if f.startswith(("design_var", "realized"))), "score_over_design")
"""The :func:`~bayesdesign.summary.summarize` fields of a row, in the table's order."""

EXTRA = {"S8": ["teacher:conjugate:revenue-hurdle"]}
"""Further teachers per scenario: on S8 the hurdle teacher of the shipped revenue prior."""


def student_refusal(env, horizon: int) -> str | None:
    """Why ``student:pretrained`` cannot run on ``env`` (None when it can)."""
    from bayesdesign.design import make_design

    try:
        make_design("student:pretrained", env, horizon)
    except (ValueError, FileNotFoundError) as e:
        return str(e)
    return None


def scenario_designs(sc: str, horizon: int, student: bool = True) -> list[str]:
    """Baselines, the mixture teacher (default, safe, log-odds and sd rules) on the scenario's shipped prior,
    the teachers of :data:`EXTRA`, and the pretrained student where it runs (the reason is
    printed where it does not)."""
    prior = PRIORS.get(sc, "unit-free")
    teachers = [f"teacher:mixture:{prior}{suffix}" for suffix in ("", ":safe", ":log-odds", ":sd", ":reweight")]
    out = DESIGNS[:-1] + teachers + EXTRA.get(sc, [])
    if student:
        why = student_refusal(get_scenario(sc), horizon)
        if why is None:
            out.append("student:pretrained")
        else:
            print(f"{sc}: student:pretrained skipped: {why}", flush=True)
    return out + ["oracle"]


def _cell(sc, T, reps, seed, designs, progress):
    """The summary rows of one scenario and horizon."""
    t0 = time.time()
    prior = PRIORS.get(sc, "unit-free")
    names = [n.replace("{prior}", prior) for n in designs] if designs else scenario_designs(sc, T)
    ds = simulate(get_scenario(sc), names, horizon=T, reps=reps, seed=seed, keep_units=0, progress=progress)
    rows = []
    for name, r in summarize(ds).iterrows():
        cov = r["coverage"]
        rows.append(
            {
                "scenario": sc,
                "T": T,
                "design": name,
                **{k: r[k] for k in RATIO_FIELDS},
                "coverage": f"{cov:.3f} ± {np.sqrt(cov * (1 - cov) / reps):.3f}",
                "bias": r["bias"],
                "mean_abs_pi_error": r["mean_abs_pi_error"],
            }
        )
    print(f"{sc} T={T}: {time.time() - t0:.0f} s", flush=True)
    return rows


def run(scenarios, horizons, reps, seed, designs=None, progress=False, jobs=1):
    """Rows of every scenario and horizon, ``jobs`` cells at a time (spawned processes with one
    thread each), in the order of ``scenarios`` and ``horizons``."""
    cells = [(sc, T, reps, seed, designs, progress) for sc in scenarios for T in horizons]
    if jobs > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with mp.get_context("spawn").Pool(jobs) as pool:
            parts = pool.starmap(_cell, cells)
    else:
        parts = [_cell(*c) for c in cells]
    return [r for part in parts for r in part]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run for CI")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenarios", default=None, help="comma-separated (default S1-S10; quick S1-S6)")
    ap.add_argument("--horizons", default=None, help="comma-separated (default 300,500,2000; quick 500)")
    ap.add_argument("--designs", default=None, help="comma-separated design names (default: per scenario, above); "
                    "'{prior}' stands for the scenario's shipped prior")
    ap.add_argument("--doc", default=str(DOC), help="markdown file to write the section into")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--jobs", type=int, default=1, help="scenario-horizon cells run in parallel processes")
    ap.add_argument("--section", default="efficiency", help="section of the markdown file to write (a subset "
                    "of designs rerun beside the full table goes to its own section)")
    args = ap.parse_args(argv)
    reps = args.reps or (60 if args.quick else 1000)
    horizons = (
        [int(h) for h in args.horizons.split(",")] if args.horizons else [500] if args.quick else [300, 500, 2000]
    )
    scenarios = args.scenarios or ("S1,S2,S3,S4,S5,S6" if args.quick else ",".join(f"S{i}" for i in range(1, 11)))
    designs = args.designs.split(",") if args.designs else (DESIGNS if args.quick else None)
    t0 = time.time()
    rows = run(scenarios.split(","), horizons, reps, args.seed, designs, jobs=args.jobs)
    cols = [
        "scenario",
        "T",
        "design",
        *RATIO_FIELDS,
        "coverage",
        "bias",
        "mean_abs_pi_error",
    ]
    body = (
        "## Designs on the public scenarios"
        + ("" if args.section == "efficiency" else f" ({args.section})")
        + " (`benchmarks/efficiency.py`)\n\n"
        f"{stamp()} {reps} replications per cell, seed {args.seed}, common random numbers across "
        f"designs, every design scored by the same AIPW estimator; {time.time() - t0:.0f} s in all.\n"
        "`mse_ratio`: MSE over the oracle Neyman design's MSE on the same seeds (95% interval about "
        "±10% at 500 replications); `design_var_ratio`: the variance the realised allocations imply "
        "(true sds) over V*, far less noisy; `realized_over_design`: T * MSE over the mean design variance "
        "(`realized_over_design_se`: its Monte Carlo standard error); `realized_over_design_cv` (± "
        "`realized_over_design_cv_se`): the same ratio with the oracle-nuisance control variate "
        "(bayesdesign.efficiency.oracle_error_control; unbiased, several times less noisy); "
        "`score_over_design`: the same expectation estimated from the interval's own variance estimate "
        "(mean T * se^2, the scores' mean square: the martingale property makes it equal in expectation, "
        "with far less noise); "
        "`coverage`: of the 95% Wald interval, ± its binomial se. Command: "
        f"`python benchmarks/efficiency.py {' '.join(argv if argv is not None else sys.argv[1:])}`.\n\n"
        + md_table(rows, cols)
    )
    from pathlib import Path

    write_section(args.section + ("-quick" if args.quick else ""), body, Path(args.doc))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
    print(md_table(rows, cols))


if __name__ == "__main__":
    main()
    _ = ROOT
