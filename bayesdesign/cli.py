"""The ``bayesdesign`` command.

Exit codes: 0 success, 2 bad input (unknown names, malformed files, invalid values: the
message names the argument, file or column), 1 unexpected failure. Output is quiet in scripts:
progress bars only on an interactive terminal unless ``--progress`` is given. Each command
imports its machinery inside its body, so that ``--help`` and the light commands start without
loading JAX, torch or matplotlib.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__
from .cli_support import InputErrorGroup, show_progress


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.group(cls=InputErrorGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bayesdesign")
def main() -> None:
    """Adaptive randomized experiments that estimate an average treatment effect as precisely
    as the data allow.

    \b
    Typical use:
      bayesdesign simulate --scenario S2 --designs uniform,plugin-neyman --reps 500 --out r.nc
      bayesdesign analyze trial_log.csv --arm a --outcome y --propensity pi
    """


@main.command()
@click.option(
    "--scenario",
    default="S2",
    show_default=True,
    help="Public scenario S1..S10 (S7: days, orders and a decoy score; S8: revenue in dollars; "
    "S9: strong heteroskedasticity; S10: four variance cells; see docs/scenarios.md). "
    "Ignored with --prior or --replay.",
)
@click.option(
    "--prior", default=None, help="Simulate tasks drawn from this prior file (or shipped prior name) instead."
)
@click.option(
    "--replay",
    "replay",
    type=click.Path(dir_okay=False),
    default=None,
    help="Replay a finished trial from this CSV/parquet table instead of a scenario.",
)
@click.option(
    "--covariates",
    default=None,
    help="With --replay: comma-separated covariate columns (default: every numeric column but arm, outcome and "
    "propensity; an id-like column stops the run).",
)
@click.option("--arm", default="a", show_default=True, help="With --replay: the 0/1 arm column.")
@click.option("--outcome", default="y", show_default=True, help="With --replay: the outcome column.")
@click.option(
    "--propensity",
    default="pi",
    show_default=True,
    help="With --replay: the trial's treatment-probability column, if any (never a covariate).",
)
@click.option("--k", default=20, show_default=True, help="With --replay: neighbours per arm defining the outcome law.")
@click.option(
    "--designs",
    default="uniform,explore-then-neyman,clip-ogd,plugin-neyman,oracle",
    show_default=True,
    help="Comma-separated design names: uniform, oracle, explore-then-neyman, clip-ogd, clip-smt, "
    "clip-ogd-sc, plugin-neyman, teacher:BACKEND:PRIOR, student:DIR (docs/concepts.md); the oracle is "
    "always added as the reference.",
)
@click.option(
    "--horizon", "-T", default=2000, show_default=True, type=click.IntRange(min=10), help="Units per experiment."
)
@click.option(
    "--reps",
    "-R",
    default=500,
    show_default=True,
    type=click.IntRange(min=1),
    help="Replications (common random numbers across designs).",
)
@click.option(
    "--batch-size",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Refit the designs every this many units.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of everything random.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the full results dataset (netCDF).")
@click.option(
    "--keep-units",
    type=click.IntRange(min=0),
    default=None,
    help="Store per-unit records of only this many replications in --out.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON keyed by design.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: only on a terminal).")
def simulate(
    scenario,
    prior,
    replay,
    covariates,
    arm,
    outcome,
    propensity,
    k,
    designs,
    horizon,
    reps,
    batch_size,
    seed,
    out,
    keep_units,
    as_json,
    progress,
):
    """Compare designs on a scenario or a replayed trial.

    Prints MSE, MSE ratio to the oracle Neyman design on the same seeds, bias, 95% interval
    coverage, mean |pi - pi*| and the design variance ratio V(design)/V*.
    """
    from .design import get_scenario
    from .design import simulate as run
    from .io import save_dataset
    from .summary import format_table, summarize, to_json_dict

    if prior and replay:
        raise ValueError("--prior, --replay: give at most one of them")
    if prior:
        from .models import PriorTasks

        env = PriorTasks(prior)
    elif replay:
        from .design.replay import ReplayEnvironment

        env = ReplayEnvironment(
            replay,
            _split(covariates) if covariates else None,
            arm=arm,
            outcome=outcome,
            propensity=propensity,
            k=k,
            name=Path(replay).stem,
        )
        click.echo(f"replay {replay}: {_covariates_line(env.covariates, covariates)}", err=True)
    else:
        env = get_scenario(scenario)
    ds = run(
        env,
        _split(designs),
        horizon=horizon,
        reps=reps,
        seed=seed,
        batch_size=batch_size,
        keep_units=keep_units,
        progress=show_progress(progress),
    )
    if out:
        save_dataset(ds, out)
    table = summarize(ds)
    if as_json:
        click.echo(json.dumps(to_json_dict(table), indent=2))
    else:
        click.echo(format_table(table, f"{ds.attrs['environment']}: T = {horizon}, {reps} replications, seed {seed}"))


@main.command()
@click.option("--prior", required=True, help="Prior file (YAML/TOML) or a shipped prior's name, e.g. beta1.")
@click.option(
    "--teacher",
    "backend",
    type=click.Choice(["conjugate", "mixture", "nuts", "svi"]),
    default="conjugate",
    show_default=True,
    help="Teacher backend.",
)
@click.option(
    "--tasks", "-N", default=1000, show_default=True, type=click.IntRange(min=1), help="Tasks drawn from the prior."
)
@click.option("--horizon", "-T", default=1000, show_default=True, type=click.IntRange(min=1), help="Units per task.")
@click.option(
    "--queries",
    "-Q",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="Query covariates labelled per refit.",
)
@click.option(
    "--refit-every",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Units between refits (divides the horizon).",
)
@click.option(
    "--chunk-tasks",
    default=256,
    show_default=True,
    type=click.IntRange(min=1),
    help="Tasks per chunk written (the unit of resumption).",
)
@click.option(
    "--teacher-option",
    "-o",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Teacher setting (repeatable), e.g. -o num_warmup=200 -o max_tree_depth=5 for nuts, "
    "-o guide=mvn for svi; a TeacherConfig field sets the teacher's configuration instead, e.g. "
    "-o variance_law=lognormal -o spike=0.6 (teacher:...:lognormal); VALUE is read as JSON (numbers, "
    "true/false), else as text.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Chunks run in parallel as Ray tasks on a local Ray instance started for the run (1: in this process).",
)
@click.option(
    "--ray-address",
    default=None,
    help="Run the chunks on this existing Ray cluster (e.g. auto, ray://head:10001) instead; see docs/traces.md.",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The traces file (netCDF).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a terminal).")
def traces(prior, backend, tasks, horizon, queries, refit_every, chunk_tasks, options, workers, ray_address, seed,
           out, progress):
    """Simulate tasks from a prior (series priors or a user NumPyro model), run a teacher as the
    design, and record its labels.

    Interrupted runs resume: chunks already written to OUT.parts/ are kept and the rest is
    generated with the same seeds, so the result is the same whatever the worker count. The
    schema is documented in docs/traces.md.
    """
    from .teachers.base import TeacherConfig
    from .traces import generate_traces

    kwargs = _options(options)
    fields = set(TeacherConfig.__dataclass_fields__) - {"clip"}
    config = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
    path = generate_traces(
        prior,
        backend,
        tasks,
        horizon,
        queries,
        out,
        refit_every=refit_every,
        chunk_tasks=chunk_tasks,
        seed=seed,
        progress=show_progress(progress),
        teacher_kwargs=kwargs,
        teacher_config=TeacherConfig(**config) if config else None,
        workers=workers,
        ray_address=ray_address,
    )
    click.echo(f"traces: {path}")


def _pairs(options: tuple[str, ...], flag: str, keys=None):
    """``(key, value)`` of each ``KEY=VALUE`` given to ``flag`` (key stripped); ``keys``: the keys
    allowed (any by default). A malformed pair or an unknown key stops with the flag named."""
    for opt in options:
        key, sep, value = opt.partition("=")
        key = key.strip()
        if not sep or not key or (keys is not None and key not in keys):
            allowed = "" if keys is None else f" with KEY one of {sorted(keys)}"
            raise ValueError(f"{flag}: expected KEY=VALUE{allowed}, got {opt!r}")
        yield key, value


def _options(options: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs of ``--teacher-option``, values parsed as JSON where they parse."""
    out = {}
    for key, value in _pairs(options, "--teacher-option"):
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@main.command()
@click.option(
    "--traces",
    "traces_files",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="Traces file from `bayesdesign traces` (repeat for several of the same prior and teacher).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Checkpoint folder.")
