r"""Baseline designs a reviewer expects, all run by the same runner and scored by the same AIPW.

=====================  ==========================================================================
``uniform``            complete randomization, :math:`\pi = 1/2`.
``oracle``             Neyman rule with the true :math:`\sigma_a(x)` (needs a synthetic env).
``explore-then-neyman`` Hahn, Hirano & Karlan (2011): a pilot at 1/2, then the Neyman rule fitted
                       on the pilot, held fixed.
``clip-ogd``           Dai, Gradu & Harshaw (2023): one probability, online gradient descent on
                       the Neyman objective, projected on :math:`[\delta_t, 1 - \delta_t]`.
``clip-smt``           Neopane, Ramdas & Singh (2024): one probability, the Neyman rule of the
                       arms' running second moments, clipped at :math:`\tfrac12 t^{-1/3}`.
``clip-ogd-sc``        Noarov, Fogliato, Bertran & Roth (2025): Clip-OGD with step
                       :math:`1/(\alpha t)` and clip :math:`1/\exp(\log(t+2)^{1/4})`.
``plugin-neyman``      covariate-adaptive plug-in Neyman (Kato et al. 2020, A2IPW-style): series
                       estimates of :math:`\sigma_a(x)` refitted as data arrive.
=====================  ==========================================================================
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..efficiency import neyman
from ..regression import SeriesRidge, SeriesStats, init_stats, update_stats
from .environment import evaluate
from .policy import ClipSchedule, SequentialPolicy

__all__ = ["Uniform", "OracleNeyman", "ExploreThenNeyman", "ClipOGD", "ClipOGDSC", "ClipSMT", "PluginNeyman"]


class Count(NamedTuple):
    t: int


class Uniform(SequentialPolicy):
    """Complete randomization: :math:`\\pi = 1/2` for every unit."""

    name = "uniform"

    def init(self, batch):
        return Count(0)

    def update(self, state, x, a, y, pi):
        return Count(state.t + np.shape(y)[-1])

    def _raw(self, state, x):
        return np.full(x.shape[:-1], 0.5)


class OracleNeyman(SequentialPolicy):
    r"""Neyman rule with the environment's true :math:`\sigma_a(x)`, clipped at a fixed
    :math:`[\varepsilon_{\min}, 1 - \varepsilon_{\min}]` (nothing is learned, so no burn-in)."""

    name = "oracle"

    def __init__(self, env, clip: ClipSchedule | None = None):
        if not (hasattr(env, "sd")):
            raise ValueError(
                "oracle: the environment must know its true sds (a synthetic or replay environment "
                f"with .sd(x, arm)); got {type(env).__name__}"
            )
        super().__init__(env.bounds, clip or ClipSchedule(scale=0.0))
        self.env = env

    def init(self, batch):
        return Count(0)

    def update(self, state, x, a, y, pi):
        return Count(state.t + np.shape(y)[-1])

    def _raw(self, state, x):
        return neyman(evaluate(self.env, "sd", x, 1), evaluate(self.env, "sd", x, 0))


class PlugState(NamedTuple):
    t: int
    stats: SeriesStats


def _plugin_rule(fitter: SeriesRidge, stats: SeriesStats, x, floor: float, prior_obs: float):
    r"""Neyman rule from series moment fits, with a relative variance floor and shrinkage.

    :math:`\hat v_a(x) = \max(\hat s_a(x) - \hat m_a(x)^2, \text{floor}\cdot\bar v)`, shrunk
    towards the arm's marginal variance :math:`\bar v_a` with ``prior_obs`` pseudo-observations;
    :math:`\bar v` is the pooled variance of past outcomes, so the rule is unit-free.
    """
    phi = fitter.features(x)
    _, var = fitter.moments(stats, phi)  # (B, 2, m)
    n = stats.count  # (B, 2)
    n_tot = np.maximum(n.sum(-1), 1.0)
    mean_pool = stats.b1[..., 0].sum(-1) / n_tot
    var_pool = np.maximum(stats.b2[..., 0].sum(-1) / n_tot - mean_pool**2, 1e-300)
    nn = np.maximum(n, 1.0)
    var_arm = np.maximum(stats.b2[..., 0] / nn - (stats.b1[..., 0] / nn) ** 2, 0.0)
    var_arm = np.where(n > 1, var_arm, var_pool[:, None])
    lo = floor * var_pool[:, None, None]
    var = np.maximum(var, lo)
    var = (n[..., None] * var + prior_obs * np.maximum(var_arm, lo[..., 0])[..., None]) / (n[..., None] + prior_obs)
    sd = np.sqrt(var)
    return neyman(sd[:, 1], sd[:, 0])


class ExploreThenNeyman(SequentialPolicy):
    r"""Two-stage design (Hahn, Hirano & Karlan 2011).

    The first ``pilot_fraction * horizon`` units are randomized at 1/2; the Neyman rule is then
    fitted once on the pilot (series estimates of :math:`\sigma_a(x)`, as :class:`PluginNeyman`)
    and used unchanged for the rest of the experiment.
    """

    name = "explore-then-neyman"

    def __init__(
        self,
        bounds,
        horizon: int,
        pilot_fraction: float = 0.2,
        clip=None,
        fitter: SeriesRidge | None = None,
        floor: float = 0.05,
        prior_obs: float = 5.0,
    ):
        super().__init__(bounds, clip)
        if not 0 < pilot_fraction < 1:
            raise ValueError(f"pilot_fraction: expected a number in (0, 1), got {pilot_fraction}")
        self.pilot = max(2, int(round(pilot_fraction * horizon)))
        self.fitter = fitter or SeriesRidge(bounds)
        self.floor, self.prior_obs = floor, prior_obs

    def init(self, batch):
        return PlugState(0, init_stats(batch, self.fitter.n_feat))

    def update(self, state, x, a, y, pi):
        keep = max(0, min(np.shape(y)[-1], self.pilot - state.t))
        stats = state.stats
        if keep:
            stats = update_stats(stats, self.fitter.features(x[:, :keep]), a[:, :keep], y[:, :keep])
        return PlugState(state.t + np.shape(y)[-1], stats)

    def _raw(self, state, x):
        if state.t < self.pilot:
            return np.full(x.shape[:-1], 0.5)
        return _plugin_rule(self.fitter, state.stats, x, self.floor, self.prior_obs)

    def propensity_at(self, state, x):
        # the pilot is exactly 1/2; afterwards the fitted rule is clipped at the schedule
        if state.t < self.pilot:
            return np.full(x.shape[:-1], 0.5)
        return self.clip.clip(self._raw(state, x), state.t + 1)


class PluginNeyman(SequentialPolicy):
    r"""Covariate-adaptive plug-in Neyman design (Kato et al. 2020, A2IPW-style).

    After a burn-in of ``burn_in`` units at 1/2, each unit gets the Neyman rule of the current
    series estimates of :math:`\sigma_a(x)` (see :func:`_plugin_rule`), refitted as data arrive.
    """

    name = "plugin-neyman"

    def __init__(
        self,
        bounds,
        clip=None,
        fitter: SeriesRidge | None = None,
        burn_in: int = 20,
        floor: float = 0.05,
        prior_obs: float = 5.0,
    ):
        super().__init__(bounds, clip)
        self.fitter = fitter or SeriesRidge(bounds)
        self.burn_in, self.floor, self.prior_obs = burn_in, floor, prior_obs

    def init(self, batch):
        return PlugState(0, init_stats(batch, self.fitter.n_feat))

    def update(self, state, x, a, y, pi):
        stats = update_stats(state.stats, self.fitter.features(x), a, y)
        return PlugState(state.t + np.shape(y)[-1], stats)

    def _raw(self, state, x):
        if state.t < self.burn_in:
            return np.full(x.shape[:-1], 0.5)
        return _plugin_rule(self.fitter, state.stats, x, self.floor, self.prior_obs)


class OGDState(NamedTuple):
    t: int
    p: np.ndarray  # (B,)
    n: np.ndarray  # (B, 2) past units per arm
    s1: np.ndarray  # (B, 2) sum of outcomes per arm
    s2: np.ndarray  # (B, 2) sum of squared outcomes per arm


class ClipOGD(SequentialPolicy):
    r"""Clip-OGD (Dai, Gradu & Harshaw 2023), non-contextual.

    :math:`p_{t+1} = \mathrm{Proj}_{[\delta_{t+1}, 1-\delta_{t+1}]}(p_t - \eta g_t)` with
    :math:`\eta = 1/\sqrt{T}`, :math:`\delta_t = \tfrac12 t^{-1/\sqrt{5 \log T}}` and
    :math:`g_t = -\tilde Y_t^2 / p_t^3` after a treated unit, :math:`+\tilde Y_t^2/(1-p_t)^3`
    after a control unit. As published :math:`\tilde Y = Y`; here (``standardize=True``)
    :math:`\tilde Y` is :math:`Y` centred at its arm's running mean and divided by the pooled
    running sd, both from earlier units, so the design does not depend on the units of ``y``
    (with raw :math:`Y` a shift of the outcomes changes the design). The probability is
    clipped by the published :math:`\delta_t`, not the package schedule.
    """

    name = "clip-ogd"

    def __init__(self, bounds, horizon: int, standardize: bool = True):
        super().__init__(bounds)
        self.T = max(int(horizon), 2)
        self.eta0 = 1.0 / np.sqrt(self.T)
        self.standardize = standardize

    def eta(self, n: int) -> float:
        """Step size of the update that sets the probability of the ``n``-th unit (``n >= 2``)."""
        return self.eta0

    def delta(self, n) -> np.ndarray:
        """Clip level of the ``n``-th unit's probability."""
        return 0.5 * np.asarray(n, dtype=float) ** (-1.0 / np.sqrt(5.0 * np.log(self.T)))

    def init(self, batch):
        z = np.zeros((batch, 2))
        return OGDState(0, np.full(batch, 0.5), z, z.copy(), z.copy())

    def update(self, state, x, a, y, pi):
        t, p, n, s1, s2 = state
        a = np.asarray(a, dtype=int)
        for i in range(a.shape[-1]):  # OGD is sequential by construction
            ai, yi = a[:, i], y[:, i]
            if self.standardize:
                cnt = n.sum(-1)
                mean_arm = np.where(n > 0, s1 / np.maximum(n, 1), 0.0)
                m = np.take_along_axis(mean_arm, ai[:, None], 1)[:, 0]
                var = s2.sum(-1) / np.maximum(cnt, 1) - (s1.sum(-1) / np.maximum(cnt, 1)) ** 2
                scale = np.where(cnt > 1, np.sqrt(np.maximum(var, 1e-300)), 1.0)
                yt = np.where(cnt > 1, (yi - m) / scale, 0.0)
            else:
                yt = yi
            g = np.where(ai == 1, -(yt**2) / p**3, yt**2 / (1.0 - p) ** 3)
            dl = self.delta(t + i + 2)
            p = np.clip(p - self.eta(t + i + 2) * g, dl, 1.0 - dl)
            rows = np.arange(a.shape[0])
            n = n.copy()
            s1 = s1.copy()
            s2 = s2.copy()
            n[rows, ai] += 1
            s1[rows, ai] += yi
            s2[rows, ai] += yi**2
        return OGDState(t + a.shape[-1], p, n, s1, s2)

    def _raw(self, state, x):
        return np.broadcast_to(state.p[:, None], x.shape[:-1]).copy()

    def propensity_at(self, state, x):
        return self._raw(state, x)


