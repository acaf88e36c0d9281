r"""The conjugate feature layer: the teacher's working-model regressions as a differentiable encoder.

Every quantity of the conjugate teacher (:mod:`bayesdesign.teachers.conjugate`) is a function of
per-arm sums over the history,

.. math::
    S_a = \sum_{i: a_i = a} \big(\phi(u_i)\phi(u_i)^\top,\ \phi(u_i) y_i,\ \phi(u_i) y_i^2,\ y_i^3,\ y_i^4\big),

which, like the student's other pooled features, are sums of per-unit terms: cached and extended
by one unit per decision. From :math:`S_a` this layer solves, in float64 and in the student's
coordinates (outcomes standardized with the prior's location and scale, so the prior's offset is
0 and :math:`v_0 = 1`), the same two Bayesian series regressions per arm and smoothness class as
the teacher (whitened, shrunk plug-in noise variance, Gauss–Hermite expectations with the floor
applied inside), and returns per class :math:`k` and arm :math:`a`

* :math:`\log \bar s_{a,k}(x)`, :math:`\bar s_{a,k} = E[\sigma_a(x) \mid H, k]` (in outcome units),
* the mean and variance of :math:`\log\sigma_a(x)` under the class-:math:`k` working posterior,
* the log marginal likelihoods of the mean and second-moment regressions, summed over arms
  (the evidence the class posterior :math:`P(k \mid H)` is built from).

The student adds learned corrections to these (zero at initialization, so an untrained student
already decides as the conjugate teacher of its prior) and learns, from the teacher's traces,
what the working model misses. For a teacher whose posterior is exact under another likelihood
(NUTS on a Student-t or Bernoulli prior) the layer is a strong, cheap summary and the corrections
carry the difference. The layer has no trainable parameters; nothing flows back through it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from ..basis import cosine_features
from ..efficiency import atom_settings, log_odds, log_odds_settings, slab_grid, slab_sd
from ..teachers.base import VARIANCE_LAWS

__all__ = ["ConjugateLayer", "ConjugateFit", "layer_prior", "standardize_sums", "pooled_moments", "variance_nodes"]

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(20)
_GH_W = _GH_W / _GH_W.sum()


def pooled_moments(sums: Tensor, f: int) -> tuple[Tensor, Tensor, Tensor]:
    """The pooled count, sum and sum of squares of the outcomes (B,) from the layer's sums (B, S)."""
    st = sums.view(sums.shape[0], 2, -1)
    return st[..., 0].sum(1), st[..., f * f].sum(1), st[..., f * f + f].sum(1)


def standardize_sums(sums: Tensor, f: int) -> tuple[Tensor, Tensor, Tensor]:
    r"""The layer's sums of :math:`z = (y - c)/s` from those of :math:`y`, in closed form, with
    :math:`c, s` the pooled mean and sd of the outcomes so far (per history; :math:`c = 0, s = 1`
    before two distinct outcomes), as the teachers' ``standardized_state`` does for a prior with
    ``outcome.standardize``. Returns the sums (B, S), ``c`` and ``s`` (B,). The result is
    unchanged, up to rounding, when ``y -> c0 + s0 y`` (``s0 > 0``)."""
    b = sums.shape[0]
    st = sums.double().view(b, 2, -1)
    n_tot, s1, s2 = pooled_moments(sums.double(), f)
    c = torch.where(n_tot > 0, s1 / n_tot.clamp(min=1.0), torch.zeros_like(n_tot))
    var = s2 / n_tot.clamp(min=1.0) - c**2
    ok = (n_tot > 1) & (var > 1e-12 * (c**2).clamp(min=1e-300))
    s = torch.where(ok, torch.sqrt(torch.where(ok, var, torch.ones_like(var))), torch.ones_like(var))
    c = torch.where(ok, c, torch.zeros_like(c))
    ca, sa = c[:, None, None], s[:, None, None]
    gram = st[..., : f * f]
    col0 = gram.view(b, 2, f, f)[..., 0]
    b1 = st[..., f * f : f * f + f]
    b2 = st[..., f * f + f : f * f + 2 * f]
    n, m1, m2 = col0[..., :1], b1[..., :1], b2[..., :1]
    m3, m4 = st[..., -2:-1], st[..., -1:]
    nb1 = (b1 - ca * col0) / sa
    nb2 = (b2 - 2 * ca * b1 + ca**2 * col0) / sa**2
    nm3 = (m3 - 3 * ca * m2 + 3 * ca**2 * m1 - ca**3 * n) / sa**3
    nm4 = (m4 - 4 * ca * m3 + 6 * ca**2 * m2 - 4 * ca**3 * m1 + ca**4 * n) / sa**4
    return torch.cat([gram, nb1, nb2, nm3, nm4], -1).reshape(b, -1), c, s


