"""Coverage of the 95% ATE interval for every design on scenarios S1-S10, with Wilson error bars.

Designs: the baselines (with `clip-smt` and `clip-ogd-sc`), the mixture teacher on the scenario's
shipped prior (`unit-free`; `checkout` on S8, `checkout-score` on S7) with its default rule and
the `:safe`, `:log-odds`, `:sd` and `:reweight` variants (`benchmarks/efficiency.py`), and the shipped student
(`student:pretrained`) where it runs (a scenario it cannot run is skipped with the reason
printed). Every design is scored by the same AIPW estimator on common random numbers.

    python benchmarks/design_coverage.py                 # T = 2000, 500 replications per scenario
    python benchmarks/design_coverage.py --reps 1000     # DESIGN.md asks for >= 1000 for coverage
    python benchmarks/design_coverage.py --quick         # CI: T = 300, 40 replications
    python benchmarks/design_coverage.py --jobs 2        # scenarios in parallel processes (one thread each)
    python benchmarks/design_coverage.py --section coverage-default \
        --designs 'teacher:mixture:{prior},student:pretrained'  # a subset ({prior}: the scenario's prior)

Alongside coverage the table gives each design's MSE ratio to the oracle and its design variance
ratio (the noise-free efficiency figure) and `realized_over_design` (T * MSE over the mean
design variance), from the same runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

from _common import DOC, md_table, stamp, write_section
from efficiency import PRIORS, scenario_designs

from bayesdesign.design import get_scenario, simulate
from bayesdesign.diagnostics.coverage import coverage_table
from bayesdesign.summary import FIELDS

SUMMARY_FIELDS = ("mse_ratio", *(f for f in FIELDS if f.startswith(("design_var", "realized", "score"))))
"""The :func:`~bayesdesign.summary.summarize` fields each row reports beside its coverage."""


def _one(sc, horizon, reps, seed, names, out_dir, batch_size, progress):
    t0 = time.time()
    prior = PRIORS.get(sc, "unit-free")
    names = [n.replace("{prior}", prior) for n in names] if names else scenario_designs(sc, horizon)
    ds = simulate(
        get_scenario(sc),
        names,
        horizon=horizon,
        reps=reps,
        seed=seed,
        keep_units=4 if out_dir else 0,
        batch_size=batch_size,
        progress=progress,
    )
    if out_dir:
        from bayesdesign.io import save_dataset

        save_dataset(ds, Path(out_dir) / f"results-{sc}.nc")
    print(f"{sc} T={horizon}: {time.time() - t0:.0f} s", flush=True)
    return sc, ds.drop_dims([d for d in ("unit_rep", "t") if d in ds.dims])


def run(scenarios, horizon, reps, seed, names, out_dir=None, batch_size=1, progress=False, jobs=1):
    """Simulate every scenario (``jobs`` at a time, in spawned processes with one thread each);
    returns the coverage table and the per-design summaries."""
    from bayesdesign.summary import summarize

    args = [(sc, horizon, reps, seed, names, out_dir, batch_size, progress) for sc in scenarios]
    if jobs > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with mp.get_context("spawn").Pool(jobs) as pool:
            results = dict(pool.starmap(_one, args))
    else:
        results = dict(_one(*a) for a in args)
    results = {sc: results[sc] for sc in scenarios}
    return coverage_table(results), {sc: summarize(ds) for sc, ds in results.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run for CI (T = 300, 40 replications)")
    ap.add_argument("--reps", type=int, default=None, help="replications per scenario (default 500; quick 40)")
    ap.add_argument("--horizon", type=int, default=None, help="units per experiment (default 2000; quick 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenarios", default=",".join(f"S{i}" for i in range(1, 11)))
    ap.add_argument("--designs", default=None, help="comma-separated design names (default: see above); "
                    "'{prior}' stands for the scenario's shipped prior")
    ap.add_argument("--batch-size", type=int, default=1, help="refit the designs every this many units")
    ap.add_argument("--out-dir", default=None, help="also save each scenario's results.nc (for `bayesdesign report`)")
    ap.add_argument("--doc", default=str(DOC), help="markdown file to write the section into")
    ap.add_argument("--json", default=None, help="also write the rows (every column above) as JSON here")
    ap.add_argument("--jobs", type=int, default=1, help="scenarios run in parallel processes")
    ap.add_argument("--section", default="coverage", help="section of the markdown file to write (a subset "
                    "of designs rerun beside the full table goes to its own section)")
    args = ap.parse_args(argv)
    reps = args.reps or (40 if args.quick else 500)
    horizon = args.horizon or (300 if args.quick else 2000)
    names = args.designs.split(",") if args.designs else None
    t0 = time.time()
    table, summaries = run(
        args.scenarios.split(","), horizon, reps, args.seed, names, args.out_dir, args.batch_size, jobs=args.jobs
    )
    rows = [
        {
            "scenario": r.scenario,
            "design": r.design,
            "reps": int(r.reps),
            "covered": int(r.covered),
            "coverage": r.coverage,
            "wilson 95%": f"[{r.lower:.3f}, {r.upper:.3f}]",
            "flag": r.flag or "",
            **{k: float(summaries[r.scenario].loc[r.design, k]) for k in SUMMARY_FIELDS},
        }
        for r in table.itertuples()
    ]
    cols = ["scenario", "design", "coverage", "wilson 95%", "flag", *SUMMARY_FIELDS]
    flagged = [f"{r['design']} on {r['scenario']}" for r in rows if r["flag"]]
    title = "Interval coverage" + ("" if args.section == "coverage" else f" ({args.section})")
    body = (
        f"## {title} (`benchmarks/design_coverage.py`)\n\n"
        f"{stamp()} T = {horizon}, {reps} replications per scenario, seed {args.seed}, designs refitted every "
        f"{args.batch_size} unit(s); "
        f"{time.time() - t0:.0f} s in all. Coverage of the 95% AIPW Wald interval with its Wilson 95% interval; "
        "`flag`: the Wilson interval excludes 0.95 (`low`: undercoverage beyond Monte Carlo error). Target: "
        "[0.93, 0.97] for every design and scenario (DESIGN.md section 5). `mse_ratio`: MSE over the oracle's on "
        "the same seeds; `design_var_ratio`: the variance the realised allocations imply over V*; "
        "`realized_over_design`: T * MSE over the mean design variance, `realized_over_design_se` its Monte "
        "Carlo standard error; `realized_over_design_cv` (± `realized_over_design_cv_se`): the same ratio with "
        "the oracle-nuisance control variate (bayesdesign.efficiency.oracle_error_control; unbiased, several "
        "times less noisy); `score_over_design` (± `score_over_design_se`): the same expectation "
        "estimated from the scores' mean square (mean T * se^2; equal in expectation by the martingale "
        "property, far less noisy). Common random numbers make the cells of one scenario share their "
        "Monte Carlo error. Command: "
        f"`python benchmarks/design_coverage.py {' '.join(argv if argv is not None else sys.argv[1:])}`.\n\n"
        + md_table(rows, cols)
        + ("\n\nFlagged: " + ", ".join(flagged) + "." if flagged else "\n\nNo cell flagged.")
    )
    write_section(args.section + ("-quick" if args.quick else ""), body, Path(args.doc))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
    print(md_table(rows, cols))


if __name__ == "__main__":
    main()
