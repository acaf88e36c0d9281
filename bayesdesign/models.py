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
  :math:`p_a = \mathrm{sigmoid}(f^{\mu}_a)`, sd :math:`\sqrt{p_a (1 - p_a)}`.

Two uses:

- **Simulation**: :func:`sample_tasks` / :class:`PriorTasks` draw task batches (environments
  that know their truth) from the prior, so a prior file is a simulation scenario.
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
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from scipy.special import expit

from .basis import cosine_features, prior_scales, series_eval
from .design.environment import Rescaled, SeriesTaskBatch
from .spec import PriorSpec, load_prior

__all__ = [
    "prior_arrays",
    "sample_tasks",
    "PriorTasks",
    "StudentTTaskBatch",
    "BernoulliTaskBatch",
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
    part : ``'mean'`` (:math:`\theta^{\mu}`) or ``'log_sd'`` (:math:`\theta^{s}`).
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

    @property
    def ate(self) -> np.ndarray:
        r""":math:`E[p_1(U) - p_0(U)]` per task by midpoint quadrature over the unit cube."""
        u, w = self.quadrature()
        out = np.empty(self.n_tasks)
        for s in range(0, self.n_tasks, 64):  # chunks bound the (tasks, nodes) memory
            th = self.theta_mean[s : s + 64]
            p1 = expit(series_eval(th[:, 1], u, self.n_terms))
            p0 = expit(series_eval(th[:, 0], u, self.n_terms))
            out[s : s + 64] = (p1 - p0) @ w
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
    same tasks as scenario S4 (:class:`~bayesdesign.design.environment.SeriesPriorTasks`) from the
    same generator.

    Parameters
    ----------
    spec : a prior with ``arms``.
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
    big_j, d = spec.n_terms, spec.d
    f = 1 + d * big_j
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
    low, high = spec.bounds
    if np.any(low != 0.0) or np.any(high != 1.0):
        wrapped = Rescaled(env, low, high)
        wrapped.name = spec.name
        return wrapped, classes
    return env, classes


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
        self.spec._require_arms()
        self.d = self.spec.d
        self.bounds = self.spec.bounds
        self.name = self.spec.name
        self.description = self.spec.description or ""

    def sample_tasks(self, rng: np.random.Generator, n: int) -> SeriesTaskBatch | Rescaled:
        """``n`` tasks from the prior (see :func:`sample_tasks`)."""
        return sample_tasks(self.spec, rng, n, self.smoothness_class)[0]


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
    Bernoulli models have no ``z_logsd``/``theta_logsd``.

    A prior with ``model:`` returns the user's model (the same protocol). For a smoothness
    mixture pass ``smoothness_class=k`` (:math:`\beta = \beta_k` in every series); the mixture
    over classes is the teacher's job, not a discrete latent in NUTS.
    """
    if spec.model is not None:
        if smoothness_class is not None:
            raise ValueError("smoothness_class: a user model has no smoothness classes")
        return spec.resolve_model()
    spec.class_beta(smoothness_class)  # a mixture needs a class; checks the index
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
    if spec.family == "bernoulli":
        raise ValueError(f"known_variance_model: prior {spec.name!r} has bernoulli outcomes")
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
