r"""The closed-form posterior Neyman teacher of a ``hurdle_lognormal`` prior (revenue-like outcomes).

The prior (``docs/priors.md``) says :math:`Y = B e^{m_a(x) + s_a(x) Z}` with
:math:`B \sim \mathrm{Bernoulli}(p_a(x))`, three cosine series per arm: :math:`\mathrm{logit}\,p_a`
(``purchase``), :math:`m_a` (``log_amount``) and :math:`\log s_a` (``log_amount_sd``). The
likelihood factorises into the indicator :math:`B = 1\{Y > 0\}` of every unit, which informs
:math:`p_a` only, and :math:`\log Y` of the buyers, which informs :math:`(m_a, s_a)` only; so the
posterior factorises too and the teacher runs two independent working models per arm:

- **amount**: the conjugate teacher's working model (:mod:`~bayesdesign.teachers.conjugate`) on
  :math:`\log Y` of the positive outcomes, with the ``log_amount`` series as its mean and the
  ``log_amount_sd`` series as its log sd. Given a buyer, :math:`\log Y` *is* Gaussian with that
  mean and sd, so the working model is the family's own model; the only approximations are the
  conjugate teacher's (the second moment regression for :math:`s^2`);
- **purchase**: the Gaussian working model the conjugate teacher uses for ``bernoulli`` outcomes,
  a Bayesian linear regression of :math:`B` on the cosine features with noise variance
  :math:`\hat p (1 - \hat p)` (the arm's purchase rate, shrunk to the prior's :math:`p_0` with
  ``prior_obs`` pseudo-observations) and the ``purchase`` series' prior linearised at 0
  (intercept :math:`\mathrm{sigmoid}(\text{offset})`, scales times 1/4). A Laplace approximation
  of the logistic posterior would need the data at every decision (its curvature depends on the
  fit); this one is a function of :math:`\sum\phi\phi^\top` and :math:`\sum\phi B`, and its
  posterior mean is the ridge estimate of :math:`p_a(x)`, consistent as the arm's units grow. Its
  Gaussian posterior :math:`N(\hat p, v_p)` is carried to the logit scale by the delta method,
  :math:`\eta \sim N(\mathrm{logit}\,\hat p, v_p / (\hat p(1 - \hat p))^2)`, so that
  :math:`p = \mathrm{sigmoid}(\eta)` stays in (0, 1).

**The Neyman rule.** With :math:`v = s^2`, the implied sd
(:func:`~bayesdesign.design.environment.hurdle_lognormal_moments`) is

.. math::
    \sigma_a = e^{m}\sqrt{g(p, v)}, \qquad g(p, v) = p\, e^{v} (e^{v} - p),

and the teacher uses its posterior mean :math:`\bar s_a(x) = E[\sigma_a(x) \mid H]`, taking
:math:`m \sim N(\hat m, v_m)`, :math:`v \sim N(\hat v, v_v)` (the conjugate teacher's Gaussian
approximation, floored at ``floor`` times :math:`e^{2\,\text{offset}}` of ``log_amount_sd``) and
:math:`\eta` independent (the conjugate teacher also treats its mean and second-moment regressions
as independent):

.. math::
    \bar s_a = e^{\hat m + v_m/2}\; E\big[\sqrt{g(\mathrm{sigmoid}(\eta), v)}\big],

the second factor by a 20 x 20 Gauss-Hermite product rule, all in logs (the factor :math:`e^{v}`
overflows float32 for a diffuse early posterior). :math:`\pi = \bar s_1 / (\bar s_1 + \bar s_0)`
is computed as :math:`\mathrm{sigmoid}(\log\bar s_1 - \log\bar s_0)`. ``log_sd_mean`` and
``log_sd_sd`` (the safe rule's inputs and the students' targets) are the posterior mean and sd of
:math:`\log\sigma_a = m + \tfrac12 \log g` by the same rule; ``mean`` is
:math:`E[p]\, e^{\hat m + v_m/2} E[e^{v/2}]`. :meth:`HurdleConjugateTeacher.posterior` instead draws
the three functions (and :math:`s^2 = r - (m - c)^2` per draw, keeping the dependence the rule
ignores) and applies the moment formula draw by draw: the tests check the two against each other.

**Smoothness mixtures** fall out: each class has its own prior scales for all three series and
:math:`P(k \mid H) \propto w_k \prod_a p(B_a \mid k)\, p(\log Y_a \mid k)\, p(r_a \mid k)^{\lambda}`,
the purchase evidence added to the conjugate teacher's.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import solve_triangular

from ..design.environment import hurdle_lognormal_moments
from ..design.policy import History
from ..regression import SeriesStats, init_stats, update_stats
from ..spec import load_prior
from .base import TeacherConfig
from .conjugate import (
    _GH_W,
    _GH_X,
    ConjugateTeacher,
    TeacherState,
    _blr,
    _centred,
    _predict,
    arm_moments,
    mix_log_sd,
    prior_from_spec,
    variance_nodes,
)

__all__ = ["HurdleState", "HurdleConjugateTeacher", "conjugate_teacher", "hurdle_decide"]

_P_CLIP = 1e-4  # the purchase probability's posterior mean is kept in [1e-4, 1 - 1e-4] before the logit


class HurdleState(NamedTuple):
    """Units seen ``t``; ``stats``, ``m3``, ``m4``: the series statistics and power sums of
    :math:`\\log Y` over each arm's positive outcomes (as :class:`~bayesdesign.teachers.conjugate.TeacherState`);
    ``buy``: the statistics of the indicator :math:`1\\{Y > 0\\}` over each arm's units."""

    t: int
    stats: SeriesStats
    m3: np.ndarray
    m4: np.ndarray
    buy: SeriesStats


