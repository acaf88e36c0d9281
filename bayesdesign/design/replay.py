r"""A replay environment built from the table of a completed randomized trial.

Covariates are resampled from the trial's units. The outcome of arm :math:`a` at :math:`x` is
drawn uniformly from the outcomes of the :math:`k` units of arm :math:`a` nearest to :math:`x`
(Euclidean distance on covariates standardized by the trial's sd). So the truth is known by
construction: :math:`\mu_a(x)` is the mean and :math:`\sigma_a(x)` the (population) sd of those
:math:`k` outcomes, and :math:`\tau` is the average of :math:`\mu_1 - \mu_0` over the trial's
units, the distribution covariates are drawn from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from ..logs import describe, read_units

__all__ = ["ReplayEnvironment"]


class ReplayEnvironment:
    """Replay a finished trial.

    Parameters
    ----------
    table : DataFrame or path to a CSV / parquet file, one row per unit.
    covariates : covariate column names; ``None`` takes every column but arm, outcome and
        propensity, refusing non-numeric and identifier columns (see :mod:`bayesdesign.logs`).
        The columns used are in ``self.covariates``.
    arm, outcome : names of the 0/1 arm column and the outcome column.
    propensity : the trial's treatment-probability column, if it has one: never a covariate.
    k : neighbours per arm whose outcomes define the outcome distribution at ``x``.
    bounds : covariate box; defaults to the trial's range.
    """

    def __init__(
        self,
        table,
        covariates: Sequence[str] | None,
        arm: str = "a",
        outcome: str = "y",
        k: int = 20,
        bounds=None,
        name: str | None = None,
        propensity: str = "pi",
    ):
        where = describe(table)
        x, a, y, _, covariates = read_units(
            table, covariates, arm=arm, outcome=outcome, propensity=propensity, require_propensity=False
        )
        counts = np.bincount(a, minlength=2)
        if (counts == 0).any():
            raise ValueError(
                f"{where}: column {arm!r}: a replay needs units in both arms, found only arm {int(np.argmax(counts))}"
            )
        if k < 1 or k > counts.min():
            raise ValueError(f"k: expected 1 <= k <= {int(counts.min())} (units in the smaller arm), got {k}")
        self.name = name or "replay"
        self.covariates, self.k = covariates, k
        self.d = x.shape[1]
        self._x, self._scale = x, np.where(x.std(0) > 0, x.std(0), 1.0)
        lo, hi = x.min(0), x.max(0)
        self.bounds = (
            (lo, np.where(hi > lo, hi, lo + 1.0))
            if bounds is None
            else (np.asarray(bounds[0], float), np.asarray(bounds[1], float))
        )
        self._y = [y[a == 0], y[a == 1]]
        self._trees = [cKDTree(x[a == arm] / self._scale) for arm in (0, 1)]

    def neighbours(self, x: np.ndarray, arm: int) -> np.ndarray:
        """Outcomes of the ``k`` nearest units of ``arm`` to each row of ``x`` (..., d) -> (..., k)."""
        x = np.asarray(x, dtype=float)
        _, idx = self._trees[arm].query(x.reshape(-1, self.d) / self._scale, k=self.k)
        idx = np.asarray(idx).reshape(-1, self.k)
        return self._y[arm][idx].reshape(*x.shape[:-1], self.k)

    def _per_arm(self, fn, x, arm):
        arm = np.broadcast_to(np.asarray(arm), np.shape(x)[:-1])
        return np.where(arm == 1, fn(self.neighbours(x, 1)), fn(self.neighbours(x, 0)))

    def sample_covariates(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self._x[rng.integers(0, len(self._x), size=n)]

    def sample_outcomes(self, rng: np.random.Generator, x, arm) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        pick = rng.integers(0, self.k, size=x.shape[:-1])[..., None]
        draw = [np.take_along_axis(self.neighbours(x, s), pick, -1)[..., 0] for s in (0, 1)]
        return np.where(np.broadcast_to(np.asarray(arm), x.shape[:-1]) == 1, draw[1], draw[0])

    def mean(self, x, arm) -> np.ndarray:
        return self._per_arm(lambda v: v.mean(-1), x, arm)

    def sd(self, x, arm) -> np.ndarray:
        return self._per_arm(lambda v: v.std(-1), x, arm)

    def quadrature(self):
        """The trial's units with equal weights: the covariate distribution exactly."""
        return self._x, np.full(len(self._x), 1.0 / len(self._x))

    @property
    def ate(self) -> float:
        return float(np.mean(self.mean(self._x, 1) - self.mean(self._x, 0)))
