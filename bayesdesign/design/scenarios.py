r"""The public benchmark scenarios (DESIGN.md section 4), by name: :func:`get_scenario`.

Each scenario is built from the generic environments of :mod:`bayesdesign.design.environment`;
``SCENARIOS`` maps a name to a factory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .environment import FunctionEnvironment, SeriesPriorTasks

__all__ = ["SCENARIOS", "get_scenario"]

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


def get_scenario(name: str, **kwargs):
    """The public scenario ``name`` (one of :data:`SCENARIOS`)."""
    key = name.upper()
    if key not in SCENARIOS:
        raise ValueError(f"scenario: unknown name {name!r}; expected one of {sorted(SCENARIOS)}")
    return SCENARIOS[key](**kwargs)
