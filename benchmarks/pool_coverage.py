"""Coverage pooled over runs of `design_coverage.py` on different seeds (independent replications).

All designs of one `design_coverage.py` run share common random numbers, so within a scenario
their coverages move together: one unlucky draw of tasks and outcomes flags every design at
once. Runs on other seeds are independent; pooling them gives each (scenario, design) cell
`sum reps` replications (DESIGN.md asks for at least 1000 for coverage) and a Wilson interval
on the pooled count.

    python benchmarks/pool_coverage.py --reps 500 \\
        seed0-a.json,seed0-b.json seed1.json      # each argument: the JSON rows of one seed

An argument lists the `--json` files of one seed; where several of them have a row for the same
(scenario, design), the later file's row is used (a subset of designs rerun after a change).
A row without its own `reps` (and `covered`) count holds `--reps` replications.
`score_over_design` is averaged over the runs that report it (those made since it exists).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _common import DOC, md_table, stamp, write_section

from bayesdesign.diagnostics.coverage import NOMINAL, wilson_interval


def read_run(files: list[str]) -> dict[tuple[str, str], dict]:
    """The rows of one seed by (scenario, design), later files overriding earlier ones."""
    rows = {}
    for name in files:
        path = Path(name)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"{path}: cannot read the JSON rows of design_coverage.py --json ({err})") from err
        for i, row in enumerate(data):
            missing = {"scenario", "design", "coverage"} - set(row)
            if missing:
                raise SystemExit(f"{path}: row {i} lacks {sorted(missing)} (expected design_coverage.py --json rows)")
            rows[(row["scenario"], row["design"])] = row
    return rows


def _mean(values) -> float:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else float("nan")


def _pooled(have: list[dict], key: str) -> dict:
    """``key`` and ``key_se`` pooled over the runs that report them: the mean, and the se of that mean."""
    ses = [r[key + "_se"] for r in have if r.get(key + "_se") is not None]
    return {
        key: _mean([r.get(key) for r in have]),
        key + "_se": float(np.sqrt(np.sum(np.square(ses))) / len(ses)) if ses else float("nan"),
    }


def pool(runs: list[dict], reps: int) -> list[dict]:
    """One row per (scenario, design) found in any run, in the order of first appearance."""
    keys = list(dict.fromkeys(k for run in runs for k in run))
    out = []
    for sc, design in keys:
        have = [run[(sc, design)] for run in runs if (sc, design) in run]
        counts = [(r.get("covered", round(r["coverage"] * r.get("reps", reps))), r.get("reps", reps)) for r in have]
        covered, n = (int(sum(v)) for v in zip(*counts, strict=True))
        lo, hi = (float(v) for v in wilson_interval(covered, n))
        out.append(
            {
                "scenario": sc,
                "design": design,
                "coverage by seed": " / ".join(
                    f"{run[(sc, design)]['coverage']:.3f}" if (sc, design) in run else "-" for run in runs
                ),
                "reps": n,
                "coverage": covered / n,
                "wilson 95%": f"[{lo:.3f}, {hi:.3f}]",
                "flag": "low" if hi < NOMINAL else "high" if lo > NOMINAL else "",
                "realized_over_design": _mean([r.get("realized_over_design") for r in have]),
                **_pooled(have, "realized_over_design_cv"),
                **_pooled(have, "score_over_design"),
            }
        )
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="per seed: comma-separated JSON files of design_coverage.py --json")
    ap.add_argument("--reps", type=int, default=500, help="replications of a row that does not state its own")
    ap.add_argument("--note", default="", help="a sentence on where the files came from, for the section")
    ap.add_argument("--doc", default=str(DOC), help="markdown file to write the section into")
    ap.add_argument("--section", default="coverage-pooled")
    args = ap.parse_args(argv)
    if args.reps < 1:
        raise SystemExit(f"--reps: expected a positive number of replications per row, got {args.reps}")
    rows = pool([read_run(r.split(",")) for r in args.runs], args.reps)
    cols = ["scenario", "design", "coverage by seed", "reps", "coverage", "wilson 95%", "flag",
            "realized_over_design", "realized_over_design_cv", "realized_over_design_cv_se", "score_over_design",
            "score_over_design_se"]
    flagged = [f"{r['design']} on {r['scenario']}" for r in rows if r["flag"]]
    outside = [f"{r['design']} on {r['scenario']} ({r['coverage']:.3f})" for r in rows
               if not 0.93 <= r["coverage"] <= 0.97]
    body = (
        "## Interval coverage pooled over seeds (`benchmarks/pool_coverage.py`)\n\n"
        f"{stamp()} {len(args.runs)} independent runs of `benchmarks/design_coverage.py` (seeds in the order "
        f"of `coverage by seed`), {args.reps} replications per row each; `reps` the pooled count, "
        "`wilson 95%` and `flag` on it (`low`/`high`: excludes 0.95). `realized_over_design` is the mean over "
        "the runs, `realized_over_design_cv` and `score_over_design` (± their se) over the runs that report them. "
        f"{args.note} Command: `python benchmarks/pool_coverage.py {' '.join(sys.argv[1:] if argv is None else argv)}`."
        "\n\n" + md_table(rows, cols)
        + ("\n\nFlagged: " + ", ".join(flagged) + "." if flagged else "\n\nNo cell flagged.")
        + ("\n\nOutside [0.93, 0.97]: " + ", ".join(outside) + "." if outside else
           "\n\nEvery cell in [0.93, 0.97].")
    )
    write_section(args.section, body, Path(args.doc))
    print(md_table(rows, cols))


if __name__ == "__main__":
    main()
