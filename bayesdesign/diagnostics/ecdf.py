r"""The ECDF uniformity check shared by SBC and PIT.

Given :math:`N` values :math:`u_1..u_N` that should be draws of :math:`U(0, 1)` (normalized SBC
ranks, PIT values), the empirical CDF :math:`F_N(z) = \#\{u_i \le z\} / N` at evaluation points
:math:`z_1 < \dots < z_K` is compared with :math:`z` itself. ArviZ's
:func:`arviz.stats.ecdf_utils.ecdf_confidence_band` gives a **simultaneous** band (Säilynoja,
Bürkner & Vehtari 2022, "optimized" method): under uniformity the whole ECDF stays inside it with
probability ``prob``. The verdict is *pass* when every point of :math:`F_N` lies in the band.

SBC ranks are discrete: with :math:`L` posterior draws the rank :math:`r \in \{0..L\}` is
uniform on :math:`L + 1` values under calibration. They are mapped to
:math:`u = (r + 1) / (L + 1)` and evaluated at :math:`z_j = j / (L + 1)`, where
:math:`P(u \le z_j) = j / (L + 1) = z_j` exactly, so the band of the continuous case applies.

With several quantities checked at once, each band is taken at level
:math:`1 - (1 - \text{prob}) / P` (Bonferroni), so that a calibrated posterior passes all
:math:`P` checks with probability at least ``prob``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from arviz.stats.ecdf_utils import compute_ecdf, ecdf_confidence_band

__all__ = ["eval_points", "uniformity_check", "ranks_to_unit"]


def ranks_to_unit(ranks: np.ndarray, n_draws: int) -> np.ndarray:
    """SBC ranks in ``0..n_draws`` to :math:`u = (r + 1) / (L + 1)` in ``(0, 1]``."""
    ranks = np.asarray(ranks)
    if ranks.size and (ranks.min() < 0 or ranks.max() > n_draws):
        raise ValueError(f"ranks: expected integers in 0..{n_draws}, got values in {ranks.min()}..{ranks.max()}")
    return (ranks + 1.0) / (n_draws + 1.0)


def eval_points(n_draws: int | None, max_points: int = 100) -> np.ndarray:
    """Evaluation points: :math:`j / (L + 1)`, :math:`j = 1..L` (at most ``max_points`` of them,
    evenly spread) for ranks out of ``L`` draws; ``None`` (continuous PIT values): ``max_points``
    evenly spaced points in (0, 1)."""
    if n_draws is None:
        return np.arange(1, max_points + 1) / (max_points + 1.0)
    j = np.unique(np.round(np.linspace(1, n_draws, min(n_draws, max_points))).astype(int))
    return j / (n_draws + 1.0)


def uniformity_check(values: np.ndarray, n_draws: int | None = None, prob: float = 0.95, n_tests: int = 1) -> dict:
    r"""Is ``values`` (N,) uniform on (0, 1)? (SBC ranks in ``0..n_draws`` when ``n_draws`` is
    given, else continuous values such as PIT.)

    Returns a dict: ``passed`` (bool), ``level`` (band probability after the Bonferroni
    correction for ``n_tests`` checks), ``z`` (K,) evaluation points, ``ecdf`` (K,), ``lower``,
    ``upper`` (K,) the simultaneous band, ``outside`` (fraction of points outside the band),
    ``max_excess`` (largest distance of the ECDF outside the band, 0 when inside), ``ks`` (the
    largest :math:`|F_N(z) - z|` on the points) and ``n``.
    """
    if not 0.0 < prob < 1.0:
        raise ValueError(f"prob: expected a probability in (0, 1), got {prob}")
    if n_tests < 1:
        raise ValueError(f"n_tests: expected a positive integer, got {n_tests}")
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size < 2:
        raise ValueError(f"values: expected at least 2 finite values, got {v.size}")
    u = ranks_to_unit(v, n_draws) if n_draws is not None else v
    z = eval_points(n_draws)
    level = 1.0 - (1.0 - prob) / n_tests
    lower, upper = _band(u.size, n_draws, level)
    ecdf = compute_ecdf(np.sort(u), z)
    excess = np.maximum(lower - ecdf, 0.0) + np.maximum(ecdf - upper, 0.0)
    return {
        "passed": bool(np.all(excess <= 1e-12)),
        "level": float(level),
        "z": z,
        "ecdf": ecdf,
        "lower": lower,
        "upper": upper,
        "outside": float(np.mean(excess > 1e-12)),
        "max_excess": float(excess.max()),
        "ks": float(np.max(np.abs(ecdf - z))),
        "n": int(u.size),
    }


@lru_cache(maxsize=64)
def _band(n: int, n_draws: int | None, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The simultaneous band for ``n`` values (it depends on nothing else; the optimization
    takes about 0.3 s, so it is cached)."""
    z = eval_points(n_draws)
    lower, upper = ecdf_confidence_band(n, z, z, prob=level, method="optimized")
    return np.asarray(lower, float), np.asarray(upper, float)
