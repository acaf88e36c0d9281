r"""Coverage of the ATE interval, with Wilson binomial error bars.

A results dataset of :func:`~bayesdesign.design.simulate` records, per design and replication,
whether the 95% Wald interval :math:`\hat\tau \pm 1.96\,\widehat{se}` contains the true ATE
(``covered``, dims ``design, rep``). Over :math:`R` replications the coverage
:math:`\hat c = k / R` is a binomial proportion; its uncertainty is given by the **Wilson score
interval** (Wilson 1927),

.. math::
    \frac{\hat c + \frac{z^2}{2R} \pm z\sqrt{\frac{\hat c(1 - \hat c)}{R} + \frac{z^2}{4R^2}}}{1 + \frac{z^2}{R}},

which, unlike :math:`\hat c \pm z\sqrt{\hat c(1-\hat c)/R}`, stays inside [0, 1] and keeps its
level near 0 and 1. A design whose Wilson interval excludes the nominal 0.95 undercovers (or
overcovers) beyond Monte Carlo noise; DESIGN.md's target is coverage within [0.93, 0.97].
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import norm

__all__ = ["wilson_interval", "coverage_table", "NOMINAL"]

NOMINAL = 0.95


def wilson_interval(successes, trials, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval ``(lower, upper)`` for ``successes`` out of ``trials`` (arrays
    broadcast), at confidence ``level``."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    if np.any(n <= 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError(f"successes, trials: expected 0 <= successes <= trials, trials > 0, got {k} and {n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a probability in (0, 1), got {level}")
    z = norm.ppf(0.5 + level / 2.0)
    p = k / n
    denom = 1.0 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def coverage_table(results: xr.Dataset | dict[str, xr.Dataset], level: float = 0.95) -> pd.DataFrame:
    """Coverage per design (and scenario) with Wilson intervals.

    ``results``: a results dataset, or ``{scenario: dataset}``. Returns a DataFrame with columns
    ``scenario``, ``design``, ``reps``, ``covered``, ``coverage``, ``lower``, ``upper`` and
    ``flag`` (``"low"``/``"high"`` when the Wilson interval excludes 0.95, else ``""``).
    """
    items = results.items() if isinstance(results, dict) else [(None, results)]
    rows = []
    for scenario, ds in items:
        if "covered" not in ds:
            name = scenario or ds.attrs.get("environment", "results")
            raise ValueError(f"{name}: the results have no 'covered' variable (simulated without a known truth?)")
        sc = scenario if scenario is not None else str(ds.attrs.get("environment", ""))
        for design in ds.design.values:
            cov = np.asarray(ds.covered.sel(design=design).values, dtype=bool)
            k, n = int(cov.sum()), int(cov.size)
            lo, hi = wilson_interval(k, n, level)
            rows.append(
                {
                    "scenario": sc,
                    "design": str(design),
                    "reps": n,
                    "covered": k,
                    "coverage": k / n,
                    "lower": float(lo),
                    "upper": float(hi),
                    "flag": "low" if hi < NOMINAL else ("high" if lo > NOMINAL else ""),
                }
            )
    return pd.DataFrame(rows)
