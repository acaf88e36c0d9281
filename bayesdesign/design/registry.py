"""Design names on the command line and in :func:`~bayesdesign.simulate`.

``uniform``, ``oracle``, ``explore-then-neyman``, ``clip-ogd``, ``clip-smt``, ``clip-ogd-sc``,
``plugin-neyman``; later issues
add ``teacher:BACKEND:PRIOR`` and ``student:DIR``. Prefixed names dispatch to factories
registered with :func:`register_prefix`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .baselines import ClipOGD, ClipOGDSC, ClipSMT, ExploreThenNeyman, OracleNeyman, PluginNeyman, Uniform
from .policy import check_policy_fits

__all__ = ["BASELINES", "SUFFIXES", "make_design", "register_prefix", "design_names", "split_suffixes"]

BASELINES: dict[str, Callable] = {
    "uniform": lambda env, horizon: Uniform(env.bounds),
    "oracle": lambda env, horizon: OracleNeyman(env),
    "explore-then-neyman": lambda env, horizon: ExploreThenNeyman(env.bounds, horizon),
    "clip-ogd": lambda env, horizon: ClipOGD(env.bounds, horizon),
    "clip-smt": lambda env, horizon: ClipSMT(env.bounds),
    "clip-ogd-sc": lambda env, horizon: ClipOGDSC(env.bounds, horizon),
    "plugin-neyman": lambda env, horizon: PluginNeyman(env.bounds),
}

SUFFIXES: dict[str, dict] = {
    "safe": {"safe": 0.5, "robust": True, "spike": 0.0},
    "log-odds": {"rule": "log_sd", "spike": 0.0},
    "sd": {"rule": "sd", "spike": 0.0},
    "reweight": {"reweight": 50.0},
    "lognormal": {"variance_law": "lognormal", "spike": 0.6},
}
"""Suffixes of teacher and student design names and the ``TeacherConfig`` settings they give:
``teacher:mixture:unit-free:safe`` (the safe rule, robust variance), ``:log-odds`` (the log-odds
rule without the spike), ``:sd`` (the Neyman ratio of posterior mean sds, the default before the
spike-and-slab rule), ``:reweight`` (the reweighted second-moment regression beside the
unweighted one, ``TeacherConfig.reweight``), ``:lognormal`` (the lognormal law of the variance
with the spike at 0.6, ``TeacherConfig.variance_law``; the conjugate teachers and the students);
several may follow each other."""


def split_suffixes(name: str) -> tuple[str, dict]:
    """``"unit-free:safe"`` -> ``("unit-free", {"safe": 0.5, "robust": True, "spike": 0.0})``: the trailing
    :data:`SUFFIXES` of a design name removed and their settings merged."""
    settings: dict = {}
    base, sep, last = name.rpartition(":")
    while sep and last in SUFFIXES:
        settings = {**SUFFIXES[last], **settings}
        name = base
        base, sep, last = name.rpartition(":")
    return name, settings


_PREFIXES: dict[str, Callable] = {}
_LAZY = {"teacher": "bayesdesign.teachers", "student": "bayesdesign.student"}


def register_prefix(prefix: str, factory: Callable) -> None:
    """Register ``factory(rest, env, horizon)`` for design names ``prefix:rest``."""
    _PREFIXES[prefix] = factory


def design_names() -> list[str]:
    return list(BASELINES) + [f"{p}:..." for p in sorted(set(_PREFIXES) | set(_LAZY))]


def make_design(name: str, env, horizon: int):
    """Build the design called ``name`` for ``env`` (a task batch for S4) and ``horizon``; its
    covariate dimension and box are checked against the environment's (:func:`check_policy_fits`)."""
    if name in BASELINES:
        policy = BASELINES[name](env, horizon)
        policy.name = name
        return policy
    prefix, _, rest = name.partition(":")
    if rest and prefix in _LAZY and prefix not in _PREFIXES:
        importlib.import_module(_LAZY[prefix])  # registers the prefix; lazy: torch and JAX load only when used
    if rest and prefix in _PREFIXES:
        policy = _PREFIXES[prefix](rest, env, horizon)
        policy.name = name
        check_policy_fits(policy, env, name)
        return policy
    raise ValueError(f"design: unknown name {name!r}; expected one of {design_names()}")