@click.option("--steps", default=2000, show_default=True, type=click.IntRange(min=1), help="Optimizer steps.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=2e-3, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--max-seconds", default=None, type=float, help="Stop (and checkpoint) after this much training time.")
@click.option("--no-resume", is_flag=True, help="Start afresh even if OUT holds a checkpoint.")
@click.option(
    "--dagger-rounds",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="DAgger: times the student is rolled out as the design and its histories labelled by the teacher.",
)
@click.option("--dagger-tasks", default=256, show_default=True, type=click.IntRange(min=1), help="Tasks per round.")
@click.option(
    "--working-prior",
    default=None,
    help="A unit-free series prior whose conjugate teacher is the student's closed-form start (its "
    "conjugate layer), e.g. for the traces of a user model; default: the traces' own series prior, "
    "none (the plain network) for a user model.",
)
@click.option(
    "--arch",
    "arch_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Architecture field (repeatable), e.g. --arch n_terms=0 for the plain network, --arch d_model=128.",
)
@click.option(
    "--loss-weight",
    "loss_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Weight of a loss term (repeatable; terms pi, log_sd, log_sd_true, gate_soft, gate_hard; "
    "defaults in docs/student.md), e.g. --loss-weight log_sd_true=0 to train the probability only.",
)
@click.option(
    "--swap-arms",
    is_flag=True,
    help="The prior treats the arms alike: train also on the examples with the arms exchanged (half of the "
    "batches); refused for a series prior whose arms differ.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a terminal).")