def _hurdle_task(amount_prior, buy_prior, floor, both, phi_q, amount, buy):
    _, _, _, v0, log_w = amount_prior
    s_b, _, off_b, _, _ = buy_prior
    gram_b, g_b, ee_b, n_b, v_b = buy
    lw = jnp.log(_GH_W)[:, None] + jnp.log(_GH_W)[None, :]  # (G, G) product rule
    w2 = jnp.exp(lw)
    per_arm = []
    for a in (0, 1):
        mu, mu_var, var, var_var, ev_m, ev_r = arm_moments(amount_prior, a, phi_q, *amount)
        zb, lb, ev_b = _blr(gram_b[a], g_b[a], ee_b[a], n_b[a], v_b[a], s_b[a])
        p_hat, p_var = _predict(phi_q, s_b[a], zb, lb)
        p_hat = jnp.clip(p_hat + off_b[a], _P_CLIP, 1.0 - _P_CLIP)
        eta = jnp.log(p_hat) - jnp.log1p(-p_hat)
        eta_sd = jnp.sqrt(p_var) / (p_hat * (1.0 - p_hat))
        e = eta[..., None] + eta_sd[..., None] * _GH_X  # (K, Q, G) nodes of logit p
        log_p, log_1mp = jax.nn.log_sigmoid(e), jax.nn.log_sigmoid(-e)
        v = variance_nodes(var, jnp.maximum(var_var, 0.0), floor * v0[a], None)
        vv = v[..., None, :]  # (K, Q, 1, G)
        # log g = log p + v + log(e^v - p), e^v - p = expm1(v) + (1 - p) > 0
        half_log_g = 0.5 * (log_p[..., :, None] + vv + jnp.log(jnp.expm1(vv) + jnp.exp(log_1mp)[..., :, None]))
        base = mu + 0.5 * mu_var  # log E[e^m]
        log_sd = base + jax.scipy.special.logsumexp(lw + half_log_g, axis=(-2, -1))  # log E[sigma | k]
        ls_m = mu + (w2 * half_log_g).sum((-2, -1))
        ls_v = mu_var + jnp.maximum((w2 * half_log_g**2).sum((-2, -1)) - (ls_m - mu) ** 2, 0.0)
        mean = jnp.exp(base) * (jnp.exp(log_p) * _GH_W).sum(-1) * (jnp.exp(0.5 * v) * _GH_W).sum(-1)
        per_arm.append((log_sd, ls_m, ls_v, mean, ev_b + ev_m + both * ev_r))
    p_k = jax.nn.softmax(log_w + per_arm[0][4] + per_arm[1][4])  # (K,)
    log_sbar = jnp.stack([jax.scipy.special.logsumexp(jnp.log(p_k)[:, None] + o[0], axis=0) for o in per_arm])
    ls_mean, ls_sd = mix_log_sd(p_k, jnp.stack([o[1] for o in per_arm]), jnp.stack([o[2] for o in per_arm]))
    return {
        "pi": jax.nn.sigmoid(log_sbar[1] - log_sbar[0]),
        "sbar": jnp.exp(log_sbar),
        "class_prob": p_k,
        "log_sd_mean": ls_mean,
        "log_sd_sd": ls_sd,
        "mean": jnp.stack([(p_k[:, None] * o[3]).sum(0) for o in per_arm]),
    }


