"""The ``bayesdesign diagnose`` commands and ``bayesdesign report`` (registered in :mod:`bayesdesign.cli`).

Input errors (``ValueError``, ``FileNotFoundError``) exit with code 2 and one line, as the
other commands do. Each command imports its machinery (numpy, pandas, JAX, torch) inside its
body: ``bayesdesign --help`` and every other command then start without loading them.
"""

from __future__ import annotations

import json
import sys

import click

from ..cli_support import InputErrorGroup, show_progress


@click.group(cls=InputErrorGroup)
def diagnose() -> None:
    """Check that teachers and students are calibrated and that NUTS fits converged.

    \b
      bayesdesign diagnose fit --prior beta1 --history log.csv
      bayesdesign diagnose sbc --prior beta2 --teacher nuts --sims 200 --out sbc.nc
      bayesdesign diagnose student STUDENT_DIR --traces heldout.nc --out pit.nc
    """


def _read_history(path: str, spec, covariates, arm: str, outcome: str, propensity: str):
    """The log at ``path`` as a :class:`History`; covariates default to the prior's names when
    the log has them (else every other numeric column), and must number ``spec.d``."""
    import numpy as np

    from ..design.policy import History
    from ..logs import read_units

    x, a, y, pi, covariates = read_units(
        path, covariates, arm, outcome, propensity, require_propensity=False, prefer=spec.covariate_names
    )
    if len(covariates) != spec.d:
        raise ValueError(
            f"{path}: {len(covariates)} covariate columns {covariates}, but prior {spec.name!r} has "
            f"{spec.d}; name them with --covariates"
        )
    return History(x, a.astype(float), y, np.full(len(y), 0.5) if pi is None else pi)


