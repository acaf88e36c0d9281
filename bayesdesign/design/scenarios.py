r"""The public benchmark scenarios (DESIGN.md section 4), by name: :func:`get_scenario`.

Each scenario is built from the generic environments of :mod:`bayesdesign.design.environment`;
``SCENARIOS`` maps a name to a factory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .environment import FunctionEnvironment, HurdleLogNormalEnvironment, SeriesTaskBatch

__all__ = ["SCENARIOS", "get_scenario", "SeriesPriorTasks"]

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
        from ..models import sample_tasks  # lazy: JAX (and pydantic) load only when S4's tasks are drawn
        from ..spec import PriorSpec

        return sample_tasks(PriorSpec.from_dict(self.prior(), source=f"scenario {self.name}"), rng, n)[0]


SCENARIOS: dict[str, Callable[[], object]] = {}


def _register(name: str):
    def deco(fn):
        SCENARIOS[name] = fn
        return fn

    return deco


def _x(u):
    return u[..., 0]


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


SCENARIOS["S4"] = SeriesPriorTasks


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


# S7 and S8: covariates in their own units, tenure ``days`` in [0, 365] (u = days / 365) and past
# ``orders`` in [0, 50] (v = orders / 50); S7 adds a decoy ``score`` in [0, 1].
_DAYS_ORDERS = dict(low=(0.0, 0.0), high=(365.0, 50.0))
_QUAD = 400  # midpoint nodes per covariate the truth depends on (the bounds converge as n^-2)


@_register("S7")
def _s7():
    def base(u):
        return u[..., 0] + np.sin(2 * np.pi * u[..., 1]) / 2

    return FunctionEnvironment(
        "S7",
        mu=(base, lambda u: base(u) + 0.5 + 0.5 * u[..., 0]),
        sigma=(
            lambda u: np.exp(0.6 - 1.2 * u[..., 0]),
            lambda u: np.exp(1.2 * u[..., 0] - 0.6 + 0.3 * np.cos(np.pi * u[..., 1])),
        ),
        d=3,
        low=(0.0, 0.0, 0.0),
        high=(365.0, 50.0, 1.0),
        quad_n=(_QUAD, _QUAD, 1),
        description="three covariates in their own units (days, orders, a decoy score)",
    )


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@_register("S8")
def _s8():
    return HurdleLogNormalEnvironment(
        "S8",
        p=(lambda u: _sigmoid(-2.0 + 2.0 * u[..., 1]), lambda u: _sigmoid(-1.7 + 2.0 * u[..., 1])),
        m=(lambda u: 3.5 + 0.5 * u[..., 1],) * 2,
        s=(lambda u: 1.3 - u[..., 0], lambda u: 0.3 + u[..., 0]),
        d=2,
        quad_n=(_QUAD, _QUAD),
        description="revenue in dollars: zero-inflated lognormal, covariates days and orders",
        **_DAYS_ORDERS,
    )


@_register("S9")
def _s9():
    return FunctionEnvironment(
        "S9",
        mu=(lambda u: np.cos(3.0 * _x(u)), lambda u: np.cos(3.0 * _x(u)) + 0.5),
        sigma=(lambda u: np.exp(-1.5 * (2.0 * _x(u) - 1.0) ** 3), lambda u: np.exp(1.5 * (2.0 * _x(u) - 1.0) ** 3)),
        description="strong heteroskedasticity: log-sd amplitude beyond the default prior's scale",
    )


def _high_cells(u):
    """Cells 2 and 4 of four equal cells of [0, 1]."""
    return np.isin(np.minimum(np.floor(4.0 * _x(u)), 3.0), (1.0, 3.0))


@_register("S10")
def _s10():
    return FunctionEnvironment(
        "S10",
        mu=(lambda u: _x(u), lambda u: _x(u) + 1.0),
        sigma=(lambda u: np.where(_high_cells(u), 0.4, 2.0), lambda u: np.where(_high_cells(u), 2.0, 0.4)),
        description="a variance that jumps three times across four cells",
    )


def get_scenario(name: str, **kwargs):
    """The public scenario ``name`` (one of :data:`SCENARIOS`)."""
    key = name.upper()
    if key not in SCENARIOS:
        raise ValueError(f"scenario: unknown name {name!r}; expected one of {sorted(SCENARIOS)}")
    return SCENARIOS[key](**kwargs)
