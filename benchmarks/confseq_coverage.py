"""The anytime-valid confidence sequence of the AIPW estimate: its time-uniform coverage
(``cs_coverage``: the sequence holds the ATE at every look from the first scored unit to T) next to
the Wald interval's coverage at T, and its width at T over the Wald interval's, per design and
scenario.

    python benchmarks/confseq_coverage.py                         # S1-S6, 500 replications, T = 2000
    python benchmarks/confseq_coverage.py --quick                 # S2, 100 replications
    python benchmarks/confseq_coverage.py --scenarios S2,S5 --designs uniform,plugin-neyman
    python benchmarks/confseq_coverage.py --designs student:pretrained --section confseq-student
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import command, md_table, stamp, write_section

import bayesdesign as bd
from bayesdesign.confseq import aipw_confseq
from bayesdesign.diagnostics.coverage import wilson_interval
from bayesdesign.estimation import AIPWResult


def rows_for(scenario: str, designs: list[str], horizon: int, reps: int, seed: int) -> list[dict]:
    t0 = time.time()
    ds = bd.simulate(bd.get_scenario(scenario), designs, horizon=horizon, reps=reps, seed=seed)
    out = []
    for name in designs:
        sel = ds.sel(design=name)
        res = AIPWResult(sel.tau_hat.values, sel.se.values, sel.G.values, sel.scored.values.astype(bool), None)
        cs = aipw_confseq(res, n_star=horizon)
        ratio = (cs.upper[:, -1] - cs.lower[:, -1]) / (2 * 1.959964 * sel.se.values)
        k_cs, k_w = int(sel.cs_covered.sum()), int(sel.covered.sum())
        lo, hi = wilson_interval(k_cs, reps)
        out.append({"scenario": scenario, "design": name, "reps": reps, "wald_coverage_at_T": k_w / reps,
                    "cs_coverage": k_cs / reps, "cs_coverage_95ci": f"[{float(lo):.3f}, {float(hi):.3f}]",
                    "cs_width_over_wald_at_T": float(np.mean(ratio))})
        print(out[-1], flush=True)
    print(f"{scenario}: {time.time() - t0:.0f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--scenarios", default=None)
    ap.add_argument("--designs", default="uniform,plugin-neyman,student:pretrained")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--horizon", "-T", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--section", default="confseq", help="section of docs/benchmarks.md to (re)write")
    args = ap.parse_args()
    scenarios = (args.scenarios or ("S2" if args.quick else "S1,S2,S3,S4,S5,S6")).split(",")
    reps = args.reps or (100 if args.quick else 500)
    designs = [d for d in args.designs.split(",") if d]
    rows = [r for s in scenarios for r in rows_for(s, designs, args.horizon, reps, args.seed)]
    cols = ["scenario", "design", "reps", "wald_coverage_at_T", "cs_coverage", "cs_coverage_95ci",
            "cs_width_over_wald_at_T"]
    table = md_table(rows, cols)
    print(table)
    body = f"""## Anytime-valid confidence sequence (`{command()}`)

{stamp()} T = {args.horizon}, seed {args.seed}. `cs_coverage`: share of replications whose
confidence sequence (`bayesdesign.confseq`, 95%, tuned for T scored units, the whole line before
10 scores) contains the ATE at every look from the first scored unit to T, with its Wilson 95%
interval; `wald_coverage_at_T`: the Wald interval at T alone. `cs_width_over_wald_at_T`: mean
ratio of the sequence's width at T to the Wald interval's (1.55 for the formula at its tuning
point; the small difference comes from the scored units being fewer than T).

{table}
"""
    write_section(args.section, body)


if __name__ == "__main__":
    main()