@diagnose.command()
@click.option("--prior", required=True, help="Prior file or shipped prior name (the model NUTS fits).")
@click.option(
    "--history",
    "history_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="CSV/parquet log, one row per unit: covariates, arm (0/1), outcome.",
)
@click.option("--covariates", default=None, help="Comma-separated covariate columns (default: the prior's names).")
@click.option("--arm", default="a", show_default=True)
@click.option("--outcome", default="y", show_default=True)
@click.option("--propensity", default="pi", show_default=True, help="Ignored by the fit; excluded from covariates.")
@click.option("--chains", default=4, show_default=True, type=click.IntRange(min=2))
@click.option("--draws", default=2000, show_default=True, type=click.IntRange(min=8), help="Draws over all chains.")
@click.option("--warmup", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--max-tree-depth", default=6, show_default=True, type=click.IntRange(min=1, max=12))
@click.option("--seed", default=0, show_default=True)
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Save the posterior (ArviZ netCDF).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def fit(
    prior, history_path, covariates, arm, outcome, propensity, chains, draws, warmup, max_tree_depth, seed, out, as_json
):
    """R-hat, bulk/tail ESS and divergences of a NUTS fit of PRIOR's model to your data.

    Warns (exit code 0, lines starting with WARNING) when R-hat > 1.01, an ESS < 400 or any
    transition diverged. Quantities checked: mu_a(x), sigma_a(x), log sigma_a(x) on 9 covariate
    values spanning the first covariate's range.
    """
    from ..spec import load_prior
    from .convergence import THRESHOLDS
    from .fit import diagnose_fit

    spec = load_prior(prior)
    cols = [c.strip() for c in covariates.split(",")] if covariates else None
    h = _read_history(history_path, spec, cols, arm, outcome, propensity)
    idata, summary, msgs = diagnose_fit(
        spec, h, num_chains=chains, draws=draws, num_warmup=warmup, seed=seed, max_tree_depth=max_tree_depth
    )
    if out:
        from ..io import atomic_path

        with atomic_path(out) as tmp:
            idata.to_netcdf(str(tmp))
    res = {k: float(summary[k]) for k in ("rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "chains", "draws")}
    res.update(units=len(h.y), thresholds=THRESHOLDS, warnings=msgs, converged=not msgs)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(f"NUTS fit of {spec.name} on {len(h.y)} units: {chains} chains x {int(res['draws'])} draws")
    click.echo(f"  max R-hat     {res['rhat_max']:.4f}   (warn > {THRESHOLDS['rhat']})")
    click.echo(f"  min bulk ESS  {res['ess_bulk_min']:.0f}   (warn < {THRESHOLDS['ess_bulk']:.0f})")
    click.echo(f"  min tail ESS  {res['ess_tail_min']:.0f}   (warn < {THRESHOLDS['ess_tail']:.0f})")
    click.echo(f"  divergences   {int(res['divergences'])}   (warn > 0)")
    for m in msgs:
        click.echo(f"WARNING: {m}")
    if not msgs:
        click.echo("converged: every threshold met")


@diagnose.command()
@click.option("--prior", required=True, help="Prior file or shipped prior name (one smoothness class).")
@click.option(
    "--teacher", "backend", type=click.Choice(["nuts", "svi", "conjugate"]), default="nuts", show_default=True
)
@click.option("--sims", "-N", default=200, show_default=True, type=click.IntRange(min=2), help="Simulations.")
@click.option(
    "--units",
    "-n",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="Units per simulated history (uniform assignment).",
)
@click.option(
    "--draws",
    "-L",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="Posterior draws per simulation (ranks in 0..L).",
)
@click.option("--thin", default=4, show_default=True, type=click.IntRange(min=1), help="NUTS: keep every k-th draw.")
@click.option("--queries", default=1, show_default=True, type=click.IntRange(min=1), help="Query covariates per sim.")
@click.option("--guide", default=None, type=click.Choice(["normal", "mvn", "laplace"]), help="SVI guide.")
@click.option("--constant-sd", is_flag=True, help="Collapse the prior's log-sd series to its offset (known sd).")
@click.option(
    "--known-variance",
    is_flag=True,
    help="Conjugate: fix the plug-in noise variance at the prior's v0 (exact with --constant-sd).",
)
@click.option("--batch", default=None, type=click.IntRange(min=1), help="Simulations per vectorized fit.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Fit the batches in parallel as Ray tasks on a local Ray instance started for the run.",
)
@click.option("--ray-address", default=None, help="Fit the batches on this existing Ray cluster instead.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The SBC dataset (netCDF).")
@click.option("--plot", default=None, type=click.Path(dir_okay=False), help="Also save the ECDF figure (PNG).")
@click.option("--progress/--no-progress", default=None)
def sbc(
    prior,
    backend,
    sims,
    units,
    draws,
    thin,
    queries,
    guide,
    constant_sd,
    known_variance,
    batch,
    workers,
    ray_address,
    seed,
    out,
    plot,
    progress,
):
    """Simulation-based calibration of a teacher: ranks of the true sigma_a(x) and mu_a(x) among
    posterior draws over tasks drawn from PRIOR (series priors or a user NumPyro model), with a
    uniformity verdict. With --workers N (or --ray-address) the batches of --batch simulations
    run as Ray tasks; the result does not depend on the worker count.

    Exit code 0 whether or not the check passes; the verdict is printed and stored in the file.
    """
    from ..io import save_dataset
    from ..spec import load_prior
    from .sbc import constant_sd_prior, known_variance_config, run_sbc, summary_rows

    spec = load_prior(prior)
    if constant_sd:
        spec = constant_sd_prior(spec)
    kwargs = {}
    if guide:
        if backend != "svi":
            raise ValueError("--guide: only for --teacher svi")
        kwargs["guide"] = guide
    if known_variance:
        if backend != "conjugate":
            raise ValueError("--known-variance: only for --teacher conjugate")
        kwargs["config"] = known_variance_config()
    ds = run_sbc(
        spec,
        backend,
        sims=sims,
        units=units,
        queries=queries,
        draws=draws,
        thin=thin,
        seed=seed,
        teacher_kwargs=kwargs,
        batch=batch,
        progress=show_progress(progress),
        workers=workers,
        ray_address=ray_address,
    )
    save_dataset(ds, out)
    if plot:
        from ..io import atomic_path
        from .plots import plot_sbc, to_png

        with atomic_path(plot) as tmp:
            tmp.write_bytes(to_png(plot_sbc(ds)))
    click.echo(
        f"SBC of the {backend} teacher on {spec.name}: {sims} sims x {units} units, {draws} draws, "
        f"{ds.attrs['seconds']} s"
    )
    for r in summary_rows(ds):
        click.echo(
            f"  {r['quantity']:8s} {'pass' if r['passed'] else 'FAIL'}  outside band {r['outside']:.2f}  "
            f"KS {r['ks']:.3f}  mean posterior sd {r['post_sd']:.3f}"
        )
    click.echo(f"verdict: {ds.attrs['verdict']}")
    click.echo(f"sbc: {out}")


@diagnose.command()
@click.argument("student_dir", type=click.Path(file_okay=False))
@click.option(
    "--traces",
    "traces_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Held-out traces of the student's prior (not used in training).",
)
@click.option("--bins", default=10, show_default=True, type=click.IntRange(min=2), help="Reliability bins.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Save the calibration dataset (netCDF).")
@click.option("--json", "as_json", is_flag=True)
def student(student_dir, traces_path, bins, seed, out, as_json):
    """PIT of the true log sigma under the student's Gaussian posterior, gate reliability (ECE)
    and imitation error by history length, on held-out traces (teacher PIT as a reference)."""
    from ..io import save_dataset
    from .calibration import student_calibration

    ds = student_calibration(student_dir, traces_path, bins=bins, seed=seed)
    if out:
        save_dataset(ds, out)
    res = {
        "pit_uniform": {str(s): bool(v) for s, v in zip(ds.source.values, ds.pit_passed.values, strict=True)},
        "pit_ks": {str(s): float(v) for s, v in zip(ds.source.values, ds.pit_ks.values, strict=True)},
        "gate_ece": {  # null for a prior with one smoothness class: no gate to calibrate
            str(s): float(v) if v == v else None for s, v in zip(ds.source.values, ds.ece.values, strict=True)
        },
        "imitation_error": {int(n): float(v) for n, v in zip(ds.n_obs.values, ds.imitation_error.values, strict=True)},
    }
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(ds.attrs["verdict"])
    click.echo(
        "imitation error by history length: " + ", ".join(f"n={k}: {v:.4f}" for k, v in res["imitation_error"].items())
    )
    if out:
        click.echo(f"calibration: {out}")


@click.command(cls=click.Command)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The HTML file.")
@click.option("--title", default="bayesdesign diagnostics report", show_default=True)
def report(inputs, out, title):
    """One self-contained HTML page from results.nc, SBC and student-calibration files.

    INPUTS: any mix of `bayesdesign simulate --out` results, `diagnose sbc` and `diagnose
    student --out` files; each is recognised by its content.
    """
    from .report import write_report

    try:
        path = write_report(inputs, out, title)
    except (ValueError, FileNotFoundError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    click.echo(f"report: {path}")
