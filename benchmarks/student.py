"""The student: imitation error by history length, gate error, decision latency and throughput,
speed-up over each teacher, and the student design's MSE ratio and coverage on S1-S6.

    python benchmarks/student.py                       # the shipped student, 500 replications, T = 2000
    python benchmarks/student.py --student DIR         # another checkpoint
    python benchmarks/student.py --quick               # CI: small sizes
    python benchmarks/student.py --part speed          # only imitation and speed (or: --part designs)

Held-out traces are generated here (another seed than the training traces: 7) with refit points
every 10 units, so that histories of 10, 50, 200 and 1000 units are all labelled.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import DOC, md_table, stamp, write_section

import bayesdesign as bd
from bayesdesign.student.checkpoint import load_student
from bayesdesign.student.data import TraceDataset, load_traces
from bayesdesign.student.distil import _validation_batches, evaluate
from bayesdesign.student.policy import StudentPolicy, resolve_student_path
from bayesdesign.teachers import make_teacher
from bayesdesign.traces import generate_traces

LENGTHS = (10, 50, 200, 1000)


def imitation_by_length(student, traces: Path, per_length: int) -> list[dict]:
    """Mean |pi_S - pi_T| (clipped as the designs use them, and raw) and gate TV at each history length."""
    arrays, _ = load_traces(traces, student.scaling)
    full = TraceDataset([arrays])
    rows = []
    for n in LENGTHS:
        step = int(np.flatnonzero(arrays.n_obs == n)[0])
        sub = TraceDataset([arrays])
        sub.index = full.index[full.index[:, 2] == step]
        res = evaluate(student.model, sub, _validation_batches(sub, 50, per_length, 0), student.teacher_config)
        cp = arrays.class_prob[:, step]
        rows.append({"history": n, "tasks": len(sub), "pi_mae": res["pi_mae"], "pi_mae_raw": res["pi_mae_raw"],
                     "gate_tv": res["gate_tv"], "teacher_top_class_prob": float(cp.max(-1).mean())})
        print(rows[-1], flush=True)
    return rows


def _history(policy_like, n: int, rng):
    env = bd.get_scenario("S2")
    x = env.sample_covariates(rng, n).reshape(1, n, 1)
    a = (rng.uniform(size=(1, n)) < 0.5).astype(np.int8)
    y = np.where(a == 1, env.sample_outcomes(rng, x.reshape(-1, 1), 1), env.sample_outcomes(rng, x.reshape(-1, 1), 0))
    return x, a, y.reshape(1, n)


def _percentiles(times) -> tuple[float, float]:
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def student_latency(student, n: int, repeats: int, runs: int = 5) -> dict:
    """One thread, batch 1: the decision from the state, and the decision plus appending the unit
    (one step of an experiment), over ``runs`` histories of ``n`` units advanced ``repeats // runs``
    steps each (so the history stays within 20% of ``n`` at ``repeats = n``)."""
    torch.set_num_threads(1)
    policy = StudentPolicy(student)
    decide, both = [], []
    steps = max(repeats // runs, 1)
    for run in range(runs):
        rng = np.random.default_rng([n, run])
        x, a, y = _history(policy, n + steps, rng)
        state = policy.update(policy.init(1), x[:, :n], a[:, :n], y[:, :n], np.full((1, n), 0.5))
        for i in range(n, n + steps):
            xi = x[:, i : i + 1]
            t0 = time.perf_counter()
            p = policy.propensity_at(state, xi)
            t1 = time.perf_counter()
            state = policy.update(state, xi, a[:, i : i + 1], y[:, i : i + 1], p)
            t2 = time.perf_counter()
            decide.append(t1 - t0)
            both.append(t2 - t0)
    d50, d99 = _percentiles(decide)
    b50, b99 = _percentiles(both)
    return {"history": n, "backend": "engine" if policy._uses_engine(1) else "torch", "decide_p50_ms": d50,
            "decide_p99_ms": d99, "decide_append_p50_ms": b50, "decide_append_p99_ms": b99}


def student_throughput(student, n: int, batch: int, queries: int) -> list[dict]:
    """Decisions per second of each backend: ``batch`` replications in lockstep (the runner's use),
    and many queries of one history in one pass."""
    rng = np.random.default_rng(1)
    xs, as_, ys = zip(*(_history(None, n, rng) for _ in range(batch)), strict=True)
    x, a, y = np.concatenate(xs), np.concatenate(as_), np.concatenate(ys)
    xq_lock, xq_many = rng.uniform(size=(batch, 1, 1)), rng.uniform(size=(1, queries, 1))
    rows = []
    for backend in ("engine", "torch"):
        policy = StudentPolicy(student, backend=backend)
        rates = []
        for xs_, xq in ((x, xq_lock), (x[:1], xq_many)):
            b = xs_.shape[0]
            state = policy.update(policy.init(b), xs_, a[:b], y[:b], np.full((b, n), 0.5))
            policy.propensity_at(state, xq)
            t0 = time.perf_counter()
            for _ in range(20):
                policy.propensity_at(state, xq)
            rates.append(20 * xq.shape[0] * xq.shape[1] / (time.perf_counter() - t0))
        rows.append({"backend": backend, "history": n, "lockstep_batch": batch,
                     "lockstep_decisions_per_s": f"{rates[0]:,.0f}", "queries_per_pass": queries,
                     "query_decisions_per_s": f"{rates[1]:,.0f}"})
    return rows


def teacher_decision_s(backend: str, prior: str, n: int, repeats: int) -> float:
    """Median seconds for one decision of a teacher at a history of ``n`` units, batch 1. The
    sampling teachers refit (warm start) before deciding: their posterior must see the new unit."""
    teacher = make_teacher(backend, prior, **({"max_units": 1024} if backend in ("nuts", "svi") else {}))
    rng = np.random.default_rng(2)
    x, a, y = _history(teacher, n, rng)
    xq = np.full((1, 1, 1), 0.3)
    times = []
    if backend in ("nuts", "svi"):
        from teachers_sampling import _filled

        state, _ = teacher.refit(_filled(teacher, x, a.astype(np.int32), y), n - 1, warm=False)
        teacher.refit(state, n, warm=True)  # compile
        for _ in range(repeats):
            t0 = time.perf_counter()
            fitted, _ = teacher.refit(state, n, warm=True)
            teacher.decide(fitted, xq)
            times.append(time.perf_counter() - t0)
    else:
        state = teacher.update(teacher.init(1), x.astype(float), a, y, np.full((1, n), 0.5))
        teacher.propensity_at(state, xq)
        for _ in range(repeats):
            t0 = time.perf_counter()
            teacher.propensity_at(state, xq)
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def designs(student_dir: str, horizon: int, reps: int) -> list[dict]:
    """The student against complete randomization and the oracle on S1-S6 (benchmarks/design_coverage.py's runner)."""
    from design_coverage import run

    name = f"student:{student_dir}"
    table, summaries = run(["S1", "S2", "S3", "S4", "S5", "S6"], horizon, reps, 0, ["uniform", name, "oracle"])
    return [
        {"scenario": r.scenario, "design": "student" if r.design == name else r.design,
         "mse_ratio": float(summaries[r.scenario].loc[r.design, "mse_ratio"]),
         "design_var_ratio": float(summaries[r.scenario].loc[r.design, "design_var_ratio"]),
         "coverage": f"{r.coverage:.3f} [{r.lower:.3f}, {r.upper:.3f}]"}
        for r in table.itertuples()
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="pretrained", help="checkpoint folder, or 'pretrained' (the shipped one)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--part", choices=["all", "speed", "designs"], default="all",
                    help="'speed': imitation, latency, throughput, speed-ups; 'designs': S1-S6 (own doc sections)")
    ap.add_argument("--doc", default=str(DOC))
    args = ap.parse_args(argv)
    reps = args.reps or (20 if args.quick else 500)
    horizon = 300 if args.quick else 2000
    folder = resolve_student_path(args.student) if args.student == "pretrained" else Path(args.student)
    student = load_student(folder)
    load0 = os.getloadavg()[0]
    t_all = time.time()

    suffix = "-quick" if args.quick else ""
    if args.part in ("all", "speed"):
        body = speed_section(args, student, load0, t_all)
        write_section("student-speed" + suffix, body, Path(args.doc))
        print(body)
    if args.part in ("all", "designs"):
        t0 = time.time()
        rows = designs(str(folder), horizon, reps)
        body = (
            "### Student design (`benchmarks/student.py --part designs`)\n\n"
            f"{stamp()} {time.time() - t0:.0f} s. Student `{args.student}`; T = {horizon}, {reps} replications, "
            "seed 0, common random numbers across designs; oracle = 1; coverage of the 95% AIPW interval with "
            "its Wilson 95% interval. Every design at full size: the coverage section "
            "(`benchmarks/design_coverage.py`)."
            "\n\n"
            + md_table(rows, ["scenario", "design", "mse_ratio", "design_var_ratio", "coverage"])
        )
        write_section("student-designs" + suffix, body, Path(args.doc))
        print(body)


def speed_section(args, student, load0: float, t_all: float) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        held = generate_traces(student.spec, "mixture", tasks=40 if args.quick else 400, horizon=1010,
                               queries=16, out=Path(tmp) / "heldout.nc", refit_every=10, seed=7)
        imitation = imitation_by_length(student, held, 40 if args.quick else 400)

    latency = [student_latency(student, n, 50 if args.quick else 1000) for n in (100, 1000)]
    for r in latency:
        print(r, flush=True)
    throughput = student_throughput(student, 1000, 64 if args.quick else 256, 256 if args.quick else 1024)
    print(throughput, flush=True)
    torch.set_num_threads(1)
    decide_s, step_s = (latency[1][k] / 1e3 for k in ("decide_p50_ms", "decide_append_p50_ms"))
    speed = []
    teachers = [("mixture", "smoothness-mixture"), ("conjugate", "beta1")]
    if not args.quick:
        teachers += [("svi", "beta1"), ("nuts", "beta1")]
    for backend, prior in teachers:
        s = teacher_decision_s(backend, prior, 1000, 5 if backend in ("nuts", "svi") else 100)
        speed.append({"teacher": f"{backend}:{prior}", "teacher_decision_ms": 1e3 * s,
                      "speedup_decision": f"{s / decide_s:,.3g}x", "speedup_step": f"{s / step_s:,.3g}x"})
        print(speed[-1], flush=True)
    meta = student.meta
    return (
        "## Student (`benchmarks/student.py`)\n\n"
        f"{stamp()} {time.time() - t_all:.0f} s. Load average (1 min) at start and end: {load0:.1f}, "
        f"{os.getloadavg()[0]:.1f} (2 cores; above 1, other jobs shared them and times are upper bounds).\n\n"
        f"Student: `{args.student}` (teacher `{meta.get('teacher')}`, prior `{meta['prior']['name']}`, "
        f"{meta['metrics'].get('step')} training steps).\n\n"
        "**Imitation** on held-out traces of the mixture teacher (another seed than the training traces), "
        "mean |pi_student - pi_teacher| with the teacher's burn-in and clip applied to both (`pi_mae`) and "
        "unclipped (`pi_mae_raw`); `gate_tv`: total variation between the gate and the teacher's class posterior; "
        "`teacher_top_class_prob`: how concentrated the teacher's class posterior is at that length.\n\n"
        + md_table(imitation, ["history", "tasks", "pi_mae", "pi_mae_raw", "gate_tv", "teacher_top_class_prob"])
        + "\n\n**Latency**, one CPU thread, batch 1, one query, cached history (`decide`: the decision from the "
        "state; `decide_append`: the decision plus appending the unit to the cache, i.e. one step of an "
        "experiment), 1000 steps: 5 histories of the given length, each advanced 200 units; `backend`: the one "
        "`StudentPolicy` picks at batch 1 (the compiled engine).\n\n"
        + md_table(latency, ["history", "backend", "decide_p50_ms", "decide_p99_ms", "decide_append_p50_ms",
                             "decide_append_p99_ms"])
        + "\n\n**Throughput**: replications advanced in lockstep (one query each), and many queries of one "
        "history in one pass.\n\n"
        + md_table(throughput, ["backend", "history", "lockstep_batch", "lockstep_decisions_per_s",
                                "queries_per_pass", "query_decisions_per_s"])
        + "\n\n**Speed-up** over the teachers, one decision at a history of 1000 units, batch 1 (the sampling "
        "teachers refit, warm-started, before deciding: their posterior must include the last unit). "
        f"`speedup_decision`: against the student's decision p50 ({1e3 * decide_s:.3f} ms); `speedup_step`: "
        f"against its decision plus append p50 ({1e3 * step_s:.3f} ms), which is what the student does per unit "
        "as the teacher's refit is.\n\n"
        + md_table(speed, ["teacher", "teacher_decision_ms", "speedup_decision", "speedup_step"])
    )


if __name__ == "__main__":
    main()