class ConjugateFit(NamedTuple):
    r"""The history side of the layer: posterior means ``coef`` (B, 2, 2, K, F) of the series
    coefficients (arm, regression: mean / second moment, class), the Cholesky factors ``chol``
    (B, 2, 2, K, F, F) of the whitened posterior precisions, the arms' running means ``c`` (B, 2),
    the log evidences ``ev_mean``, ``ev_var`` (B, K) summed over arms, and the rows (B,) whose law
    of :math:`\sigma^2` is the lognormal one (``None``: the normal law in every row)."""

    coef: Tensor
    chol: Tensor
    c: Tensor
    ev_mean: Tensor
    ev_var: Tensor
    lognormal: Tensor | None = None


def variance_nodes(var: Tensor, var_var: Tensor, lo: Tensor | float, lognormal: Tensor | None) -> Tensor:
    r"""Gauss-Hermite nodes of :math:`\sigma^2` (``var.shape + (20,)``) from its working-posterior
    mean ``var`` and variance ``var_var``, floored at ``lo``: the torch twin of the teachers'
    :func:`~bayesdesign.teachers.conjugate.variance_nodes` (the normal law, or in the rows where
    ``lognormal`` (B,), broadcast over ``var``'s trailing axes, the lognormal law with the same
    mean and variance)."""
    x = torch.as_tensor(_GH_X, dtype=var.dtype, device=var.device)
    normal = (var[..., None] + var_var.sqrt()[..., None] * x).clamp(min=lo)
    if lognormal is None or not bool(lognormal.any()):
        return normal
    m = var.clamp(min=lo)
    t2 = torch.log1p(var_var / m**2)
    ln = torch.exp((torch.log(m) - 0.5 * t2)[..., None] + t2.sqrt()[..., None] * x).clamp(min=lo)
    rows = lognormal.view(-1, *([1] * (normal.dim() - 1)))
    return torch.where(rows, ln, normal)


def layer_prior(spec) -> dict[str, np.ndarray]:
    """The prior arrays of :class:`ConjugateLayer` for a series prior, in the student's coordinates:
    coefficient prior sds ``s_mean``, ``s_var`` (2, K, F) divided by the arm's outcome scale
    :math:`\\sqrt{v_0}` (resp. :math:`v_0`), class log weights ``log_w`` (K,) and ``log_scale``
    (2,), :math:`\\log\\sqrt{v_0}` per arm (to return sds in outcome units)."""
    from ..teachers.conjugate import prior_from_spec  # lazy: JAX only to build a prior, not for inference

    p = prior_from_spec(spec)
    sd = np.sqrt(p.v0)
    return {
        "s_mean": p.s_mean / sd[:, None, None],
        "s_var": p.s_var / p.v0[:, None, None],
        "log_w": np.asarray(p.log_w, float),
        "log_scale": np.log(sd),
    }


