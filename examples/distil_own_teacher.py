"""Distil your own teacher: a prior file -> teacher traces -> a student -> measure it -> run it as a design.

python examples/distil_own_teacher.py [--quick] [--out DIR]

The same steps on the command line are in docs/distil_own_teacher.md. Quick mode trains for a few
seconds on a few tasks: it shows the pipeline, not a good student.
"""

import argparse
import tempfile
import time
from pathlib import Path

PRIOR = """\
name: order-value
description: Order value (dollars) by customer age; the arms' spread may differ with age.
covariates:
  - {name: age, low: 18, high: 80}
outcome:
  family: gaussian
arms:
  shared:
    mean:   {terms: 6, beta: 1.5, scale: 5.0, offset: 40.0}
    log_sd: {terms: 6, beta: 1.5, scale: 0.6, offset: 2.3}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    ap.add_argument("--out", default=None, help="working folder (default: a temporary folder)")
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="distil-own-"))
    out.mkdir(parents=True, exist_ok=True)

    import bayesdesign as bd
    from bayesdesign.models import PriorTasks
    from bayesdesign.student import distil, load_policy
    from bayesdesign.student.measure import imitation_error
    from bayesdesign.teachers import make_teacher
    from bayesdesign.traces import generate_traces

    started = time.time()
    prior = out / "order-value.yaml"
    prior.write_text(PRIOR)

    # 1. teacher traces: tasks drawn from the prior, the conjugate teacher as their design, its labels
    #    at Q query covariates every `refit_every` units. A held-out file with another seed.
    n_tasks, horizon = (32, 100) if args.quick else (2000, 1000)
    chunk = 32 if args.quick else 256  # tasks per chunk (the unit of resumption; same shapes compile once)
    train = generate_traces(prior, "conjugate", n_tasks, horizon, 8, out / "train.nc", refit_every=20,
                            chunk_tasks=chunk, seed=0)
    heldout = generate_traces(prior, "conjugate", max(32, n_tasks // 10), horizon, 8, out / "heldout.nc",
                              refit_every=20, chunk_tasks=chunk, seed=1)
    print(f"traces: {train} ({n_tasks} tasks x {horizon} units), held out: {heldout}")

    # 2. distillation (resumes from out/student if rerun with the same arguments)
    steps, batch = (10, 8) if args.quick else (3000, 32)
    res = distil([train], out / "student", steps=steps, batch_size=batch, warmup=min(100, steps // 5), seed=0,
                 val_every=steps, val_examples=64 if args.quick else 2048, progress=False)
    m = res.metrics
    print(f"student: {res.path} after {m['step']} steps: validation mean |pi_S - pi_T| {m['val_pi_mae']:.4f}")

    # 3. imitation error on tasks the student never saw
    err = imitation_error(res.path, heldout, max_examples=200 if args.quick else 1000)
    print(f"held-out imitation error mean |pi_S - pi_T|: {err['pi_mae']:.4f} (burn-in and clip applied)")

    # 4. the student as a design, next to its teacher and complete randomization, on tasks from the prior
    reps = 10 if args.quick else 300
    teacher = make_teacher("conjugate", prior)  # the design "teacher:conjugate:PRIOR_FILE"
    student = load_policy(res.path, prior=prior)  # the design "student:STUDENT_DIR"
    teacher.name, student.name = "teacher (conjugate)", "student"
    designs = ["uniform", teacher, student]
    ds = bd.simulate(PriorTasks(prior), designs, horizon=horizon, reps=reps, seed=2)
    print()
    print(bd.summary.format_table(bd.summary.summarize(ds), f"tasks from {prior.name}: T = {horizon}, {reps} reps"))
    print(f"\ndone in {time.time() - started:.0f} s; files in {out}")


if __name__ == "__main__":
    main()
