"""Diagnostics end to end: simulation-based calibration of a teacher, interval coverage with
Wilson error bars, and one self-contained HTML report.

python examples/diagnostics.py [--quick] [--out DIR]

Quick mode (about 20 s) checks the conjugate teacher where its working model is exact (known,
constant noise sd): its posterior of mu_a(x) passes SBC, its plug-in sigma_a(x) does not (it is
not a posterior). The full mode runs SBC of the NUTS teacher on the beta2 prior (200
simulations, about a minute) and a larger design comparison.
"""

import argparse
import tempfile
from pathlib import Path

import bayesdesign as bd
from bayesdesign.diagnostics import coverage_table, run_sbc, write_report
from bayesdesign.diagnostics.sbc import constant_sd_prior, known_variance_config, summary_rows
from bayesdesign.io import save_dataset

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--quick", action="store_true")
ap.add_argument("--out", default=None, help="output folder (default: a temporary one)")
args = ap.parse_args()
out = Path(args.out or tempfile.mkdtemp(prefix="bayesdesign-diagnostics-"))

# 1. SBC: ranks of the true sigma_a(x_q), mu_a(x_q) among posterior draws over prior draws
if args.quick:
    sbc = run_sbc(
        constant_sd_prior("beta2"),
        "conjugate",
        sims=150,
        units=50,
        draws=60,
        teacher_kwargs={"config": known_variance_config()},
    )
else:
    sbc = run_sbc("beta2", "nuts", sims=200, units=100, draws=100, thin=4, seed=1)
save_dataset(sbc, out / "sbc.nc")
print(f"SBC of the {sbc.attrs['teacher']} teacher on {sbc.attrs['prior_name']}: {sbc.attrs['verdict']}")
for row in summary_rows(sbc):
    print(f"  {row['quantity']:8s} {'pass' if row['passed'] else 'FAIL'}  KS distance {row['ks']:.3f}")

# 2. Coverage of the 95% interval, with Wilson intervals, on a scenario
horizon, reps = (200, 40) if args.quick else (1000, 300)
results = bd.simulate(bd.get_scenario("S2"), ["uniform", "plugin-neyman"], horizon, reps, seed=0, keep_units=4)
save_dataset(results, out / "results.nc")
print(coverage_table(results).round(3).to_string(index=False))

# 3. One HTML page with every table and figure embedded
report = write_report([out / "results.nc", out / "sbc.nc"], out / "report.html")
print(f"report: {report}")
