r"""The :class:`Environment` protocol and its generic implementations.

The public benchmark scenarios built from them live in :mod:`bayesdesign.design.scenarios`.

An environment draws covariates and potential outcomes. Synthetic and replay environments also
know the truth: the arm-conditional means :math:`\mu_a(x)`, standard deviations
:math:`\sigma_a(x)` and the ATE :math:`\tau = E[\mu_1(X) - \mu_0(X)]`.

Arrays of covariates have shape ``(..., d)`` and every method maps them elementwise to
``(...)``. A *task batch* (an environment whose truth differs per replication, like scenario S4)
requires the leading axis to index its tasks; distributions over tasks implement
:class:`TaskDistribution` and are turned into a task batch by the runner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..basis import _namespace, cosine_features, series_eval, to_unit

__all__ = [
    "Environment",
    "SyntheticEnvironment",
    "TaskDistribution",
    "FunctionEnvironment",
    "HurdleLogNormalEnvironment",
    "hurdle_lognormal_moments",
    "hurdle_lognormal_sample",
    "tensor_midpoint",
    "SeriesTaskBatch",
    "Rescaled",
    "rescale",
    "is_task_distribution",
    "evaluate",
    "quadrature",
]


@runtime_checkable
class Environment(Protocol):
    """Draws covariates and outcomes of one arm. ``bounds`` is ``(low, high)``, each ``(d,)``."""

    d: int
    bounds: tuple[np.ndarray, np.ndarray]

    def sample_covariates(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` covariate vectors, ``(n, d)``."""

    def sample_outcomes(self, rng: np.random.Generator, x: np.ndarray, arm) -> np.ndarray:
        """One outcome per row of ``x`` (..., d) under ``arm`` (0/1, scalar or array) -> (...)."""


@runtime_checkable
class SyntheticEnvironment(Environment, Protocol):
    """An environment that knows its truth (used by the oracle design and for scoring)."""

    def mean(self, x: np.ndarray, arm) -> np.ndarray:
        """:math:`\\mu_a(x)`."""

    def sd(self, x: np.ndarray, arm) -> np.ndarray:
        """:math:`\\sigma_a(x)`."""

    @property
    def ate(self) -> float | np.ndarray:
        """The true ATE (an array over tasks for a task batch)."""


@runtime_checkable
class TaskDistribution(Protocol):
    """A distribution over environments; ``sample_tasks`` returns a task batch of ``n`` tasks."""

    d: int
    bounds: tuple[np.ndarray, np.ndarray]

    def sample_tasks(self, rng: np.random.Generator, n: int) -> SyntheticEnvironment: ...


def _arm_select(arm, f1: np.ndarray, f0: np.ndarray) -> np.ndarray:
    arm = np.asarray(arm)
    return np.where(arm == 1, f1, f0)


def _noise(rng: np.random.Generator, kind: str, shape) -> np.ndarray:
    if kind == "gaussian":
        return rng.standard_normal(shape)
    if kind == "t3":
        return rng.standard_t(3, size=shape) / np.sqrt(3.0)
    raise ValueError(f"noise: expected 'gaussian' or 't3', got {kind!r}")


