r"""The student: an in-context mixture-of-experts network that imitates the posterior Neyman teacher.

Architecture (DESIGN.md section 6: the variant that did best per second of CPU training)

* **History tokens** ``(u, a, y_std)`` are embedded *independently* by a per-token MLP (no
  self-attention among them, no positional encoding: the history is a set). Inputs are Fourier
  features of ``u`` (:math:`u, \cos(\pi j u)`, ``j = 1..n_freq`` per coordinate, the teacher's
  basis), the arm indicators and ``y_std, y_std^2`` split by arm.
* A learned **null token** is always in the context, so an empty history is well defined and the
  attention can put weight "nowhere".
* **Query tokens** embed Fourier features of ``u``, :math:`\log(1 + n)/5` (the history size) and
  per-arm series estimates at ``u`` from the pooled moments (local density, first and second
  moments, log local variance: the teacher's regression before its prior), plus a learned query
  flag; they **cross-attend** to the context (``n_layers`` pre-norm layers,
  ``n_heads`` heads, keys and values from the context only), each followed by an MLP.
* **Gate**: per-unit features averaged over the history (a Deep-Sets summary): the series
  moments :math:`\phi_j(u) [a = k] y^p` (``p = 0, 1, 2``; their means are the teacher's
  sufficient statistics over ``n``) and a learned map of the token embedding, together with
  :math:`\log(1 + n)` and :math:`\log(1 + n\, \bar m_j^2)` for the arms' first moments
  :math:`\bar m_j` (a coefficient's signal-to-noise: what tells smoothness classes apart), give
  logits over the ``K`` smoothness classes: :math:`P(k \mid H)`. A
  linear map of the same summary is added to every query token.
* **Experts** (one per class) map each query's representation to per-arm
  :math:`\log \bar s_{a,k}(x)` (a posterior-mean-sd-like scale) and the class-conditional mean and
  log-sd of :math:`\log\sigma_a(x)`. As the mixture teacher does, the probability is the Neyman
  ratio of the gate-weighted sds, :math:`\bar s_a = \sum_k P(k \mid H)\, \bar s_{a,k}`,
  :math:`\pi = \bar s_1 / (\bar s_1 + \bar s_0)` (computed as a logit with ``logsumexp``), and the
  :math:`\log\sigma_a` posterior is the moment-matched mixture of the experts' Gaussians.

* **Conjugate layer** (:mod:`bayesdesign.student.conjugate`, for priors with series; ``n_terms > 0``):
  from per-arm sufficient statistics pooled over the history (sums of per-unit terms, cached like
  the rest) it solves the conjugate teacher's working-model regressions per class and gives per
  query, class and arm :math:`\log \bar s_{a,k}(x)` and the mean and sd of :math:`\log\sigma_a(x)`,
  and per class the log evidence. These enter the query tokens and the gate as features, and the
  experts' outputs and the gate's logits are *corrections* added to them, initialized at zero: an
  untrained student decides as the conjugate teacher of its prior, and training learns what the
  working model misses for the teacher at hand (and the evidence weight ``var_evidence``, starting
  at the teacher's 0.25). ``n_terms = 0`` gives the plain network.

Because history tokens never see each other, their embeddings, the keys and values of every layer
and the gate's running sum can be cached and extended by one token per decision
(:class:`Context`): a decision then costs the query side only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..basis import cosine_features, cosine_terms
from ..efficiency import extremes_init, extremes_update, has_atom
from .conjugate import ConjugateFit, ConjugateLayer, standardize_sums

__all__ = ["StudentConfig", "StudentModel", "Context"]

_N_SCALE = 5.0  # log(1 + n) / 5 is about 1.4 at n = 1000


@dataclass(frozen=True)
class StudentConfig:
    """Architecture of a :class:`StudentModel` (saved in ``config.json``)."""

    d: int = 1
    n_classes: int = 1
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    n_freq: int = 8
    token_hidden: int = 64
    gate_dim: int = 64
    expert_hidden: int = 32
    n_terms: int = 0
    standardize: bool = False
    token_asinh: bool = False
    token_atom: bool = False

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model: expected a multiple of n_heads={self.n_heads}, got {self.d_model}")
        for k in ("d", "n_classes", "d_model", "n_heads", "n_layers", "token_hidden", "gate_dim", "expert_hidden"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k}: expected a positive integer, got {getattr(self, k)}")
        if self.n_terms < 0:
            raise ValueError(f"n_terms: expected 0 (no conjugate layer) or a positive integer, got {self.n_terms}")
        if self.standardize and not self.n_terms:
            raise ValueError("standardize: in-context standardization needs the conjugate layer (n_terms > 0)")
        if self.token_atom and not self.standardize:
            raise ValueError("token_atom: the atom features are taken of the raw outcomes, which the student sees "
                             "only with in-context standardization (standardize=true)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> StudentConfig:
        flags = ("standardize", "token_asinh", "token_atom")
        return cls(**{k: bool(v) if k in flags else int(v) for k, v in data.items()})


class Context(NamedTuple):
    """Encoded history: per layer keys and values ``(B, 1 + N, D)`` (the null token first), the
    gate's per-token features summed over real units ``(B, G)``, the history size ``n`` (B,),
    the mask ``(B, 1 + N)`` (True = null token or real unit, False = padding; ``None`` = no
    padding), the conjugate layer's sums ``(B, S)`` float64 (``None`` without the layer),
    optionally the :class:`HistorySummary` (cached by the policy between decisions), and which
    histories' outcomes have an atom (``(B,)`` bool, :func:`~bayesdesign.efficiency.has_atom`;
    ``None``: none has), where the conjugate layer follows the teacher's rule for them."""

    keys: list[Tensor]
    values: list[Tensor]
    gate_sum: Tensor
    n: Tensor
    mask: Tensor | None
    stats: Tensor | None = None
    summary: HistorySummary | None = None
    atom: Tensor | None = None