def distil(traces_files, out, steps, batch_size, lr, seed, device, max_seconds, no_resume, dagger_rounds,
           dagger_tasks, working_prior, arch_options, loss_options, swap_arms, progress):
    """Distil teacher traces into a student transformer, a policy that decides in about 0.13 ms at a
    history of 1000 units (the shipped architecture, docs/benchmarks.md).

    Resumes from the checkpoint in OUT unless --no-resume; deterministic for a seed. The
    checkpoint is safetensors weights plus a JSON config recording the prior, its hash, the
    teacher configuration and the validation metrics.
    """
    from .student.distil import distil as run

    res = run(
        list(traces_files),
        out,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        max_seconds=max_seconds,
        resume=not no_resume,
        dagger_rounds=dagger_rounds,
        dagger_tasks=dagger_tasks,
        progress=show_progress(progress),
        working_prior=working_prior,
        architecture=_architecture(arch_options),
        loss_weights=_loss_weights(loss_options),
        swap_arms=swap_arms,
    )
    click.echo(_distil_summary(res))


def _loss_weights(options: tuple[str, ...]) -> dict:
    """``--loss-weight KEY=VALUE`` pairs (non-negative numbers)."""
    from .student.losses import DEFAULT_WEIGHTS

    out: dict = {}
    for key, value in _pairs(options, "--loss-weight", DEFAULT_WEIGHTS):
        try:
            out[key] = float(value)
        except ValueError:
            raise ValueError(f"--loss-weight {key}: expected a number, got {value.strip()!r}") from None
        if not out[key] >= 0:
            raise ValueError(f"--loss-weight {key}: expected a non-negative number, got {value.strip()!r}")
    return out


def _architecture(options: tuple[str, ...]) -> dict:
    """``--arch KEY=VALUE`` pairs as StudentConfig overrides (integers; ``standardize``, ``token_asinh`` booleans)."""
    from .student.model import StudentConfig

    fields = set(StudentConfig.__dataclass_fields__) - {"d", "n_classes"}
    out: dict = {}
    for key, value in _pairs(options, "--arch", fields):
        value = value.strip()
        if key in ("standardize", "token_asinh", "token_atom"):
            if value.lower() not in ("true", "false"):
                raise ValueError(f"--arch {key}: expected true or false, got {value!r}")
            out[key] = value.lower() == "true"
        else:
            try:
                out[key] = int(value)
            except ValueError:
                raise ValueError(f"--arch {key}: expected an integer, got {value!r}") from None
    return out


