r"""Augmented IPW with sequential nuisances, its variance and Wald interval; DiM and IPW.

With :math:`\hat m_a^{(t-1)}` fitted on units before :math:`t` only,

.. math::
    G_t = \hat m_1(X_t) - \hat m_0(X_t) + \frac{A_t (Y_t - \hat m_1(X_t))}{\pi_t}
          - \frac{(1 - A_t)(Y_t - \hat m_0(X_t))}{1 - \pi_t},\qquad
    \hat\tau = \frac1T \sum_t G_t,\qquad
    \widehat{se} = \sqrt{\frac{1}{T^2}\sum_t (G_t - \hat\tau)^2}.

:math:`G_t - \tau` is a martingale difference sequence whatever the design, provided
:math:`\pi_t` is the probability actually used, so the Wald interval is asymptotically valid
(Kato et al. 2020; Cook, Mishler & Ramdas 2024). Units are scored from the first one whose
past holds ``min_arm_obs`` units of each arm (a predictable rule, so validity is kept): before
that the nuisances are undefined and a far-from-zero outcome level would dominate the average.

"Asymptotically" needs enough units when the scores are skewed (revenue: a few large purchases
among many zeros). :func:`normal_check` applies Cochran's rule for the normal approximation of
a mean (Cochran, *Sampling Techniques*, 1977, section 2.15): about :math:`25 g_1^2` units, with
:math:`g_1` the skewness of the scores; :func:`analyze` reports it and warns below it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

from .logs import describe, read_units
from .regression import SeriesRidge, nuisance_fitter, sequential_predictions
from .validation import check_arms, check_finite, check_in_bounds, check_propensity, check_shape

__all__ = ["AIPWResult", "aipw", "ipw", "difference_in_means", "wald_interval", "normal_check", "analyze"]

COCHRAN = 25.0
"""Units per squared skewness the normal approximation of a mean needs (Cochran's rule)."""


class AIPWResult(NamedTuple):
    """``estimate`` and ``se`` (B,), per-unit scores ``G`` and ``scored`` mask (B, T),
    nuisance predictions ``m`` (B, T, 2)."""

    estimate: np.ndarray
    se: np.ndarray
    G: np.ndarray
    scored: np.ndarray
    m: np.ndarray


def wald_interval(estimate, se, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided normal interval ``estimate -+ z se``."""
    z = stats.norm.ppf(0.5 + level / 2.0)
    return np.asarray(estimate) - z * np.asarray(se), np.asarray(estimate) + z * np.asarray(se)


def _batch(x, a, y, pi):
    x = check_finite("x", x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim not in (2, 3):
        raise ValueError(f"x: expected shape (T, d) or (B, T, d), got {x.shape}")
    y = check_finite("y", y)
    a = check_arms("a", a)
    pi = check_propensity("pi", pi)
    for name, v in (("a", a), ("y", y), ("pi", pi)):
        check_shape(name, v, x.shape[:-1])  # one per row of x
    squeeze = x.ndim == 2
    if squeeze:
        x, a, y, pi = x[None], a[None], y[None], pi[None]
    return x, a, y, pi, squeeze


def aipw(x, a, y, pi, bounds=None, fitter: SeriesRidge | None = None, min_arm_obs: int = 3) -> AIPWResult:
    """AIPW estimate of the ATE from units in arrival order.

    Parameters
    ----------
    x : (T, d) or (B, T, d) covariates (a 1-D ``x`` is one covariate); a leading batch axis
        estimates many experiments at once.
    a, y, pi : (T,) or (B, T) arms (0/1), outcomes and the treatment probabilities used.
    bounds : (low, high) covariate box of the series fitter; defaults to the data's range.
    fitter : the nuisance fitter (default :func:`~bayesdesign.regression.nuisance_fitter`, a
        :class:`SeriesRidge`), shared by every design compared.
    """
    x, a, y, pi, squeeze = _batch(x, a, y, pi)
    if bounds is None:
        flat = x.reshape(-1, x.shape[-1])
        lo, hi = flat.min(0), flat.max(0)
        bounds = (lo, np.where(hi > lo, hi, lo + 1.0))
    else:
        check_in_bounds("x", x, np.asarray(bounds[0], float), np.asarray(bounds[1], float))
    fitter = fitter or nuisance_fitter(bounds)
    m, n_prev = sequential_predictions(fitter, x, a, y)
    m0, m1 = m[..., 0], m[..., 1]
    G = m1 - m0 + a * (y - m1) / pi - (1 - a) * (y - m0) / (1.0 - pi)
    scored = (n_prev >= min_arm_obs).all(-1)
    n = scored.sum(-1)
    if (n < 2).any():
        b = int(np.argmax(n < 2))
        n1 = int(a[b].sum())
        whose = "found" if squeeze else f"replication {b} has"
        raise ValueError(
            f"too few units to score: a unit is scored only once {min_arm_obs} earlier units of each "
            f"arm have been observed, and at least 2 must be scored; {whose} {n1} treated and "
            f"{a.shape[-1] - n1} control units, {int(n[b])} scored"
        )
    est = np.where(scored, G, 0.0).sum(-1) / n
    var = np.where(scored, (G - est[:, None]) ** 2, 0.0).sum(-1) / n
    se = np.sqrt(var / n)
    res = AIPWResult(est, se, G, scored, m)
    return AIPWResult(*(v[0] for v in res)) if squeeze else res


def ipw(a, y, pi) -> tuple[np.ndarray, np.ndarray]:
    """Horvitz–Thompson estimate and its martingale se, over the last axis."""
    a, y, pi = check_arms("a", a), check_finite("y", y), check_propensity("pi", pi)
    g = a * y / pi - (1 - a) * y / (1 - pi)
    n = g.shape[-1]
    est = g.mean(-1)
    return est, np.sqrt(((g - est[..., None]) ** 2).mean(-1) / n)


def difference_in_means(a, y) -> tuple[np.ndarray, np.ndarray]:
    """Difference in arm means and Neyman's conservative se, over the last axis."""
    a, y = check_arms("a", a).astype(bool), check_finite("y", y)
    out = []
    for arm in (True, False):
        w = a == arm
        n = w.sum(-1)
        if (n < 2).any():
            raise ValueError(f"a: difference in means needs at least 2 units per arm, arm {int(arm)} has fewer")
        mean = np.where(w, y, 0).sum(-1) / n
        var = np.where(w, (y - mean[..., None]) ** 2, 0).sum(-1) / (n - 1)
        out.append((mean, var / n))
    return out[0][0] - out[1][0], np.sqrt(out[0][1] + out[1][1])


def normal_check(scores: np.ndarray, level: float = 0.95) -> dict:
    """Cochran's rule on the scored AIPW scores :math:`G_t` (1-D): ``score_skewness`` (the sample
    skewness :math:`g_1`), ``cochran_n`` (:math:`\\lceil 25 g_1^2 \rceil`, the scored units the normal
    interval needs) and ``warnings`` (a sentence when fewer units were scored; else empty)."""
    g = np.asarray(scores, dtype=float)
    g1 = float(stats.skew(g)) if g.size > 2 and np.ptp(g) > 0 else 0.0
    need = int(np.ceil(COCHRAN * g1**2))
    warnings = []
    if g.size < need:
        warnings.append(
            f"the AIPW scores are skewed (skewness {g1:.2f}): the normal interval needs about 25 g1^2 = {need} "
            f"scored units (Cochran's rule) and has {g.size}, so its coverage may fall short of {level:.0%}; "
            "skewed outcomes (revenue) need more units before the interval is read"
        )
    return {"score_skewness": g1, "cochran_n": need, "warnings": warnings}


def analyze(
    source,
    covariates: list[str] | None = None,
    arm: str = "a",
    outcome: str = "y",
    propensity: str = "pi",
    bounds=None,
    level: float = 0.95,
    min_arm_obs: int = 3,
) -> dict:
    """Analyse a finished experiment from its log of ``(x, a, y, pi)`` rows in arrival order.

    ``source`` is a CSV / parquet path or a DataFrame (read by :func:`bayesdesign.logs.read_units`).
    With ``covariates=None`` every column but arm, outcome and propensity is a covariate, and a
    non-numeric or identifier column is refused; the result names the ``covariates`` used.

    Returns a dict with the AIPW ``ate``, ``se``, interval ``lower``/``upper``, the units
    (``n_units``, ``n_treated``, ``n_scored``: the first units, before ``min_arm_obs`` units of
    each arm were observed, are not scored), the difference in means and IPW for reference, and
    :func:`normal_check`'s ``score_skewness``, ``cochran_n`` and ``warnings``.
    """
    where = describe(source)
    units = read_units(source, covariates, arm=arm, outcome=outcome, propensity=propensity)
    x, a, y, pi = units.x, units.a, units.y, units.pi
    n_treated = int(a.sum())
    if n_treated in (0, len(a)):
        who = "no unit was treated" if n_treated == 0 else "every unit was treated"
        raise ValueError(
            f"{where}: column {arm!r}: {who} (all {len(a)} units in arm {int(a[0])}); the ATE needs "
            "units in both arms (1 = treated, 0 = control)"
        )
    try:
        res = aipw(x, a, y, pi, bounds=bounds, min_arm_obs=min_arm_obs)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    lo, hi = wald_interval(res.estimate, res.se, level)
    dim, dim_se = difference_in_means(a, y)
    ht, ht_se = ipw(a, y, pi)
    return {
        "ate": float(res.estimate),
        "se": float(res.se),
        "lower": float(lo),
        "upper": float(hi),
        "level": level,
        "covariates": units.covariates,
        "n_units": int(len(y)),
        "n_scored": int(res.scored.sum()),
        "n_treated": n_treated,
        "min_arm_obs": min_arm_obs,
        "dim": float(dim),
        "dim_se": float(dim_se),
        "ipw": float(ht),
        "ipw_se": float(ht_se),
        **normal_check(np.asarray(res.G)[np.asarray(res.scored, bool)], level),
    }
