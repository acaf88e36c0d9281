"""Convergence thresholds on synthetic chains, the vectorized tail ESS against ArviZ, traces
variables, and the `diagnose fit` command."""

import arviz as az
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from bayesdesign.cli import main
from bayesdesign.diagnostics.convergence import (
    THRESHOLDS,
    ConvergenceWarning,
    convergence_flags,
    convergence_summary,
    ess_tail,
    messages,
    trace_variables,
    warn_if_unconverged,
)


def _ar1(rng, chains, draws, rho, dims=()):
    x = np.zeros((chains, draws, *dims))
    x[:, 0] = rng.standard_normal((chains, *dims)) / np.sqrt(1 - rho**2)
    for s in range(1, draws):
        x[:, s] = rho * x[:, s - 1] + rng.standard_normal((chains, *dims))
    return x


def test_good_chains_pass_and_disagreeing_chains_are_flagged(rng):
    good = az.from_dict(
        posterior={"theta": rng.standard_normal((4, 1000, 3))}, sample_stats={"diverging": np.zeros((4, 1000), bool)}
    )
    s = convergence_summary(good)
    assert float(s.rhat_max) < 1.01 and float(s.ess_bulk_min) > 2000 and float(s.ess_tail_min) > 1000
    assert int(s.divergences) == 0 and messages(s) == []
    # two chains centred at 0 and 0.5: the between-chain variance shows in R-hat
    bad_draws = rng.standard_normal((2, 1000))
    bad_draws[1] += 0.5
    div = np.zeros((2, 1000), bool)
    div[0, [10, 500]] = True
    bad = az.from_dict(posterior={"theta": bad_draws}, sample_stats={"diverging": div})
    s = convergence_summary(bad)
    assert float(s.rhat_max) > 1.05 and int(s.divergences) == 2
    with pytest.warns(ConvergenceWarning) as rec:
        msgs = warn_if_unconverged(s, "test fit")
    text = " ".join(str(w.message) for w in rec)
    assert "R-hat" in text and "2 divergent" in text and len(msgs) == len(rec)
    # sticky chains: strong autocorrelation leaves few effective draws
    sticky = convergence_summary({"theta": _ar1(rng, 2, 500, 0.97)})
    assert float(sticky.ess_bulk_min) < THRESHOLDS["ess_bulk"]
    assert any("bulk ESS" in m for m in messages(sticky))


def test_flags_broadcast_and_ignore_missing():
    f = convergence_flags(np.array([1.0, 1.02, np.nan]), np.array([500, 500, 100]), None, np.array([0, 0, 1]))
    np.testing.assert_array_equal(f["rhat_high"], [False, True, False])
    np.testing.assert_array_equal(f["ess_bulk_low"], [False, False, True])
    np.testing.assert_array_equal(f["any"], [False, True, True])
    assert not f["ess_tail_low"].any()
    f = convergence_flags(1.005, thresholds={"rhat": 1.001})
    assert bool(f["rhat_high"])


def test_vectorized_tail_ess_equals_arviz(rng):
    x = _ar1(rng, 4, 400, 0.6, dims=(3,))
    x[..., 1] = _ar1(rng, 4, 400, 0.95)
    mine = ess_tail(x)
    ref = np.array([float(az.ess(x[..., j], method="tail")) for j in range(3)])
    np.testing.assert_allclose(mine, ref, rtol=5e-3)  # same estimator up to float rounding
    assert mine[1] < mine[0]
    with pytest.raises(ValueError, match="at least 4 draws"):
        ess_tail(np.zeros((2, 3)))


