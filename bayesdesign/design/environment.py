r"""The :class:`Environment` protocol and the public benchmark scenarios S1–S6.

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

from ..basis import series_eval, to_unit

__all__ = [
    "Environment",
    "SyntheticEnvironment",
    "TaskDistribution",
    "FunctionEnvironment",
    "SeriesPriorTasks",
    "SeriesTaskBatch",
    "Rescaled",
    "rescale",
    "is_task_distribution",
    "SCENARIOS",
    "get_scenario",
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


@dataclass
class FunctionEnvironment:
    r"""Covariates uniform on ``[0, 1]^d``; outcomes :math:`\mu_a(x) + \sigma_a(x)\varepsilon`.

    ``mu`` and ``sigma`` are pairs ``(f0, f1)`` of functions of unit-cube points ``(..., d)``.
    ``noise`` is ``'gaussian'``, ``'t3'`` (Student-t(3) scaled to unit variance) or
    ``'bernoulli'`` (then ``mu`` is :math:`P(Y = 1)` and :math:`\sigma` is implied).
    """

    name: str
    mu: tuple[Callable, Callable]
    sigma: tuple[Callable, Callable] | None = None
    noise: str = "gaussian"
    d: int = 1
    description: str = ""
    bounds: tuple[np.ndarray, np.ndarray] = field(init=False)

    def __post_init__(self):
        self.bounds = (np.zeros(self.d), np.ones(self.d))
        if self.noise != "bernoulli" and self.sigma is None:
            raise ValueError(f"{self.name}: sigma functions are required for {self.noise} noise")

    def sample_covariates(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(size=(n, self.d))

    def mean(self, x, arm):
        x = np.asarray(x, dtype=float)
        return _arm_select(arm, self.mu[1](x), self.mu[0](x))

    def sd(self, x, arm):
        x = np.asarray(x, dtype=float)
        if self.noise == "bernoulli":
            p = self.mean(x, arm)
            return np.sqrt(p * (1.0 - p))
        return _arm_select(arm, self.sigma[1](x), self.sigma[0](x))

    def sample_outcomes(self, rng, x, arm):
        x = np.asarray(x, dtype=float)
        shape = x.shape[:-1]
        if self.noise == "bernoulli":
            return (rng.uniform(size=shape) < self.mean(x, arm)).astype(float)
        return self.mean(x, arm) + self.sd(x, arm) * _noise(rng, self.noise, shape)

    def quadrature(self):
        """Nodes and weights of the covariate distribution, for exact efficiency bounds."""
        return quadrature(self.d)

    @property
    def ate(self) -> float:
        u, w = quadrature(self.d)
        return float(np.sum(w * (self.mean(u, 1) - self.mean(u, 0))))


def quadrature(d: int, n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint nodes and weights for the uniform measure on ``[0, 1]^d`` (Monte Carlo if d > 1)."""
    if d == 1:
        u = (np.arange(n) + 0.5) / n
        return u[:, None], np.full(n, 1.0 / n)
    rng = np.random.default_rng(12345)
    m = 100_000
    return rng.uniform(size=(m, d)), np.full(m, 1.0 / m)


def _x(u):
    return u[..., 0]


SCENARIOS: dict[str, Callable[[], object]] = {}


def _register(name: str):
    def deco(fn):
        SCENARIOS[name] = fn
        return fn

    return deco


@_register("S1")
def _s1():
    return FunctionEnvironment(
        "S1",
        mu=(lambda u: np.zeros_like(_x(u)), lambda u: np.sin(2 * np.pi * _x(u))),
        sigma=(lambda u: np.ones_like(_x(u)), lambda u: np.ones_like(_x(u))),
        description="homoskedastic: no gain possible",
    )


def _s2_like(name, noise):
    return FunctionEnvironment(
        name,
        mu=(lambda u: _x(u), lambda u: 1.0 + _x(u)),
        sigma=(lambda u: np.exp(1.0 - 2.0 * _x(u)), lambda u: np.exp(2.0 * _x(u) - 1.0)),
        noise=noise,
        description="smooth heteroskedastic" + (" with Student-t(3) noise" if noise == "t3" else ""),
    )


@_register("S2")
def _s2():
    return _s2_like("S2", "gaussian")


@_register("S3")
def _s3():
    return FunctionEnvironment(
        "S3",
        mu=(lambda u: np.zeros_like(_x(u)), lambda u: _x(u)),
        sigma=(lambda u: np.ones_like(_x(u)), lambda u: np.where(_x(u) > 0.7, 3.0, 0.5)),
        description="rough (discontinuous) variance",
    )


@_register("S5")
def _s5():
    return FunctionEnvironment(
        "S5",
        mu=(lambda u: np.full_like(_x(u), 0.5), lambda u: 0.2 + 0.6 * _x(u)),
        noise="bernoulli",
        description="binary outcomes (conversion rates)",
    )


@_register("S6")
def _s6():
    return _s2_like("S6", "t3")


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
class SeriesPriorTasks:
    r"""Scenario S4: tasks from the Gaussian-series prior of smoothness ``beta``.

    Per arm, :math:`\mu_a` and :math:`\log\sigma_a` are independent series with
    :math:`\theta_j \sim N(0, c^2 (j+1)^{-(2\beta+1)})`, scales ``mean_scale`` and ``logsd_scale``.
    The default ``logsd_scale = 0.6`` makes the ratio of the arms' sds span 0.3 to 3.3 between its
    10% and 90% quantiles, and complete randomization's variance ratio average 1.16 over tasks.
    """

    beta: float = 1.0
    n_terms: int = 10
    mean_scale: float = 1.0
    logsd_scale: float = 0.6
    d: int = 1
    name: str = "S4"
    description: str = "tasks drawn from the beta = 1 Gaussian-series prior"

    def __post_init__(self):
        self.bounds = (np.zeros(self.d), np.ones(self.d))

    def prior(self) -> dict:
        """The prior file these settings describe (one shared series per part, zero offsets)."""
        names = ["x"] if self.d == 1 else [f"x{i + 1}" for i in range(self.d)]

        def series(scale):
            return {"series": "cosine", "terms": self.n_terms, "beta": self.beta, "scale": scale, "offset": 0.0}

        return {
            "name": self.name,
            "description": self.description,
            "covariates": [{"name": c, "low": 0.0, "high": 1.0} for c in names],
            "outcome": {"family": "gaussian"},
            "arms": {"shared": {"mean": series(self.mean_scale), "log_sd": series(self.logsd_scale)}},
        }

    def sample_tasks(self, rng: np.random.Generator, n: int) -> SeriesTaskBatch:
        """``n`` tasks, drawn by :func:`bayesdesign.models.sample_tasks` from :meth:`prior` (the one
        implementation of prior task sampling)."""
        from ..models import sample_tasks
        from ..spec import PriorSpec

        return sample_tasks(PriorSpec.from_dict(self.prior(), source=f"scenario {self.name}"), rng, n)[0]


SCENARIOS["S4"] = SeriesPriorTasks


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
        if not hasattr(self.env, "quadrature"):
            raise AttributeError("quadrature")
        u, w = self.env.quadrature()
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


def get_scenario(name: str, **kwargs):
    """The public scenario ``name`` (``'S1'``..``'S6'``)."""
    key = name.upper()
    if key not in SCENARIOS:
        raise ValueError(f"scenario: unknown name {name!r}; expected one of {sorted(SCENARIOS)}")
    return SCENARIOS[key](**kwargs)