class HistorySummary(NamedTuple):
    """Everything a decision needs that depends on the history only (:meth:`StudentModel.summarize`;
    cached by the policy between decisions): the pooled moments ``mean`` (B, G), ``nfeat`` (B, 1),
    the conjugate layer's fit (or ``None``), the gate's ``class_logits`` and ``log_p`` (B, K) and the
    ``summary`` token (B, 1, D) added to every query."""

    mean: Tensor
    nfeat: Tensor
    fit: ConjugateFit | None
    class_logits: Tensor
    log_p: Tensor
    summary: Tensor


def _running_moments(y: Tensor, mask: Tensor | None) -> tuple[Tensor, ...]:
    """Float64 ``y``, the mask as 0/1, and per unit the pooled mean and variance of the outcomes up to
    and including it, and whether they are defined (a real unit, two distinct outcomes so far)."""
    y64 = y.double()
    m = torch.ones_like(y64) if mask is None else mask.double()
    n = torch.cumsum(m, 1)
    c = torch.cumsum(m * y64, 1) / n.clamp(min=1.0)
    var = torch.cumsum(m * y64 * y64, 1) / n.clamp(min=1.0) - c**2
    ok = (n > 1) & (var > 1e-12 * (c**2).clamp(min=1e-300)) & (m > 0)
    return y64, m, c, var, ok


