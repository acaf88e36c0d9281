"""Wilson intervals against hand-computed values; the coverage table flags undercoverage."""

import numpy as np
import pytest
import xarray as xr

from bayesdesign.diagnostics.coverage import coverage_table, wilson_interval


def test_wilson_interval_matches_hand_computation():
    # 45 of 50, z = 1.959964: centre (0.9 + z^2/100) / (1 + z^2/50) = 0.871459,
    # half-width z sqrt(0.9 * 0.1 / 50 + z^2 / 10000) / (1 + z^2/50) = 0.085063
    lo, hi = wilson_interval(45, 50)
    assert lo == pytest.approx(0.786396, abs=1e-5) and hi == pytest.approx(0.956524, abs=1e-5)
    lo, hi = wilson_interval(0, 20)  # stays inside [0, 1], unlike the Wald interval
    assert lo == 0.0 and hi == pytest.approx(0.161125, abs=1e-5)
    lo, hi = wilson_interval(np.array([950, 1000]), 1000, level=0.9)
    assert lo[1] == pytest.approx(0.99730, abs=1e-4) and hi[1] == pytest.approx(1.0) and lo[0] < 0.95 < hi[0]
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 4)
    with pytest.raises(ValueError, match="level"):
        wilson_interval(1, 4, level=95)


def test_wilson_interval_has_its_level(rng):
    n, p = 80, 0.93
    k = rng.binomial(n, p, size=4000)
    lo, hi = wilson_interval(k, n)
    assert 0.93 < np.mean((lo <= p) & (p <= hi)) < 0.97


def test_coverage_table_flags_undercoverage(rng):
    reps = 1000
    covered = np.stack([rng.uniform(size=reps) < 0.95, rng.uniform(size=reps) < 0.85])
    ds = xr.Dataset(
        {"covered": (("design", "rep"), covered)}, coords={"design": ["good", "bad"]}, attrs={"environment": "S9"}
    )
    t = coverage_table({"S9": ds})
    assert list(t["design"]) == ["good", "bad"] and (t["reps"] == reps).all()
    good, bad = t.iloc[0], t.iloc[1]
    assert good["flag"] == "" and good["lower"] < 0.95 < good["upper"]
    assert bad["flag"] == "low" and bad["upper"] < 0.95
    assert bad["coverage"] == pytest.approx(covered[1].mean())
    with pytest.raises(ValueError, match="covered"):
        coverage_table(ds.drop_vars("covered"))