@jax.jit
def hurdle_decide(amount_prior, buy_prior, floor, both, phi_q, amount, buy):
    """Posterior Neyman quantities of a batch of tasks under the hurdle working models.

    ``amount``: the conjugate teacher's regression arguments of :math:`\\log Y` on the positive
    outcomes (:func:`~bayesdesign.teachers.conjugate.conjugate_decide`'s ``gram .. r_var``);
    ``buy``: ``(gram, g, ee, n, v)`` of the purchase indicator's regression; both with a leading
    task axis, as is ``phi_q`` (B, Q, F). Returns ``pi`` (B, Q) unclipped, ``sbar``, ``mean``,
    ``log_sd_mean``, ``log_sd_sd`` (B, 2, Q) and ``class_prob`` (B, K)."""
    fn = partial(_hurdle_task, amount_prior, buy_prior, floor, both)
    return jax.vmap(fn)(phi_q, amount, buy)


class HurdleConjugateTeacher(ConjugateTeacher):
    """The conjugate (or mixture) teacher of a ``hurdle_lognormal`` prior (see the module notes).
    :func:`conjugate_teacher` (and ``make_teacher``) return one for such a prior; same parameters."""

    def __init__(self, spec, config: TeacherConfig | None = None, variance_evidence: float = 0.25):
        super().__init__(spec, config, variance_evidence)
        if self.spec.family != "hurdle_lognormal":
            raise ValueError(f"{self.spec.source}: HurdleConjugateTeacher needs family hurdle_lognormal, "
                             f"got {self.spec.family}")
        self.buy_prior = prior_from_spec(self.spec, "purchase", None)
        self._buy_arrays = tuple(
            jnp.asarray(v, jnp.float32)
            for v in (self.buy_prior.s_mean, self.buy_prior.s_var, self.buy_prior.off_mean, self.buy_prior.v0,
                      self.buy_prior.log_w)
        )

    def init(self, batch: int) -> HurdleState:
        z = np.zeros((batch, 2))
        return HurdleState(0, init_stats(batch, self.n_feat), z, z.copy(), init_stats(batch, self.n_feat))

    def update(self, state: HurdleState, x, a, y, pi) -> HurdleState:
        a = np.asarray(a, dtype=float)
        y = np.asarray(y, dtype=float)
        bad = ~(np.isfinite(y) & (y >= 0))
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"y: prior {self.spec.source} (family hurdle_lognormal) needs finite outcomes >= 0, got "
                f"{y[idx]} at index {idx}"
            )
        pos = y > 0
        z = np.log(np.where(pos, y, 1.0))
        w = np.stack([1.0 - a, a], axis=1) * pos[:, None]  # (B, 2, m)
        phi = self.features(x)
        return HurdleState(
            state.t + y.shape[-1],
            update_stats(state.stats, phi, a, z, keep=pos),
            state.m3 + (w * (z**3)[:, None]).sum(-1),
            state.m4 + (w * (z**4)[:, None]).sum(-1),
            update_stats(state.buy, phi, a, pos.astype(float)),
        )

    def _args(self, state: HurdleState):
        amount = _centred(self.prior, state, self.config.prior_obs, self.robust)
        zero = np.zeros_like(state.m3)
        gram, g, ee, _, _, n, _, v, _ = _centred(
            self.buy_prior, TeacherState(state.t, state.buy, zero, zero), self.config.prior_obs
        )
        return amount, (gram, g, ee, n, v)

    def posterior_outputs(self, state: HurdleState, x: np.ndarray) -> dict[str, np.ndarray]:
        """All posterior quantities at queries ``x`` (B, Q, d) (see :func:`hurdle_decide`), ``pi``
        the Neyman ratio; :meth:`decide` applies the configuration's rule."""
        amount, buy = self._args(state)
        phi = jnp.asarray(self.features(x), jnp.float32)
        out = hurdle_decide(self._arrays, self._buy_arrays, self._floor, self._both, phi, amount, buy)
        return {k: np.asarray(v, dtype=float) for k, v in out.items()}

    def posterior(self, history: History, x_query: np.ndarray, draws: int = 500, seed: int = 0):
        """Posterior draws of ``mean``, ``sd``, ``log_sd`` at ``x_query`` (Q, d) under the working
        models: per draw the class from :math:`P(k \\mid H)`, the purchase probability
        (:math:`\\eta` as in the rule), the log-amount mean :math:`m` and second moment :math:`r`,
        :math:`s^2 = \\max(r - (m - c)^2, \\text{floor}\\, v_0)`, then the implied moments
        (:func:`~bayesdesign.design.environment.hurdle_lognormal_moments`). An ArviZ
        ``InferenceData`` with dims ``(chain, draw, arm, query)``."""
        import arviz as az  # lazy: ArviZ (about a second) only for posterior()

        state, _ = self.fold(
            History(*(np.asarray(v)[None] if np.ndim(v) == (1 if i else 2) else v for i, v in enumerate(history)))
        )
        xq = np.asarray(x_query, float)
        p_k = self.decide(state, xq[None])["class_prob"][0]
        amount, buy = (tuple(np.asarray(v[0], float) for v in part) for part in self._args(state))
        gram, g_m, ee_m, g_r, ee_r, n, c, v_hat, r_var = amount
        gram_b, g_b, ee_b, n_b, v_b = buy
        phi = self.features(xq)
        rng = np.random.default_rng(seed)
        k = rng.choice(len(p_k), size=draws, p=p_k / p_k.sum())
        amp, bp = self.prior, self.buy_prior

        def draw(zbar, chol, s):
            """Draws of the series at the queries: z = zbar + L^-T eps (L L^T the precision)."""
            zbar, chol = np.asarray(zbar, float), np.asarray(chol, float)
            eps = rng.standard_normal((draws, zbar.shape[-1]))
            z = np.empty_like(eps)
            for c in np.unique(k):
                sel = k == c
                z[sel] = zbar[c] + solve_triangular(chol[c].T, eps[sel].T, lower=False).T
            return (z * s[k]) @ phi.T

        out = {"mean": np.empty((draws, 2, len(phi))), "sd": np.empty((draws, 2, len(phi)))}
        for a in (0, 1):
            f32 = partial(jnp.asarray, dtype=jnp.float32)
            zm, lm, _ = _blr(*map(f32, (gram[a], g_m[a], ee_m[a], n[a], v_hat[a], amp.s_mean[a])))
            zr, lr, _ = _blr(*map(f32, (gram[a], g_r[a], ee_r[a], n[a], r_var[a], amp.s_var[a])))
            zb, lb, _ = _blr(*map(f32, (gram_b[a], g_b[a], ee_b[a], n_b[a], v_b[a], bp.s_mean[a])))
            m = amp.off_mean[a] + draw(zm, lm, amp.s_mean[a])
            r = amp.v0[a] + draw(zr, lr, amp.s_var[a])
            s2 = np.maximum(r - (m - c[a]) ** 2, self.config.floor * amp.v0[a])
            # the purchase posterior N(p_hat, v_p), carried to the logit scale as in the rule
            p_hat, p_var = (np.asarray(v, float) for v in _predict(f32(phi), f32(bp.s_mean[a]), zb, lb))
            p_hat = np.clip(p_hat + bp.off_mean[a], _P_CLIP, 1.0 - _P_CLIP)
            eta_sd = np.sqrt(p_var) / (p_hat * (1.0 - p_hat))
            eta = np.log(p_hat / (1.0 - p_hat))[k] + eta_sd[k] * rng.standard_normal((draws, len(phi)))
            out["mean"][:, a], out["sd"][:, a] = hurdle_lognormal_moments(1.0 / (1.0 + np.exp(-eta)), m, np.sqrt(s2))
        post = {k2: v[None] for k2, v in out.items()}
        post["log_sd"] = np.log(post["sd"])
        return az.from_dict(
            posterior=post,
            dims={v: ["arm", "query"] for v in post},
            coords={"arm": [0, 1], "query": np.arange(len(phi))},
            attrs={"teacher": self.name, "prior_hash": self.spec.hash()},
        )


def conjugate_teacher(spec, config: TeacherConfig | None = None, **kwargs) -> ConjugateTeacher:
    """The conjugate teacher of prior ``spec`` (a spec, path or shipped name): the hurdle working
    model (:class:`HurdleConjugateTeacher`) for a ``hurdle_lognormal`` prior, else
    :class:`~bayesdesign.teachers.conjugate.ConjugateTeacher`."""
    spec = spec if hasattr(spec, "hash") else load_prior(spec)
    cls = HurdleConjugateTeacher if spec.family == "hurdle_lognormal" else ConjugateTeacher
    return cls(spec, config, **kwargs)
