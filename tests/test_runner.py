"""The runner: common random numbers, the dataset it returns, netCDF round trips, and the
statistical targets of the foundation (the slow ones run with ``-m slow``)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from bayesdesign.cli import main
from bayesdesign.design import get_scenario, simulate
from bayesdesign.estimation import aipw
from bayesdesign.io import load_dataset, save_dataset
from bayesdesign.summary import FIELDS, summarize


def test_dataset_layout_and_common_random_numbers():
    ds = simulate(get_scenario("S2"), ["uniform", "plugin-neyman"], horizon=200, reps=6, seed=11)
    assert list(ds.design.values) == ["uniform", "plugin-neyman", "oracle"]
    assert dict(ds.sizes) == {"design": 3, "rep": 6, "unit_rep": 6, "t": 200, "covariate": 1}
    for v in ("x", "a", "y", "pi", "G", "pi_star", "tau_hat", "se", "covered", "design_var"):
        assert v in ds
    # the same uniforms decide every design: where pi agrees, the arm agrees
    u_uniform = ds.a.sel(design="uniform")
    same = np.isclose(ds.pi.sel(design="plugin-neyman"), 0.5)
    assert (ds.a.sel(design="plugin-neyman").values[same] == u_uniform.values[same]).all()
    # y is the potential outcome of the arm received
    again = simulate(get_scenario("S2"), ["uniform"], horizon=200, reps=6, seed=11)
    np.testing.assert_array_equal(again.y.sel(design="uniform"), ds.y.sel(design="uniform"))


def test_batched_refits_and_netcdf_round_trip(tmp_path):
    ds = simulate(get_scenario("S3"), ["plugin-neyman"], horizon=300, reps=3, seed=2, batch_size=50, keep_units=2)
    pi = ds.pi.sel(design="plugin-neyman").values
    assert np.all(pi[:, :50] == 0.5)  # the first batch sees no data
    assert ds.sizes["rep"] == 3 and ds.pi.shape == (2, 2, 300)
    path = save_dataset(ds, tmp_path / "sub" / "r.nc")
    back = load_dataset(path)
    np.testing.assert_array_equal(back.tau_hat, ds.tau_hat)
    assert back.attrs["batch_size"] == 50 and back.covered.dtype == bool
    assert not list(tmp_path.joinpath("sub").glob("*.part"))


def test_task_batches_and_replay(rng):
    ds = simulate(get_scenario("S4"), ["uniform"], horizon=200, reps=5, seed=0)
    assert np.unique(ds.ate).size == 5  # one task per replication
    assert np.all(ds.v_star > 0)


def test_uniform_design_variance_matches_the_bound():
    ds = simulate(get_scenario("S2"), ["uniform"], horizon=500, reps=40, seed=5)
    s = summarize(ds)
    assert s.loc["uniform", "design_var_ratio"] == pytest.approx(1.289, rel=0.02)
    assert s.loc["oracle", "design_var_ratio"] == pytest.approx(1.0, abs=0.01)


def test_oracle_and_uniform_mse_quick():
    ds = simulate(get_scenario("S2"), ["uniform"], horizon=1000, reps=300, seed=21)
    err = ds.tau_hat - ds.ate
    t_mse = 1000 * (err**2).mean("rep")
    v_star = float(ds.v_star[0])
    assert float(t_mse.sel(design="oracle")) / v_star == pytest.approx(1.0, abs=0.2)
    assert 0.9 <= float(ds.covered.mean()) <= 0.99


@pytest.mark.slow
def test_oracle_mse_matches_v_star_and_uniform_ratio():
    """Done-when of the foundation: oracle T*MSE within 5% of V*, uniform ratio within 5% of 1.29."""
    ds = simulate(get_scenario("S2"), ["uniform"], horizon=2000, reps=1000, seed=7)
    mse = ((ds.tau_hat - ds.ate) ** 2).mean("rep")
    v_star = 2 + (np.e**2 - np.e**-2) / 2
    assert 2000 * float(mse.sel(design="oracle")) / v_star == pytest.approx(1.0, abs=0.05)
    assert float(mse.sel(design="uniform") / mse.sel(design="oracle")) == pytest.approx(1.289, rel=0.05)
    rod = summarize(ds)["realized_over_design"]
    assert rod["oracle"] == pytest.approx(1.0, abs=0.1) and rod["uniform"] == pytest.approx(1.0, abs=0.1)


def test_cli_simulate_json_contract(tmp_path):
    out = tmp_path / "r.nc"
    res = CliRunner().invoke(
        main,
        [
            "simulate",
            "--scenario",
            "S5",
            "--designs",
            "uniform,clip-ogd",
            "-T",
            "200",
            "-R",
            "5",
            "--seed",
            "1",
            "--json",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert set(data) == {"uniform", "clip-ogd", "oracle"}
    for row in data.values():
        assert set(row) == set(FIELDS)
    # every field recomputed from the raw per-replication arrays saved with --out
    ds = load_dataset(out)
    assert ds.attrs["horizon"] == 200
    mse = {d: float(np.mean((ds.tau_hat.sel(design=d).values - ds.ate.values) ** 2)) for d in data}
    z = 1.959964
    for d, row in data.items():
        est, se, ate = ds.tau_hat.sel(design=d).values, ds.se.sel(design=d).values, ds.ate.values
        assert row["mse"] == pytest.approx(mse[d], rel=1e-9)
        assert row["mse_ratio"] == pytest.approx(mse[d] / mse["oracle"], rel=1e-9)
        assert row["bias"] == pytest.approx(float(np.mean(est - ate)), rel=1e-9, abs=1e-12)
        assert row["coverage"] == pytest.approx(float(np.mean(np.abs(est - ate) <= z * se)))
        e2, dv = (est - ate) ** 2, ds.design_var.sel(design=d).values.mean()
        assert row["realized_over_design"] == pytest.approx(200 * e2.mean() / dv, rel=1e-9)
        assert row["realized_over_design_se"] == pytest.approx(200 * e2.std() / np.sqrt(5) / dv, rel=1e-9)
        assert row["score_over_design"] == pytest.approx(200 * np.mean(se**2) * 200 / 199 / dv, rel=1e-9)
        e_cv = 200 * e2 - ds.error_control.sel(design=d).values
        assert row["realized_over_design_cv"] == pytest.approx(e_cv.mean() / dv, rel=1e-9)
        assert row["realized_over_design_cv_se"] == pytest.approx(e_cv.std() / np.sqrt(5) / dv, rel=1e-9)


def test_score_over_design_estimates_the_realized_ratio_with_less_noise():
    """E[T MSE] = E[T se^2] T_s/(T_s - 1) for martingale-difference scores, so the score-based
    ratio agrees with T MSE / design variance within their joint Monte Carlo error, and with an
    error many times smaller than the squared errors' (each replication contributes a mean square
    of T scores instead of one squared error)."""
    ds = simulate(get_scenario("S2"), ["uniform", "plugin-neyman"], horizon=300, reps=300, seed=3, keep_units=0)
    df = summarize(ds)
    for name, row in df.iterrows():
        joint = np.hypot(row["realized_over_design_se"], row["score_over_design_se"])
        assert abs(row["score_over_design"] - row["realized_over_design"]) < 3 * joint, name
        assert row["score_over_design_se"] < 0.25 * row["realized_over_design_se"], name
        assert 0.9 < row["score_over_design"] < 1.2, name
        joint = np.hypot(row["realized_over_design_se"], row["realized_over_design_cv_se"])
        assert abs(row["realized_over_design_cv"] - row["realized_over_design"]) < 3 * joint, name
        assert row["realized_over_design_cv_se"] < 0.5 * row["realized_over_design_se"], name


def test_the_oracle_error_control_has_mean_zero():
    """E[C] = 0 for the control variate of ``realized_over_design_cv``. On S1 the spread of the
    unit effects is a ninth of the uniform design's variance, so a control without its
    :math:`(\tau(X_t) - \tau)^2` term would be off by about 0.11 of the design variance, over four
    of this test's standard errors (6000 replications); one without the propensity terms by about 1."""
    ds = simulate(get_scenario("S1"), ["uniform"], horizon=60, reps=6000, seed=11, keep_units=0)
    c = ds.error_control.sel(design="uniform").values
    dv = float(ds.design_var.sel(design="uniform").mean())
    se = c.std() / np.sqrt(c.size)
    assert se < 0.025 * dv
    assert abs(c.mean()) < 3 * se


