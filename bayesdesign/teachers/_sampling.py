r"""Shared machinery of the sampling teachers (:mod:`~bayesdesign.teachers.nuts`, :mod:`~bayesdesign.teachers.svi`).

Both teachers condition the prior file's NumPyro model ``model(x, a, y, mask, x_query)``
(:func:`bayesdesign.models.numpyro_model`, or the user's model of a ``model:`` prior) on the
history of every task of a batch and keep a set of posterior draws of its latent sites per task.
This module holds what does not depend on how the draws are made:

- **the fitted model** (:class:`ModelParts`): the sampler sees ``fit_model(feats, a, y, mask)``,
  whose latent sites and log density are those of the prior's model. For series priors the
  cosine features :math:`\phi(u)` of the history are computed once per fit (``feats``) and the
  log-likelihood is written as :math:`\Phi\Theta^\top`: the same density as
  :func:`~bayesdesign.models.numpyro_model` (checked in the tests), about four times cheaper per
  gradient because the features are not recomputed at every leapfrog step. A user model is used
  as it is (``feats`` = the unit-cube covariates).
- **padding**: histories live in arrays ``(B, capacity, ...)`` with a mask; a fit on ``n`` units
  sees the first ``n`` units padded to a capacity from a short list (powers of two from 64, or
  ``max_units``), so JAX compiles each fit a handful of times per process, not once per ``n``.
- **the refit schedule**: after ``t`` units the posterior conditions on the first

  .. math::
      n(t) = \begin{cases} 0 & t < \text{burn\_in} \\
      \max(r \lfloor t / r \rfloor, \text{burn\_in}) & \text{otherwise} \end{cases}

  units (``r = refit_every``; by default also at :math:`b, 2b, 4b, \dots < r`,
  :math:`b = \text{burn\_in}`: see :func:`fit_size`), a function of ``t`` alone, so the
  incremental state of the runner
  and :meth:`~bayesdesign.design.policy.SequentialPolicy.propensity` on a folded history fit the
  same data; while :math:`n(t) = 0` the draws are prior draws.
- **decisions**: the deterministic sites ``mean`` and ``sd`` of the prior's model are evaluated at
  the query points for every stored draw (``numpyro.handlers.substitute`` of the latent sites),
  and the variance floor is applied draw by draw,

  .. math::
      \sigma^{(s)}_a(x) \leftarrow \max\big(\sigma^{(s)}_a(x), \sqrt{\text{floor}\cdot v_{0,a}}\big),
      \qquad \bar s_a(x) = \frac1S \sum_s \sigma^{(s)}_a(x), \qquad
      \pi(x) = \frac{\bar s_1(x)}{\bar s_1(x) + \bar s_0(x)},

  with :math:`v_{0,a} = \exp(2\,\text{offset}_{\log\sigma,a})` the prior's typical variance (as in
  the conjugate teacher). For a smoothness mixture each class is fitted separately and the
  class-conditional moments are mixed with the class posterior
  :math:`P(k \mid H) \propto w_k\, p(y \mid k)` of the prior's own model, the evidence
  :math:`p(y \mid k)` estimated by importance sampling from the class's draws
  (:mod:`bayesdesign.teachers.evidence`; ``class_weights="model"``, the default), or with the
  conjugate teacher's class posterior on the same units (``class_weights="conjugate"``).
- the :class:`SampledTeacher` base class: ``init / update / decide / _raw / fold / posterior``.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro.infer import Predictive
from numpyro.infer.initialization import init_to_median
from numpyro.infer.util import initialize_model

from ..basis import cosine_features
from ..design.policy import History, SequentialPolicy
from ..models import evaluate_sites, mask_padding, numpyro_model, prior_arrays
from ..models import model_args as dummy_args
from ..spec import load_prior
from . import evidence
from .base import SAMPLING_DEFAULT, TeacherConfig
from .hurdle import conjugate_teacher

__all__ = [
    "ModelParts",
    "SampledState",
    "SampledTeacher",
    "capacity",
    "evaluate_sites",
    "fit_size",
    "model_parts",
    "sd_floor",
    "summarize_draws",
]

MIN_CAPACITY = 64
CLASS_WEIGHTS = ("model", "conjugate")


# ------------------------------------------------------------------------- schedule and padding


def fit_size(t: int, refit_every: int, burn_in: int, early_refits: bool = True) -> int:
    r"""Units :math:`n(t)` the posterior conditions on after ``t`` units (see the module notes).

    With ``early_refits`` the posterior is also refitted at :math:`b, 2b, 4b, \dots` units below
    ``refit_every`` (:math:`b = \max(\text{burn\_in}, 1)`): the first refits move the design the
    most, and on few units they are cheap.
    """
    if t < burn_in or t < 1:
        return 0
    n = max(refit_every * (t // refit_every), burn_in)
    if early_refits:
        g = max(burn_in, 1)
        while 2 * g <= t and 2 * g < refit_every:
            g *= 2
        n = max(n, g)
    return n


def capacity(n: int, max_units: int | None) -> int:
    """Padded length of a fit on ``n`` units: ``max_units`` when fixed, else the next power of two
    (at least 64)."""
    if max_units is not None:
        return int(max_units)
    return max(MIN_CAPACITY, 1 << max(int(n) - 1, 0).bit_length())


def _grow(arr: np.ndarray, size: int) -> np.ndarray:
    """``arr`` (B, n, ...) zero-padded along axis 1 to at least ``size`` (doubling)."""
    if arr.shape[1] >= size:
        return arr
    new = max(size, 2 * arr.shape[1], MIN_CAPACITY)
    pad = [(0, 0), (0, new - arr.shape[1])] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad)


# ------------------------------------------------------------------------- the fitted model


class ModelParts(NamedTuple):
    """One NumPyro model (one smoothness class) as the samplers use it.

    model : the prior's ``model(x, a, y, mask, x_query)`` (evaluates ``mean``/``sd`` at queries).
    fit_model : ``fit_model(feats, a, y, mask)``: same latent sites and log density given the
        history, with ``feats = featurize(x_unit)`` computed once per fit.
    featurize : unit-cube covariates (n, d) -> ``feats`` (n, ...).
    potential_gen : ``potential_gen(feats, a, y, mask)(z)`` = :math:`-\\log p(y, z)` at the
        unconstrained latent dict ``z``.
    constrain : flat unconstrained latents (D,) -> dict of constrained latent values.
    init_flat : (D,) unconstrained prior median; ``unravel`` flat (D,) -> unconstrained dict;
    latent_names : the latent sample sites (sorted: the order of the flat vector).
    """

    model: Callable
    fit_model: Callable
    featurize: Callable
    potential_gen: Callable
    constrain: Callable
    init_flat: np.ndarray
    unravel: Callable
    latent_names: tuple[str, ...]


def series_fit_model(spec, smoothness_class: int | None = None) -> tuple[Callable, Callable]:
    r"""``(fit_model, featurize)`` of a series prior: the log density of
    :func:`~bayesdesign.models.numpyro_model` given the history, on precomputed features.

    Latent sites ``z_mean`` (and ``z_logsd``) (2, F) ~ N(0, I); :math:`\Theta = m + s \odot z`;
    for the units, :math:`f = \Phi\Theta^\top` (n, 2) picked at each unit's arm; the likelihood
    (normal, scaled Student-t or Bernoulli-logit, as in the model) enters through
    ``numpyro.factor`` with padded units masked out.
    """
    n_terms, family, df = spec.n_terms, spec.family, spec.outcome.df
    loc_m, sd_m = (jnp.asarray(v, jnp.float32) for v in prior_arrays(spec, "mean", smoothness_class))
    if family != "bernoulli":
        loc_s, sd_s = (jnp.asarray(v, jnp.float32) for v in prior_arrays(spec, "log_sd", smoothness_class))

    def featurize(x):
        return cosine_features(jnp.asarray(x), n_terms)

    def fit_model(phi, a, y, mask):
        z_m = numpyro.sample("z_mean", dist.Normal(0.0, 1.0).expand(loc_m.shape).to_event(2))
        th = loc_m + sd_m * z_m
        if family != "bernoulli":
            z_s = numpyro.sample("z_logsd", dist.Normal(0.0, 1.0).expand(loc_s.shape).to_event(2))
            th = jnp.concatenate([th, loc_s + sd_s * z_s])
        f = phi @ th.T  # (n, 2) or (n, 4): [mean arm 0, mean arm 1, log sd arm 0, log sd arm 1]
        treated = a == 1
        f_mean = jnp.where(treated, f[:, 1], f[:, 0])
        if family == "bernoulli":
            lik = dist.BernoulliLogits(f_mean)
        else:
            sd = jnp.exp(jnp.where(treated, f[:, 3], f[:, 2]))
            if family == "gaussian":
                lik = dist.Normal(f_mean, sd)
            else:
                lik = dist.StudentT(df, f_mean, sd * np.sqrt((df - 2.0) / df))
        numpyro.factor("y", jnp.sum(jnp.where(mask, lik.log_prob(y), 0.0)))

    return fit_model, featurize


def model_parts(spec, smoothness_class: int | None = None) -> ModelParts:
    """The :class:`ModelParts` of a prior (class ``smoothness_class`` of a mixture): the fast
    series form for series priors, the model as it is otherwise (a user's model, or the
    :func:`~bayesdesign.models.numpyro_model` of a ``hurdle_lognormal`` prior)."""
    model = numpyro_model(spec, smoothness_class)
    d = spec.d
    if spec.has_mean_series:
        fit_model, featurize = series_fit_model(spec, smoothness_class)
    else:
        xq = jnp.full((1, d), 0.5, jnp.float32)

        def fit_model(x, a, y, mask):
            return model(x, a, y, mask, xq)

        def featurize(x):
            return x

    args = dummy_args(d)[:4]
    info = initialize_model(
        jax.random.PRNGKey(0), fit_model, init_strategy=init_to_median(num_samples=15), dynamic_args=True,
        model_args=(featurize(args[0]), *args[1:]),
    )
    z0 = info.param_info.z
    flat, unravel = ravel_pytree(z0)
    names = tuple(sorted(z0))
    post_gen = info.postprocess_fn

    def constrain(z_flat):
        out = post_gen(featurize(args[0]), *args[1:])(unravel(z_flat))
        return {k: out[k] for k in names}

    return ModelParts(model, fit_model, featurize, info.potential_fn, constrain, np.asarray(flat), unravel, names)


_PARTS: dict = {}


def cached_model_parts(spec, smoothness_class: int | None = None) -> ModelParts:
    """:func:`model_parts`, built once per process for a prior (keyed by its hash), so that every
    teacher of the same prior shares the compiled fits and decisions."""
    key = (spec.hash(), smoothness_class)
    if key not in _PARTS:
        _PARTS[key] = model_parts(spec, smoothness_class)
    return _PARTS[key]


def prior_draws(parts: ModelParts, d: int, n: int, key) -> dict[str, np.ndarray]:
    """``n`` prior draws of the latent sites (constrained), each ``(n, *shape)``."""
    x, a, _, mask, xq = dummy_args(d)
    out = Predictive(parts.model, num_samples=n, return_sites=list(parts.latent_names))(key, x, a, None, mask, xq)
    return {k: np.asarray(out[k]) for k in parts.latent_names}


def sd_floor(spec, floor: float, parts: ModelParts | None = None) -> np.ndarray:
    r"""Per-arm floor :math:`\sqrt{\text{floor}\cdot v_{0,a}}` on the sd draws (2,).

    :math:`v_{0,a}`: :math:`\exp(2\,\text{offset})` of the arm's ``log_sd`` series;
    :math:`p_0(1 - p_0)`, :math:`p_0 = \text{sigmoid}(\text{offset})` of the mean series for
    bernoulli outcomes; for a user model (and a ``hurdle_lognormal`` prior) the prior median of
    :math:`\sigma_a^2` over 400 prior draws at 8 uniform covariates.
    """
    if spec.has_mean_series:
        v0 = np.empty(2)
        k = 0 if spec.is_mixture else None
        for a in (0, 1):
            if spec.family == "bernoulli":
                p0 = 1.0 / (1.0 + np.exp(-spec.series(a, "mean", k).offset))
                v0[a] = p0 * (1.0 - p0)
            else:
                v0[a] = np.exp(2.0 * spec.series(a, "log_sd", k).offset)
        return np.sqrt(floor * v0)
    if parts is None:
        raise ValueError("sd_floor: a user model needs its ModelParts")
    d = spec.d
    key = jax.random.PRNGKey(1)
    latent = prior_draws(parts, d, 400, key)
    xq = jax.random.uniform(key, (1, 8, d))
    _, sd = evaluate_sites(parts.model, {k: jnp.asarray(v)[None] for k, v in latent.items()}, xq)
    v0 = np.median(np.asarray(sd, float) ** 2, axis=(0, 1, 3))
    return np.sqrt(floor * v0)


# ------------------------------------------------------------------------- decisions


def summarize_draws(mean: np.ndarray, sd: np.ndarray, floor_sd: np.ndarray, class_prob: np.ndarray) -> dict:
    r"""Posterior Neyman quantities from draws.

    ``mean``, ``sd`` (B, K, S, 2, Q): per class ``k`` draws of :math:`\mu_a(x)` and
    :math:`\sigma_a(x)`; ``floor_sd`` (2,); ``class_prob`` (B, K). The floor is applied per draw,
    class moments are mixed with :math:`P(k \mid H)`. Returns ``pi`` (B, Q), ``sbar``, ``mean``,
    ``log_sd_mean``, ``log_sd_sd`` (B, 2, Q) and ``class_prob`` (B, K).
    """
    sd = np.maximum(sd, np.asarray(floor_sd)[:, None])
    ls = np.log(sd)
    w = class_prob[:, :, None, None]
    sbar = (w * sd.mean(2)).sum(1)
    ls_m = (w * ls.mean(2)).sum(1)
    ls_2 = (w * (ls**2).mean(2)).sum(1)
    return {
        "pi": sbar[:, 1] / (sbar[:, 1] + sbar[:, 0]),
        "sbar": sbar,
        "mean": (w * mean.mean(2)).sum(1),
        "log_sd_mean": ls_m,
        "log_sd_sd": np.sqrt(np.maximum(ls_2 - ls_m**2, 0.0)),
        "class_prob": class_prob,
    }


def task_keys(seed: int, n: int, n_classes: int, batch: int) -> jnp.ndarray:
    """PRNG keys (K, B) of the fit on ``n`` units: ``fold_in(fold_in(fold_in(key(seed), n), k), b)``."""
    base = jax.random.fold_in(jax.random.PRNGKey(seed), n)
    per_class = [jax.random.fold_in(base, k) for k in range(n_classes)]
    return jnp.stack([jax.vmap(partial(jax.random.fold_in, kk))(jnp.arange(batch)) for kk in per_class])


# ------------------------------------------------------------------------- state and base class


class SampledState(NamedTuple):
    """State of a sampling teacher over ``B`` tasks run in lockstep.

    t : units observed.
    x : (B, capacity, d) covariates in user units; ``a``, ``y`` (B, capacity); ``mask``
        (B, capacity), True for the first ``t`` units (capacity grows by doubling, or is
        ``max_units``).
    fit_n : units the current draws condition on, :math:`n(t)` (0: prior draws).
    draws : latent site -> constrained draws (B, K, S, ...) (K smoothness classes).
    class_prob : (B, K) :math:`P(k \\mid H_{1..n})` (ones for a single class).
    warm : the backend's warm-start carry for the next fit (``None`` before the first fit).
    diagnostics : arrays of the last fit with a leading task axis (e.g. ``divergences`` (B,)).
    """

    t: int
    x: np.ndarray
    a: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    fit_n: int
    draws: dict
    class_prob: np.ndarray
    warm: Any
    diagnostics: dict


class FitResult(NamedTuple):
    """What a backend's fit returns: ``draws`` (site -> (B, K, S, ...)), the next ``warm`` carry,
    ``diagnostics`` (name -> (B, ...)), per-draw ``sample_stats`` (name -> (B, K, chain, draw))
    and the draws as flat unconstrained latents ``flat`` (B, K, S, D) (for the class evidence)."""

    draws: dict
    warm: Any
    diagnostics: dict
    sample_stats: dict
    flat: Any = None


class SampledTeacher(SequentialPolicy):
    """Base of the NUTS and SVI teachers: history padding, the refit schedule, decisions from draws.

    Subclasses implement :meth:`_fit` and set ``num_draws`` (draws kept per task and class).

    Smoothness mixtures: ``class_weights="model"`` weighs the classes by the model's own
    :math:`P(k \\mid H)` (importance-sampling evidence with ``evidence_draws`` proposal draws per
    task and class); a task whose evidence has Pareto :math:`\\hat k` above 0.7 in any class gets
    the conjugate class posterior instead, with an
    :class:`~bayesdesign.teachers.evidence.EvidenceWarning` and ``evidence_fallback`` = 1 in its
    diagnostics. ``class_weights="conjugate"`` uses the conjugate working model's class posterior.
    Ignored for priors without a smoothness block.
    """

    name = "teacher:sampled"
    num_draws: int = 0

    def __init__(self, spec, config: TeacherConfig | None, refit_every: int, max_units: int | None, seed: int,
                 early_refits: bool = True, class_weights: str = "model", evidence_draws: int = 1000):
        if class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"class_weights: expected one of {list(CLASS_WEIGHTS)}, got {class_weights!r}")
        _check_int("evidence_draws", evidence_draws, 10)
        self.class_weights, self.evidence_draws = class_weights, int(evidence_draws)
        self.spec = spec if hasattr(spec, "hash") else load_prior(spec)
        self.config = config or SAMPLING_DEFAULT
        super().__init__(self.spec.bounds, self.config.clip)
        self.box_origin = f"the bounds declared by prior {self.spec.source}"
        _check_int("refit_every", refit_every)
        if max_units is not None:
            _check_int("max_units", max_units)
        self.refit_every, self.max_units, self.seed = int(refit_every), max_units, int(seed)
        self.early_refits = bool(early_refits)
        classes = range(len(self.spec.classes)) if self.spec.is_mixture else [None]
        self.parts = [cached_model_parts(self.spec, k) for k in classes]
        self.n_classes = len(self.parts)
        self.floor_sd = sd_floor(self.spec, self.config.floor, self.parts[0])
        self._conjugate = None
        if self.spec.is_mixture:
            self._conjugate = conjugate_teacher(self.spec, self.config)
        self._prior = None

    # ---------------------------------------------------------------- backend hook

    @abstractmethod
    def _fit(self, warm, feats: tuple, keys: jnp.ndarray, num_draws: int | None = None) -> FitResult:
        """Fit every class on padded, featurized histories.

        ``warm``: the previous fit's carry (``None``: cold start); ``feats``: per class ``k`` the
        tuple ``(feats, a, y, mask)`` with a leading task axis B; ``keys`` (K, B);
        ``num_draws``: draws per task and class (``None``: the teacher's default)."""

    # ---------------------------------------------------------------- state

    def _prior_draws(self) -> dict:
        if self._prior is None:
            key = jax.random.PRNGKey(self.seed)
            per = [
                prior_draws(p, self.spec.d, self.num_draws, jax.random.fold_in(key, k))
                for k, p in enumerate(self.parts)
            ]
            self._prior = {name: np.stack([p[name] for p in per]) for name in per[0]}  # (K, S, ...)
        return self._prior

    def init(self, batch: int) -> SampledState:
        """Empty histories of ``batch`` tasks; prior draws."""
        cap = capacity(0, self.max_units)
        prior = self._prior_draws()
        draws = {k: np.broadcast_to(v, (batch, *v.shape)) for k, v in prior.items()}
        class_prob = np.broadcast_to(self.spec.weights, (batch, self.n_classes)).copy()
        d = self.spec.d
        return SampledState(
            0, np.zeros((batch, cap, d)), np.zeros((batch, cap), np.int32), np.zeros((batch, cap)),
            np.zeros((batch, cap), bool), 0, draws, class_prob, None, {},
        )

    def fit_size(self, t: int) -> int:
        """Units the posterior conditions on after ``t`` units (see :func:`fit_size`)."""
        return fit_size(t, self.refit_every, self.config.burn_in, self.early_refits)

    def update(self, state: SampledState, x, a, y, pi) -> SampledState:
        """Append units ``x`` (B, m, d), ``a``, ``y`` (B, m); refit when :math:`n(t)` grows."""
        x = np.asarray(x, dtype=float)
        a = np.asarray(a).astype(np.int32)
        y = np.asarray(y, dtype=float)
        t0, t1 = state.t, state.t + y.shape[-1]
        if self.max_units is not None and t1 > self.max_units:
            raise ValueError(f"max_units: the history has {t1} units, more than max_units={self.max_units}")
        size = t1 if self.max_units is None else self.max_units
        xs, as_, ys, ms = (_grow(v, size).copy() for v in (state.x, state.a, state.y, state.mask))
        xs[:, t0:t1], as_[:, t0:t1], ys[:, t0:t1], ms[:, t0:t1] = x, a, y, True
        state = state._replace(t=t1, x=xs, a=as_, y=ys, mask=ms)
        n = self.fit_size(t1)
        if n > state.fit_n:
            state = self.refit(state, n)[0]
        return state

    def _padded(self, state: SampledState, n: int) -> tuple:
        """Per class, ``(feats, a, y, mask)`` of the first ``n`` units padded to ``capacity(n)``."""
        cap = capacity(n, self.max_units)
        b = state.x.shape[0]
        x_unit = jnp.asarray(self.spec.to_unit(_grow(state.x, cap)[:, :cap]), jnp.float32)
        a = jnp.asarray(_grow(state.a, cap)[:, :cap])
        y = jnp.asarray(_grow(state.y, cap)[:, :cap], jnp.float32)
        mask = jnp.asarray(np.broadcast_to(np.arange(cap) < n, (b, cap)))
        return tuple(_featurize(p.featurize, x_unit, a, y, mask) for p in self.parts)

    def refit(self, state: SampledState, n: int, warm: bool = True, num_draws: int | None = None):
        """Fit the posterior on the first ``n`` units of every task; warm-started from
        ``state.warm`` unless ``warm=False``. Returns the new state and the per-draw sample stats."""
        b = state.x.shape[0]
        feats = self._padded(state, n)
        keys = task_keys(self.seed, n, self.n_classes, b)
        res = self._fit(state.warm if warm else None, feats, keys, num_draws)
        class_prob, diagnostics = state.class_prob, dict(res.diagnostics)
        if self._conjugate is not None:
            h = History(state.x[:, :n], state.a[:, :n].astype(float), state.y[:, :n], np.full((b, n), 0.5))
            cstate, _ = self._conjugate.fold(h)
            class_prob = self._conjugate.decide(cstate, np.zeros((b, 1, self.spec.d)))["class_prob"]
            if self.class_weights == "model":
                class_prob, extra = self._model_class_prob(feats, res.flat, keys, class_prob, n)
                diagnostics.update(extra)
        new = state._replace(fit_n=n, draws=res.draws, warm=res.warm, diagnostics=diagnostics,
                             class_prob=class_prob)
        return new, res.sample_stats

    def log_evidence(self, feats: tuple, flat: np.ndarray, keys, laplace: bool = True) -> tuple[np.ndarray, np.ndarray]:
        r"""Importance-sampling estimates of :math:`\log p(y \mid k)` and their Pareto
        :math:`\hat k`, both (B, K), from the fit's flat unconstrained draws ``flat`` (B, K, S, D)
        (:func:`bayesdesign.teachers.evidence.log_evidence`; ``evidence_draws`` proposal draws per
        task and class, noise from the fit's keys (K, B))."""
        out = [evidence.log_evidence(p, feats[k], flat[:, k], keys[k], self.evidence_draws, laplace=laplace)
               for k, p in enumerate(self.parts)]
        return np.stack([o[0] for o in out], 1), np.stack([o[1] for o in out], 1)

    def _model_class_prob(self, feats, flat, keys, conjugate: np.ndarray, n: int) -> tuple[np.ndarray, dict]:
        r"""The model's own :math:`P(k \mid H)` (B, K), the conjugate one where a task's evidence has
        :math:`\hat k` above :data:`~bayesdesign.teachers.evidence.KHAT_MAX` (with a warning), and
        the diagnostics ``evidence_khat`` (worst over classes), ``evidence_fallback`` (1 where the
        conjugate weights were used) and ``evidence_tv`` (total variation between the model's and
        the conjugate class posterior), each (B,)."""
        log_z, khat = self.log_evidence(feats, flat, keys)
        model = evidence.class_posterior(np.log(self.spec.weights), log_z)
        worst = np.max(khat, 1)
        bad = ~(worst <= evidence.KHAT_MAX)
        tv = np.where(bad, np.nan, 0.5 * np.abs(np.nan_to_num(model) - conjugate).sum(1))
        if bad.any():
            warnings.warn(
                f"class_weights='model': the importance-sampling evidence of {int(bad.sum())} of {len(bad)} "
                f"tasks on {n} units has Pareto k-hat above {evidence.KHAT_MAX} (worst "
                f"{np.nanmax(np.where(np.isfinite(worst), worst, np.nan), initial=np.inf):.2f}); those tasks use "
                "the conjugate class posterior (diagnostics evidence_fallback = 1)",
                evidence.EvidenceWarning, stacklevel=3,
            )
        prob = np.where(bad[:, None], conjugate, model)
        return prob, {"evidence_khat": worst, "evidence_fallback": bad.astype(float), "evidence_tv": tv}

    # ---------------------------------------------------------------- decisions

    def draws_at(self, state: SampledState, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Draws of ``mean`` and ``sd`` (before the floor) at ``x`` (B, Q, d) in user units:
        arrays (B, K, S, 2, Q)."""
        xq = jnp.asarray(self.spec.to_unit(np.asarray(x, float)), jnp.float32)
        means, sds = [], []
        for k, parts in enumerate(self.parts):
            latent = {name: jnp.asarray(v[:, k]) for name, v in state.draws.items()}
            mu, sd = evaluate_sites(parts.model, latent, xq)
            means.append(np.asarray(mu, float))
            sds.append(np.asarray(sd, float))
        return np.stack(means, 1), np.stack(sds, 1)

    def decide(self, state: SampledState, x: np.ndarray) -> dict[str, np.ndarray]:
        r"""Posterior quantities at queries ``x`` (B, Q, d): ``pi`` (B, Q) unclipped
        :math:`\bar s_1 / (\bar s_1 + \bar s_0)`, ``sbar``, ``mean``, ``log_sd_mean``,
        ``log_sd_sd`` (B, 2, Q), ``class_prob`` (B, K) (see :func:`summarize_draws`)."""
        mean, sd = self.draws_at(state, x)
        return summarize_draws(mean, sd, self.floor_sd, np.asarray(state.class_prob, float))

    def _raw(self, state, x):
        if state.t < self.config.burn_in:
            return np.full(x.shape[:-1], 0.5)
        return self.decide(state, x)["pi"]

    def diagnostics(self, state: SampledState) -> dict[str, np.ndarray]:
        """Diagnostics of the last fit (arrays with a leading task axis; empty before a fit)."""
        return dict(state.diagnostics)

    # ---------------------------------------------------------------- ArviZ

    def posterior(self, history: History, x_query: np.ndarray, draws: int = 500, seed: int = 0):
        """Posterior draws of ``mean``, ``sd``, ``log_sd`` (floor applied) at ``x_query`` (Q, d)
        from one cold fit on the whole (unbatched) history; ArviZ ``InferenceData`` with dims
        ``(chain, draw, arm, query)`` and, where the backend has them, ``sample_stats`` (NUTS:
        ``diverging``, ``tree_size``, ``acceptance_rate``). ``draws`` in all (over chains). A
        smoothness mixture draws each draw's class from :math:`P(k \\mid H)`."""
        import arviz as az  # lazy: ArviZ (about a second) only for posterior()

        _check_int("draws", draws)
        h = History(*(np.asarray(v, float) for v in history))
        if h.y.ndim != 1:
            raise ValueError(f"history: posterior() takes one unbatched history, got y of shape {h.y.shape}")
        state = self.init(1)
        if len(h):
            x, a, y = h.x[None], h.a[None], h.y[None]
            t1 = len(h)
            size = t1 if self.max_units is None else self.max_units
            xs, as_, ys, ms = (_grow(v, size).copy() for v in (state.x, state.a, state.y, state.mask))
            xs[:, :t1], as_[:, :t1], ys[:, :t1], ms[:, :t1] = x, a, y, True
            state = state._replace(t=t1, x=xs, a=as_, y=ys, mask=ms)
            state, stats = self.refit(state, t1, warm=False, num_draws=int(draws))
        else:
            stats = {}
        xq = np.asarray(x_query, float)[None]
        mean, sd = self.draws_at(state, xq)  # (1, K, S, 2, Q)
        mean, sd = mean[0], np.maximum(sd[0], self.floor_sd[:, None])
        k_n, s_n = mean.shape[:2]
        chains = next(iter(stats.values())).shape[2] if stats else 1
        rng = np.random.default_rng(seed)
        p = np.asarray(state.class_prob[0], float)
        cls = rng.choice(k_n, size=s_n, p=p / p.sum()) if k_n > 1 else np.zeros(s_n, int)
        idx = np.arange(s_n)
        shape = (chains, s_n // chains)
        post = {
            "mean": mean[cls, idx].reshape(*shape, *mean.shape[2:]),
            "sd": sd[cls, idx].reshape(*shape, *sd.shape[2:]),
        }
        post["log_sd"] = np.log(post["sd"])
        sample_stats = {k: np.asarray(v[0]).reshape(k_n, s_n)[cls, idx].reshape(shape) for k, v in stats.items()}
        return az.from_dict(
            posterior=post,
            sample_stats=sample_stats or None,
            dims={v: ["arm", "query"] for v in post},
            coords={"arm": [0, 1], "query": np.arange(xq.shape[1])},
            attrs={"teacher": self.name, "prior_hash": self.spec.hash(), "n_obs": len(h)},
        )


@partial(jax.jit, static_argnums=0)
def _featurize(featurize, x, a, y, mask):
    return jax.vmap(lambda *v: (featurize(mask_padding(*v)[0]), *mask_padding(*v)[1:]))(x, a, y, mask)


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