def _distil_summary(res) -> str:
    """Two lines: where the student is, and its last validation against the untrained start."""
    m = res.metrics
    head = f"student: {res.path}  (step {m.get('step', '?')})"
    if "val_loss" not in m:
        return head + "\nno validation figures (no held-out traces)"
    start = res.history[0] if res.history and res.history[0].get("step") == 0 else None
    was = f" (untrained {start['val_loss']:.4f})" if start else ""
    gate = f", gate total variation {m['val_gate_tv']:.4f}" if "val_gate_tv" in m else ""
    return (
        f"{head}\nvalidation: loss {m['val_loss']:.4f}{was}, mean |pi - teacher pi| {m['val_pi_mae']:.4f} "
        f"(burn-in and clip applied; unclipped {m['val_pi_mae_raw']:.4f}){gate}"
    )


def _covariates_line(used: list[str], given: str | None) -> str:
    how = "from --covariates" if given else "every other numeric column; choose with --covariates"
    return f"covariates {', '.join(used)} ({how})"


@main.command()
@click.argument("log", type=click.Path(dir_okay=False))
@click.option(
    "--covariates",
    default=None,
    help="Comma-separated covariate columns (default: every numeric column but arm, outcome and propensity; "
    "an id-like column, a distinct integer per row, stops the run).",
)
@click.option("--arm", default="a", show_default=True, help="The 0/1 arm column.")
@click.option("--outcome", default="y", show_default=True, help="The outcome column.")
@click.option("--propensity", default="pi", show_default=True, help="The treatment probability used for each unit.")
@click.option("--level", default=0.95, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--anytime", is_flag=True, help="Also the anytime-valid confidence sequence (valid at every look).")
@click.option("--cs-horizon", type=click.IntRange(min=1), default=None,
              help="With --anytime: scored units the sequence is tuned for (default: those in the log).")
def analyze(log, covariates, arm, outcome, propensity, level, as_json, anytime, cs_horizon):
    """ATE, standard error and interval of a logged experiment.

    LOG is a CSV or parquet table with one row per unit in arrival order: covariates, the arm
    (0/1), the outcome and the probability of treatment actually used. The estimator is AIPW
    with series nuisances fitted on earlier units only, valid under adaptive designs. The first
    units, before 3 units of each arm have been observed, are not scored (their nuisance fits
    would have no data). A service log (`bayesdesign serve`'s log.csv) is read as is: unit_id is
    ignored, pending units left out.
    """
    from .estimation import analyze as run
    from .serve.logfile import analysis_source

    source, note = analysis_source(log, outcome)
    if note:
        click.echo(note, err=True)
    res = run(
        source,
        covariates=_split(covariates) if covariates else None,
        arm=arm,
        outcome=outcome,
        propensity=propensity,
        level=level,
    )
    if anytime:
        from .confseq import analyze_anytime

        cov = _split(covariates) if covariates else None
        res.update(analyze_anytime(source, cov, arm, outcome, propensity, alpha=1 - level, n_star=cs_horizon))
    for warning in res["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    pct = f"{100 * level:g}%"
    click.echo(f"ATE (AIPW)  {res['ate']:.6g}   se {res['se']:.4g}   {pct} CI [{res['lower']:.6g}, {res['upper']:.6g}]")
    if anytime:
        click.echo(f"anytime-valid {pct} confidence sequence [{res['cs_lower']:.6g}, {res['cs_upper']:.6g}] "
                   f"(tuned for {res['cs_n_star']:g} scored units; valid at every look)")
    click.echo(_covariates_line(res["covariates"], covariates))
    unscored = res["n_units"] - res["n_scored"]
    click.echo(
        f"units {res['n_units']} ({res['n_treated']} treated), {res['n_scored']} scored: the first {unscored} "
        f"came before {res['min_arm_obs']} units of each arm had been observed, so no nuisance fit existed for them"
    )
    click.echo(
        f"reference: difference in means {res['dim']:.6g} (se {res['dim_se']:.4g}), "
        f"IPW {res['ipw']:.6g} (se {res['ipw_se']:.4g})"
    )
    if res["se"] > res["dim_se"]:
        click.echo(
            "note: the AIPW se exceeds the difference in means' because AIPW weights each outcome by 1/pi and "
            "fits its nuisances on earlier units only (noisy early on); the difference-in-means se assumes "
            "fixed assignment probabilities and is not valid under an adaptive design"
        )


@main.command()
@click.option(
    "--scenario",
    default="S2",
    show_default=True,
    help="Public scenario (docs/scenarios.md); the demo runs the shipped student, trained on one covariate: "
    "S1-S6, S9 or S10.",
)
@click.option("--horizon", "-T", default=1000, show_default=True, type=click.IntRange(min=10))
@click.option("--reps", "-R", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="demo-output",
    show_default=True,
    help="Folder for the results dataset.",
)
def demo(scenario, horizon, reps, seed, out):
    """The main job on shipped defaults: the pretrained student against every baseline on a
    scenario, with a table, a plot of pi(x) over time against the oracle rule, and a report."""
    from .design import get_scenario
    from .design import simulate as run
    from .diagnostics.plots import plot_pi_over_time, to_png
    from .diagnostics.report import write_report
    from .io import atomic_path, save_dataset
    from .summary import format_table, summarize

    designs = ["uniform", "explore-then-neyman", "clip-ogd", "plugin-neyman", "student:pretrained", "oracle"]
    click.echo(f"bayesdesign {__version__}: {', '.join(designs)} on {scenario}, T = {horizon}, {reps} replications")
    ds = run(
        get_scenario(scenario),
        designs,
        horizon=horizon,
        reps=reps,
        seed=seed,
        keep_units=20,
        progress=sys.stderr.isatty(),
    )
    out = Path(out)
    path = save_dataset(ds, out / "results.nc")
    with atomic_path(out / "pi_over_time.png") as tmp:
        Path(tmp).write_bytes(to_png(plot_pi_over_time(ds)))
    report = write_report([path], out / "report.html", title=f"bayesdesign demo: {scenario}, T = {horizon}")
    click.echo(format_table(summarize(ds)))
    click.echo(f"\nresults: {path}  ({ds.attrs['seconds']} s)\nplot:    {out / 'pi_over_time.png'}\nreport:  {report}")


@main.command()
@click.option("--db", default="bayesdesign.db", show_default=True,
              help="SQLite file (created if absent) or a database URL, e.g. postgresql://user@host/db.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind (127.0.0.1: this machine only).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-keys-file", type=click.Path(dir_okay=False), default=None,
              help="File of API keys, one per line (else the environment variable BAYESDESIGN_API_KEYS, "
                   "comma-separated).")
@click.option("--insecure-no-auth", is_flag=True, help="Serve without API keys (never on a shared network).")
@click.option("--sqlite-sync", default="full", show_default=True, type=click.Choice(["full", "normal"]),
              help="SQLite only: full syncs every commit to disk (survives a power cut); normal survives the "
                   "process being killed but not the machine losing power, and is faster.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(db, host, port, api_keys_file, insecure_no_auth, sqlite_sync, log_level):
    """Serve live experiments over HTTP: assignments from a design, committed to a durable log
    before they are answered; outcomes any time later; AIPW analysis with an anytime-valid
    confidence sequence. API contract and OpenAPI page: docs/serve.md, http://HOST:PORT/docs.
    """
    import uvicorn

    from .serve.app import create_app
    from .serve.auth import ENV_VAR, load_keys

    if insecure_no_auth and api_keys_file:
        raise ValueError("--insecure-no-auth, --api-keys-file: give at most one of them")
    keys = None
    if not insecure_no_auth:
        keys = load_keys(api_keys_file)
        if not keys:
            raise ValueError(f"no API key: give --api-keys-file FILE or set {ENV_VAR}, "
                             "or --insecure-no-auth to serve without authentication")
    app = create_app(db, keys, sqlite_sync)
    auth = "no authentication (--insecure-no-auth)" if keys is None else f"{len(keys)} API key(s)"
    click.echo(f"bayesdesign serve: http://{host}:{port} over {db}, {auth}", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


from .diagnostics.cli import diagnose, report  # noqa: E402

main.add_command(diagnose)
main.add_command(report)

if __name__ == "__main__":  # pragma: no cover
    main()