def running_standardized(y: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""History tokens' outcomes under in-context standardization: unit :math:`i` carries
    :math:`(y_i - c_i)/s_i`, with :math:`c_i, s_i` the pooled mean and sd of the outcomes of units
    :math:`1..i` (0 while fewer than two distinct outcomes exist), so a token never changes once
    appended and the tokens are invariant to :math:`y \to c_0 + s_0 y` (:math:`s_0 > 0`).
    ``y`` (B, N); ``mask`` (B, N) marks real units (padding at the end). The same map as
    :func:`bayesdesign.student.scaling.running_standardize`, which the policy uses unit by unit."""
    y64, _, c, var, ok = _running_moments(y, mask)
    z = (y64 - c) / torch.sqrt(torch.where(ok, var, torch.ones_like(var)))
    return torch.where(ok, z, torch.zeros_like(z)).to(y.dtype)


def running_atom(y: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Per-unit atom features ``(B, N, 2)``: whether :math:`y_i` ties the running minimum
    :math:`m_i = \min(y_1, \dots, y_i)`, and :math:`\log((y_i - m_i)/s_i)` (0 at the minimum),
    :math:`s_i` the pooled sd of :math:`y_1, \dots, y_i` (0 while fewer than two distinct outcomes
    exist). Unchanged by :math:`y \to c_0 + s_0 y` (:math:`s_0 > 0`) and fixed once a unit is appended,
    like :func:`running_standardized`. For zero-inflated outcomes (revenue per visitor) these are the
    purchase indicator and the log amount on the history's scale: the sufficient statistics of the
    model's two parts, which standardized outcomes blur (a zero maps to :math:`-c_i/s_i`)."""
    y64, m, _, var, ok = _running_moments(y, mask)
    low = torch.cummin(torch.where(m > 0, y64, torch.full_like(y64, float("inf"))), 1).values
    tie = (m > 0) & (y64 <= low)
    excess = (y64 - low) / torch.sqrt(torch.where(ok, var, torch.ones_like(var)))
    log_excess = torch.log(torch.where(ok & ~tie, excess, torch.ones_like(excess))).clamp(-10.0, 10.0)
    return torch.stack([tie.double(), log_excess], -1).to(y.dtype)


def fourier(u: Tensor, n_freq: int) -> Tensor:
    """``(..., d)`` -> ``(..., d (1 + n_freq))``: :math:`u` and :math:`\\cos(\\pi j u)` (the basis of
    :mod:`bayesdesign.basis`, unscaled)."""
    return torch.cat([u, cosine_terms(u, n_freq, scale=1.0)], dim=-1)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.GELU(approximate="tanh"))
    return nn.Sequential(*layers)


