"""Distillation: trace throughput by teacher and worker count, imitation by history length (trained
against untrained), and the student's design against its teacher's.

    python benchmarks/distil.py                 # 64 tasks x 500 units per throughput row, 200 replications
    python benchmarks/distil.py --quick         # CI: small sizes
    python benchmarks/distil.py --student DIR   # another checkpoint (default: the shipped one)

Throughput rows time ``generate_traces`` end to end (process start excluded; compilation, Ray
start-up and the workers' compilation included) on the prior ``beta1``; ``cpu_s`` is the driver's
CPU time plus, with Ray, that of its worker processes (``resource.RUSAGE_CHILDREN`` does not see
Ray workers, so with workers > 1 it is the driver's only and says so). The machine's load average at
the start of each row is printed: on a shared machine wall-clock speed-ups mean little.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import md_table, stamp, write_section

import bayesdesign as bd
from bayesdesign.student.measure import imitation_error
from bayesdesign.traces import generate_traces

NUTS_FAST = {"num_samples": 150, "warm_warmup": 50}


def throughput(rows_spec: list[tuple], horizon: int, refit: int, folder: Path) -> list[dict]:
    rows = []
    for teacher, tasks, workers, kwargs in rows_spec:
        load = os.getloadavg()[0]
        out = folder / f"tp-{teacher}-{workers}-{len(rows)}.nc"
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        generate_traces("beta1", teacher, tasks, horizon, 8, out, refit_every=refit,
                        chunk_tasks=max(1, tasks // (2 * workers)), seed=5, teacher_kwargs=dict(kwargs),
                        workers=workers)
        wall = time.perf_counter() - t0
        rows.append({"teacher": teacher, "settings": ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults",
                     "tasks": tasks, "units": horizon, "workers": workers, "wall_s": round(wall, 1),
                     "driver_cpu_s": round(time.process_time() - cpu0, 1),
                     "tasks_per_min": round(60 * tasks / wall, 2), "load_avg": round(load, 1)})
        print(rows[-1], flush=True)
    return rows


def imitation(student: str, tasks: int, folder: Path) -> list[dict]:
    held = generate_traces("smoothness-mixture", "mixture", tasks, 1000, 8, folder / "held.nc", refit_every=10,
                           seed=7)
    res = imitation_error(student, held, max_examples=400)
    rows = []
    for b in ("n<100", "100<=n<500", "n>=500"):
        rows.append({"history": b, "pi_mae": res[f"pi_mae[{b}]"], "pi_mae_untrained": res[f"pi_mae_untrained[{b}]"],
                     "gate_tv": res[f"gate_tv[{b}]"], "gate_tv_untrained": res[f"gate_tv_untrained[{b}]"]})
    rows.append({"history": "all", "pi_mae": res["pi_mae"], "pi_mae_untrained": res["pi_mae_untrained"],
                 "gate_tv": res["gate_tv"], "gate_tv_untrained": res["gate_tv_untrained"]})
    return rows


def designs(student: str, reps: int, horizon: int) -> list[dict]:
    env = bd.models.PriorTasks("smoothness-mixture")
    ds = bd.simulate(env, ["uniform", "plugin-neyman", "teacher:mixture:smoothness-mixture", f"student:{student}"],
                     horizon=horizon, reps=reps, seed=3)
    df = bd.summary.summarize(ds)
    cols = ("design_var_ratio", "mean_abs_pi_error", "mse_ratio", "coverage")
    return [{"design": name, **{k: float(df.loc[name, k]) for k in cols}} for name in df.index]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--student", default="pretrained")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    q = args.quick
    horizon, refit = (100, 25) if q else (500, 25)
    n = 8 if q else 64
    spec = [("conjugate", n, 1, {}), ("conjugate", n, 2, {}), ("svi", n // 2, 1, {}),
            ("nuts", n // 2, 1, NUTS_FAST), ("nuts", n // 2, 2, NUTS_FAST)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tp = throughput(spec, horizon, refit, folder)
        im = imitation(args.student, 8 if q else 64, folder)
    dz = designs(args.student, 20 if q else 200, 200 if q else 500)
    for r in (tp, im, dz):
        print(md_table(r, list(r[0])))
    body = f"""## Distillation (`benchmarks/distil.py{' --quick' if q else ''}`)

{stamp()}

**Trace throughput** on `beta1` ({horizon} units per task, a refit every {refit}; Ray started for the
workers > 1 rows and included in the time). The machine is shared: read `load_avg` (load average
at the row's start, 2 cores) before comparing rows.

{md_table(tp, list(tp[0]))}

**Imitation by history length**, student `{args.student}` against the mixture teacher on held-out
traces of `smoothness-mixture` (seed 7, refit every 10 units): trained, and with its learned
corrections zeroed (`pi_mae_untrained`: the conjugate layer alone).

{md_table(im, list(im[0]))}

**Designs** on tasks from `smoothness-mixture` (T = {200 if q else 500}, {20 if q else 200} replications):

{md_table(dz, list(dz[0]))}
"""
    if not args.no_write:
        write_section("distil", body)


if __name__ == "__main__":
    main()