class ClipOGDSC(ClipOGD):
    r"""ClipOGD\ :sup:`SC` (Noarov, Fogliato, Bertran & Roth, *Stronger Neyman regret guarantees
    for adaptive experimental design*, ICML 2025, arXiv 2502.17427), non-contextual.

    Clip-OGD with the strongly convex step :math:`\eta_s = 1/(\alpha (s + 1))` and the clip
    :math:`\delta_s = 1/\exp(\log(s + 2)^{1/4})` for the unit of 0-based index :math:`s`
    (:math:`\tilde O(\log T)` Neyman regret, anytime: no horizon enters), ``alpha = 0.49`` as in
    the authors' code (github.com/amazon-science/adaptive-abtester). The gradient and the
    standardization of :math:`Y` are those of :class:`ClipOGD`.
    """

    name = "clip-ogd-sc"

    def __init__(self, bounds, horizon: int | None = None, alpha: float = 0.49, standardize: bool = True):
        super().__init__(bounds, horizon or 2, standardize)
        if not alpha > 0:
            raise ValueError(f"alpha: expected a positive strong-convexity parameter, got {alpha}")
        self.alpha = alpha

    def eta(self, n: int) -> float:
        return 1.0 / (self.alpha * n)  # n = s + 1 for the unit of 0-based index s

    def delta(self, n) -> np.ndarray:
        return 1.0 / np.exp(np.log(np.asarray(n, dtype=float) + 1.0) ** 0.25)


