r"""NumPyro models and simulation scenarios compiled from a prior file.

Notation (see :mod:`bayesdesign.spec` and ``docs/priors.md``): covariates are mapped to
:math:`u \in [0, 1]^d`; :math:`\phi(u) \in \mathbb{R}^F`, :math:`F = 1 + dJ`, are the additive
cosine features of :func:`bayesdesign.basis.cosine_features` with :math:`J` the largest ``terms``
of the file (a series with fewer terms has prior scale zero on the rest). Per arm
:math:`a \in \{0, 1\}` (0 = control, 1 = treated)

.. math::
    \theta^{\mu}_{a} \sim N(m^{\mu}_a, \mathrm{diag}(s^{\mu}_a)^2), \qquad
    \theta^{s}_{a} \sim N(m^{s}_a, \mathrm{diag}(s^{s}_a)^2),

with :math:`s_{a,j} = \text{scale}\,(j + 1)^{-(\beta + 1/2)}` and :math:`m_a` the ``offset`` on
the intercept :math:`j = 0`. Then :math:`f^{\mu}_a(u) = \theta^{\mu}_a \cdot \phi(u)` and
:math:`\log\sigma_a(u) = \theta^{s}_a \cdot \phi(u)`, and

- gaussian: :math:`Y \sim N(f^{\mu}_a, \sigma_a^2)`, mean :math:`\mu_a = f^{\mu}_a`;
- student_t: :math:`Y \sim \mu_a + \sigma_a \sqrt{(\nu - 2)/\nu}\, t_\nu` (sd :math:`\sigma_a`);
- bernoulli: :math:`Y \sim \mathrm{Bernoulli}(\mathrm{sigmoid}(f^{\mu}_a))`, mean
  :math:`p_a = \mathrm{sigmoid}(f^{\mu}_a)`, sd :math:`\sqrt{p_a (1 - p_a)}`;
- hurdle_lognormal: three series per arm instead, :math:`\theta^{p}_a, \theta^{m}_a,
  \theta^{\ell}_a` (``purchase``, ``log_amount``, ``log_amount_sd``):
  :math:`Y = B e^{m_a + s_a Z}`, :math:`B \sim \mathrm{Bernoulli}(p_a)`,
  :math:`p_a = \mathrm{sigmoid}(\theta^{p}_a \cdot \phi)`, :math:`m_a = \theta^{m}_a \cdot \phi`,
  :math:`\log s_a = \theta^{\ell}_a \cdot \phi`; mean and sd implied
  (:func:`~bayesdesign.design.environment.hurdle_lognormal_moments`).

Two uses:

- **Simulation**: :func:`sample_tasks` / :class:`PriorTasks` draw task batches (environments
  that know their truth) from the prior, so a prior file is a simulation scenario. A user model
  (``model:``) is a task distribution too (:class:`ModelTaskBatch`): its latent sites are drawn
  from its prior, its ``mean``/``sd`` sites evaluated with them substituted, and outcomes drawn
  from its observed site ``y``.
- **Conditioning**: :func:`numpyro_model` returns ``model(x, a, y, mask, x_query)`` for NUTS/SVI
  teachers; it records the deterministic sites ``"mean"`` and ``"sd"`` of shape ``(2, q)``.
  A file with ``model: "package.module:function"`` returns the user's model instead.

Smoothness mixtures are not a discrete latent variable here: :func:`numpyro_model` conditions on
one class (``smoothness_class=k``), and the teacher mixes the classes with their posterior
probabilities :math:`P(k \mid H)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints
from scipy.special import expit

from .basis import cosine_features, prior_scales
from .design.environment import Rescaled, SeriesTaskBatch, hurdle_lognormal_moments, hurdle_lognormal_sample
from .spec import PriorSpec, PriorSpecError, load_prior

__all__ = [
    "OUTCOME_SITE",
    "ModelTaskBatch",
    "check_user_model",
    "model_args",
    "evaluate_sites",
    "prior_arrays",
    "sample_tasks",
    "PriorTasks",
    "StudentTTaskBatch",
    "BernoulliTaskBatch",
    "HurdleTaskBatch",
    "HurdleLogNormal",
    "numpyro_model",
    "known_variance_model",
    "mask_padding",
]

Model = Callable[..., None]


# ------------------------------------------------------------------------- prior arrays


def _series_arrays(spec: PriorSpec, a: int, part: str, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    sp = spec.series(a, part, k)
    d, big_j = spec.d, spec.n_terms
    own = prior_scales(1, sp.terms, sp.beta, sp.scale)  # [scale, s_1..s_terms]
    per_coord = np.zeros(big_j)
    per_coord[: sp.terms] = own[1:]
    sd = np.concatenate([[sp.scale], np.tile(per_coord, d)])
    loc = np.zeros_like(sd)
    loc[0] = sp.offset
    return loc, sd


def prior_arrays(
    spec: PriorSpec, part: str = "mean", smoothness_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    r"""Prior means and standard deviations of the series coefficients of both arms.

    Parameters
    ----------
    spec : a prior with ``arms``.
    part : ``'mean'`` (:math:`\theta^{\mu}`) or ``'log_sd'`` (:math:`\theta^{s}`); for
        ``hurdle_lognormal`` ``'purchase'``, ``'log_amount'`` or ``'log_amount_sd'``.
    smoothness_class : class index ``k`` (required for a mixture: :math:`\beta = \beta_k`).

    Returns
    -------
    loc, sd : arrays ``(2, F)``, arm 0 = control; ``loc`` is the offset on the intercept and zero
        elsewhere, ``sd[a, j] = scale (j + 1)^-(beta + 1/2)`` (zero beyond a series' ``terms``).
    """
    locs, sds = zip(*(_series_arrays(spec, a, part, smoothness_class) for a in (0, 1)), strict=True)
    return np.stack(locs), np.stack(sds)


# ------------------------------------------------------------------------- task batches


@dataclass
class StudentTTaskBatch(SeriesTaskBatch):
    r"""Series tasks with Student-t noise: :math:`Y = \mu_a(x) + \sigma_a(x)\sqrt{(\nu-2)/\nu}\,T_\nu`,
    so that ``sd`` is the true standard deviation (``df`` :math:`= \nu > 2`)."""

    df: float = 3.0

    def sample_outcomes(self, rng: np.random.Generator, x: np.ndarray, arm) -> np.ndarray:
        x = self._check(x)
        t = rng.standard_t(self.df, size=x.shape[:-1]) * np.sqrt((self.df - 2.0) / self.df)
        return self.mean(x, arm) + self.sd(x, arm) * t


@dataclass
class BernoulliTaskBatch(SeriesTaskBatch):
    r"""Series tasks with binary outcomes: :math:`P(Y = 1) = p_a(x) = \mathrm{sigmoid}(\theta^{\mu}_a
    \cdot \phi(u))`, ``sd`` :math:`= \sqrt{p_a(1 - p_a)}`; ``theta_logsd`` is unused (zeros)."""

    def mean(self, x: np.ndarray, arm) -> np.ndarray:
        return expit(self._eval(self.theta_mean, x, arm))

    def sd(self, x: np.ndarray, arm) -> np.ndarray:
        p = self.mean(x, arm)
        return np.sqrt(p * (1.0 - p))

    def sample_outcomes(self, rng: np.random.Generator, x: np.ndarray, arm) -> np.ndarray:
        x = self._check(x)
        return (rng.uniform(size=x.shape[:-1]) < self.mean(x, arm)).astype(float)

    @cached_property
    def ate(self) -> np.ndarray:
        r""":math:`E[p_1(U) - p_0(U)]` per task by quadrature over the unit cube (computed once)."""
        return _quadrature_ate(self)


@dataclass
class HurdleTaskBatch(SeriesTaskBatch):
    r"""Series tasks with hurdle lognormal outcomes :math:`Y = B e^{m_a + s_a Z}`,
    :math:`B \sim \mathrm{Bernoulli}(p_a)`: ``theta_mean`` holds the ``log_amount`` coefficients
    (:math:`m_a`), ``theta_logsd`` the ``log_amount_sd`` ones (:math:`\log s_a`) and
    ``theta_purchase`` the ``purchase`` ones (:math:`\mathrm{logit}\, p_a`), each (tasks, 2, F);
    ``mean`` and ``sd`` are the implied moments
    (:func:`~bayesdesign.design.environment.hurdle_lognormal_moments`)."""

    theta_purchase: np.ndarray | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.theta_purchase is None or self.theta_purchase.shape != self.theta_mean.shape:
            raise ValueError(f"theta_purchase: expected an array of shape {self.theta_mean.shape}")

    def params(self, x: np.ndarray, arm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:math:`(p_a, m_a, s_a)` at covariates ``x`` (tasks, ..., d)."""
        return (
            expit(self._eval(self.theta_purchase, x, arm)),
            self._eval(self.theta_mean, x, arm),
            np.exp(self._eval(self.theta_logsd, x, arm)),
        )

    def mean(self, x: np.ndarray, arm) -> np.ndarray:
        return hurdle_lognormal_moments(*self.params(x, arm))[0]

    def sd(self, x: np.ndarray, arm) -> np.ndarray:
        return hurdle_lognormal_moments(*self.params(x, arm))[1]

    def sample_outcomes(self, rng: np.random.Generator, x: np.ndarray, arm) -> np.ndarray:
        return hurdle_lognormal_sample(rng, *self.params(self._check(x), arm))

    @cached_property
    def ate(self) -> np.ndarray:
        r""":math:`E[\mu_1(U) - \mu_0(U)]` per task by quadrature over the unit cube (computed once:
        ``hasattr(env, 'ate')`` evaluates it)."""
        return _quadrature_ate(self)


def _quadrature_ate(batch: SeriesTaskBatch, chunk: int = 2048) -> np.ndarray:
    r""":math:`\sum_i w_i (\mu_1(u_i) - \mu_0(u_i))` per task over ``batch.quadrature()``, the
    nodes in chunks shared by every task, so memory stays (tasks, chunk) whatever the node count
    (100 000 Monte Carlo nodes for two or more covariates: all at once, 300 hurdle tasks took 2.8 GB)."""
    u, w = batch.quadrature()
    out = np.zeros(batch.n_tasks)
    for s in range(0, len(w), chunk):
        uu = np.broadcast_to(u[s : s + chunk], (batch.n_tasks, *u[s : s + chunk].shape))
        out += (batch.mean(uu, 1) - batch.mean(uu, 0)) @ w[s : s + chunk]
    return out


def _draw_classes(spec: PriorSpec, rng: np.random.Generator, n: int, k: int | None) -> np.ndarray:
    if k is not None:
        spec.class_beta(k)  # validates the index
        return np.full(n, int(k))
    if not spec.is_mixture:
        return np.zeros(n, dtype=int)
    return rng.choice(len(spec.classes), size=n, p=spec.weights)


def sample_tasks(
    spec: PriorSpec, rng: np.random.Generator, n: int, smoothness_class: int | None = None
) -> tuple[SeriesTaskBatch | Rescaled, np.ndarray]:
    r"""Draw ``n`` tasks from the prior.

    Coefficients are drawn as :math:`\theta = m + s \odot z`, :math:`z \sim N(0, I)` (``z`` for the
    mean series first, then for the log-sd series, then the classes), so ``beta1.yaml`` gives the
    same tasks as scenario S4 (:class:`~bayesdesign.design.scenarios.SeriesPriorTasks`) from the
    same generator. A ``hurdle_lognormal`` prior draws ``z`` for ``purchase``, ``log_amount``,
    ``log_amount_sd`` in that order, then the classes (a :class:`HurdleTaskBatch`).

    A user model (``model:``) gives a :class:`ModelTaskBatch` (:func:`sample_model_tasks`; class 0).

    Parameters
    ----------
    spec : a prior file.
    rng : numpy generator.
    n : number of tasks.
    smoothness_class : fix the class of every task (``None``: draw each task's class from the
        mixture weights; without a mixture only ``None`` or ``0``).

    Returns
    -------
    env : a task batch (axis 0 of every input is the task) with ``mean``, ``sd``,
        ``sample_outcomes``, ``sample_covariates``, ``ate``; wrapped in
        :class:`~bayesdesign.design.environment.Rescaled` when the covariate box is not the unit
        cube, so covariates are in the file's units.
    classes : int array ``(n,)``, each task's index into ``spec.classes``.
    """
    if n < 1:
        raise ValueError(f"n: expected at least one task, got {n}")
    if spec.model is not None:
        if smoothness_class not in (None, 0):
            raise ValueError(f"smoothness_class: prior {spec.name!r} is a user model without smoothness classes")
        env = sample_model_tasks(spec, rng, n)
        return _in_box(spec, env), np.zeros(n, dtype=int)
    big_j, d = spec.n_terms, spec.d
    f = 1 + d * big_j
    if spec.family == "hurdle_lognormal":
        env, classes = _hurdle_tasks(spec, rng, n, smoothness_class)
        return _in_box(spec, env), classes
    z_mean = rng.standard_normal((n, 2, f))
    z_logsd = None if spec.family == "bernoulli" else rng.standard_normal((n, 2, f))
    classes = _draw_classes(spec, rng, n, smoothness_class)
    theta_mean = np.empty((n, 2, f))
    theta_logsd = np.zeros((n, 2, f))
    for k in np.unique(classes):
        sel = classes == k
        cls = int(k) if spec.is_mixture else None
        loc, sd = prior_arrays(spec, "mean", cls)
        theta_mean[sel] = loc + z_mean[sel] * sd
        if z_logsd is not None:
            loc, sd = prior_arrays(spec, "log_sd", cls)
            theta_logsd[sel] = loc + z_logsd[sel] * sd
    if spec.family == "gaussian":
        env = SeriesTaskBatch(theta_mean, theta_logsd, big_j, d, name=spec.name)
    elif spec.family == "student_t":
        env = StudentTTaskBatch(theta_mean, theta_logsd, big_j, d, name=spec.name, df=spec.outcome.df)
    else:
        env = BernoulliTaskBatch(theta_mean, theta_logsd, big_j, d, name=spec.name)
    return _in_box(spec, env), classes


def _hurdle_tasks(spec: PriorSpec, rng: np.random.Generator, n: int, smoothness_class: int | None):
    f = 1 + spec.d * spec.n_terms
    z = {part: rng.standard_normal((n, 2, f)) for part in spec.parts}
    classes = _draw_classes(spec, rng, n, smoothness_class)
    theta = {part: np.empty((n, 2, f)) for part in spec.parts}
    for k in np.unique(classes):
        sel = classes == k
        for part in spec.parts:
            loc, sd = prior_arrays(spec, part, int(k) if spec.is_mixture else None)
            theta[part][sel] = loc + z[part][sel] * sd
    env = HurdleTaskBatch(
        theta["log_amount"], theta["log_amount_sd"], spec.n_terms, spec.d, name=spec.name,
        theta_purchase=theta["purchase"],
    )
    return env, classes


def _in_box(spec: PriorSpec, env):
    """A unit-cube task batch wrapped in :class:`Rescaled` when the prior's box is not the unit cube."""
    low, high = spec.bounds
    if np.any(low != 0.0) or np.any(high != 1.0):
        wrapped = Rescaled(env, low, high)
        wrapped.name = spec.name
        return wrapped
    return env


@dataclass
class PriorTasks:
    """A prior file as a simulation scenario (the ``TaskDistribution`` protocol).

    Parameters
    ----------
    spec : a :class:`~bayesdesign.spec.PriorSpec`, a path or a shipped prior name.
    smoothness_class : fix the class of every task (``None``: draw from the mixture weights).
    """

    spec: PriorSpec | str | Path
    smoothness_class: int | None = None

    def __post_init__(self):
        if not isinstance(self.spec, PriorSpec):
            self.spec = load_prior(self.spec)
        if self.spec.model is not None:
            user_model(self.spec)  # the protocol is checked before any task is drawn
        else:
            self.spec._require_arms()
        self.d = self.spec.d
        self.bounds = self.spec.bounds
        self.name = self.spec.name
        self.description = self.spec.description or ""

    def sample_tasks(self, rng: np.random.Generator, n: int) -> SeriesTaskBatch | ModelTaskBatch | Rescaled:
        """``n`` tasks from the prior (see :func:`sample_tasks`)."""
        return sample_tasks(self.spec, rng, n, self.smoothness_class)[0]


# ------------------------------------------------------------------------- user models

OUTCOME_SITE = "y"
"""The observed site of every model: ``numpyro.sample("y", likelihood, obs=y)`` (``y=None``
samples outcomes from the model's own likelihood)."""

_QUADRATURE_MC = 4096  # Monte Carlo nodes of a user model's ATE for d > 1 (midpoint nodes for d = 1)


def model_args(d: int, n: int = 1, q: int = 1, mask: bool = False) -> tuple:
    """Model arguments ``(x, a, y, mask, x_query)``: ``n`` units (masked out unless ``mask``) at
    ``x = 0.5``, arm 0, ``y = 0``, and ``q`` queries at 0.5."""
    return (
        jnp.full((n, d), 0.5, jnp.float32),
        jnp.zeros((n,), jnp.int32),
        jnp.zeros((n,), jnp.float32),
        jnp.full((n,), bool(mask)),
        jnp.full((q, d), 0.5, jnp.float32),
    )


def _sites_one(model, latent: dict, x_query: jnp.ndarray):
    args = model_args(x_query.shape[-1], 1, x_query.shape[0])[:-1] + (x_query,)
    tr = handlers.trace(handlers.substitute(handlers.seed(model, 0), data=latent)).get_trace(*args)
    return tr["mean"]["value"], tr["sd"]["value"]


@partial(jax.jit, static_argnums=0)
def evaluate_sites(model: Model, latent: dict, x_query: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Deterministic sites ``mean`` and ``sd`` of ``model`` for every draw.

    ``latent`` maps each latent site to draws ``(B, S, *shape)``; ``x_query`` (B, Q, d) in unit
    coordinates. Returns ``mean``, ``sd`` of shape (B, S, 2, Q).
    """
    per_draw = jax.vmap(partial(_sites_one, model), in_axes=(0, None))
    return jax.vmap(per_draw)(latent, x_query)


def _outcomes_one(model, latent: dict, key, x: jnp.ndarray, a: jnp.ndarray):
    mask = jnp.ones(a.shape, bool)
    tr = handlers.trace(handlers.substitute(handlers.seed(model, key), data=latent)).get_trace(
        x, a, None, mask, x[:1]
    )
    return tr[OUTCOME_SITE]["value"]


@partial(jax.jit, static_argnums=0)
def _sample_outcomes(model: Model, latent: dict, keys, x: jnp.ndarray, a: jnp.ndarray) -> jnp.ndarray:
    """Outcomes (B, m) of the observed site for units ``x`` (B, m, d), arms ``a`` (B, m)."""
    return jax.vmap(partial(_outcomes_one, model))(latent, keys, x, a)


def _model_error(spec: PriorSpec, msg: str) -> PriorSpecError:
    return PriorSpecError(spec.source, [("model", f"{spec.model!r}: {msg}")])


def _shape(v) -> tuple:
    return tuple(np.shape(v))


def _trace(spec: PriorSpec, model: Model, n: int, q: int, with_y: bool) -> dict:
    d = spec.d
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(n, d)), jnp.float32)
    a = jnp.asarray(np.arange(n) % 2, jnp.int32)
    y = jnp.asarray(rng.standard_normal(n), jnp.float32) if with_y else None
    xq = jnp.asarray(rng.uniform(size=(q, d)), jnp.float32)
    try:
        return handlers.trace(handlers.seed(model, 0)).get_trace(x, a, y, jnp.ones(n, bool), xq)
    except Exception as err:  # the user's code: report what was called and what failed
        raise _model_error(
            spec, f"calling model(x, a, y, mask, x_query) with {n} units and {q} queries "
            f"(y {'given' if with_y else 'None'}) failed: {type(err).__name__}: {err}"
        ) from err


def check_user_model(spec: PriorSpec, model: Model | None = None) -> tuple[str, ...]:
    r"""Check that a user model keeps the protocol of ``docs/own_model.md``; return its latent sites.

    The model is traced on a few units (``y`` given, then ``y = None``) and must have

    - deterministic sites ``mean`` and ``sd`` of shape ``(2, q)`` (``sd`` positive);
    - the observed site ``y`` (:data:`OUTCOME_SITE`) of shape ``(n,)``, sampled when ``y`` is None;
    - continuous latent sample sites whose shapes do not depend on the number of units
      (global parameters: they are drawn once per task and substituted at any covariate).

    Raises :class:`~bayesdesign.spec.PriorSpecError` (a ``ValueError``) naming the file, the model,
    the site and what was expected.
    """
    model = spec.resolve_model() if model is None else model
    n, q = 3, 5
    tr = _trace(spec, model, n, q, with_y=True)
    for site in ("mean", "sd"):
        if site not in tr:
            raise _model_error(
                spec, f"no site {site!r}: expected numpyro.deterministic({site!r}, value) of shape (2, q) "
                "(row 0 control, row 1 treated, at x_query)"
            )
        if tr[site]["type"] != "deterministic":
            raise _model_error(spec, f"site {site!r} is a {tr[site]['type']} site; expected numpyro.deterministic")
        if _shape(tr[site]["value"]) != (2, q):
            raise _model_error(
                spec, f"site {site!r} has shape {_shape(tr[site]['value'])} with q={q} query points; "
                f"expected (2, q) = (2, {q}) (row 0 control, row 1 treated)"
            )
    sd = np.asarray(tr["sd"]["value"])
    if not np.all(np.isfinite(sd) & (sd > 0)):
        raise _model_error(spec, f"site 'sd' has values {sd.tolist()} on a prior draw; expected positive numbers")
    y_site = tr.get(OUTCOME_SITE)
    if y_site is None or y_site["type"] != "sample" or not y_site["is_observed"]:
        raise _model_error(
            spec, f"no observed site {OUTCOME_SITE!r}: expected numpyro.sample({OUTCOME_SITE!r}, likelihood, "
            "obs=y) (outcomes are drawn from it when y is None)"
        )
    if _shape(y_site["value"]) != (n,):
        raise _model_error(
            spec, f"site {OUTCOME_SITE!r} has shape {_shape(y_site['value'])} with {n} units; expected ({n},)"
        )
    latent = {k: v for k, v in tr.items() if v["type"] == "sample" and not v["is_observed"]}
    for name, site in latent.items():
        if getattr(site["fn"].support, "is_discrete", False):
            raise _model_error(
                spec, f"latent site {name!r} is discrete ({type(site['fn']).__name__}); expected continuous "
                "latent variables (marginalise a discrete one in the likelihood)"
            )
    sampled = _trace(spec, model, n, q, with_y=False).get(OUTCOME_SITE)
    if sampled is None or _shape(sampled["value"]) != (n,):
        raise _model_error(spec, f"with y=None, site {OUTCOME_SITE!r} must sample {n} outcomes (shape ({n},))")
    other = _trace(spec, model, 2 * n + 1, q, with_y=True)
    for name, site in latent.items():
        if name not in other or _shape(other[name]["value"]) != _shape(site["value"]):
            raise _model_error(
                spec, f"latent site {name!r} has shape {_shape(site['value'])} with {n} units and "
                f"{_shape(other[name]['value']) if name in other else 'no site'} with {2 * n + 1}; expected "
                "global parameters whose shapes do not depend on the number of units"
            )
    return tuple(sorted(latent))


_CHECKED: dict = {}


def user_model(spec: PriorSpec) -> tuple[Model, tuple[str, ...]]:
    """The user model of a ``model:`` prior and its latent site names, checked once per process
    (:func:`check_user_model`)."""
    key = (spec.hash(), spec.source)
    if key not in _CHECKED:
        model = spec.resolve_model()
        _CHECKED[key] = (model, check_user_model(spec, model))
    return _CHECKED[key]


@dataclass
class ModelTaskBatch:
    r"""Tasks drawn from a user model's prior; axis 0 of every input is the task.

    ``latent`` maps each latent site to its draws ``(tasks, *shape)``. With the latents of task
    :math:`b` substituted, :math:`\mu_a(u)` and :math:`\sigma_a(u)` are the model's ``mean`` and
    ``sd`` sites at query points :math:`u` (unit cube), and outcomes are draws of its observed site
    ``y`` (the model's own likelihood) for units at :math:`u` with arm :math:`a`.
    """

    model: Model
    latent: dict
    d: int = 1
    name: str = "model-tasks"

    def __post_init__(self):
        self.bounds = (np.zeros(self.d), np.ones(self.d))
        self.latent = {k: jnp.asarray(v) for k, v in self.latent.items()}

    @property
    def n_tasks(self) -> int:
        return int(next(iter(self.latent.values())).shape[0])

    def _check(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.ndim < 3 or x.shape[0] != self.n_tasks or x.shape[-1] != self.d:
            raise ValueError(
                f"x: a task batch of {self.n_tasks} tasks expects shape ({self.n_tasks}, n, {self.d}), got {x.shape}"
            )
        return x

    def _sites(self, x) -> tuple[np.ndarray, np.ndarray]:
        x = self._check(x)
        flat = jnp.asarray(x.reshape(self.n_tasks, -1, self.d), jnp.float32)
        one = {k: v[:, None] for k, v in self.latent.items()}
        mu, sd = evaluate_sites(self.model, one, flat)  # (B, 1, 2, m)
        shape = (self.n_tasks, 2, *x.shape[1:-1])
        return np.asarray(mu[:, 0], float).reshape(shape), np.asarray(sd[:, 0], float).reshape(shape)

    def mean(self, x, arm) -> np.ndarray:
        mu, _ = self._sites(x)
        return np.where(np.asarray(arm) == 1, mu[:, 1], mu[:, 0])

    def sd(self, x, arm) -> np.ndarray:
        _, sd = self._sites(x)
        return np.where(np.asarray(arm) == 1, sd[:, 1], sd[:, 0])

    def sample_covariates(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(size=(n, self.d))

    def sample_outcomes(self, rng: np.random.Generator, x, arm) -> np.ndarray:
        x = self._check(x)
        lead = x.shape[1:-1]
        a = np.broadcast_to(np.asarray(arm), (self.n_tasks, *lead)).reshape(self.n_tasks, -1)
        keys = jax.random.split(jax.random.PRNGKey(int(rng.integers(2**31 - 1))), self.n_tasks)
        flat = jnp.asarray(x.reshape(self.n_tasks, -1, self.d), jnp.float32)
        y = _sample_outcomes(self.model, self.latent, keys, flat, jnp.asarray(a, jnp.int32))
        return np.asarray(y, float).reshape(self.n_tasks, *lead)

    def quadrature(self, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """Midpoint nodes on [0, 1] (``d = 1``) or 4096 seeded uniform nodes (``d > 1``)."""
        if self.d == 1:
            return (np.arange(n)[:, None] + 0.5) / n, np.full(n, 1.0 / n)
        u = np.random.default_rng(12345).uniform(size=(_QUADRATURE_MC, self.d))
        return u, np.full(_QUADRATURE_MC, 1.0 / _QUADRATURE_MC)

    @cached_property
    def ate(self) -> np.ndarray:
        r""":math:`E[\mu_1(U) - \mu_0(U)]` per task over the quadrature nodes."""
        u, w = self.quadrature()
        mu, _ = self._sites(np.broadcast_to(u, (self.n_tasks, *u.shape)))
        return (mu[:, 1] - mu[:, 0]) @ w


def sample_model_tasks(spec: PriorSpec, rng: np.random.Generator, n: int) -> ModelTaskBatch:
    """``n`` tasks from a user model's prior: its latent sites drawn by NumPyro ``Predictive``
    (no history) with a key from ``rng``; the batch lives on the unit cube."""
    from numpyro.infer import Predictive

    model, names = user_model(spec)
    if not names:
        raise _model_error(spec, "no latent sample sites: every task would be the same; expected model parameters")
    key = jax.random.PRNGKey(int(rng.integers(2**31 - 1)))
    x, a, _, mask, xq = model_args(spec.d)
    draws = Predictive(model, num_samples=n, return_sites=list(names))(key, x, a, None, mask, xq)
    return ModelTaskBatch(model, {k: np.asarray(draws[k]) for k in names}, spec.d, name=spec.name)


# ------------------------------------------------------------------------- NumPyro models


def mask_padding(x, a, y, mask):
    """Padded entries (mask False) may hold anything, NaN included: replace them by harmless
    values so that neither the masked log-density nor its gradient sees them. ``y = None``
    (prior or posterior predictive) is kept."""
    mask = jnp.asarray(mask, dtype=bool)
    x = jnp.where(mask[:, None], jnp.asarray(x), 0.5)
    a = jnp.where(mask, jnp.asarray(a), 0).astype(jnp.int32)
    if y is not None:
        y = jnp.where(mask, jnp.asarray(y), 0.0)
    return x, a, y, mask


class HurdleLogNormal(dist.Distribution):
    r""":math:`Y = 0` with probability :math:`1 - p`, else :math:`Y \sim \mathrm{LogNormal}(m, s)`
    (``p = sigmoid(logits)``, ``loc`` :math:`= m`, ``scale`` :math:`= s`): the hurdle lognormal
    likelihood, a density with respect to (an atom at 0) + Lebesgue measure on :math:`(0, \infty)`,

    .. math::
        \log f(y) = \begin{cases} \log(1 - p) & y = 0 \\
        \log p + \log \mathrm{LogNormal}(y; m, s) & y > 0. \end{cases}
    """

    arg_constraints = {"logits": constraints.real, "loc": constraints.real, "scale": constraints.positive}
    support = constraints.nonnegative
    reparametrized_params = ["loc", "scale"]

    def __init__(self, logits, loc, scale, *, validate_args=None):
        self.logits, self.loc, self.scale = jnp.broadcast_arrays(logits, loc, scale)
        super().__init__(batch_shape=jnp.shape(self.logits), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        k_buy, k_amount = jax.random.split(key)
        shape = sample_shape + self.batch_shape
        buy = jax.random.bernoulli(k_buy, jax.nn.sigmoid(self.logits), shape)
        amount = jnp.exp(self.loc + self.scale * jax.random.normal(k_amount, shape))
        return jnp.where(buy, amount, 0.0)

    def log_prob(self, value):
        positive = value > 0
        safe = jnp.where(positive, value, 1.0)  # keeps the unused branch's gradient finite
        lp_amount = dist.LogNormal(self.loc, self.scale).log_prob(safe)
        return jnp.where(positive, jax.nn.log_sigmoid(self.logits) + lp_amount, jax.nn.log_sigmoid(-self.logits))

    @property
    def mean(self):
        return hurdle_lognormal_moments(jax.nn.sigmoid(self.logits), self.loc, self.scale)[0]

    @property
    def variance(self):
        return hurdle_lognormal_moments(jax.nn.sigmoid(self.logits), self.loc, self.scale)[1] ** 2


def _coefficients(site: str, loc: np.ndarray, sd: np.ndarray) -> jnp.ndarray:
    """Non-centred draw :math:`\\theta = m + s \\odot z`, :math:`z \\sim N(0, I)` (2, F); the
    site ``z_<site>`` is sampled and ``theta_<site>`` recorded."""
    z = numpyro.sample(f"z_{site}", dist.Normal(0.0, 1.0).expand(loc.shape).to_event(2))
    return numpyro.deterministic(f"theta_{site}", jnp.asarray(loc) + jnp.asarray(sd) * z)


def numpyro_model(spec: PriorSpec, smoothness_class: int | None = None) -> Model:
    r"""The NumPyro model of a prior file.

    Returns ``model(x, a, y, mask, x_query)``:

    - ``x`` (n, d): covariates already mapped to the unit cube (:meth:`PriorSpec.to_unit`);
    - ``a`` (n,): arms 0/1; ``y`` (n,): outcomes (``None`` samples them: prior predictive);
      ``mask`` (n,) bool: False marks padding (padded entries may hold any value, NaN
      included; they are ignored);
    - ``x_query`` (q, d): unit-cube points where the arm means and sds are recorded.

    Sites: ``z_mean``, ``z_logsd`` (2, F) standard normal (non-centred), deterministic
    ``theta_mean``, ``theta_logsd`` (2, F), observed ``y`` (masked), and deterministic ``mean``,
    ``sd`` (2, q): :math:`\mu_a(x_q)` and :math:`\sigma_a(x_q)` (see the module notes per family).
    Bernoulli models have no ``z_logsd``/``theta_logsd``. Hurdle lognormal models have instead
    ``z_purchase``, ``z_log_amount``, ``z_log_amount_sd`` (and their ``theta_*``) and the
    likelihood :class:`HurdleLogNormal`.

    A prior with ``model:`` returns the user's model (the same protocol, checked by
    :func:`check_user_model`). For a smoothness
    mixture pass ``smoothness_class=k`` (:math:`\beta = \beta_k` in every series); the mixture
    over classes is the teacher's job, not a discrete latent in NUTS.
    """
    if spec.model is not None:
        if smoothness_class is not None:
            raise ValueError("smoothness_class: a user model has no smoothness classes")
        return user_model(spec)[0]
    spec.class_beta(smoothness_class)  # a mixture needs a class; checks the index
    if spec.family == "hurdle_lognormal":
        return _hurdle_model(spec, smoothness_class)
    n_terms, family, df = spec.n_terms, spec.family, spec.outcome.df
    loc_m, sd_m = prior_arrays(spec, "mean", smoothness_class)
    if family != "bernoulli":
        loc_s, sd_s = prior_arrays(spec, "log_sd", smoothness_class)

    def model(x, a, y, mask, x_query):
        x, a, y, mask = mask_padding(x, a, y, mask)
        phi = cosine_features(x, n_terms)  # (n, F)
        phi_q = cosine_features(jnp.asarray(x_query), n_terms)  # (q, F)
        theta_m = _coefficients("mean", loc_m, sd_m)
        f_obs = jnp.sum(phi * theta_m[a], axis=-1)
        f_q = theta_m @ phi_q.T  # (2, q)
        if family == "bernoulli":
            lik = dist.BernoulliLogits(f_obs)
            p = jax.nn.sigmoid(f_q)
            numpyro.deterministic("mean", p)
            numpyro.deterministic("sd", jnp.sqrt(p * (1.0 - p)))
        else:
            theta_s = _coefficients("logsd", loc_s, sd_s)
            sd_obs = jnp.exp(jnp.sum(phi * theta_s[a], axis=-1))
            if family == "gaussian":
                lik = dist.Normal(f_obs, sd_obs)
            else:
                lik = dist.StudentT(df, f_obs, sd_obs * np.sqrt((df - 2.0) / df))
            numpyro.deterministic("mean", f_q)
            numpyro.deterministic("sd", jnp.exp(theta_s @ phi_q.T))
        with numpyro.plate("units", a.shape[0]), numpyro.handlers.mask(mask=mask):
            numpyro.sample("y", lik, obs=y)

    model.__doc__ = f"NumPyro model of prior {spec.name!r} (smoothness class {smoothness_class})."
    return model


def _hurdle_model(spec: PriorSpec, smoothness_class: int | None) -> Model:
    """:func:`numpyro_model` of a ``hurdle_lognormal`` prior (see the module notes)."""
    n_terms = spec.n_terms
    arrays = {part: prior_arrays(spec, part, smoothness_class) for part in spec.parts}

    def model(x, a, y, mask, x_query):
        x, a, y, mask = mask_padding(x, a, y, mask)
        phi = cosine_features(x, n_terms)  # (n, F)
        phi_q = cosine_features(jnp.asarray(x_query), n_terms)  # (q, F)
        theta = {part: _coefficients(part, *arrays[part]) for part in spec.parts}
        obs = {part: jnp.sum(phi * th[a], axis=-1) for part, th in theta.items()}
        q = {part: th @ phi_q.T for part, th in theta.items()}  # (2, q)
        mean, sd = hurdle_lognormal_moments(jax.nn.sigmoid(q["purchase"]), q["log_amount"], jnp.exp(q["log_amount_sd"]))
        numpyro.deterministic("mean", mean)
        numpyro.deterministic("sd", sd)
        lik = HurdleLogNormal(obs["purchase"], obs["log_amount"], jnp.exp(obs["log_amount_sd"]))
        with numpyro.plate("units", a.shape[0]), numpyro.handlers.mask(mask=mask):
            numpyro.sample("y", lik, obs=y)

    model.__doc__ = f"NumPyro model of prior {spec.name!r} (hurdle lognormal, smoothness class {smoothness_class})."
    return model


def known_variance_model(
    spec: PriorSpec, sigma: float | np.ndarray, smoothness_class: int | None = None
) -> Model:
    r"""The mean-series-only model with known noise sd: the conjugate teacher's working model.

    :math:`\theta^{\mu}_a \sim N(m_a, \mathrm{diag}(s_a)^2)`,
    :math:`Y \mid x, a \sim N(\theta^{\mu}_a \cdot \phi(u), \sigma_a^2)` with known
    :math:`\sigma_a` (``sigma``: a number or one per arm, ``(2,)``). The posterior is Gaussian
    with precision :math:`\Phi_a^\top\Phi_a/\sigma_a^2 + \mathrm{diag}(s_a^{-2})`, so NUTS on this
    model can be checked against the closed form. Gaussian likelihood whatever the file's
    family (not defined for bernoulli). Same call protocol and sites as :func:`numpyro_model`
    (``sd`` is :math:`\sigma_a` at every query point).
    """
    if spec.family in ("bernoulli", "hurdle_lognormal"):
        raise ValueError(f"known_variance_model: prior {spec.name!r} has {spec.family} outcomes (no mean series)")
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (2,)).copy()
    if not np.all(np.isfinite(sig) & (sig > 0)):
        raise ValueError(f"sigma: expected positive numbers, got {sigma!r}")
    n_terms = spec.n_terms
    loc_m, sd_m = prior_arrays(spec, "mean", smoothness_class)

    def model(x, a, y, mask, x_query):
        x, a, y, mask = mask_padding(x, a, y, mask)
        phi = cosine_features(x, n_terms)
        phi_q = cosine_features(jnp.asarray(x_query), n_terms)
        theta_m = _coefficients("mean", loc_m, sd_m)
        f_obs = jnp.sum(phi * theta_m[a], axis=-1)
        numpyro.deterministic("mean", theta_m @ phi_q.T)
        numpyro.deterministic("sd", jnp.broadcast_to(jnp.asarray(sig)[:, None], (2, phi_q.shape[0])))
        with numpyro.plate("units", a.shape[0]), numpyro.handlers.mask(mask=mask):
            numpyro.sample("y", dist.Normal(f_obs, jnp.asarray(sig)[a]), obs=y)

    return model
