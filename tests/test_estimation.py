"""AIPW against a closed form (running arm means), equivariance, DiM/IPW, and bad input."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bayesdesign.design.policy import ClipSchedule
from bayesdesign.estimation import aipw, analyze, difference_in_means, ipw, normal_check, wald_interval
from bayesdesign.regression import NUISANCE_SCALE, SeriesRidge, nuisance_fitter


def _trial(rng, t=300, p=0.5):
    x = rng.uniform(size=(t, 1))
    a = (rng.uniform(size=t) < p).astype(int)
    y = np.where(a == 1, 1.0 + x[:, 0], x[:, 0]) + rng.standard_normal(t)
    return x, a, y, np.full(t, p)


def test_aipw_with_intercept_only_nuisance_is_the_running_mean_closed_form(rng):
    x, a, y, pi = _trial(rng, t=200, p=0.3)
    fit = SeriesRidge(([0.0], [1.0]), n_terms=0)  # m_a^(t-1) = mean of earlier arm-a outcomes
    res = aipw(x, a, y, pi, bounds=([0.0], [1.0]), fitter=fit, min_arm_obs=3)
    g, keep = [], []
    for t in range(len(y)):
        past = [y[:t][a[:t] == arm] for arm in (0, 1)]
        m = [p.sum() / (len(p) + 1e-8) for p in past]  # ridge with the 1e-8 intercept penalty
        g.append(m[1] - m[0] + a[t] * (y[t] - m[1]) / pi[t] - (1 - a[t]) * (y[t] - m[0]) / (1 - pi[t]))
        keep.append(min(len(p) for p in past) >= 3)
    g, keep = np.array(g), np.array(keep)
    est = g[keep].mean()
    np.testing.assert_allclose(res.G[keep], g[keep], rtol=1e-7)
    np.testing.assert_allclose(res.estimate, est, rtol=1e-7)
    np.testing.assert_allclose(res.se, np.sqrt(((g[keep] - est) ** 2).mean() / keep.sum()), rtol=1e-7)


def test_aipw_recovers_the_ate_and_is_more_precise_than_ipw(rng):
    ests, ses, hts = [], [], []
    for _ in range(60):
        x, a, y, pi = _trial(rng, t=400)
        res = aipw(x, a, y, pi)
        ests.append(res.estimate)
        ses.append(res.se)
        hts.append(ipw(a, y, pi)[0])
    ests = np.array(ests)
    assert abs(ests.mean() - 1.0) < 4 * ests.std() / np.sqrt(60)
    # sd of the estimate over replications matches the mean reported se within 25%
    assert 0.75 < ests.std() / np.mean(ses) < 1.25
    assert np.var(ests) < np.var(hts)


def test_nuisance_of_each_unit_uses_earlier_units_only(rng):
    x, a, y, pi = _trial(rng, t=300)
    base = aipw(x, a, y, pi, bounds=([0.0], [1.0]))
    k = 150
    y2 = y.copy()
    y2[k] += 50.0  # a wild future outcome
    moved = aipw(x, a, y2, pi, bounds=([0.0], [1.0]))
    np.testing.assert_array_equal(moved.m[: k + 1], base.m[: k + 1])
    np.testing.assert_array_equal(moved.G[:k], base.G[:k])
    assert np.abs(moved.m[k + 1 :] - base.m[k + 1 :]).max() > 0.1  # later units do see it


def test_nuisance_prior_scale_lowers_the_excess_over_the_design_variance():
    """On four variance cells (S10) with the oracle design, the mean squared AIPW score (what
    T * MSE estimates, the scores being martingale differences) exceeds the design variance by
    the nuisance error; the tighter default prior (scale 1) shrinks that excess against the old
    fitter (scale 3) on the same experiments."""
    from bayesdesign.design import get_scenario
    from bayesdesign.design.environment import evaluate
    from bayesdesign.design.registry import make_design
    from bayesdesign.design.runner import draw_experiments, run_design
    from bayesdesign.efficiency import design_variance

    assert NUISANCE_SCALE == 1.0
    env, x, y0, y1, u = draw_experiments(get_scenario("S10"), 1000, 24, seed=2)
    pi, a, y = run_design(make_design("oracle", env, 1000), x, y0, y1, u)
    dv = design_variance(pi, evaluate(env, "sd", x, 1), evaluate(env, "sd", x, 0))[:, 20:].mean()
    excess = []
    for fitter in (SeriesRidge(env.bounds, scale=3.0), nuisance_fitter(env.bounds)):
        g = aipw(x, a, y, pi, bounds=env.bounds, fitter=fitter).G[:, 20:]
        excess.append(((g - 1.0) ** 2).mean() / dv - 1.0)  # the ATE of S10 is 1
    assert 0.0 < excess[1] < 0.7 * excess[0]


def test_difference_in_means_and_ipw_closed_forms():
    a = np.array([1, 0, 1, 0, 1, 0])
    y = np.array([3.0, 1.0, 5.0, 2.0, 4.0, 0.0])
    est, se = difference_in_means(a, y)
    assert est == pytest.approx(4.0 - 1.0)
    assert se == pytest.approx(np.sqrt(1.0 / 3 + 1.0 / 3))
    pi = np.full(6, 0.5)
    ht, _ = ipw(a, y, pi)
    assert ht == pytest.approx(np.mean([6.0, -2.0, 10.0, -4.0, 8.0, 0.0]))
    lo, hi = wald_interval(1.0, 0.5)
    assert (lo, hi) == pytest.approx((1.0 - 1.959964 * 0.5, 1.0 + 1.959964 * 0.5), rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    shift=st.floats(-1e4, 1e4),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31 - 1),
    p=st.floats(0.05, 0.95),
)
def test_aipw_is_equivariant_to_outcome_units(shift, scale, seed, p):
    x, a, y, pi = _trial(np.random.default_rng(seed), t=60, p=p)
    assume(min(a.sum(), (1 - a).sum()) >= 8)
    base = aipw(x, a, y, pi, bounds=([0.0], [1.0]))
    moved = aipw(x, a, shift + scale * y, pi, bounds=([0.0], [1.0]))
    tol = 1e-6 * (1 + abs(shift) / scale) * max(1.0, abs(base.estimate))
    assert moved.estimate / scale == pytest.approx(base.estimate, abs=tol)
    assert moved.se / scale == pytest.approx(base.se, rel=1e-5, abs=tol)


@settings(max_examples=50, deadline=None)
@given(
    t=st.integers(1, 10**6),
    pi=st.floats(0.0, 1.0),
    eps_min=st.floats(0.001, 0.49),
)
def test_clip_schedule_keeps_probabilities_inside_the_band(t, pi, eps_min):
    sched = ClipSchedule(eps_min=eps_min)
    e = sched.eps(t)
    out = sched.clip(np.array([pi]), t)[0]
    assert eps_min <= e <= 0.5
    assert e - 1e-15 <= out <= 1 - e + 1e-15
    assert sched.eps(t + 1) <= e  # non-increasing in t
    if e <= pi <= 1 - e:
        assert out == pi


def test_bad_input_names_the_argument(rng):
    x, a, y, pi = _trial(rng, t=50)
    with pytest.raises(ValueError, match=r"^y: expected finite numbers"):
        aipw(x, a, np.where(np.arange(50) == 3, np.nan, y), pi)
    with pytest.raises(ValueError, match=r"^a: expected arms coded 0 .* found \[2\]"):
        aipw(x, np.where(np.arange(50) == 3, 2, a), y, pi)
    with pytest.raises(ValueError, match=r"^pi: expected treatment probabilities strictly inside \(0, 1\)"):
        aipw(x, a, y, np.where(np.arange(50) == 3, 1.0, pi))
    with pytest.raises(ValueError, match=r"^y: expected shape \(50,\)"):
        aipw(x, a, y[:-1], pi)
    with pytest.raises(ValueError, match=r"^x: covariate 0 has 1 value\(s\) outside the declared bounds"):
        aipw(np.where(np.arange(50)[:, None] == 0, 1.5, x), a, y, pi, bounds=([0.0], [1.0]))
    with pytest.raises(ValueError, match=r"^x: expected finite numbers"):
        aipw(np.full_like(x, np.inf), a, y, pi)


def test_analyze_from_a_logged_table(tmp_path, rng):
    x, a, y, pi = _trial(rng, t=500)
    df = pd.DataFrame({"age": x[:, 0], "treated": a, "revenue": y, "p": pi})
    path = tmp_path / "log.csv"
    df.to_csv(path, index=False)
    res = analyze(path, arm="treated", outcome="revenue", propensity="p")
    ref = aipw(x, a, y, pi)
    assert res["ate"] == pytest.approx(float(ref.estimate))
    z95 = 1.959964  # standard normal 97.5% quantile
    assert (res["lower"], res["upper"]) == pytest.approx((res["ate"] - z95 * res["se"], res["ate"] + z95 * res["se"]))
    res90 = analyze(path, arm="treated", outcome="revenue", propensity="p", level=0.9)
    assert res90["upper"] - res90["ate"] == pytest.approx(1.644854 * res["se"], rel=1e-6)
    assert res["n_units"] == 500 and res["n_treated"] == int(a.sum())
    df.to_parquet(tmp_path / "log.parquet")
    assert analyze(tmp_path / "log.parquet", arm="treated", outcome="revenue", propensity="p")["ate"] == pytest.approx(
        res["ate"]
    )
    with pytest.raises(ValueError, match=r"log.csv: missing column 'pi'"):
        analyze(path, arm="treated", outcome="revenue")
    with pytest.raises(ValueError, match=r"log.csv: column 'revenue': expected finite numbers"):
        df.assign(revenue=np.nan).to_csv(path, index=False)
        analyze(path, arm="treated", outcome="revenue", propensity="p")
    with pytest.raises(FileNotFoundError, match="nope.csv: no such file"):
        analyze(tmp_path / "nope.csv")


def test_cochran_rule_flags_the_samples_whose_normal_interval_undercovers(rng):
    """Revenue-like scores (30% buyers, lognormal amounts, s = 1.2): the rule asks for several
    hundred units, and with 100 the normal interval of the mean covers clearly less than 95%
    (measured over 4000 samples here); Gaussian scores of the same size pass it and cover."""
    n, reps = 100, 4000
    mean = 0.3 * np.exp(0.72)  # E[B * LogNormal(0, 1.2)]
    buys = rng.uniform(size=(reps, n)) < 0.3
    revenue = np.where(buys, np.exp(1.2 * rng.standard_normal((reps, n))), 0.0)
    gauss = rng.standard_normal((reps, n))
    for sample, truth, flagged in ((revenue, mean, True), (gauss, 0.0, False)):
        half = 1.959964 * sample.std(1, ddof=1) / np.sqrt(n)
        cover = (np.abs(sample.mean(1) - truth) <= half).mean()
        checks = [normal_check(s) for s in sample[:200]]
        share = np.mean([bool(c["warnings"]) for c in checks])
        if flagged:
            assert cover < 0.92 and share > 0.9 and np.median([c["cochran_n"] for c in checks]) > 300
            assert "Cochran's rule" in checks[0]["warnings"][0] and "has 100" in checks[0]["warnings"][0]
        else:
            assert 0.94 < cover < 0.96 and share == 0.0


def test_analyze_warns_on_skewed_outcomes(tmp_path, rng):
    from click.testing import CliRunner

    from bayesdesign.cli import main

    x, a, _, pi = _trial(rng, t=300)
    s = np.where(a == 1, 1.5, 0.3)  # the treated arm's amounts the more skewed: its scores carry the skew
    y = np.where(rng.uniform(size=300) < 0.2, np.exp(3 + s * rng.standard_normal(300)), 0.0)  # dollars
    path = tmp_path / "log.csv"
    pd.DataFrame({"age": x[:, 0], "a": a, "y": y, "pi": pi}).to_csv(path, index=False)
    res = analyze(path)
    assert res["score_skewness"] > 2 and res["cochran_n"] > res["n_scored"] and len(res["warnings"]) == 1
    out = CliRunner().invoke(main, ["analyze", str(path), "--json"])
    assert out.exit_code == 0 and "warning: the AIPW scores are skewed" in out.stderr
    assert json.loads(out.stdout)["warnings"] == res["warnings"]
    x, a, y, pi = _trial(rng, t=300)
    assert analyze(pd.DataFrame({"age": x[:, 0], "a": a, "y": y, "pi": pi}))["warnings"] == []
