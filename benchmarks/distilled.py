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
import xarray as xr
from _common import md_table, stamp, write_section

import bayesdesign as bd
from bayesdesign.examples_models import REVENUE_PRIOR
from bayesdesign.student.checkpoint import load_student, read_config, save_student
from bayesdesign.student.measure import imitation_error, zero_corrections
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


TEACHER = "teacher:nuts (refit every 25)"


def teacher_run(label: str, reps: int, horizon: int, seed: int, cache: Path | None) -> xr.Dataset:
    """The NUTS teacher as a design (the slow part), kept in ``cache`` when given: the same seed
    gives the same tasks and units in a later run, so the comparison stays paired."""
    path = None if cache is None else cache / f"{label}-nuts-{reps}-{horizon}-{seed}.nc"
    if path is not None and path.is_file():
        return xr.open_dataset(path).load()
    teacher = make_teacher("nuts", CASES[label][0], refit_every=25, seed=seed)
    teacher.name = TEACHER
    ds = bd.simulate(bd.models.PriorTasks(CASES[label][0]), [teacher], horizon=horizon, reps=reps, seed=seed,
                     keep_units=0).drop_sel(design="oracle")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_netcdf(path)
    return ds


def untrained_copy(student: str, folder: Path) -> Path:
    """The student with its learned corrections zeroed (the working model's conjugate teacher), as
    a checkpoint folder: the design training started from."""
    st = load_student(resolve_student_path(student))
    return save_student(folder, zero_corrections(st.model), dict(st.meta))


def designs(label: str, reps: int, horizon: int, seed: int, cache: Path | None = None) -> tuple[list[dict], dict]:
    prior, student, extra, _ = CASES[label]
    with tempfile.TemporaryDirectory() as tmp:
        untrained = untrained_copy(student, Path(tmp) / "untrained")
        names = ["uniform", "plugin-neyman", *extra, f"student:{untrained}", f"student:{student}"]
        rest = bd.simulate(bd.models.PriorTasks(prior), names, horizon=horizon, reps=reps, seed=seed, keep_units=0)
    rest = rest.assign_coords(design=[("untrained copy" if n == f"student:{untrained}" else n)
                                      for n in rest.design.values])
    nuts = teacher_run(label, reps, horizon, seed, cache)
    np.testing.assert_allclose(nuts.ate.values, rest.ate.values, rtol=1e-5)  # the same tasks: paired
    ds = xr.concat([rest, nuts], dim="design", data_vars="minimal", coords="minimal", compat="override")
    teacher = TEACHER
    df = bd.summary.summarize(ds)
    ratio = ds.design_var / ds.v_star
    diff = (ratio.sel(design=f"student:{student}") - ratio.sel(design=teacher)).values
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
    ap.add_argument("--cache", type=Path, help="keep the NUTS teacher's runs here (the slow part) for reruns")
    ap.add_argument("--teacher-only", action="store_true", help="only run (and cache) the NUTS teacher designs")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    ap.add_argument("--models", default=",".join(CASES),
                    help="comma-separated subset of the students (the section is written only for all of them)")
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",")]
    unknown = sorted(set(models) - set(CASES))
    if unknown:
        ap.error(f"--models: unknown {', '.join(unknown)}; expected some of {', '.join(CASES)}")
    reps, horizon = (8, 100) if args.quick else (args.reps, args.horizon)
    if args.teacher_only:
        for label in models:
            teacher_run(label, reps, horizon, args.seed, args.cache)
        return
    held = {"revenue": args.heldout_revenue, "student-t": args.heldout_student_t}
    im, dz, paired, training = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for label in models:
            prior, student, _, seed = CASES[label]
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
            rows, pd = designs(label, reps, horizon, args.seed, args.cache)
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
teacher refits every 25 units as in its traces; `untrained copy` is the student with its learned
corrections zeroed (the working model's conjugate teacher, where training started):

{md_table(dz, list(dz[0]))}

Student less NUTS teacher, design variance ratio (paired over replications):

{md_table(paired, list(paired[0]))}
"""
    if not args.no_write and len(models) == len(CASES):
        write_section("distilled", body)


if __name__ == "__main__":
    main()
