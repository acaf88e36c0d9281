r"""The student's decisions compiled to machine code: the inference engine.

The torch network (:mod:`bayesdesign.student.model`) is what is trained. One decision at batch 1
is a few hundred tiny tensor operations there, and their cost is almost all dispatch (3 µs per
operation for torch, traced or not; 1-2 µs for NumPy): about 0.7 ms per decision and 1.5 ms per
appended unit. This module computes the same two functions with Numba-compiled loops over the
replications, queries and units, so only the arithmetic is left:

* :func:`update` embeds the new units, writes their keys and values into a cache that grows in
  place, extends the pooled sums and recomputes the history side of the next decision (the gate
  :math:`P(k \mid H)`, the summary token and the conjugate layer's fit, whose 11 x 11 Cholesky
  factors and inverses are written out here);
* :func:`decide` runs the query side: query tokens (a replication's queries are the rows of one
  matrix), cross-attention of each head to its cached keys and values, experts, and the Neyman
  ratio of the gate-weighted sds.

The weights are re-laid for this (:func:`engine_weights`): every LayerNorm's affine map is folded
into the linear map that follows it, the attention scale :math:`1/\sqrt{d_h}` into the query map,
and the keys and values of all layers come from one product per unit. The conjugate layer keeps
the posterior covariance :math:`\Sigma = \operatorname{diag}(s) P^{-1} \operatorname{diag}(s)` of
the series coefficients, so a query's predictive variance is :math:`\phi^\top \Sigma \phi`,
and an update refits only the arm that received units. The softmax's exponential is written as
arithmetic so that its loop vectorizes. The network runs in float32, as the torch model does; the
conjugate layer in float64.

With the teacher's ``reweight`` (``TeacherConfig.reweight``, read from the conjugate layer) the
engine also keeps the reweighted sums of the teacher's reweighted second-moment regression (the
layer's sums with each unit's terms times its weight, and :math:`\sum \log w` per arm): an update
then adds the units one at a time, each unit's weight computed from the layer's fit of the units
before it under the layer's own class posterior (:func:`_unit_weight`, as the teacher's
``unit_weights``), and the fit gains the reweighted regression per arm and class. The network
keeps its K classes: within each class the two second-moment models are averaged by their
evidence, :math:`\lambda e_{r,k} = \log\frac12(e^{\lambda e_{u,k}} + e^{\lambda e_{w,k}})` and
the class's :math:`\bar s`, mean and variance of :math:`\log\sigma` the moments of that
two-model mixture (:func:`_class_log_p`, :func:`_conj_predict`), so every class mixture
downstream (the class posterior, the Neyman ratio, the log-odds rule) is the teacher's over its
2K classes. The torch model does not implement it (``tests/test_student_reweight.py``). With
``reweight`` 0 the compiled code computes exactly what it did before.

The engine and the torch model check each other (``tests/test_student_engine.py``). Compiled code
is cached on disk by Numba (``cache=True``): the first use on a machine compiles for about
40 s, later processes load it in a second or two. XLA (``jax.jit``) was tried first and was
slower on these shapes (0.4-0.5 ms per decision); plain NumPy reached 0.3 ms per decision and
0.4 ms per appended unit. Here: 0.13 ms and 0.08 ms at a history of 1000 units
(``docs/student.md``).
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np
from numba import njit

from ..efficiency import ATOM_SAFE, extremes_init
from ..teachers.conjugate import WEIGHT_RANGE
from .conjugate import _GH_W, _GH_X
from .model import _N_SCALE
from .scaling import running_atom

__all__ = ["Engine", "EngineState", "Weights", "engine_weights", "compiled_on_disk"]

# float32 constants: in compiled code a float64 scalar would promote the float32 arrays it touches
_EPS = np.float32(1e-5)  # torch.nn.LayerNorm's
_HALF, _ONE = np.float32(0.5), np.float32(1.0)
_GELU_C = np.float32(math.sqrt(2.0 / math.pi))
_GELU_C3 = np.float32(0.044715 * math.sqrt(2.0 / math.pi))
_SQRT2 = math.sqrt(2.0)
WEIGHT_LOW, WEIGHT_HIGH = (float(v) for v in WEIGHT_RANGE)


class Weights(NamedTuple):
    """A student's weights laid out for the engine (see :func:`engine_weights`): the network's in
    float32, the conjugate layer's in float64. Linear maps are ``x @ W + b``; per-layer maps are
    stacked on a leading axis. ``dup`` (6K,): for each row of the conjugate fit (:class:`_Side`),
    the first row with the same prior scales, whose fit it shares (with separate smoothness classes
    for the mean and the spread, :math:`K^2` classes have :math:`K` distinct fits per regression)."""

    tok_w0: np.ndarray
    tok_b0: np.ndarray
    tok_w1: np.ndarray
    tok_b1: np.ndarray
    tok_w2: np.ndarray
    tok_b2: np.ndarray
    kv_w: np.ndarray
    kv_b: np.ndarray
    gt_w: np.ndarray
    gt_b: np.ndarray
    gate_w0: np.ndarray
    gate_b0: np.ndarray
    gate_w1: np.ndarray
    gate_b1: np.ndarray
    sum_w: np.ndarray
    sum_b: np.ndarray
    qry_w0: np.ndarray
    qry_b0: np.ndarray
    qry_w1: np.ndarray
    qry_b1: np.ndarray
    qflag: np.ndarray
    lq_w: np.ndarray
    lq_b: np.ndarray
    lo_w: np.ndarray
    lo_b: np.ndarray
    lf0_w: np.ndarray
    lf0_b: np.ndarray
    lf1_w: np.ndarray
    lf1_b: np.ndarray
    ei_w: np.ndarray
    ei_b: np.ndarray
    ex_w: np.ndarray
    ex_b: np.ndarray
    s: np.ndarray
    dup: np.ndarray
    log_w: np.ndarray
    log_scale: np.ndarray
    gh_x: np.ndarray
    gh_w: np.ndarray
    floor: float
    prior_obs: float
    var_evidence: float
    d: int
    n_freq: int
    n_terms: int
    n_heads: int
    n_classes: int
    standardize: bool
    robust: bool
    token_asinh: bool
    token_atom: bool


class _Side(NamedTuple):
    """The history side of the next decision (per replication): pooled moments ``mean`` (B, G),
    the gate's ``log_p`` (B, K), the ``summary`` token (B, D), and the conjugate fit: ``coef``
    (B, 4K, F), ``cov`` (B, 4K, F, F) (rows ordered arm, regression, class), the arms' running
    means ``cm`` (B, 2) and log evidences ``ev`` (B, arm, regression, K). With the teacher's
    ``reweight`` the reweighted second-moment regressions follow (rows ``4K + arm K + k``, 6K in
    all) and ``ev`` has a third regression (B, 2, 3, K)."""

    mean: np.ndarray
    log_p: np.ndarray
    summary: np.ndarray
    coef: np.ndarray
    cov: np.ndarray
    cm: np.ndarray
    ev: np.ndarray


class EngineState(NamedTuple):
    r"""``t`` units seen; the shared ``cache`` (keys and values); the pooled sums ``gate_sum``
    (B, G) and ``stats`` (B, S); the history side of the next decision (``None`` before any unit);
    which histories' outcomes have an atom (B,) and the running extremes of their outcomes
    (:func:`~bayesdesign.efficiency.extremes_update`) (``None`` before any unit); with the
    teacher's ``reweight`` the reweighted sums ``wstats`` (B, S) (the layout of ``stats``, each
    unit's terms times its weight) and :math:`\sum \log w` per arm ``wlog`` (B, 2), else
    ``None``."""

    t: int
    cache: _Cache
    gate_sum: np.ndarray
    stats: np.ndarray
    side: _Side | None = None
    atom: np.ndarray | None = None
    ext: np.ndarray | None = None
    wstats: np.ndarray | None = None
    wlog: np.ndarray | None = None


def engine_weights(model) -> Weights:
    """The weights of a torch :class:`~bayesdesign.student.model.StudentModel`, re-laid: LayerNorm
    affines folded into the next map (:math:`(\\hat x g + \\beta) W + b = \\hat x (g W) + (\\beta W + b)`),
    the attention scale into the query map, the keys and values of all layers stacked, the token's
    outcome inputs reordered to ``[a = k] y^p`` (control first, as the pooled moments)."""
    sd = {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}
    cfg = model.cfg

    def lin(name, norm=None, scale=1.0):
        w, b = sd[f"{name}.weight"].T, sd[f"{name}.bias"]
        if norm is not None:
            g, beta = sd[f"{norm}.weight"], sd[f"{norm}.bias"]
            w, b = g[:, None] * w, beta @ w + b
        return np.ascontiguousarray(scale * w, np.float32), (scale * b).astype(np.float32)

    def stack(pairs):
        return np.stack([w for w, _ in pairs]), np.stack([b for _, b in pairs])

    L, dh = cfg.n_layers, cfg.d_model // cfg.n_heads
    nf = cfg.d * (1 + cfg.n_freq)
    tok0 = lin("token.0")
    rows = [tok0[0][:nf], tok0[0][nf + np.array([1, 3, 5, 0, 2, 4])], tok0[0][nf + 6 :]]  # atom features last
    tok0 = (np.ascontiguousarray(np.concatenate(rows)), tok0[1])
    kv = [lin(f"layers.{i}.{kind}", "token_norm") for kind in "kv" for i in range(L)]
    layers = range(L)
    lq = stack([lin(f"layers.{i}.q", f"layers.{i}.norm_q", 1.0 / math.sqrt(dh)) for i in layers])
    lo = stack([lin(f"layers.{i}.o") for i in layers])
    lf0 = stack([lin(f"layers.{i}.ff.0", f"layers.{i}.norm_ff") for i in layers])
    lf1 = stack([lin(f"layers.{i}.ff.2") for i in layers])
    if cfg.n_terms:
        s = np.stack([sd["conj.s_mean"], sd["conj.s_var"]], 1)  # (arm, reg, K, F)
        log_w, log_scale = sd["conj.log_w"], sd["conj.log_scale"]
        floor, prior_obs = float(sd["conj.floor"]), float(sd["conj.prior_obs"])
        var_evidence = max(float(sd["var_evidence"]), 0.0)
    else:
        s, log_w, log_scale = np.zeros((2, 2, cfg.n_classes, 1)), np.zeros(cfg.n_classes), np.zeros(2)
        floor = prior_obs = var_evidence = 0.0
    return Weights(
        *tok0, *lin("token.2"), *lin("token.4"),
        np.concatenate([w for w, _ in kv], 1), np.concatenate([b for _, b in kv]),
        *lin("gate_token", "token_norm"), *lin("gate.0"), *lin("gate.2"), *lin("summary"),
        *lin("query.0"), *lin("query.2"), sd["query_flag"].astype(np.float32),
        *lq, *lo, *lf0, *lf1,
        *lin("expert_in", "out_norm"), np.ascontiguousarray(sd["expert_w"], np.float32),
        sd["expert_b"].astype(np.float32),
        np.ascontiguousarray(s), _duplicate_rows(s), log_w, log_scale, np.asarray(_GH_X, float),
        np.asarray(_GH_W, float),
        floor, prior_obs, var_evidence, cfg.d, cfg.n_freq, cfg.n_terms, cfg.n_heads, cfg.n_classes,
        bool(cfg.standardize), bool(cfg.n_terms and model.conj.robust), bool(cfg.token_asinh), bool(cfg.token_atom),
    )


def _duplicate_rows(s: np.ndarray) -> np.ndarray:
    """``Weights.dup`` from the prior scales ``s`` (arm, regression, K, F): rows ``(arm 2 + reg) K + k``,
    then the reweighted rows ``4K + arm K + k`` (the second-moment scales)."""
    kk = s.shape[2]
    dup = np.arange(6 * kk)
    for arm in range(2):
        for reg in range(2):
            for k in range(kk):
                first = next(j for j in range(k + 1) if np.array_equal(s[arm, reg, j], s[arm, reg, k]))
                dup[(arm * 2 + reg) * kk + k] = (arm * 2 + reg) * kk + first
                if reg == 1:
                    dup[4 * kk + arm * kk + k] = 4 * kk + arm * kk + first
    return dup


def null_kv(model) -> np.ndarray:
    """Keys then values of the null token in every layer, (2L, D)."""
    sd = {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}
    names = [f"layers.{i}.{kind}" for kind in "kv" for i in range(model.cfg.n_layers)]
    return np.stack([sd[f"{n}.weight"] @ sd["null"] + sd[f"{n}.bias"] for n in names])


# ---------------------------------------------------------------------------- building blocks

_jit = njit(cache=True, nogil=True)


@_jit
def _normalize(x):
    """LayerNorm without its affine map (folded into the next linear map)."""
    xc = x - x.mean()
    return xc / np.sqrt((xc * xc).mean() + _EPS)


@_jit
def _gelu(x):
    return _HALF * x * (_ONE + np.tanh(_GELU_C * x + _GELU_C3 * (x * x * x)))


@_jit
def _linear(x, w, b):
    return np.dot(x, w) + b


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "arcp"})
def _softmax_rows(scores, out, n):
    r"""``out[h, :n] = softmax(scores[h, :n])``. The exponential is written as arithmetic so that the
    loop vectorizes (a call to ``math.exp`` does not, and was most of a decision's attention):
    :math:`e^x = p_9(x / 256)^{256}` for :math:`x \le 0`, :math:`p_9` the degree-9 Taylor
    polynomial of :math:`e^r`, relative error below 1e-12 for :math:`x \ge -40`; below that the
    weight is :math:`e^{-40} \approx 4 \cdot 10^{-18}` of the largest instead of less."""
    for h in range(scores.shape[0]):
        row, o = scores[h], out[h]
        top = row[:n].max()
        tot = 0.0
        for j in range(n):
            r = max(row[j] - top, -40.0) * (1.0 / 256.0)
            p = 1.0 + r * (1.0 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (
                1 / 5040 + r * (1 / 40320 + r * (1 / 362880)))))))))
            for _ in range(8):
                p = p * p
            o[j] = p
            tot += p
        inv = 1.0 / tot
        for j in range(n):
            o[j] *= inv


@_jit
def _basis(u, n, scale, out):
    """``out = [1, scale cos(pi j u_c)]`` (``j = 1..n`` per coordinate ``c``)."""
    out[0] = 1.0
    for c in range(u.shape[0]):
        for j in range(n):
            out[1 + c * n + j] = scale * math.cos(math.pi * u[c] * (j + 1))


@_jit
def _log_softmax(x):
    m = x.max()
    return x - (m + math.log(np.exp(x - m).sum()))


# ---------------------------------------------------------------------------- inputs


@_jit
def to_unit(x, low, inv):
    """:meth:`InputScaling.to_unit <bayesdesign.student.scaling.InputScaling.to_unit>` of ``x``
    (B, m, d) compiled (a tenth of NumPy's cost on a single unit): the same float32 values, as float64."""
    out = np.empty(x.shape)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            for c in range(x.shape[2]):
                out[i, j, c] = np.float32(min(max((x[i, j, c] - low[c]) * inv[c], 0.0), 1.0))
    return out


@_jit
def standardize(y, a, offset, scale, clamp):
    """:meth:`InputScaling.standardize <bayesdesign.student.scaling.InputScaling.standardize>` of
    ``y`` (B, m) given the arms ``a`` compiled: the same float32 values, as float64."""
    out = np.empty(y.shape)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            k = 1 if a[i, j] != 0 else 0
            out[i, j] = np.float32(min(max((y[i, j] - offset[k]) / scale[k], -clamp), clamp))
    return out


# ---------------------------------------------------------------------------- history side


@_jit
def _add_unit(W, u, a, y, ylay, kv, g, stats, atom):
    """One unit (as :meth:`StudentModel.project` and :meth:`ConjugateLayer.unit_stats`): writes its
    keys and values of every layer into ``kv`` (2L D,) and adds its gate features to ``g`` (G,)
    (both from the token's outcome ``y`` and, with ``W.token_atom``, its atom features ``atom``
    (2,)) and its conjugate-layer terms, of ``ylay``, to ``stats`` (S,). ``y`` and ``ylay`` differ
    only under in-context standardization."""
    d, nf = W.d, W.n_freq
    p = 1 + d * nf
    phi = np.empty(p, np.float32)
    _basis(u, nf, 1.0, phi)
    c = 1.0 - a
    arm_pow = np.array([c, c * y, c * y * y, a, a * y, a * y * y])  # [a = k] y^p, control first
    o = d + d * nf
    feats = np.empty(o + 6 + (4 if W.token_atom else 0), np.float32)
    feats[:d] = u
    feats[d:o] = phi[1:]
    if W.token_asinh:
        yt = np.arcsinh(y)
        feats[o : o + 6] = np.array([c, c * yt, c * yt * yt, a, a * yt, a * yt * yt])
    else:
        feats[o : o + 6] = arm_pow
    if W.token_atom:
        feats[o + 6 :] = np.array([a * atom[0], a * atom[1], c * atom[0], c * atom[1]])
    h = _gelu(_linear(feats, W.tok_w0, W.tok_b0))
    h = _gelu(_linear(h, W.tok_w1, W.tok_b1))
    tokens = _normalize(_linear(h, W.tok_w2, W.tok_b2))
    kv[:] = _linear(tokens, W.kv_w, W.kv_b)
    for k in range(6):
        g[k * p : (k + 1) * p] += arm_pow[k] * phi
    g[6 * p :] += _gelu(_linear(tokens, W.gt_w, W.gt_b))
    if W.n_terms:
        _add_layer_terms(W, u, a, ylay, stats)


@_jit
def _add_layer_terms(W, u, a, ylay, stats, w=1.0):
    """One unit's conjugate-layer terms (:meth:`ConjugateLayer.unit_stats`), each times the unit's
    weight ``w`` (1, or its weight in the reweighted second-moment regression), added to ``stats`` (S,)."""
    f = 1 + W.d * W.n_terms
    psi = np.empty(f)
    _basis(u, W.n_terms, _SQRT2, psi)
    half = stats.shape[0] // 2
    st = stats[half:] if a > 0.5 else stats[:half]
    for i in range(f):
        for j in range(f):
            st[i * f + j] += w * psi[i] * psi[j]
    st[f * f : f * f + f] += w * psi * ylay
    st[f * f + f : f * f + 2 * f] += w * psi * (ylay * ylay)
    st[-2] += w * (ylay * ylay * ylay)
    st[-1] += w * (ylay * ylay * ylay * ylay)


@_jit
def _cholesky_inverse(a, lower, inv):
    r"""Writes the Cholesky factor of the SPD matrix ``a`` into the lower triangle of ``lower`` (its
    strict upper triangle is scratch) and :math:`a^{-1}` into ``inv`` (from the inverse of the
    factor, by forward substitution). Returns :math:`\log\det a`."""
    f = a.shape[0]
    logdet = 0.0
    for j in range(f):
        v = a[j, j]
        for k in range(j):
            v -= lower[j, k] * lower[j, k]
        ljj = math.sqrt(v)
        lower[j, j] = ljj
        logdet += 2.0 * math.log(ljj)
        for i in range(j + 1, f):
            acc = a[i, j]
            for k in range(j):
                acc -= lower[i, k] * lower[j, k]
            lower[i, j] = acc / ljj
    for j in range(f):  # lower^{-1}, kept in the upper triangle of inv (transposed): inv[j, i] = (L^-1)[i, j]
        inv[j, j] = 1.0 / lower[j, j]
        for i in range(j + 1, f):
            acc = 0.0
            for k in range(j, i):
                acc -= lower[i, k] * inv[j, k]
            inv[j, i] = acc / lower[i, i]
    diag = np.empty(f)
    for i in range(f):  # a^{-1} = L^-T L^-1: (a^-1)[i, j] = sum_{k >= max(i, j)} (L^-1)[k, i] (L^-1)[k, j]
        for j in range(i, f):
            acc = 0.0
            for k in range(j, f):
                acc += inv[i, k] * inv[j, k]
            if j == i:
                diag[i] = acc
            else:
                lower[i, j] = acc  # the strict upper triangle of ``lower`` is scratch
    for i in range(f):
        inv[i, i] = diag[i]
        for j in range(i + 1, f):
            inv[i, j] = lower[i, j]
            inv[j, i] = lower[i, j]
    return logdet


@_jit
def _arm_noise(W, st, robust):
    """An arm's count ``n``, running mean ``c``, :math:`\\sum (y - c)^2`, shrunk noise variance
    :math:`\\hat v`, :math:`\\sum (y - c)^4` and the second-moment regression's noise variance
    (:math:`2 \\hat v^2`, or the robust one where ``W.robust`` or ``robust``) from its sums ``st``
    (as :meth:`ConjugateLayer.fit`)."""
    f = 1 + W.d * W.n_terms
    n, m1, m2 = st[0], st[f * f], st[f * f + f]
    m3, m4 = st[-2], st[-1]
    c = m1 / max(n, 1.0)
    syy = max(m2 - 2 * c * m1 + c * c * n, 0.0)
    v_hat = (syy + W.prior_obs) / (n + W.prior_obs)
    sum_r2 = m4 - 4 * c * m3 + 6 * c * c * m2 - 4 * c**3 * m1 + c**4 * n
    r_var = 2 * v_hat * v_hat
    if W.robust or robust:
        kurt = (max(sum_r2, 0.0) + 3 * W.prior_obs) / (n + W.prior_obs) / (v_hat * v_hat)
        r_var = max(kurt - 1.0, 0.5) * v_hat * v_hat
    return n, c, syy, v_hat, sum_r2, r_var


@_jit
def _blr_row(s, gram, g, ee, n, v, coef_r, cov_r):
    """The whitened Bayesian linear regression of one class (prior sds ``s`` (F,), noise variance
    ``v``): writes the posterior mean ``coef_r`` (F,) and covariance ``cov_r`` (F, F) of the
    coefficients, returns the log marginal likelihood (as the teacher's ``_blr``)."""
    f = gram.shape[0]
    prec, lower, inv = np.empty((f, f)), np.empty((f, f)), np.empty((f, f))
    h = np.empty(f)
    for i in range(f):
        si = s[i] / v
        for j in range(f):
            prec[i, j] = si * gram[i, j] * s[j]
        prec[i, i] += 1.0
        h[i] = si * g[i]
    logdet = _cholesky_inverse(prec, lower, inv)
    quad = 0.0
    for i in range(f):
        z = 0.0
        for j in range(f):
            z += inv[i, j] * h[j]
            cov_r[i, j] = s[i] * inv[i, j] * s[j]
        coef_r[i] = s[i] * z
        quad += h[i] * z
    return -0.5 * (n * math.log(2 * math.pi * v) + logdet + ee / v - quad)


@_jit
def _conj_fit_arm(W, st, arm, robust, coef, cov, cm, ev):
    """One arm's part of the conjugate layer's fit (as :meth:`ConjugateLayer.fit`, the robust
    second-moment variance where ``W.robust`` or ``robust``) from its pooled sums ``st``: writes
    the rows ``(arm, regression, class)`` of ``coef`` (4K, F) and ``cov`` (4K, F, F), ``cm[arm]``
    and the log evidences ``ev[arm]`` (2, K). An arm's fit depends on its own sums (and the rule)
    only, so an update refits the arms that received units (both when the rule changed)."""
    f, kk = 1 + W.d * W.n_terms, W.n_classes
    gram = st[: f * f].reshape((f, f))
    b1 = st[f * f : f * f + f]
    b2 = st[f * f + f : f * f + 2 * f]
    n, c, syy, v_hat, sum_r2, r_var = _arm_noise(W, st, robust)
    cm[arm] = c
    g = np.empty(f)
    for reg in range(2):
        if reg == 0:
            g[:] = b1
            ee, v = b2[0], v_hat
        else:
            for i in range(f):
                g[i] = b2[i] - 2 * c * b1[i] + (c * c - 1.0) * gram[0, i]
            ee, v = max(sum_r2, 0.0) - 2 * syy + n, r_var
        for k in range(kk):
            row = (arm * 2 + reg) * kk + k
            src = W.dup[row]
            if src != row:  # the same prior scales as an earlier class: the same fit
                coef[row] = coef[src]
                cov[row] = cov[src]
                ev[arm, reg, k] = ev[arm, reg, src - (arm * 2 + reg) * kk]
            else:
                ev[arm, reg, k] = _blr_row(W.s[arm, reg, k], gram, g, ee, n, v, coef[row], cov[row])


@_jit
def _conj_fit_weighted(W, st, wst, log_w, arm, robust, coef, cov, ev):
    r"""One arm's reweighted second-moment regression (the teacher's ``TeacherConfig.reweight``)
    from its weighted sums ``wst`` (the layout of ``st``, every unit's terms times its weight) and
    :math:`\sum \log w_i` ``log_w``: :math:`(y - c)^2 - v_0` on the series with noise variance
    :math:`r / w_i` per unit, centred at the arm's unweighted running mean :math:`c`, with the
    unweighted regression's noise variance :math:`r`, count and prior scales (as the teacher's
    ``_weighted_centred`` and ``_regressions``). Writes rows ``4K + arm K + k`` of ``coef`` and
    ``cov`` and ``ev[arm, 2]`` (K,), which carries :math:`+\frac12 \sum \log w_i`."""
    f, kk = 1 + W.d * W.n_terms, W.n_classes
    n, c, _, _, _, r_var = _arm_noise(W, st, robust)
    gram = wst[: f * f].reshape((f, f))
    b1 = wst[f * f : f * f + f]
    b2 = wst[f * f + f : f * f + 2 * f]
    nw, m1, m2, m3, m4 = gram[0, 0], b1[0], b2[0], wst[-2], wst[-1]
    g = np.empty(f)
    for i in range(f):
        g[i] = b2[i] - 2 * c * b1[i] + (c * c - 1.0) * gram[0, i]
    syy = max(m2 - 2 * c * m1 + c * c * nw, 0.0)
    sum_r2 = m4 - 4 * c * m3 + 6 * c * c * m2 - 4 * c**3 * m1 + c**4 * nw
    ee = max(sum_r2, 0.0) - 2 * syy + nw
    for k in range(kk):
        row = 4 * kk + arm * kk + k
        src = W.dup[row]
        if src != row:
            coef[row] = coef[src]
            cov[row] = cov[src]
            ev[arm, 2, k] = ev[arm, 2, src - 4 * kk - arm * kk]
        else:
            ev[arm, 2, k] = _blr_row(W.s[arm, 1, k], gram, g, ee, n, r_var, coef[row], cov[row]) + 0.5 * log_w


@_jit
def _pooled_location_scale(stats, f):
    """The pooled mean and sd of one history's outcomes from its sums (S,) (:math:`c = 0, s = 1`
    before two distinct outcomes), as :func:`~bayesdesign.student.conjugate.standardize_sums`, and
    whether they are defined (as the teacher's ``pooled_location_scale``)."""
    half = stats.shape[0] // 2
    n_tot, s1, s2 = 0.0, 0.0, 0.0
    for arm in range(2):
        o = arm * half
        n_tot += stats[o]
        s1 += stats[o + f * f]
        s2 += stats[o + f * f + f]
    c = s1 / n_tot if n_tot > 0 else 0.0
    var = s2 / max(n_tot, 1.0) - c * c
    sd = 1.0
    ok = n_tot > 1 and var > 1e-12 * max(c * c, 1e-300)
    if ok:
        sd = math.sqrt(var)
    else:
        c = 0.0
    return c, sd, ok


@_jit
def _standardize_with(stats, c, sd, f):
    """The sums (S,) of :math:`z = (y - c)/s` from those of ``y`` (binomial expansions; also for
    weighted sums, with the unweighted ``c``, ``sd``)."""
    half = stats.shape[0] // 2
    out = stats.copy()
    for arm in range(2):
        o = arm * half
        n, m1, m2, m3, m4 = stats[o], stats[o + f * f], stats[o + f * f + f], stats[o + half - 2], stats[o + half - 1]
        for i in range(f):
            col0, b1, b2 = stats[o + i * f], stats[o + f * f + i], stats[o + f * f + f + i]
            out[o + f * f + i] = (b1 - c * col0) / sd
            out[o + f * f + f + i] = (b2 - 2 * c * b1 + c * c * col0) / (sd * sd)
        out[o + half - 2] = (m3 - 3 * c * m2 + 3 * c * c * m1 - c**3 * n) / sd**3
        out[o + half - 1] = (m4 - 4 * c * m3 + 6 * c * c * m2 - 4 * c**3 * m1 + c**4 * n) / sd**4
    return out


@_jit
def _standardized(stats, f):
    """:func:`~bayesdesign.student.conjugate.standardize_sums` of one history's sums (S,)."""
    c, sd, _ = _pooled_location_scale(stats, f)
    return _standardize_with(stats, c, sd, f)


@_jit
def _conj_fit(W, stats, wstats, wlog, refit, robust, coef, cov, cm, ev):
    """The conjugate layer's fit of one history from its sums ``stats`` (S,) (standardized in
    context where ``W.standardize``, which moves both arms: ``refit`` is then set), for the arms
    where ``refit`` (2,); with the reweighted sums ``wstats`` (S,) and ``wlog`` (2,) (empty: no
    reweighting) the reweighted second-moment regressions too, standardized with the unweighted
    pooled location and scale (as the teacher's ``standardized_state``)."""
    f = 1 + W.d * W.n_terms
    half = stats.shape[0] // 2
    rw = wstats.shape[0] > 0
    if W.standardize:  # the pooled location and scale move with every unit: both arms change
        c, sd, _ = _pooled_location_scale(stats, f)
        stats = _standardize_with(stats, c, sd, f)
        if rw:
            wstats = _standardize_with(wstats, c, sd, f)
        refit[:] = True
    for arm in range(2):
        if refit[arm]:
            st = stats[arm * half : (arm + 1) * half]
            _conj_fit_arm(W, st, arm, robust, coef, cov, cm, ev)
            if rw:
                _conj_fit_weighted(W, st, wstats[arm * half : (arm + 1) * half], wlog[arm], arm, robust, coef, cov, ev)


@_jit
def _class_log_p(W, ev):
    r"""The conjugate layer's class posterior :math:`\log P(k \mid H)` (K,) from the log evidences
    ``ev`` (2 arms, regressions, K), summed over arms: :math:`\log w_k + e_{m,k} + \lambda e_{r,k}`
    normalized. With the reweighted regression (a third row) the class's second-moment evidence
    is that of its two working models, equally likely a priori,
    :math:`\lambda e_{r,k} = \log \frac12 (e^{\lambda e_{u,k}} + e^{\lambda e_{w,k}})`: the sum over
    the two of the teacher's 2K classes (``_one_task``)."""
    evs = ev.sum(axis=0)  # (regression, K), summed over arms
    if ev.shape[1] == 2:
        return _log_softmax(W.log_w + evs[0] + W.var_evidence * evs[1])
    lam = W.var_evidence
    both = np.empty(evs.shape[1])
    for k in range(evs.shape[1]):
        lu, lw = lam * evs[1, k], lam * evs[2, k]
        top = max(lu, lw)
        both[k] = top + math.log(0.5 * (math.exp(lu - top) + math.exp(lw - top)))
    return _log_softmax(W.log_w + evs[0] + both)


@_jit
def _reweighted_share(W, ev):
    r""":math:`P(\text{reweighted} \mid k, H)` (K,) for a fit with the reweighted regression:
    :math:`\sigma(\lambda (e_{w,k} - e_{u,k}))`, the second-moment evidences summed over arms."""
    evs = ev.sum(axis=0)
    out = np.empty(evs.shape[1])
    for k in range(evs.shape[1]):
        x = W.var_evidence * (evs[2, k] - evs[1, k])
        out[k] = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    return out


@_jit
def _history_side(W, gate_sum, n, stats, wstats, wlog, refit, robust, mean, log_p, summary, coef, cov, cm, ev):
    """The gate, the summary token and the conjugate fit of one replication (as
    :meth:`StudentModel.summarize`; ``robust`` as in :func:`_conj_fit_arm`, ``wstats``, ``wlog``
    as in :func:`_conj_fit`), written into the output arrays; the conjugate fit of arm ``a`` is
    recomputed where ``refit[a]`` (the other arm's rows must hold its current fit)."""
    q = 1 + W.d * W.n_freq
    mean[:] = gate_sum / max(n, 1.0)
    kk = W.n_classes
    extra = kk if W.n_terms else 0
    gate_in = np.empty(mean.shape[0] + 1 + 2 * q + extra, np.float32)
    gate_in[: mean.shape[0]] = mean
    o = mean.shape[0]
    gate_in[o] = math.log1p(n) / _N_SCALE
    for j in range(q):
        gate_in[o + 1 + j] = math.log1p(n * mean[q + j] ** 2)
        gate_in[o + 1 + q + j] = math.log1p(n * mean[4 * q + j] ** 2)
    base = np.zeros(kk)
    if W.n_terms:
        if refit[0] or refit[1] or W.standardize:
            _conj_fit(W, stats, wstats, wlog, refit, robust, coef, cov, cm, ev)
        base = _class_log_p(W, ev)
        gate_in[o + 1 + 2 * q :] = np.maximum(base, -30.0) / 10.0
    logits = base + _linear(_gelu(_linear(gate_in, W.gate_w0, W.gate_b0)), W.gate_w1, W.gate_b1)
    log_p[:] = _log_softmax(logits)
    summary[:] = _linear(gate_in, W.sum_w, W.sum_b)


@_jit
def _gh_moments(W, var, sd_var, ln):
    r""":math:`E\sigma`, :math:`E\log\sigma` and :math:`E(\log\sigma)^2` for
    :math:`\sigma^2 \sim N(\text{var}, \text{sd\_var}^2)` floored at ``W.floor`` (Gauss-Hermite);
    with ``ln`` for the lognormal law of the same mean (floored) and variance, as the teachers'
    :func:`~bayesdesign.teachers.conjugate.variance_nodes`."""
    sd = ls_m = ls_2 = 0.0
    ln_m = ln_s = 0.0
    if ln:
        m = max(var, W.floor)
        t2 = math.log1p(sd_var * sd_var / (m * m))
        ln_m, ln_s = math.log(m) - 0.5 * t2, math.sqrt(t2)
    for i in range(W.gh_x.shape[0]):
        node = max(math.exp(ln_m + ln_s * W.gh_x[i]) if ln else var + sd_var * W.gh_x[i], W.floor)
        ls = 0.5 * math.log(node)
        sd += W.gh_w[i] * math.sqrt(node)
        ls_m += W.gh_w[i] * ls
        ls_2 += W.gh_w[i] * ls * ls
    return sd, ls_m, ls_2


@_jit
def _series_at(coef, cov, phi, mean, pvar, dup):
    """The posterior mean ``mean`` and variance ``pvar`` of :math:`\\phi^\\top\\theta` per row of the fit
    (a row that shares an earlier row's fit, ``dup``, copies it)."""
    f = phi.shape[0]
    for r in range(coef.shape[0]):
        if dup[r] != r:
            mean[r], pvar[r] = mean[dup[r]], pvar[dup[r]]
            continue
        mean[r], pvar[r] = 0.0, 0.0
        for i in range(f):
            mean[r] += coef[r, i] * phi[i]
            acc = 0.0
            for j in range(f):
                acc += cov[r, i, j] * phi[j]
            pvar[r] += acc * phi[i]


@_jit
def _unit_weight(W, stats, coef, cov, cm, ev, u, arm, n0, ln):
    r"""The weight of a unit at ``u`` in arm ``arm`` in the reweighted second-moment regression, from
    the layer's current fit (``coef`` ... ``ev``, of the sums ``stats`` (S,)) under the layer's own
    class posterior (:func:`_class_log_p`, not the gate's), in the layer's units, as the teacher's
    ``unit_weights``: :math:`\text{clip}([\hat v^2 / (\bar s^4 + 2 \bar s^2 (\hat\mu - c)^2)]^{n/(n + n_0)},
    0.05, 20)` with :math:`\bar s`, :math:`\hat\mu` the class mixtures' :math:`E\sigma_a(x)` and
    mean, and :math:`c, \hat v, n` the arm's. 1 while the arm has no unit, and under in-context
    standardization while the pooled location and scale are undefined (as the teacher); ``ln``: the
    lognormal law of the variance (:func:`_gh_moments`)."""
    f, kk = 1 + W.d * W.n_terms, W.n_classes
    half = stats.shape[0] // 2
    st = stats
    if W.standardize:
        c, sd, ok = _pooled_location_scale(stats, f)
        if not ok:
            return 1.0
        st = _standardize_with(stats, c, sd, f)
    n, c, _, v_hat, _, _ = _arm_noise(W, st[arm * half : (arm + 1) * half], False)
    if n <= 0:
        return 1.0
    phi = np.empty(f)
    _basis(u, W.n_terms, _SQRT2, phi)
    mean, pvar = np.empty(coef.shape[0]), np.empty(coef.shape[0])
    _series_at(coef, cov, phi, mean, pvar, W.dup)
    log_p = _class_log_p(W, ev)
    share = _reweighted_share(W, ev)
    sbar = mu = 0.0
    for k in range(kk):
        r0, r1, rw = (arm * 2) * kk + k, (arm * 2 + 1) * kk + k, 4 * kk + arm * kk + k
        dev = mean[r0] - cm[arm]
        sd_u = _gh_moments(W, mean[r1] + 1.0 - dev * dev, math.sqrt(max(pvar[r1] + 4 * dev * dev * pvar[r0], 0.0)),
                           ln)[0]
        sd_w = _gh_moments(W, mean[rw] + 1.0 - dev * dev, math.sqrt(max(pvar[rw] + 4 * dev * dev * pvar[r0], 0.0)),
                           ln)[0]
        pk = math.exp(log_p[k])
        sbar += pk * ((1.0 - share[k]) * sd_u + share[k] * sd_w)
        mu += pk * mean[r0]
    sd2 = max(sbar * sbar, 1e-300)
    ratio = v_hat * v_hat / (sd2 * sd2 + 2.0 * sd2 * (mu - c) ** 2)
    return min(max(ratio ** (n / (n + n0)), WEIGHT_LOW), WEIGHT_HIGH)


@_jit
def _extremes_add(ext, v):
    """One outcome into the running extremes (as :func:`~bayesdesign.efficiency.extremes_update`)."""
    if v < ext[0]:
        ext[0], ext[1] = v, 1.0
    elif v == ext[0]:
        ext[1] += 1.0
    if v > ext[2]:
        ext[2], ext[3] = v, 1.0
    elif v == ext[2]:
        ext[3] += 1.0


@_jit
def update(W, keys, values, t, gate_sum, stats, wstats, wlog, u, a, y, ylay, yraw, mean, log_p, summary, coef, cov,
           cm, ev, refit_all, ext, share, atom, n0, lognormal, tok_atom):
    """Append units ``u`` (B, m, d), ``a``, ``y`` (B, m) (student coordinates; ``ylay`` the
    outcomes the conjugate layer sums, which differ from the tokens' ``y`` only under in-context
    standardization; ``yraw`` the outcomes as observed) to histories of ``t``
    units: keys go into columns ``t + 1 .. t + m`` of ``keys`` (L, B, D, capacity), values into
    rows of ``values`` (L, B, H, capacity, D / H), and ``gate_sum`` (B, G), ``stats`` (B, S) and
    the running extremes of ``yraw`` ``ext`` (B, 4) are extended, all in place. ``atom`` (B,) is
    rewritten: whether the outcomes now have an atom (:func:`~bayesdesign.efficiency.has_atom`
    with ``share``). The history side is written into ``mean`` ... ``ev``, which hold the
    previous one on entry: the conjugate fit is recomputed for the arms that received units (for
    both if ``refit_all`` or where ``atom`` changed), with the robust second-moment variance where
    ``atom``.

    With ``n0 > 0`` (the teacher's ``reweight``) the reweighted sums ``wstats`` (B, S) and
    :math:`\\sum \\log w` ``wlog`` (B, 2) are extended too, one unit at a time: each unit's weight
    comes from the layer's fit of the units before it (:func:`_unit_weight`; the fit, and
    ``atom``, are brought up to date unit by unit), so the state does not depend on how the units
    are grouped into calls. ``n0 = 0``: ``wstats``, ``wlog`` are empty (B, 0) and unused.
    ``lognormal``: the teacher's lognormal law of the variance, where ``atom`` is false.
    ``tok_atom`` (B, m, 2): the units' atom features (:func:`~bayesdesign.student.scaling.running_atom`;
    read only with ``W.token_atom``)."""
    nl, b_size, dm = keys.shape[0], keys.shape[1], keys.shape[2]
    nh, dh = values.shape[2], values.shape[4]
    m = y.shape[1]
    kv = np.empty(2 * nl * dm, np.float32)
    refit = np.empty(2, np.bool_)
    rw = n0 > 0
    for b in range(b_size):
        refit[:] = refit_all  # reweighting: the arms whose fit is stale
        for j in range(m):
            arm = 1 if a[b, j] > 0.5 else 0
            if rw:
                w = 1.0
                if stats[b, arm * (stats.shape[1] // 2)] > 0:  # the arm's count: its weight needs the current fit
                    if refit[0] or refit[1]:
                        _conj_fit(W, stats[b], wstats[b], wlog[b], refit, atom[b], coef[b], cov[b], cm[b], ev[b])
                        refit[:] = False
                    w = _unit_weight(W, stats[b], coef[b], cov[b], cm[b], ev[b], u[b, j], arm, n0,
                                     lognormal and not atom[b])
                _add_layer_terms(W, u[b, j], a[b, j], ylay[b, j], wstats[b], w)
                wlog[b, arm] += math.log(w)
            _add_unit(W, u[b, j], a[b, j], y[b, j], ylay[b, j], kv, gate_sum[b], stats[b], tok_atom[b, j])
            _extremes_add(ext[b], yraw[b, j])
            refit[arm] = True
            if rw:  # the rule for outcomes with an atom, as it applies to the next unit's weight
                now = share > 0 and max(ext[b, 1], ext[b, 3]) >= max(2.0, share * (t + j + 1))
                if now != atom[b]:
                    refit[:] = True
                    atom[b] = now
            for layer in range(nl):
                keys[layer, b, :, t + 1 + j] = kv[layer * dm : (layer + 1) * dm]
                for h in range(nh):
                    o = (nl + layer) * dm + h * dh
                    values[layer, b, h, t + 1 + j, :] = kv[o : o + dh]
        now = share > 0 and max(ext[b, 1], ext[b, 3]) >= max(2.0, share * (t + m))
        if now != atom[b]:  # a changed rule changes both arms' fits
            refit[:] = True
            atom[b] = now
        _history_side(W, gate_sum[b], float(t + m), stats[b], wstats[b], wlog[b], refit, atom[b], mean[b], log_p[b],
                      summary[b], coef[b], cov[b], cm[b], ev[b])


# ---------------------------------------------------------------------------- query side


@_jit
def _conj_predict(W, coef, cov, cm, ev, u, base, ln):
    """Per class and arm (as :meth:`ConjugateLayer.predict`): ``base[k] = (log sbar_0, log sbar_1,
    mean log sigma_0, _1, 0.5 log(var log sigma_0 + 1e-8), _1)``. With the reweighted regression
    (rows ``4K ...`` of the fit) a class's outputs are those of the mixture of its two
    second-moment models with weights :math:`P(h \\mid k, H)` (:func:`_reweighted_share`):
    :math:`\\bar s` and the mean of :math:`\\log\\sigma` averaged, the variance of
    :math:`\\log\\sigma` moment-matched, so every class mixture downstream is the teacher's over
    its 2K classes. ``ln``: the lognormal law of the variance (:func:`_gh_moments`)."""
    f, kk = 1 + W.d * W.n_terms, W.n_classes
    phi = np.empty(f)
    _basis(u, W.n_terms, _SQRT2, phi)
    rows = coef.shape[0]
    mean, pvar = np.empty(rows), np.empty(rows)
    _series_at(coef, cov, phi, mean, pvar, W.dup)
    rw = rows > 4 * kk
    share = _reweighted_share(W, ev) if rw else np.zeros(kk)
    for arm in range(2):
        for k in range(kk):
            r0, r1 = (arm * 2) * kk + k, (arm * 2 + 1) * kk + k
            dev = mean[r0] - cm[arm]
            var = mean[r1] + 1.0 - dev * dev
            sd_var = math.sqrt(max(pvar[r1] + 4 * dev * dev * pvar[r0], 0.0))
            sd, ls_m, ls_2 = _gh_moments(W, var, sd_var, ln)  # Gauss-Hermite over the variance, floored
            ls_v = max(ls_2 - ls_m * ls_m, 0.0)
            if rw:
                r2 = 4 * kk + arm * kk + k
                sd_w, lm_w, l2_w = _gh_moments(W, mean[r2] + 1.0 - dev * dev,
                                               math.sqrt(max(pvar[r2] + 4 * dev * dev * pvar[r0], 0.0)), ln)
                pw = share[k]
                pu = 1.0 - pw
                mix = pu * ls_m + pw * lm_w
                ls_v = max(pu * (ls_v + ls_m * ls_m) + pw * (max(l2_w - lm_w * lm_w, 0.0) + lm_w * lm_w) - mix * mix,
                           0.0)
                sd, ls_m = pu * sd + pw * sd_w, mix
            base[k, arm] = math.log(sd) + W.log_scale[arm]
            base[k, 2 + arm] = ls_m + W.log_scale[arm]
            base[k, 4 + arm] = 0.5 * math.log(ls_v + 1e-8)


@_jit
def _query_input(W, mean, u, base):
    """Fourier features, history size, series estimates (as :meth:`StudentModel._local`) and the
    conjugate layer's outputs: the query token's input."""
    d, nf = W.d, W.n_freq
    q = 1 + d * nf
    phi = np.empty(q)
    _basis(u, nf, 1.0, phi)
    est = np.empty(6)
    for r in range(6):
        acc = mean[r * q]
        for j in range(1, q):
            acc += 2.0 * phi[j] * mean[r * q + j]
        est[r] = acc
    x = np.empty(d + d * nf + 1 + 8 + base.size, np.float32)
    x[:d] = u
    x[d : d + d * nf] = phi[1:]
    o = d + d * nf + 1  # x[o - 1], log(1 + n) / 5, is set by the caller
    x[o : o + 6] = est
    for arm in range(2):
        cnt = max(est[3 * arm], 0.05)
        r1 = est[3 * arm + 1] / cnt
        x[o + 6 + arm] = math.log(min(max(est[3 * arm + 2] / cnt - r1 * r1, 0.01), 100.0))
    x[o + 8 :] = base.ravel()
    return x


@_jit
def _normalize_rows(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = _normalize(x[i])
    return out


@_jit
def decide(W, keys, values, t, mean, log_p, summary, coef, cov, cm, ev, uq, safe, spike, slab, atom,
           atom_safe, lognormal, atom_slab):
    r"""The unclipped Neyman probability (B, Q) at queries ``uq`` (B, Q, d) (student coordinates)
    after ``t`` units (as :meth:`StudentModel.decide`; positions ``0..t`` of the cache are the
    context: the null token and the units). A replication's queries go through the network
    together, as the rows of one matrix. ``safe >= 0``: the logit's base is the teacher's
    log-odds rule (:func:`~bayesdesign.efficiency.log_odds` with ``safe``, ``spike``, ``slab``)
    on the conjugate layer's posterior instead of its Neyman ratio, as in
    :meth:`~bayesdesign.student.model.StudentModel.decide`; ``safe < 0``: the Neyman ratio of
    :math:`\bar s_a`. In the replications where ``atom`` (B,), ``safe`` is at least ``atom_safe``
    (:func:`~bayesdesign.efficiency.atom_settings`), the slab is ``atom_slab`` and the law of the
    variance the normal one; elsewhere it is the lognormal one if ``lognormal``."""
    nl, b_size, dm = keys.shape[0], keys.shape[1], keys.shape[2]
    nh, kk = W.n_heads, W.n_classes
    dh = dm // nh
    nq = uq.shape[1]
    out = np.empty((b_size, nq))
    base = np.zeros((nq, kk, 6 if W.n_terms else 0))
    qh = np.empty((nq, dh), np.float32)
    scores = np.zeros((nq, keys.shape[3]), np.float32)  # one head's attention weights; zero beyond t + 1
    nin = W.d + W.d * W.n_freq + 1 + 8 + kk * base.shape[2]
    xin = np.empty((nq, nin), np.float32)
    att = np.empty((nq, dm), np.float32)
    nfeat = math.log1p(t) / _N_SCALE
    for b in range(b_size):
        safe_b = max(safe, atom_safe) if atom[b] else safe
        slab_b = atom_slab if atom[b] else slab
        ln = lognormal and not atom[b]
        for iq in range(nq):
            if W.n_terms:
                _conj_predict(W, coef[b], cov[b], cm[b], ev[b], uq[b, iq], base[iq], ln)
            xin[iq] = _query_input(W, mean[b], uq[b, iq], base[iq])
            xin[iq, W.d + W.d * W.n_freq] = nfeat
        x = _linear(_gelu(_linear(xin, W.qry_w0, W.qry_b0)), W.qry_w1, W.qry_b1) + W.qflag + summary[b]
        for layer in range(nl):
            q = _linear(_normalize_rows(x), W.lq_w[layer], W.lq_b[layer])
            for h in range(nh):
                qh[:] = q[:, h * dh : (h + 1) * dh]
                _softmax_rows(np.dot(qh, keys[layer, b, h * dh : (h + 1) * dh]), scores, t + 1)  # (Q, capacity)
                att[:, h * dh : (h + 1) * dh] = np.dot(scores, values[layer, b, h])
            x = x + _linear(att, W.lo_w[layer], W.lo_b[layer])
            x = x + _linear(_gelu(_linear(_normalize_rows(x), W.lf0_w[layer], W.lf0_b[layer])), W.lf1_w[layer],
                            W.lf1_b[layer])
        e = _gelu(_linear(_normalize_rows(x), W.ei_w, W.ei_b))
        ne = e.shape[1] // kk
        terms = np.empty(kk)
        lse, sds = np.empty(2), np.empty(2)
        for iq in range(nq):
            for arm in range(2):
                for k in range(kk):
                    v = W.ex_b[k, arm] + log_p[b, k] + (e[iq, k * ne : (k + 1) * ne] * W.ex_w[k, :, arm]).sum()
                    if W.n_terms:
                        v += base[iq, k, arm]
                    terms[k] = v
                top = terms.max()
                lse[arm] = top + math.log(np.exp(terms - top).sum())
            logit = lse[1] - lse[0]
            if safe_b >= 0 and W.n_terms:  # the teacher's log-odds rule on the layer's posterior (StudentModel.decide)
                for arm in range(2):
                    m1, m2 = 0.0, 0.0
                    for k in range(kk):
                        terms[k] = log_p[b, k] + base[iq, k, arm]
                        pk = math.exp(log_p[b, k])
                        lm = base[iq, k, 2 + arm]
                        m1 += pk * lm
                        m2 += pk * (math.exp(2 * base[iq, k, 4 + arm]) - 1e-8 + lm * lm)
                    top = terms.max()
                    logit -= (1 if arm else -1) * (top + math.log(np.exp(terms - top).sum()))
                    lse[arm] = m1
                    sds[arm] = max(m2 - m1 * m1, 0.0)
                dm_ = lse[1] - lse[0]
                s_d = math.sqrt(max(sds[0] + sds[1], 1e-20))
                excess = max(abs(dm_) - safe_b * s_d, 0.0)
                shrunk = excess if dm_ > 0 else (-excess if dm_ < 0 else 0.0)
                if spike > 0:  # as efficiency.log_odds
                    s_d += 1e-12
                    lo0 = math.log(spike / (1.0 - spike)) + math.log(slab_b) - math.log(s_d) - 0.5 * (dm_ / s_d) ** 2
                    shrunk *= 0.5 * (1.0 - math.tanh(0.5 * lo0))
                logit += shrunk
            out[b, iq] = 1.0 / (1.0 + math.exp(-logit))
    return out


# ---------------------------------------------------------------------------- the engine


class _Cache:
    """Keys (L, B, D, capacity) and values (L, B, capacity, D) shared by the states of one run,
    ``filled`` positions written (the null token, then the units). A state whose length differs
    from ``filled`` (an older state updated again: a branch) appends to a copy, so states behave
    as values."""

    def __init__(self, keys: np.ndarray, values: np.ndarray, filled: int):
        self.keys, self.values, self.filled = keys, values, filled  # (L, B, D, cap), (L, B, H, cap, D / H)

    @property
    def capacity(self) -> int:
        return self.values.shape[3]

    def copy(self, filled: int, capacity: int) -> _Cache:
        """The first ``filled`` positions, with room for ``capacity``."""
        nl, b, d, _ = self.keys.shape
        nh, dh = self.values.shape[2], self.values.shape[4]
        new = _Cache(np.zeros((nl, b, d, capacity), np.float32), np.zeros((nl, b, nh, capacity, dh), np.float32),
                     filled)
        new.keys[..., :filled] = self.keys[..., :filled]
        new.values[:, :, :, :filled] = self.values[:, :, :, :filled]
        return new


class Engine:
    """A student's compiled :func:`update` and :func:`decide` with its weights.

    ``init(batch)`` gives the empty :class:`EngineState`, ``update(state, u, a, y)`` the next one
    (the cache grows by a quarter when full, so the attention never runs over much unused room)
    and ``decide(state, uq)`` the unclipped probabilities (B, Q); inputs in the student's
    coordinates (:class:`~bayesdesign.student.scaling.InputScaling`). The weights are copied
    when the engine is built: a model trained further needs a new engine. The teacher's
    ``reweight`` is read from the conjugate layer (:meth:`ConjugateLayer.set_rule
    <bayesdesign.student.conjugate.ConjugateLayer.set_rule>`) when a state is made (:meth:`init`).
    """

    def __init__(self, model):
        cfg = model.cfg
        self.cfg = cfg
        self.weights = engine_weights(model)
        self._conj = model.conj if cfg.n_terms else None
        self.null = null_kv(model)
        f = 1 + cfg.d * cfg.n_terms
        self.n_stats = 2 * (f * f + 2 * f + 2) if cfg.n_terms else 2
        self.f = f
        self.pool_dim = model.pool_dim

    def init(self, batch: int, capacity: int = 64) -> EngineState:
        cfg = self.cfg
        nl, dm, cap, nh = cfg.n_layers, cfg.d_model, max(int(capacity), 2), cfg.n_heads
        cache = _Cache(np.zeros((nl, batch, dm, cap), np.float32),
                       np.zeros((nl, batch, nh, cap, dm // nh), np.float32), 1)
        cache.keys[..., 0] = self.null[:nl, None, :]
        cache.values[:, :, :, 0] = self.null[nl:].reshape(nl, 1, nh, dm // nh)
        weighted = (np.zeros((batch, self.n_stats)), np.zeros((batch, 2))) if self.reweight else (None, None)
        return EngineState(0, cache, np.zeros((batch, self.pool_dim), np.float32), np.zeros((batch, self.n_stats)),
                           None, None, None, *weighted)

    @property
    def lognormal(self) -> bool:
        """Whether the conjugate layer follows the teacher's lognormal law of the variance."""
        return self._conj is not None and self._conj.lognormal

    @property
    def reweight(self) -> float:
        """The teacher's ``reweight`` :math:`n_0` the conjugate layer follows (0: off)."""
        return float(getattr(self._conj, "reweight", 0.0)) if self._conj is not None else 0.0

    def update(self, state: EngineState, u: np.ndarray, a: np.ndarray, y: np.ndarray,
               y_layer: np.ndarray | None = None, y_raw: np.ndarray | None = None) -> EngineState:
        """The next state; ``y`` the tokens' outcomes, ``y_layer`` the conjugate layer's (default
        ``y``), ``y_raw`` the outcomes as observed (default ``y_layer``), whose ties decide the
        rule for outcomes with an atom (the layer's ``atom`` share, read at the call)."""
        cache, t = state.cache, state.t
        b, m = np.shape(y)
        if cache.filled != t + 1 or t + 1 + m > cache.capacity:
            cap = cache.capacity
            while cap < t + 1 + m:
                cap = -(-cap * 5 // 4 // 64) * 64
            cache = cache.copy(t + 1, cap)
        kk, f = self.cfg.n_classes, self.f
        n0 = self.reweight
        if (n0 > 0) != (state.wstats is not None):
            raise ValueError(
                f"reweight: the conjugate layer's reweight is {n0} but this state was made with it "
                f"{'off' if state.wstats is None else 'on'}; start from a new state (init) after set_rule"
            )
        regs = 3 if n0 > 0 else 2
        if state.side is None:
            side = _Side(np.empty((b, self.pool_dim), np.float32), np.empty((b, kk)),
                         np.empty((b, self.cfg.d_model), np.float32),
                         np.zeros((b, 2 * regs * kk, f)), np.zeros((b, 2 * regs * kk, f, f)), np.zeros((b, 2)),
                         np.zeros((b, 2, regs, kk)))
        else:  # the gate and summary are rewritten; the conjugate fit of an arm without new units is kept
            old = state.side
            side = _Side(np.empty_like(old.mean), np.empty_like(old.log_p), np.empty_like(old.summary), old.coef.copy(),
                         old.cov.copy(), old.cm.copy(), old.ev.copy())
        gate_sum, stats = state.gate_sum.copy(), state.stats.copy()
        ext = extremes_init(b) if state.ext is None else state.ext.copy()
        atom = np.zeros(b, bool) if state.atom is None else state.atom.copy()
        share = float(self._conj.atom) if self._conj is not None else 0.0
        ylay = np.asarray(y if y_layer is None else y_layer, float)
        yraw = ylay if y_raw is None else np.asarray(y_raw, float)
        if self.cfg.token_atom:  # in-context standardization: the layer sums the raw outcomes
            st = stats.reshape(b, 2, -1).sum(1)
            tok_atom = running_atom(yraw, st[:, 0], st[:, f * f], st[:, f * f + f], ext[:, 0])
        else:
            tok_atom = np.zeros((b, m, 2))
        if n0 > 0:
            wstats, wlog = state.wstats.copy(), state.wlog.copy()
        else:
            wstats = wlog = np.zeros((b, 0))
        update(self.weights, cache.keys, cache.values, t, gate_sum, stats, wstats, wlog,
               np.asarray(u, float).reshape(b, m, -1), np.asarray(a, float), np.asarray(y, float), ylay,
               yraw, *side, state.side is None, ext, share, atom, n0, self.lognormal, tok_atom)
        cache.filled = t + 1 + m
        if n0 <= 0:
            wstats = wlog = None
        return EngineState(t + m, cache, gate_sum, stats, side, atom, ext, wstats, wlog)

    def decide(self, state: EngineState, uq: np.ndarray) -> np.ndarray:
        """The model's unclipped probabilities at ``uq`` (B, Q, d), under the teacher's rule as the
        model's conjugate layer follows it at the time of the call
        (:meth:`~bayesdesign.student.conjugate.ConjugateLayer.rule_args`)."""
        if state.side is None:
            raise ValueError("decide: the engine's state has no unit yet (the student decides from a history)")
        c, sd = state.cache, state.side
        atom = np.zeros(c.keys.shape[1], bool) if state.atom is None else state.atom
        conj = self._conj
        rule = conj.rule_args() if conj is not None else (-1.0, 0.0, 1.0)
        atom_slab = conj.atom_slab if conj is not None and rule[1] > 0 else 1.0
        return decide(self.weights, c.keys, c.values, state.t, sd.mean, sd.log_p, sd.summary, sd.coef, sd.cov, sd.cm,
                      sd.ev, np.asarray(uq, float), *rule, atom, ATOM_SAFE, self.lognormal, atom_slab)


def compiled_on_disk() -> bool:
    """Whether Numba's on-disk cache has the engine's two entry points (``False``: the next use
    compiles them, about 40 s). A heuristic from the cache's index files: an index written for an
    older source is recompiled too."""
    try:
        return all(os.path.exists(f._cache._cache_file._index_path) for f in (update, decide))
    except AttributeError:  # another Numba's cache layout
        return True