def test_cli_analyze_and_errors(tmp_path, rng):
    import pandas as pd

    t = 300
    x = rng.uniform(size=t)
    a = rng.integers(0, 2, t)
    df = pd.DataFrame({"x": x, "a": a, "y": a + rng.standard_normal(t), "pi": 0.5})
    df.to_csv(tmp_path / "log.csv", index=False)
    res = CliRunner().invoke(main, ["analyze", str(tmp_path / "log.csv"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    ref = aipw(x, a, df.y.to_numpy(), np.full(t, 0.5))
    assert (out["ate"], out["se"]) == pytest.approx((float(ref.estimate), float(ref.se)), rel=1e-12)
    half = 1.959964 * out["se"]  # the standard normal's 97.5% quantile
    assert (out["lower"], out["upper"]) == pytest.approx((out["ate"] - half, out["ate"] + half))
    assert out["n_units"] == t and out["covariates"] == ["x"]
    res = CliRunner().invoke(main, ["analyze", str(tmp_path / "log.csv"), "--propensity", "p"])
    assert res.exit_code == 2 and "missing column 'p'" in res.output
    res = CliRunner().invoke(main, ["simulate", "--scenario", "S11", "-T", "50", "-R", "1"])
    assert res.exit_code == 2 and "scenario: unknown name 'S11'" in res.output
    res = CliRunner().invoke(main, ["simulate", "--designs", "uniform,nope", "-T", "50", "-R", "1"])
    assert res.exit_code == 2 and "design: unknown name 'nope'" in res.output
    res = CliRunner().invoke(main, ["simulate", "--help"])
    assert res.exit_code == 0 and "--seed" in res.output and "--out" in res.output
    # replay from a table on the command line
    df.drop(columns="pi").to_csv(tmp_path / "trial.csv", index=False)
    res = CliRunner().invoke(
        main,
        ["simulate", "--replay", str(tmp_path / "trial.csv"), "--designs", "uniform", "-T", "100", "-R", "3", "--json"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["uniform"]["design_var_ratio"] > 0.9


def test_cli_simulate_from_a_prior_file():
    res = CliRunner().invoke(
        main,
        [
            "simulate",
            "--prior",
            "beta2",
            "--designs",
            "uniform,teacher:conjugate:beta2",
            "-T",
            "100",
            "-R",
            "4",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.output)) == {"uniform", "teacher:conjugate:beta2", "oracle"}
    res = CliRunner().invoke(main, ["simulate", "--prior", "nope", "-T", "50", "-R", "1"])
    assert res.exit_code == 2 and "nope: no such prior file (shipped priors:" in res.output


class _BadEnv:
    """A user environment with a configurable defect."""

    d = 1
    bounds = (np.array([0.0]), np.array([1.0]))

    def __init__(self, defect):
        self.defect = defect

    def sample_covariates(self, rng, n):
        if self.defect == "shape":
            return rng.uniform(size=(n, 2))
        if self.defect == "bounds":
            return rng.uniform(0.5, 1.5, size=(n, 1))
        return rng.uniform(size=(n, 1))

    def sample_outcomes(self, rng, x, arm):
        y = rng.standard_normal(len(x))
        if self.defect == "nan":
            y[3] = np.nan
        return y


@pytest.mark.parametrize(
    "defect, message",
    [
        ("shape", r"environment.sample_covariates: expected shape \(200, 1\), got \(200, 2\)"),
        (
            "bounds",
            r"environment.sample_covariates: covariate 0 has \d+ value\(s\) outside the declared bounds \[0.0, 1.0\]",
        ),
        ("nan", r"environment.sample_outcomes\(arm=1\): expected finite numbers, found 1 NaN"),
    ],
)
def test_a_defective_user_environment_is_named(defect, message):
    with pytest.raises(ValueError, match=message):
        simulate(_BadEnv(defect), ["uniform"], horizon=20, reps=10)


def test_designs_run_without_truth_and_report_nan_scores():
    ds = simulate(_BadEnv(None), ["uniform", "plugin-neyman"], horizon=60, reps=3)
    assert "oracle" not in ds.design.values and np.isfinite(ds.tau_hat).all()
    assert summarize(ds).isna().all().all()