def test_trace_variables_record_fits_and_flags():
    per_step = [
        {},
        {"rhat": np.array([1.0, 1.05]), "ess": np.array([800.0, 900.0]), "divergences": np.array([0, 0])},
        {"rhat": np.array([1.0, 1.0]), "ess": np.array([800.0, 50.0]), "divergences": np.array([3, 0])},
    ]
    out = trace_variables(per_step, 2)
    dims, rhat = out["fit_rhat"]
    assert dims == ("task", "step") and np.isnan(rhat[:, 0]).all()
    np.testing.assert_array_equal(out["fit_flagged"][1], [[0, 0, 1], [0, 1, 1]])
    np.testing.assert_array_equal(out["fit_rhat_high"][1], [[0, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(out["fit_divergent"][1], [[0, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(out["fit_ess_bulk_low"][1], [[0, 0, 0], [0, 0, 1]])
    assert "fit_flagged" not in trace_variables([{}, {"loss": np.ones(2)}], 2)


def test_diagnose_fit_reports_bad_input(tmp_path):
    log = tmp_path / "log.csv"
    pd.DataFrame({"x": [0.1, 0.5], "arm": [0, 1], "y": [1.0, 2.0]}).to_csv(log, index=False)
    res = CliRunner().invoke(main, ["diagnose", "fit", "--prior", "beta1", "--history", str(log)])
    assert res.exit_code == 2 and "missing column 'a'" in res.output and str(log) in res.output
    pd.DataFrame({"x": [0.1, 0.5], "a": [0, 2], "y": [1.0, 2.0]}).to_csv(log, index=False)
    res = CliRunner().invoke(main, ["diagnose", "fit", "--prior", "beta1", "--history", str(log)])
    assert res.exit_code == 2
    assert "column 'a': expected arms coded 0 (control) and 1 (treated), found [2] (first at line 3)" in res.output
    res = CliRunner().invoke(main, ["diagnose", "fit", "--prior", "beta1", "--history", str(tmp_path / "none.csv")])
    assert res.exit_code == 2 and "no such file" in res.output


@pytest.mark.slow
def test_diagnose_fit_command_on_user_data(tmp_path):
    rng = np.random.default_rng(3)
    n = 60
    x = rng.uniform(size=n)
    a = rng.integers(0, 2, n)
    y = np.sin(3 * x) + a + (0.5 + 0.5 * a) * rng.standard_normal(n)
    log = tmp_path / "log.csv"
    pd.DataFrame({"x": x, "a": a, "y": y, "pi": 0.5}).to_csv(log, index=False)
    res = CliRunner().invoke(
        main,
        ["diagnose", "fit", "--prior", "beta1", "--history", str(log), "--json", "--out", str(tmp_path / "post.nc")],
    )
    assert res.exit_code == 0, res.output
    import json

    out = json.loads(res.output)
    assert out["units"] == n and out["chains"] == 4 and out["divergences"] == 0
    assert 1.0 <= out["rhat_max"] < 1.05 and out["ess_tail_min"] > 50
    assert out["converged"] == (not out["warnings"])
    assert az.from_netcdf(str(tmp_path / "post.nc")).posterior.sizes["chain"] == 4


@pytest.mark.slow
def test_nuts_traces_record_diagnostics(tmp_path):
    from bayesdesign.io import load_dataset
    from bayesdesign.traces import generate_traces

    out = generate_traces(
        "beta1",
        "nuts",
        tasks=3,
        horizon=40,
        queries=2,
        out=tmp_path / "t.nc",
        refit_every=20,
        teacher_kwargs={"num_warmup": 100, "num_samples": 100},
    )
    ds = load_dataset(out)
    for v in (
        "fit_rhat",
        "fit_ess",
        "fit_ess_tail",
        "fit_divergences",
        "fit_flagged",
        "fit_rhat_high",
        "fit_divergent",
    ):
        assert ds[v].dims == ("task", "step")
    assert np.isnan(ds.fit_rhat.values[:, 0]).all() and np.isfinite(ds.fit_rhat.values[:, 1:]).all()
    # 100 draws of one chain cannot reach an ESS of 400: every fitted step is flagged
    assert (ds.fit_flagged.values[:, 1:] == 1).all() and (ds.fit_flagged.values[:, 0] == 0).all()
    assert (ds.fit_ess_bulk_low.values[:, 1:] == 1).all()
    np.testing.assert_array_equal(ds.fit_divergent.values, (ds.fit_divergences.fillna(0).values > 0).astype(int))