class _CrossLayer(nn.Module):
    """Pre-norm cross-attention of queries to the context, then a pre-norm MLP (both residual)."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        d = cfg.d_model
        self.h, self.dh = cfg.n_heads, d // cfg.n_heads
        self.norm_q = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.norm_ff = nn.LayerNorm(d)
        self.ff = _mlp([d, 2 * d, d])

    def forward(self, qtok: Tensor, keys: Tensor, values: Tensor, bias: Tensor | None) -> Tensor:
        """``qtok`` (B, Q, D); ``keys``/``values`` (B, M, D) including the null token; ``bias``
        (B, 1, 1, M) additive mask or ``None``."""
        b, nq, d = qtok.shape
        q = self.q(self.norm_q(qtok)).view(b, nq, self.h, self.dh).transpose(1, 2)
        k = keys.view(b, -1, self.h, self.dh).transpose(1, 2)
        v = values.view(b, -1, self.h, self.dh).transpose(1, 2)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        qtok = qtok + self.o(att.transpose(1, 2).reshape(b, nq, d))
        return qtok + self.ff(self.norm_ff(qtok))


class StudentModel(nn.Module):
    """Imitates the teacher at query points given a history (see the module docstring).

    Inputs are in student coordinates (:class:`~bayesdesign.student.scaling.InputScaling`):
    ``u`` (B, N, d) in [0, 1], ``a`` (B, N) in {0, 1}, ``y`` (B, N) standardized, ``mask``
    (B, N) True for real units (``None``: all real), ``uq`` (B, Q, d).
    """

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.cfg = cfg
        d, nf = cfg.d_model, cfg.d * (1 + cfg.n_freq)
        k, e = cfg.n_classes, cfg.expert_hidden
        self.conj = ConjugateLayer(cfg.d, cfg.n_terms, k) if cfg.n_terms else None
        n_base = 6 * k if self.conj is not None else 0  # per class and arm: log sbar, mean and log sd of log sigma
        self.token = _mlp([nf + 6 + (4 if cfg.token_atom else 0), cfg.token_hidden, cfg.token_hidden, d])
        self.token_norm = nn.LayerNorm(d)
        self.null = nn.Parameter(0.02 * torch.randn(d))
        self.query = _mlp([nf + 1 + 8 + n_base, cfg.token_hidden, d])
        self.query_flag = nn.Parameter(0.02 * torch.randn(d))
        self.layers = nn.ModuleList(_CrossLayer(cfg) for _ in range(cfg.n_layers))
        self.gate_token = nn.Linear(d, cfg.gate_dim)
        self.pool_dim = cfg.gate_dim + 6 * (1 + cfg.d * cfg.n_freq)
        self._p = 1 + cfg.d * cfg.n_freq
        gate_in = self.pool_dim + 1 + 2 * self._p + (k if self.conj is not None else 0)
        self.gate = _mlp([gate_in, cfg.gate_dim, cfg.n_classes])
        self.summary = nn.Linear(gate_in, d)
        self.out_norm = nn.LayerNorm(d)
        self.expert_in = nn.Linear(d, k * e)
        self.expert_w = nn.Parameter(torch.randn(k, e, 6) / math.sqrt(e))
        self.expert_b = nn.Parameter(torch.zeros(k, 6))
        if self.conj is not None:
            # corrections to the conjugate layer start at zero: the untrained student is the teacher's working model
            self.var_evidence = nn.Parameter(torch.tensor(0.25))
            nn.init.zeros_(self.expert_w)
            nn.init.zeros_(self.gate[-1].weight)
            nn.init.zeros_(self.gate[-1].bias)

    # ------------------------------------------------------------------ history side

    def embed(self, u: Tensor, a: Tensor, y: Tensor, atom: Tensor | None = None) -> Tensor:
        """Per-token embeddings ``(B, N, D)``: each unit on its own (cacheable). ``atom`` (B, N, 2):
        the units' :func:`running_atom` features (required with ``cfg.token_atom``)."""
        a = a.to(u.dtype)
        y = torch.asinh(y.to(u.dtype)) if self.cfg.token_asinh else y.to(u.dtype)
        arm_y = torch.stack([a, 1 - a, a * y, (1 - a) * y, a * y * y, (1 - a) * y * y], -1)
        parts = [fourier(u, self.cfg.n_freq), arm_y]
        if self.cfg.token_atom:
            atom = atom.to(u.dtype)
            parts.append(torch.cat([a[..., None] * atom, (1 - a)[..., None] * atom], -1))
        return self.token_norm(self.token(torch.cat(parts, dim=-1)))

    def moments(self, u: Tensor, a: Tensor, y: Tensor) -> Tensor:
        r"""Per-unit series moments ``(B, N, 6 P)``: :math:`\phi(u)\, [a = k]\, y^p` for the cosine
        basis :math:`\phi` (``P = 1 + d n_freq`` terms), both arms ``k`` and ``p = 0, 1, 2``. Their
        history means are the teacher's sufficient statistics (divided by ``n``)."""
        a = a.to(u.dtype)
        y = y.to(u.dtype)
        phi = cosine_features(u, self.cfg.n_freq, scale=1.0)
        arm = torch.stack([1 - a, a], -1)  # (B, N, 2)
        powers = torch.stack([torch.ones_like(y), y, y * y], -1)  # (B, N, 3)
        out = phi[..., None, None, :] * arm[..., :, None, None] * powers[..., None, :, None]
        return out.flatten(-3)

    def project(self, u: Tensor, a: Tensor, y: Tensor, atom: Tensor | None = None
                ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """Per-unit keys and values of every layer ``(B, N, D)`` and pooled features ``(B, N, pool_dim)``
        (each unit on its own: cacheable)."""
        tokens = self.embed(u, a, y, atom)
        keys = [layer.k(tokens) for layer in self.layers]
        values = [layer.v(tokens) for layer in self.layers]
        g = torch.cat([self.moments(u, a, y), F.gelu(self.gate_token(tokens), approximate="tanh")], -1)
        return keys, values, g

    def null_kv(self) -> tuple[list[Tensor], list[Tensor]]:
        """Keys and values ``(D,)`` of the null token in every layer."""
        return [layer.k(self.null) for layer in self.layers], [layer.v(self.null) for layer in self.layers]

    def encode(self, u: Tensor, a: Tensor, y: Tensor, mask: Tensor | None = None) -> Context:
        """Encode a (padded) history into a :class:`Context` (``y`` as the policy passes it: with
        ``cfg.standardize``, raw outcomes, which the tokens see standardized in context)."""
        y_tok = running_standardized(y, mask) if self.cfg.standardize else y
        keys, values, g = self.project(u, a, y_tok, running_atom(y, mask) if self.cfg.token_atom else None)
        b = u.shape[0]
        nk, nv = self.null_kv()
        keys = [torch.cat([k0.expand(b, 1, -1), k], 1) for k0, k in zip(nk, keys, strict=True)]
        values = [torch.cat([v0.expand(b, 1, -1), v], 1) for v0, v in zip(nv, values, strict=True)]
        stats = self.conj.unit_stats(u, a, y) if self.conj is not None else None
        if mask is None:
            n = torch.full(u.shape[:1], u.shape[1], dtype=u.dtype, device=u.device)
            gate_sum = g.sum(1)
            stats = stats.sum(1) if stats is not None else None
        else:
            m = mask.to(u.dtype)
            n = m.sum(1)
            gate_sum = (g * m[..., None]).sum(1)
            stats = (stats * m.double()[..., None]).sum(1) if stats is not None else None
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        return Context(keys, values, gate_sum, n, mask, stats, atom=self._atom(y, mask, n))

    def _atom(self, y: Tensor, mask: Tensor | None, n: Tensor) -> Tensor | None:
        """Which histories' outcomes have an atom (:func:`~bayesdesign.efficiency.has_atom`, as the
        policy finds it), when the rule has an atom share and ``y`` are the raw outcomes (in-context
        standardization; fixed offsets map each arm apart, and the clamp ties outcomes)."""
        if self.conj is None or not self.conj.atom or not self.cfg.standardize:
            return None
        yv = y.detach().double().cpu().numpy()
        if mask is not None:
            yv = np.where(mask[:, 1:].cpu().numpy(), yv, np.nan)
        ext = extremes_update(extremes_init(yv.shape[0]), yv)
        return torch.as_tensor(has_atom(ext, n.cpu().numpy(), self.conj.atom), device=y.device)

    # ------------------------------------------------------------------ query side

    def summarize(self, ctx: Context) -> HistorySummary:
        """The history side of a decision (the gate, the pooled summary, the conjugate fit)."""
        nfeat = (torch.log1p(ctx.n) / _N_SCALE)[:, None]  # (B, 1)
        mean = ctx.gate_sum / ctx.n.clamp(min=1.0)[:, None]
        p = self._p  # the y-moments of arm k sit at [k 3P + P, k 3P + 2P)
        ym = torch.cat([mean[:, p : 2 * p], mean[:, 4 * p : 5 * p]], -1)
        chi = torch.log1p(ctx.n[:, None] * ym**2)  # signal-to-noise of each series coefficient
        fit = None
        if self.conj is not None:
            self.conj.check_torch("StudentModel (forward, decide, training)")
            sums = standardize_sums(ctx.stats, self.conj.f)[0] if self.cfg.standardize else ctx.stats
            fit = self.conj.fit(sums, ctx.atom)
            lam = self.var_evidence.clamp(min=0.0).double()
            base_logp = F.log_softmax(self.conj.log_w + fit.ev_mean + lam * fit.ev_var, -1).to(mean.dtype)
            gate_in = torch.cat([mean, nfeat, chi, base_logp.clamp(min=-30.0) / 10.0], -1)
            class_logits = base_logp + self.gate(gate_in)
        else:
            gate_in = torch.cat([mean, nfeat, chi], -1)
            class_logits = self.gate(gate_in)
        log_p = F.log_softmax(class_logits, -1)  # (B, K)
        return HistorySummary(mean, nfeat, fit, class_logits, log_p, self.summary(gate_in)[:, None, :])

    def decide(self, ctx: Context, uq: Tensor) -> dict[str, Tensor]:
        """All outputs at queries ``uq`` (B, Q, d) given an encoded history.

        Returns ``logit`` and ``pi`` (B, Q) (unclipped), ``log_sd_mean`` and ``log_sd_sd``
        (B, 2, Q), ``class_logits`` and ``class_prob`` (B, K). The logit is the Neyman ratio's,
        :math:`\\log\bar s_1 - \\log\bar s_0`, with the learned corrections; when the teacher
        follows a log-odds rule (the conjugate layer's :meth:`~ConjugateLayer.set_rule`), or in
        histories whose outcomes have an atom (``ctx.atom``), its base is that rule on the layer's
        posterior instead (:meth:`~ConjugateLayer.base_logit`), the corrections' change of the
        ratio added: so an untrained student decides as its teacher under every rule.
        """
        b = uq.shape[0]
        hs = ctx.summary if ctx.summary is not None else self.summarize(ctx)
        class_logits, log_p = hs.class_logits, hs.log_p
        parts = [fourier(uq, self.cfg.n_freq), hs.nfeat[:, None, :].expand(b, uq.shape[1], 1), self._local(hs.mean, uq)]
        if self.conj is not None:
            base = self.conj.predict(hs.fit, uq)
            base_q = [base["log_sbar"], base["ls_mean"], 0.5 * torch.log(base["ls_var"] + 1e-8)]
            base_q = [v.to(uq.dtype) for v in base_q]
            parts.append(torch.cat(base_q, -1).flatten(-2))
        summary = hs.summary
        q_in = torch.cat(parts, -1)
        qtok = self.query(q_in) + self.query_flag + summary
        bias = None
        if ctx.mask is not None:
            bias = torch.zeros(ctx.mask.shape, dtype=uq.dtype, device=uq.device).masked_fill(~ctx.mask, float("-inf"))
            bias = bias[:, None, None, :]
        for layer, k, v in zip(self.layers, ctx.keys, ctx.values, strict=True):
            qtok = layer(qtok, k, v, bias)
        h = F.gelu(self.expert_in(self.out_norm(qtok)), approximate="tanh")  # (B, Q, K*E)
        h = h.view(*h.shape[:2], self.cfg.n_classes, self.cfg.expert_hidden)
        out = torch.einsum("bqke,keo->bqko", h, self.expert_w) + self.expert_b  # (B, Q, K, 6)
        log_s, ls_m, ls_logsd = out[..., 0:2], out[..., 2:4], out[..., 4:6]
        if self.conj is not None:
            log_s = log_s + base_q[0]
            ls_m = ls_m + base_q[1]
            ls_logsd = ls_logsd + base_q[2]
        lp = log_p[:, None, :, None]  # (B, 1, K, 1)
        log_sbar = torch.logsumexp(lp + log_s, dim=2)  # (B, Q, 2)
        logit = log_sbar[..., 1] - log_sbar[..., 0]
        if self.conj is not None:  # the teacher's rule on the layer's posterior
            lpd = lp.double()
            base_sbar = torch.logsumexp(lpd + base["log_sbar"], dim=2)
            ratio = base_sbar[..., 1] - base_sbar[..., 0]
            rule = self.conj.base_logit(lpd.exp(), base["ls_mean"], base["ls_var"], ratio, ctx.atom)
            if rule is not ratio:
                logit = logit + (rule - ratio).to(logit.dtype)
        p = lp.exp()
        mean = (p * ls_m).sum(2)
        second = (p * (torch.exp(2 * ls_logsd) + ls_m**2)).sum(2)
        sd = torch.sqrt((second - mean**2).clamp(min=1e-10))
        return {
            "logit": logit,
            "pi": torch.sigmoid(logit),
            "log_sd_mean": mean.transpose(1, 2),
            "log_sd_sd": sd.transpose(1, 2),
            "class_logits": class_logits,
            "class_prob": log_p.exp(),
        }

    def _local(self, mean: Tensor, uq: Tensor) -> Tensor:
        """Series estimates at the queries ``(B, Q, 8)`` from the pooled moments: per arm the local
        density of units, of ``y`` and of ``y^2`` (an unshrunk cosine-series regression, the
        teacher's estimate before its prior), and the log of the implied local variance."""
        p, b = self._p, mean.shape[0]
        mom = mean[:, : 6 * p].view(b, 2, 3, p)
        phi = cosine_features(uq, self.cfg.n_freq, scale=2.0)
        est = torch.einsum("bqp,bkcp->bqkc", phi, mom)  # (B, Q, arm, power)
        cnt = est[..., 0].clamp(min=0.05)
        var = (est[..., 2] / cnt - (est[..., 1] / cnt) ** 2).clamp(0.01, 100.0)
        return torch.cat([est.flatten(-2), torch.log(var)], -1)

    def forward(self, u: Tensor, a: Tensor, y: Tensor, uq: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """:meth:`encode` then :meth:`decide`."""
        return self.decide(self.encode(u, a, y, mask), uq)
