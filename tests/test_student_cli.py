"""End to end on the command line: traces -> distil -> the student as a design."""

import json

from click.testing import CliRunner

from bayesdesign.cli import main


def test_traces_distil_simulate(tmp_path):
    run = CliRunner().invoke
    traces = tmp_path / "t.nc"
    res = run(
        main,
        [
            "traces",
            "--prior",
            "smoothness-mixture",
            "--teacher",
            "mixture",
            "-N",
            "24",
            "-T",
            "60",
            "-Q",
            "4",
            "--refit-every",
            "20",
            "--out",
            str(traces),
        ],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "student"
    res = run(
        main,
        ["distil", "--traces", str(traces), "--out", str(out), "--steps", "3", "--batch-size", "4", "--no-progress"],
    )
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "config.json").read_text())
    assert "prior_hash" in json.dumps(cfg) and (out / "model.safetensors").exists()
    # a short summary of the recorded figures, not a repr
    m, start = cfg["metrics"], cfg["history"][0]
    assert res.output.splitlines() == [
        f"student: {out}  (step 3)",
        f"validation: loss {m['val_loss']:.4f} (untrained {start['val_loss']:.4f}), mean |pi - teacher pi| "
        f"{m['val_pi_mae']:.4f} (burn-in and clip applied; unclipped {m['val_pi_mae_raw']:.4f}), gate total "
        f"variation {m['val_gate_tv']:.4f}",
    ]
    res = run(
        main,
        [
            "simulate",
            "--prior",
            "smoothness-mixture",
            "--designs",
            f"uniform,student:{out}",
            "-T",
            "60",
            "-R",
            "3",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.output)) == {"uniform", f"student:{out}", "oracle"}
    res = run(main, ["simulate", "--scenario", "S2", "--designs", f"student:{tmp_path / 'missing'}", "-T", "60"])
    assert res.exit_code == 2 and "missing" in res.output


def test_distil_options_name_what_is_wrong(tmp_path):
    """Bad --arch and --loss-weight values stop before any work with exit 2 and name the option."""
    base = ["distil", "--traces", str(tmp_path / "none.nc"), "--out", str(tmp_path / "s")]
    cases = [(["--arch", "d_model"], "--arch: expected KEY=VALUE"),
             (["--arch", "n_classes=3"], "KEY one of"),
             (["--arch", "n_layers=two"], "--arch n_layers: expected an integer, got 'two'"),
             (["--arch", "token_asinh=maybe"], "--arch token_asinh: expected true or false"),
             (["--loss-weight", "pi=-1"], "--loss-weight pi: expected a non-negative number"),
             (["--loss-weight", "nope=1"], "--loss-weight: expected KEY=VALUE with KEY one of")]
    for extra, message in cases:
        res = CliRunner().invoke(main, [*base, *extra])
        assert res.exit_code == 2 and message in res.output, (extra, res.output)