class ConjugateLayer(nn.Module):
    """Per-class working-model posteriors from the pooled sums (see the module docstring).

    Buffers (saved with the weights): ``s_mean``, ``s_var`` (2, K, F), ``log_w`` (K,),
    ``log_scale`` (2,), and the teacher configuration's ``floor`` and ``prior_obs`` (scalars).
    """

    def __init__(self, d: int, n_terms: int, n_classes: int):
        super().__init__()
        self.d, self.n_terms, self.f = d, n_terms, 1 + d * n_terms
        f, k = self.f, n_classes
        self.register_buffer("floor", torch.tensor(0.05, dtype=torch.float64))
        self.register_buffer("prior_obs", torch.tensor(5.0, dtype=torch.float64))
        self.register_buffer("s_mean", torch.zeros(2, k, f, dtype=torch.float64))
        self.register_buffer("s_var", torch.zeros(2, k, f, dtype=torch.float64))
        self.register_buffer("log_w", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("log_scale", torch.zeros(2, dtype=torch.float64))
        self.register_buffer("gh_w", torch.as_tensor(_GH_W, dtype=torch.float64), persistent=False)
        self.n_stats = 2 * (f * f + 2 * f + 2)
        self.set_rule({})

    def set_rule(self, teacher_config: dict) -> None:
        r"""The teacher's ``robust`` second-moment variance, its rule (``safe``, ``spike``, as
        :func:`~bayesdesign.efficiency.log_odds_settings` reads them from a stored configuration),
        its ``atom`` share (0 when the configuration has none), its ``reweight`` :math:`n_0`
        (the reweighted second-moment regression; 0: off) and its ``variance_law`` (the law of
        :math:`\sigma^2`, normal or lognormal, the latter where the atom rule does not fire, as the
        teacher), which are not saved with the weights. Only the compiled
        engine (:mod:`bayesdesign.student.engine`) implements ``reweight``: this
        layer's torch :meth:`fit` refuses it (:meth:`check_torch`)."""
        law = teacher_config.get("variance_law", "normal")
        if law not in VARIANCE_LAWS:
            raise ValueError(f"variance_law: expected one of {list(VARIANCE_LAWS)}, got {law!r}")
        self.lognormal = law == "lognormal"
        reweight = float(teacher_config.get("reweight", 0.0))
        if not 0.0 <= reweight < math.inf:
            raise ValueError(f"reweight: expected a finite number of pseudo-units >= 0 (0: off), got {reweight}")
        self.reweight = reweight
        self.robust = bool(teacher_config.get("robust", False))
        self.safe, self.spike = log_odds_settings(teacher_config)
        self.atom = float(teacher_config.get("atom", 0.0))
        self._slabs = {}

    def check_torch(self, where: str) -> None:
        """Refuse ``reweight`` in the torch code paths (``where`` names the caller), which do not
        implement the reweighted second-moment regression."""
        if self.reweight:
            raise ValueError(
                f"reweight: {where} runs the student in torch, which does not implement the teachers' "
                f"reweighted second-moment regression (reweight={self.reweight:g}); use the compiled engine: "
                "StudentPolicy(..., backend='engine') on the CPU (or a teacher configuration with reweight=0)"
            )

    @staticmethod
    def mixture_log_sd(p: Tensor, ls_mean: Tensor, ls_var: Tensor) -> tuple[Tensor, Tensor]:
        r"""Mean and variance (B, Q, 2) of :math:`\log\sigma_a` under the class mixture (weights
        ``p`` (B, 1, K, 1), per-class ``ls_mean``, ``ls_var`` (B, Q, K, 2)), moment-matched as the
        teacher's ``mix_log_sd``."""
        m = (p * ls_mean).sum(2)
        return m, ((p * (ls_var + ls_mean**2)).sum(2) - m**2).clamp(min=0.0)

    @property
    def slab(self) -> float:
        """The spike-and-slab rule's slab (:func:`~bayesdesign.efficiency.slab_sd`): the sd of the
        Neyman log-odds under the layer's prior, as the teacher computes it before any unit (1
        when the rule has no spike), under the configuration's law of the variance."""
        return self.slab_of(self.lognormal)

    @property
    def atom_slab(self) -> float:
        """The slab of the rule for outcomes with an atom, whose law of the variance is the normal one."""
        return self.slab_of(False)

    def slab_of(self, lognormal: bool) -> float:
        """:attr:`slab` under the lognormal (``True``) or the normal law of the variance."""
        if self.spike <= 0:
            return 1.0
        if lognormal not in self._slabs:
            uq = torch.as_tensor(slab_grid(self.d), dtype=torch.float64, device=self.log_w.device)[None]
            # before any unit the reweighted second-moment model is the unweighted one: the same slab
            fit = self._fit(torch.zeros((1, self.n_stats), dtype=torch.float64, device=uq.device))
            fit = fit._replace(lognormal=torch.full((1,), bool(lognormal), device=uq.device))
            base = self.predict(fit, uq)
            p = torch.softmax(self.log_w, 0)[None, None, :, None]
            _, var = self.mixture_log_sd(p, base["ls_mean"], base["ls_var"])
            self._slabs[lognormal] = slab_sd(var[0].T.sqrt().cpu().numpy())
        return self._slabs[lognormal]

    def rule_args(self) -> tuple[float, float, float]:
        """``(safe, spike, slab)`` of the rule (``safe = -1``: the Neyman ratio)."""
        if self.safe < 0:
            return -1.0, 0.0, 1.0
        return float(self.safe), float(self.spike), self.slab

    def base_logit(
        self, p: Tensor, ls_mean: Tensor, ls_var: Tensor, ratio: Tensor, atom: Tensor | None = None
    ) -> Tensor:
        """The teacher's rule on the layer's class mixture (arguments as :meth:`mixture_log_sd`),
        (B, Q): its log-odds rule (:func:`~bayesdesign.efficiency.log_odds`) when ``safe >= 0``,
        else the Neyman ratio's logit ``ratio``; in the rows where ``atom`` (B,) the rule for
        outcomes with an atom (:func:`~bayesdesign.efficiency.atom_settings`)."""
        gated = atom is not None and bool(atom.any())
        if self.safe < 0 and not gated:
            return ratio
        m, var = self.mixture_log_sd(p, ls_mean, ls_var)
        m, s = m[..., 1] - m[..., 0], (var[..., 0] + var[..., 1]).clamp(min=1e-20).sqrt()
        out = log_odds(m, s, self.safe, self.spike, self.slab) if self.safe >= 0 else ratio
        if gated:
            out = torch.where(atom[:, None], log_odds(m, s, *atom_settings(self.safe, self.spike), self.atom_slab), out)
        return out

    def set_prior(self, arrays: dict[str, np.ndarray], teacher_config: dict | None = None) -> None:
        """Load the arrays of :func:`layer_prior`, the teacher's ``floor`` and ``prior_obs``, and
        its rule settings (:meth:`set_rule`)."""
        tc = teacher_config or {}
        self.floor.fill_(float(tc.get("floor", 0.05)))
        self.prior_obs.fill_(float(tc.get("prior_obs", 5.0)))
        self.set_rule(tc)
        for name in ("s_mean", "s_var", "log_w", "log_scale"):
            buf = getattr(self, name)
            val = torch.as_tensor(np.asarray(arrays[name]), dtype=torch.float64)
            if val.shape != buf.shape:
                raise ValueError(f"{name}: expected shape {tuple(buf.shape)}, got {tuple(val.shape)}")
            buf.copy_(val)

    def unit_stats(self, u: Tensor, a: Tensor, y: Tensor) -> Tensor:
        """Per-unit terms ``(B, N, n_stats)`` (float64) whose sum over units is :math:`(S_0, S_1)`."""
        u, y = u.double(), y.double()
        phi = cosine_features(u, self.n_terms)  # (B, N, F)
        outer = (phi[..., :, None] * phi[..., None, :]).flatten(-2)
        per = torch.cat([outer, phi * y[..., None], phi * (y * y)[..., None], (y**3)[..., None], (y**4)[..., None]], -1)
        arm = a.double()
        return torch.cat([per * (1 - arm)[..., None], per * arm[..., None]], -1)

    @torch.no_grad()
    def fit(self, sums: Tensor, robust: Tensor | None = None) -> ConjugateFit:
        """The history side (a function of the sums only; cacheable between decisions); the robust
        second-moment variance where the configuration has it or in the rows where ``robust`` (B,).
        A configuration with ``reweight`` is refused (the compiled engine implements it, not torch)."""
        self.check_torch("ConjugateLayer.fit")
        return self._fit(sums, robust)

    @torch.no_grad()
    def _fit(self, sums: Tensor, robust: Tensor | None = None) -> ConjugateFit:
        """:meth:`fit` without the refusal of ``reweight`` (the prior's fit, where the reweighted
        model coincides with the unweighted one: :attr:`slab`)."""
        f = self.f
        b = sums.shape[0]
        st = sums.double().view(b, 2, -1)
        gram = st[..., : f * f].view(b, 2, f, f)
        b1 = st[..., f * f : f * f + f]
        b2 = st[..., f * f + f : f * f + 2 * f]
        m3, m4 = st[..., -2], st[..., -1]
        n, col0, m1, m2 = gram[..., 0, 0], gram[..., 0], b1[..., 0], b2[..., 0]
        c = torch.where(n > 0, m1 / n.clamp(min=1.0), torch.zeros_like(n))
        syy = (m2 - 2 * c * m1 + c**2 * n).clamp(min=0.0)
        v_hat = (syy + self.prior_obs) / (n + self.prior_obs)
        g_r = b2 - 2 * c[..., None] * b1 + (c**2)[..., None] * col0 - col0
        sum_r2 = m4 - 4 * c * m3 + 6 * c**2 * m2 - 4 * c**3 * m1 + c**4 * n
        ee_r = sum_r2.clamp(min=0.0) - 2 * syy + n
        # both regressions at once: (B, 2 arms, 2 regressions)
        g = torch.stack([b1, g_r], 2)
        ee = torch.stack([m2, ee_r], 2)
        r_var = 2 * v_hat**2
        if self.robust or (robust is not None and bool(robust.any())):  # the arm's kurtosis, shrunk to 3
            kurt = (sum_r2.clamp(min=0.0) + 3 * self.prior_obs) / (n + self.prior_obs) / v_hat**2
            rob = (kurt - 1).clamp(min=0.5) * v_hat**2
            r_var = rob if self.robust else torch.where(robust[:, None], rob, r_var)
        v = torch.stack([v_hat, r_var], 2)
        s = torch.stack([self.s_mean, self.s_var], 1)  # (2 arms, 2 regs, K, F)
        sg = s[None] / v[..., None, None]  # (B, 2, 2, K, F) = s / v
        eye = torch.eye(f, dtype=torch.float64, device=sums.device)
        prec = eye + sg[..., :, None] * gram[:, :, None, None] * s[None, ..., None, :]
        chol = torch.linalg.cholesky(prec)
        h = sg * g[:, :, :, None, :]
        zbar = torch.cholesky_solve(h[..., None], chol)[..., 0]
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        logev = -0.5 * (n[:, :, None, None] * torch.log(2 * math.pi * v[..., None]) + logdet
                        + ee[..., None] / v[..., None] - (h * zbar).sum(-1))  # (B, 2, 2, K)
        coef = s[None] * zbar  # theta = s z, the unwhitened coefficients
        law = None
        if self.lognormal:  # the rows where the atom rule fires keep the normal law (as the teacher)
            law = torch.ones(b, dtype=torch.bool, device=sums.device) if robust is None else ~robust
        return ConjugateFit(coef, chol, c, logev[:, :, 0].sum(1), logev[:, :, 1].sum(1), law)

    @torch.no_grad()
    def predict(self, fit: ConjugateFit, uq: Tensor) -> dict[str, Tensor]:
        """The query side at ``uq`` (B, Q, d): ``log_sbar``, ``ls_mean``, ``ls_var`` (B, Q, K, 2)
        (log sds in outcome units) and the log evidences ``ev_mean``, ``ev_var`` (B, K) summed
        over arms."""
        phi = cosine_features(uq.double(), self.n_terms)  # (B, Q, F)
        mean = torch.einsum("bqf,barkf->barkq", phi, fit.coef)
        s = torch.stack([self.s_mean, self.s_var], 1)  # (2 arms, 2 regs, K, F)
        a_q = s[None, :, :, :, :, None] * phi.transpose(1, 2)[:, None, None, None]  # (B, 2, 2, K, F, Q)
        pvar = torch.linalg.solve_triangular(fit.chol, a_q, upper=False).square().sum(-2)  # (B, 2, 2, K, Q)
        mu, r = mean[:, :, 0], mean[:, :, 1] + 1.0  # (B, 2, K, Q)
        dev = mu - fit.c[:, :, None, None]
        var = r - dev**2
        var_var = (pvar[:, :, 1] + 4 * dev**2 * pvar[:, :, 0]).clamp(min=0.0)
        nodes = variance_nodes(var, var_var, self.floor, fit.lognormal)
        sd = (nodes.sqrt() * self.gh_w).sum(-1)
        ls = 0.5 * torch.log(nodes)
        ls_m = (ls * self.gh_w).sum(-1)
        ls_v = ((ls**2 * self.gh_w).sum(-1) - ls_m**2).clamp(min=0.0)
        scale = self.log_scale[None, :, None, None]
        perm = (0, 3, 2, 1)  # (B, arm, K, Q) -> (B, Q, K, arm)
        return {
            "log_sbar": (torch.log(sd) + scale).permute(perm),
            "ls_mean": (ls_m + scale).permute(perm),
            "ls_var": ls_v.permute(perm),
            "ev_mean": fit.ev_mean,
            "ev_var": fit.ev_var,
        }

    def forward(self, sums: Tensor, uq: Tensor) -> dict[str, Tensor]:
        """:meth:`fit` then :meth:`predict`."""
        return self.predict(self.fit(sums), uq)
