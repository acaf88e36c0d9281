"""Students distilled from NUTS teachers: imitation on held-out NUTS traces (trained against the
untrained copy, by history length) and the design against its teacher's on tasks from the prior.

    python benchmarks/distilled.py --heldout-revenue R.nc --heldout-student-t S.nc   # the figures of docs
    python benchmarks/distilled.py --quick                                            # small sizes

The held-out traces are NUTS traces from seeds not used in training (``bayesdesign traces
--teacher nuts -N 128 -T 500 -Q 8 --refit-every 25 --seed 202`` for revenue, ``--seed 102`` for
``student-t``; without ``--heldout-*`` the script makes small ones). The teacher as a design is the
NUTS teacher of the traces (refit every 25 units, the same burn-in, floor and clip); the student
decides at every unit. The paired difference of design variance ratios (student less teacher, per
replication on common random numbers) comes with its standard error.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import md_table, stamp, write_section

import bayesdesign as bd
from bayesdesign.examples_models import REVENUE_PRIOR
from bayesdesign.student.checkpoint import read_config
from bayesdesign.student.measure import imitation_error
from bayesdesign.student.policy import resolve_student_path
from bayesdesign.teachers import make_teacher
from bayesdesign.traces import generate_traces

CASES = {  # label: (prior, shipped student, extra designs, held-out seed)
    "revenue": (str(REVENUE_PRIOR), "pretrained-revenue", [], 202),
    "student-t": ("student-t", "pretrained-student-t", ["teacher:conjugate:student-t"], 102),
}
BINS = ("n<100", "100<=n<500", "n>=500")


def imitation(label: str, student: str, heldout: Path) -> list[dict]:
    res = imitation_error(student, heldout, max_examples=2000)
    rows = [{"model": label, "history": b, "pi_mae": res[f"pi_mae[{b}]"],
             "pi_mae_untrained": res[f"pi_mae_untrained[{b}]"]} for b in BINS if f"pi_mae[{b}]" in res]
    rows.append({"model": label, "history": "all", "pi_mae": res["pi_mae"],
                 "pi_mae_untrained": res["pi_mae_untrained"]})
    return rows


def designs(label: str, reps: int, horizon: int, seed: int) -> tuple[list[dict], dict]:
    prior, student, extra, _ = CASES[label]
    teacher = make_teacher("nuts", prior, refit_every=25, seed=seed)
    teacher.name = "teacher:nuts (refit every 25)"
    names = ["uniform", "plugin-neyman", *extra, f"student:{student}"]
    ds = bd.simulate(bd.models.PriorTasks(prior), [*names[:-1], teacher, names[-1]], horizon=horizon, reps=reps,
                     seed=seed)
    df = bd.summary.summarize(ds)
    ratio = ds.design_var / ds.v_star
    diff = (ratio.sel(design=f"student:{student}") - ratio.sel(design=teacher.name)).values
    paired = {"model": label, "student_minus_teacher": float(diff.mean()),
              "se": float(diff.std(ddof=1) / np.sqrt(len(diff)))}
    cols = ("design_var_ratio", "mean_abs_pi_error", "coverage")
    return [{"model": label, "design": n, **{k: float(df.loc[n, k]) for k in cols}} for n in df.index], paired


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--heldout-revenue", type=Path)
    ap.add_argument("--heldout-student-t", type=Path)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--horizon", type=int, default=500)
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    reps, horizon = (8, 100) if args.quick else (args.reps, args.horizon)
    held = {"revenue": args.heldout_revenue, "student-t": args.heldout_student_t}
    im, dz, paired, training = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (prior, student, _, seed) in CASES.items():
            path = held[label]
            if path is None:
                path = generate_traces(prior, "nuts", 8 if args.quick else 64, 500, 8, Path(tmp) / f"{label}.nc",
                                       refit_every=25, seed=seed, workers=1)
            meta = read_config(resolve_student_path(student))
            tr = meta["training"]
            training.append({"model": label, "traces": ", ".join(f"{t['tasks']} x {t['horizon']} (seed {t['seed']})"
                                                                   for t in meta["traces"]),
                             "steps": tr["steps"], "batch": tr["batch_size"],
                             "train_s": meta.get("train_seconds", float("nan")),
                             "working_model": (meta.get("working_prior") or meta["prior"]).get("name")})
            im += imitation(label, student, path)
            rows, pd = designs(label, reps, horizon, args.seed)
            dz += rows
            paired.append(pd)
            for r in (im, dz, [pd]):
                print(md_table(r[-1:], list(r[0])), flush=True)
    body = f"""## Students distilled from NUTS (`benchmarks/distilled.py{' --quick' if args.quick else ''}`)

{stamp()}

The shipped students `pretrained-revenue` (the user model `bayesdesign.examples_models.revenue`,
working model `revenue-working`) and `pretrained-student-t` (the `student-t` prior, its own
conjugate layer), each distilled from NUTS traces (CPU, one thread):

{md_table(training, list(training[0]))}

**Imitation** on held-out NUTS traces (seeds not used in training): mean |pi_student - pi_teacher|
with burn-in and clip applied, trained and with the learned corrections zeroed (`pi_mae_untrained`:
the working model's conjugate teacher alone).

{md_table(im, list(im[0]))}

**Designs** on tasks from each prior (T = {horizon}, {reps} replications, seed {args.seed}); the NUTS
teacher refits every 25 units as in its traces:

{md_table(dz, list(dz[0]))}

Student less NUTS teacher, design variance ratio (paired over replications):

{md_table(paired, list(paired[0]))}
"""
    if not args.no_write:
        write_section("distilled", body)


if __name__ == "__main__":
    main()