class SMTState(NamedTuple):
    t: int
    n: np.ndarray  # (B, 2) past units per arm
    s1: np.ndarray  # (B, 2) sum of outcomes per arm
    s2: np.ndarray  # (B, 2) sum of squared outcomes per arm


class ClipSMT(SequentialPolicy):
    r"""ClipSMT (Neopane, Ramdas & Singh, *Logarithmic Neyman regret for adaptive estimation of
    the average treatment effect*, arXiv 2411.14341), non-contextual.

    After :math:`t` units the next probability is the Neyman rule of the arms' running second
    moments, :math:`p = \sqrt{m_1}/(\sqrt{m_1} + \sqrt{m_0})`, clipped to
    :math:`[c_t, 1 - c_t]` with :math:`c_t = \tfrac12 t^{-1/3}` (1/2 before any unit; no floor).
    As published :math:`m_a` is the mean of :math:`Y^2` over arm :math:`a`'s units
    (``standardize=False``; the IPW objective). By default :math:`m_a` is the arm's running
    variance (about its own mean, the AIPW objective every design here is scored by), which makes
    the design independent of the units of ``y``; an arm with fewer than two units takes the
    pooled variance. With both moments zero the probability is 1/2.
    """

    name = "clip-smt"

    def __init__(self, bounds, standardize: bool = True):
        super().__init__(bounds)
        self.standardize = standardize

    def clip_level(self, t) -> np.ndarray:
        """:math:`c_t` after ``t`` units."""
        t = np.asarray(t, dtype=float)
        return np.where(t >= 1, 0.5 * np.maximum(t, 1.0) ** (-1.0 / 3.0), 0.5)

    def init(self, batch):
        z = np.zeros((batch, 2))
        return SMTState(0, z, z.copy(), z.copy())

    def update(self, state, x, a, y, pi):
        w = np.stack([1.0 - np.asarray(a, float), np.asarray(a, float)], axis=1)  # (B, 2, m)
        y = np.asarray(y, dtype=float)[:, None]
        return SMTState(
            state.t + y.shape[-1], state.n + w.sum(-1), state.s1 + (w * y).sum(-1), state.s2 + (w * y * y).sum(-1)
        )

    def moments(self, state) -> np.ndarray:
        """The second moments :math:`m_a` (B, 2) the rule uses."""
        n, s1, s2 = state.n, state.s1, state.s2
        nn = np.maximum(n, 1.0)
        if not self.standardize:
            return s2 / nn
        tot = np.maximum(n.sum(-1), 1.0)
        pooled = np.maximum(s2.sum(-1) / tot - (s1.sum(-1) / tot) ** 2, 0.0)
        var = np.maximum(s2 / nn - (s1 / nn) ** 2, 0.0)
        return np.where(n > 1, var, pooled[:, None])

    def _raw(self, state, x):
        r = np.sqrt(self.moments(state))
        tot = r.sum(-1)
        p = np.where(tot > 0, r[:, 1] / np.where(tot > 0, tot, 1.0), 0.5)
        return np.broadcast_to(p[:, None], x.shape[:-1]).copy()

    def propensity_at(self, state, x):
        c = self.clip_level(state.t)
        return np.clip(self._raw(state, x), c, 1.0 - c)
