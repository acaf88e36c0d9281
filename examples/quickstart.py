"""The quickstart in Python: compare designs on a scenario, analyse a logged trial, use a prior file
and the shipped student.

python examples/quickstart.py [--quick] [--out DIR]

See docs/quickstart.md for the same steps on the command line.
"""

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI)")
    ap.add_argument("--out", default=None, help="folder for the files written (default: a temporary folder)")
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="quickstart-"))
    out.mkdir(parents=True, exist_ok=True)

    import pandas as pd

    import bayesdesign as bd
    from bayesdesign.models import PriorTasks
    from bayesdesign.summary import format_table, summarize

    horizon, reps = (200, 10) if args.quick else (2000, 500)

    # 1. designs on a public scenario (S2: smooth heteroskedastic arms; complete randomization is 1.29x V*)
    ds = bd.simulate(bd.get_scenario("S2"), ["uniform", "plugin-neyman", "teacher:conjugate:beta1"],
                     horizon=horizon, reps=reps, seed=0)
    bd.io.save_dataset(ds, out / "s2.nc")
    print(format_table(summarize(ds), f"S2: T = {horizon}, {reps} replications"))

    # 2. the log of one experiment of 1000 units run with the plug-in Neyman design, as a team would keep it:
    #    one row per unit in arrival order, with the probability of treatment actually used
    ds = bd.simulate(bd.get_scenario("S2"), ["plugin-neyman"], horizon=1000, reps=1, seed=1)
    rep = ds.sel(design="plugin-neyman", unit_rep=0)
    log = pd.DataFrame({"x": rep.x[:, 0], "a": rep.a, "y": rep.y, "pi": rep.pi})
    log.to_csv(out / "log.csv", index=False)
    res = bd.analyze(out / "log.csv", arm="a", outcome="y", propensity="pi")
    print(f"\nanalysed {out / 'log.csv'}: ATE {res['ate']:.3f} (se {res['se']:.3f}), "
          f"95% CI [{res['lower']:.3f}, {res['upper']:.3f}]; true ATE {float(ds.ate[0]):.3f}")

    # 3. a prior file: tasks drawn from it, and the posterior Neyman teacher that believes it
    prior = "smoothness-mixture"  # a shipped prior; any path to a YAML/TOML prior file works the same
    ds = bd.simulate(PriorTasks(prior), ["uniform", f"teacher:mixture:{prior}"],
                     horizon=horizon, reps=reps, seed=0)
    print("\n" + format_table(summarize(ds), f"tasks from the prior {prior}: T = {horizon}, {reps} replications"))

    # 4. the shipped student: the mixture teacher distilled into a transformer that decides in about 1 ms
    try:
        ds = bd.simulate(bd.get_scenario("S3"), ["uniform", "student:pretrained"], horizon=horizon, reps=reps, seed=0)
    except FileNotFoundError as err:  # an installation without the shipped student
        print(f"\nstudent:pretrained skipped: {err}")
    else:
        print("\n" + format_table(summarize(ds), f"S3 with the shipped student: T = {horizon}, {reps} replications"))
    print(f"\nfiles in {out}")


if __name__ == "__main__":
    main()