@dataclass(kw_only=True)
class _Box:
    """Covariates uniform on the box ``[low, high]`` (each ``(d,)``, default the unit cube), with
    the truth's functions written on unit-cube points :math:`u = (x - low) / (high - low)`.
    ``quad_n``: nodes per covariate of the tensor midpoint rule used for the truth."""

    d: int = 1
    description: str = ""
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    quad_n: tuple[int, ...] | None = None
    bounds: tuple[np.ndarray, np.ndarray] = field(init=False)

    def _init_box(self):
        low = np.zeros(self.d) if self.low is None else self.low
        high = np.ones(self.d) if self.high is None else self.high
        low = np.broadcast_to(np.asarray(low, float), (self.d,)).copy()
        high = np.broadcast_to(np.asarray(high, float), (self.d,)).copy()
        if np.any(high <= low):
            raise ValueError(f"{self.name}: bounds: expected low < high, got low={low}, high={high}")
        if self.quad_n is not None and len(self.quad_n) != self.d:
            raise ValueError(f"{self.name}: quad_n: need one node count per covariate ({self.d}), got {self.quad_n}")
        self.low, self.high = low, high
        self.bounds = (low, high)

    def _unit(self, x) -> np.ndarray:
        return to_unit(np.asarray(x, dtype=float), self.low, self.high)

    def sample_covariates(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.low + rng.uniform(size=(n, self.d)) * (self.high - self.low)

    def quadrature(self):
        """Nodes (in the box's units) and weights of the covariate distribution, for the
        efficiency bounds: a tensor-product midpoint rule with ``quad_n`` nodes per covariate
        when given, else :func:`quadrature`."""
        u, w = quadrature(self.d) if self.quad_n is None else tensor_midpoint(self.quad_n)
        return self.low + u * (self.high - self.low), w

    @property
    def ate(self) -> float:
        x, w = self.quadrature()
        return float(np.sum(w * (self.mean(x, 1) - self.mean(x, 0))))


@dataclass
class FunctionEnvironment(_Box):
    r"""Covariates uniform on ``[low, high]`` (default ``[0, 1]^d``); outcomes
    :math:`\mu_a(x) + \sigma_a(x)\varepsilon`.

    ``mu`` and ``sigma`` are pairs ``(f0, f1)`` of functions of unit-cube points ``(..., d)``
    (:math:`u = (x - low)/(high - low)`), so a scenario is written once and lives in any units.
    ``noise`` is ``'gaussian'``, ``'t3'`` (Student-t(3) scaled to unit variance) or
    ``'bernoulli'`` (then ``mu`` is :math:`P(Y = 1)` and :math:`\sigma` is implied).
    ``quad_n`` (one node count per covariate) selects the tensor-product midpoint rule used for
    the efficiency bounds; a covariate nothing depends on needs one node.
    """

    name: str
    mu: tuple[Callable, Callable]
    sigma: tuple[Callable, Callable] | None = None
    noise: str = "gaussian"

    def __post_init__(self):
        self._init_box()
        if self.noise != "bernoulli" and self.sigma is None:
            raise ValueError(f"{self.name}: sigma functions are required for {self.noise} noise")

    def mean(self, x, arm):
        u = self._unit(x)
        return _arm_select(arm, self.mu[1](u), self.mu[0](u))

    def sd(self, x, arm):
        if self.noise == "bernoulli":
            p = self.mean(x, arm)
            return np.sqrt(p * (1.0 - p))
        u = self._unit(x)
        return _arm_select(arm, self.sigma[1](u), self.sigma[0](u))

    def sample_outcomes(self, rng, x, arm):
        x = np.asarray(x, dtype=float)
        shape = x.shape[:-1]
        if self.noise == "bernoulli":
            return (rng.uniform(size=shape) < self.mean(x, arm)).astype(float)
        return self.mean(x, arm) + self.sd(x, arm) * _noise(rng, self.noise, shape)


_MAX_LOG = 80.0  # exp stays finite in float32


def hurdle_lognormal_moments(p, m, s) -> tuple[np.ndarray, np.ndarray]:
    r"""Mean and sd of :math:`Y = B \cdot e^{m + s Z}`, :math:`B \sim \mathrm{Bernoulli}(p)`,
    :math:`Z \sim N(0, 1)` independent (a hurdle / zero-inflated lognormal, e.g. revenue with
    non-buyers): with :math:`E[Y] = p\, e^{m + s^2/2}` and :math:`E[Y^2] = p\, e^{2m + 2s^2}`,

    .. math::
        \mu = p\, e^{m + s^2/2}, \qquad
        \sigma^2 = p\, e^{2m + 2s^2} - \mu^2 = e^{2m + s^2}\, p\,(e^{s^2} - p),

    the second form free of cancellation (positive whenever :math:`p > 0`). Computed in log space,
    :math:`\log\sigma^2 = \log p + 2m + 2s^2 + \log(1 - p e^{-s^2})`, with the log moments capped
    at 80: a wild posterior draw (a sampling teacher's) gives large but finite moments in float32
    instead of ``inf`` (whose ratio made a NaN probability).

    The one home of these moments: scenario S8, the hurdle family of prior files (tasks, NumPyro
    model, conjugate teacher) and the example user model all use it. NumPy or JAX arrays (the result
    is of the kind of ``p``, ``m``, ``s``: JAX if any of them is a JAX array).
    """
    xp = next((ns for ns in map(_namespace, (p, m, s)) if ns is not np), np)
    if xp is np:
        p, m, s = (np.asarray(v, dtype=float) for v in (p, m, s))
    s2 = s**2
    with np.errstate(divide="ignore"):  # p = 0: log p = -inf, moments 0
        log_p = xp.log(p)
    log_mean = log_p + m + 0.5 * s2
    log_var = log_p + 2.0 * m + 2.0 * s2 + xp.log1p(-xp.exp(log_p - s2))
    return xp.exp(xp.minimum(log_mean, _MAX_LOG)), xp.exp(xp.minimum(0.5 * log_var, _MAX_LOG))


def hurdle_lognormal_sample(rng: np.random.Generator, p, m, s) -> np.ndarray:
    """Draws of :math:`Y = B e^{m + s Z}` (:func:`hurdle_lognormal_moments`), one per element of
    the arrays ``p``, ``m``, ``s`` (same shape): the purchase uniforms first, then the normals."""
    buy = rng.uniform(size=np.shape(p)) < p
    return np.where(buy, np.exp(m + s * rng.standard_normal(np.shape(p))), 0.0)


@dataclass
class HurdleLogNormalEnvironment(_Box):
    r"""Zero-inflated lognormal outcomes: arm :math:`a` at :math:`x` is nonzero with probability
    :math:`p_a(u)` and then :math:`\mathrm{LogNormal}(m_a(u), s_a(u))`; mean and sd implied
    (:func:`hurdle_lognormal_moments`). ``p``, ``m``, ``s`` are pairs ``(f0, f1)`` of functions of
    unit-cube points, as in :class:`FunctionEnvironment`.
    """

    name: str
    p: tuple[Callable, Callable]
    m: tuple[Callable, Callable]
    s: tuple[Callable, Callable]

    def __post_init__(self):
        self._init_box()

    def params(self, x, arm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:math:`(p_a, m_a, s_a)` at covariates ``x`` (..., d)."""
        u = self._unit(x)
        return tuple(_arm_select(arm, f[1](u), f[0](u)) for f in (self.p, self.m, self.s))

    def mean(self, x, arm):
        return hurdle_lognormal_moments(*self.params(x, arm))[0]

    def sd(self, x, arm):
        return hurdle_lognormal_moments(*self.params(x, arm))[1]

    def sample_outcomes(self, rng, x, arm):
        return hurdle_lognormal_sample(rng, *self.params(x, arm))


def tensor_midpoint(n: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Tensor-product midpoint rule on ``[0, 1]^d`` with ``n[j]`` nodes along coordinate ``j``."""
    axes = [(np.arange(k) + 0.5) / k for k in n]
    u = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(n))
    return u, np.full(u.shape[0], 1.0 / u.shape[0])


def quadrature(d: int, n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint nodes and weights for the uniform measure on ``[0, 1]^d`` (Monte Carlo if d > 1)."""
    if d == 1:
        u = (np.arange(n) + 0.5) / n
        return u[:, None], np.full(n, 1.0 / n)
    rng = np.random.default_rng(12345)
    m = 100_000
    return rng.uniform(size=(m, d)), np.full(m, 1.0 / m)


@dataclass
class SeriesTaskBatch:
    r"""A batch of tasks drawn from a Gaussian-series prior; axis 0 of every input is the task.

    ``theta_mean`` and ``theta_logsd`` have shape ``(tasks, arm=2, F)``:
    :math:`\mu_a(x) = \theta^{\mu}_a \cdot \phi(u)`, :math:`\log\sigma_a(x) = \theta^{s}_a \cdot \phi(u)`.
    """

    theta_mean: np.ndarray
    theta_logsd: np.ndarray
    n_terms: int
    d: int = 1
    name: str = "series-tasks"

    def __post_init__(self):
        self.bounds = (np.zeros(self.d), np.ones(self.d))

    @property
    def n_tasks(self) -> int:
        return self.theta_mean.shape[0]

    def _check(self, x):
        x = np.asarray(x, dtype=float)
        if x.ndim < 3 or x.shape[0] != self.n_tasks:
            raise ValueError(
                f"x: a task batch of {self.n_tasks} tasks expects shape ({self.n_tasks}, n, {self.d}), got {x.shape}"
            )
        return x

    def _eval(self, theta, x, arm):
        x = self._check(x)
        lead = x.shape[1:-1]
        u = x.reshape(self.n_tasks, -1, self.d)
        if self.n_tasks > 1 and np.array_equal(u, np.broadcast_to(u[:1], u.shape)):
            # the same points for every task (quadrature nodes): the basis once, then a product
            phi = cosine_features(u[0], self.n_terms)  # (N, F)
            f1, f0 = (theta[:, arm_] @ phi.T for arm_ in (1, 0))
            f1, f0 = f1.reshape(self.n_tasks, *lead), f0.reshape(self.n_tasks, *lead)
        else:
            f1 = series_eval(theta[:, 1], u, self.n_terms).reshape(self.n_tasks, *lead)
            f0 = series_eval(theta[:, 0], u, self.n_terms).reshape(self.n_tasks, *lead)
        return _arm_select(arm, f1, f0)

    def sample_covariates(self, rng, n):
        return rng.uniform(size=(n, self.d))

    def mean(self, x, arm):
        return self._eval(self.theta_mean, x, arm)

    def sd(self, x, arm):
        return np.exp(self._eval(self.theta_logsd, x, arm))

    def sample_outcomes(self, rng, x, arm):
        x = self._check(x)
        return self.mean(x, arm) + self.sd(x, arm) * rng.standard_normal(x.shape[:-1])

    def quadrature(self, n: int = 2000):
        """Midpoint nodes for the smooth series (exact for its cosines well below ``n``)."""
        return quadrature(self.d, n)

    @property
    def ate(self) -> np.ndarray:
        # the constant basis function carries the whole integral of a cosine series
        return self.theta_mean[:, 1, 0] - self.theta_mean[:, 0, 0]


@dataclass
class Rescaled:
    """Wrap an environment so covariates live on ``[low, high]`` and outcomes are
    ``shift + scale * y``. Every design must behave identically on the wrapped environment."""

    env: object
    low: np.ndarray
    high: np.ndarray
    shift: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        self.low = np.broadcast_to(np.asarray(self.low, float), (self.env.d,)).copy()
        self.high = np.broadcast_to(np.asarray(self.high, float), (self.env.d,)).copy()
        if np.any(self.high <= self.low):
            raise ValueError(f"bounds: expected low < high, got low={self.low}, high={self.high}")
        if not self.scale > 0:
            raise ValueError(f"scale: expected a positive number, got {self.scale}")
        self.d = self.env.d
        self.bounds = (self.low, self.high)
        self.name = getattr(self.env, "name", "env") + "-rescaled"

    def _inner(self, x):
        lo, hi = self.env.bounds
        return lo + to_unit(x, self.low, self.high) * (hi - lo)

    def sample_covariates(self, rng, n):
        lo, hi = self.env.bounds
        u = (self.env.sample_covariates(rng, n) - lo) / (hi - lo)
        return self.low + u * (self.high - self.low)

    def sample_outcomes(self, rng, x, arm):
        return self.shift + self.scale * self.env.sample_outcomes(rng, self._inner(x), arm)

    def mean(self, x, arm):
        return self.shift + self.scale * self.env.mean(self._inner(x), arm)

    def sd(self, x, arm):
        return self.scale * self.env.sd(self._inner(x), arm)

    @property
    def ate(self):
        return self.scale * np.asarray(self.env.ate)

    @property
    def n_tasks(self):
        return getattr(self.env, "n_tasks", None)

    def quadrature(self):
        """The wrapped environment's quadrature moved to ``[low, high]``; ``None`` when it has none
        (a user environment: :func:`~bayesdesign.efficiency.truth` then integrates by Monte Carlo)."""
        q = self.env.quadrature() if hasattr(self.env, "quadrature") else None
        if q is None:
            return None
        u, w = q
        lo, hi = self.env.bounds
        return self.low + (u - lo) / (hi - lo) * (self.high - self.low), w


@dataclass
class RescaledTasks:
    """:class:`Rescaled` for a task distribution: every sampled task batch is rescaled."""

    dist: object
    low: np.ndarray
    high: np.ndarray
    shift: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        self.d = self.dist.d
        self.bounds = (np.broadcast_to(self.low, (self.d,)), np.broadcast_to(self.high, (self.d,)))
        self.name = getattr(self.dist, "name", "tasks") + "-rescaled"

    def sample_tasks(self, rng, n):
        return Rescaled(self.dist.sample_tasks(rng, n), self.low, self.high, self.shift, self.scale)


def is_task_distribution(env) -> bool:
    """A task distribution samples environments but no outcomes itself."""
    return hasattr(env, "sample_tasks") and not hasattr(env, "sample_outcomes")


def rescale(env, low, high, shift: float = 0.0, scale: float = 1.0):
    """Put ``env`` (or a task distribution) on covariate box ``[low, high]`` and outcome units
    ``shift + scale * y``."""
    cls = RescaledTasks if is_task_distribution(env) else Rescaled
    return cls(env, low, high, shift, scale)


def evaluate(env, method: str, x: np.ndarray, arm, rng: np.random.Generator | None = None) -> np.ndarray:
    """Call ``env.method(x, arm)`` (``env.method(rng, x, arm)`` when ``rng`` is given) on
    covariates ``x`` of shape (B, m, d) -> (B, m).

    A task batch takes ``x`` whole (axis 0 indexes its tasks); an ordinary environment gets
    the rows as ``(B * m, d)``, the shape the protocol promises it.
    """
    b, m, d = x.shape
    rows = x if getattr(env, "n_tasks", None) else x.reshape(b * m, d)
    fn = getattr(env, method)
    out = fn(rows, arm) if rng is None else fn(rng, rows, arm)
    out = np.asarray(out, dtype=float)
    if out.size != b * m:
        raise ValueError(f"environment.{method}: expected {b * m} values (one per row of x), got shape {out.shape}")
    return out.reshape(b, m)
