"""Posterior Neyman teachers: ``conjugate`` (closed form), ``mixture`` (conjugate over
smoothness classes), ``nuts`` and ``svi`` (NumPyro), behind one :class:`Teacher` protocol.

On the command line and in :func:`bayesdesign.simulate` a teacher is the design
``teacher:BACKEND:PRIOR``, e.g. ``teacher:conjugate:priors/beta1.yaml`` or
``teacher:mixture:smoothness-mixture`` (a shipped prior's name); suffixes set
:class:`TeacherConfig` fields (:data:`~bayesdesign.design.registry.SUFFIXES`): ``:safe``
(``teacher:mixture:unit-free:safe``) is :data:`SAFE` (``TeacherConfig(safe=0.5, robust=True,
spike=0)``), ``:log-odds`` the log-odds rule without the spike, ``:sd`` the Neyman ratio of
posterior mean sds (``rule="sd"``, ``spike=0``). The closed-form teachers' default is the
spike-and-slab log-odds rule; the sampling teachers' the ``sd`` rule.
"""

from __future__ import annotations

from ..design.registry import SUFFIXES, register_prefix, split_suffixes
from ..spec import load_prior
from .base import Teacher, TeacherConfig
from .conjugate import ConjugateTeacher

__all__ = ["Teacher", "TeacherConfig", "ConjugateTeacher", "make_teacher", "BACKENDS", "SAFE"]

BACKENDS = ("conjugate", "mixture", "nuts", "svi")


def make_teacher(backend: str, prior, config: TeacherConfig | None = None, **kwargs):
    """The teacher ``backend`` for prior file (or spec) ``prior``."""
    spec = prior if hasattr(prior, "hash") else load_prior(prior)
    if backend in ("conjugate", "mixture"):
        from .hurdle import conjugate_teacher  # the class by the prior's family
    if backend == "conjugate":
        return conjugate_teacher(spec, config, **kwargs)
    if backend == "mixture":
        if not spec.is_mixture:
            raise ValueError(
                f"{spec.source}: teacher 'mixture' needs a prior with a smoothness block "
                "(smoothness: {choices: [...], weights: [...]}); use 'conjugate' for a single class"
            )
        teacher = conjugate_teacher(spec, config, **kwargs)
        teacher.name = "teacher:mixture"
        return teacher
    conjugate_only = config is not None and (
        config.safe or config.robust or config.spike or config.rule != "sd" or config.reweight
        or config.variance_law != "normal"
    )
    if backend in ("nuts", "svi") and (spec.outcome.standardize or conjugate_only):
        raise ValueError(
            f"{spec.source}: outcome.standardize and the safe / robust / log-odds / spike / reweight / variance_law "
            "settings are "
            f"supported by the conjugate and mixture teachers only, not {backend!r} (its default is the 'sd' rule; "
            "TeacherConfig(rule='sd', spike=0.0))"
        )
    if backend == "nuts":
        from .nuts import NUTSTeacher  # lazy: NumPyro's samplers load only for this backend

        return NUTSTeacher(spec, config, **kwargs)
    if backend == "svi":
        from .svi import SVITeacher  # lazy: as above

        return SVITeacher(spec, config, **kwargs)
    raise ValueError(f"teacher: unknown backend {backend!r}; expected one of {list(BACKENDS)}")


SAFE = TeacherConfig(**SUFFIXES["safe"])
"""The settings of a design named ``teacher:BACKEND:PRIOR:safe``."""


def _design_factory(rest: str, env, horizon: int):
    backend, sep, prior = rest.partition(":")
    if not sep or not prior:
        raise ValueError(f"design: expected 'teacher:BACKEND:PRIOR' (backends {list(BACKENDS)}), got 'teacher:{rest}'")
    prior, settings = split_suffixes(prior)
    # make_design checks the teacher's box against the environment's
    return make_teacher(backend, prior, TeacherConfig(**settings) if settings else None)


register_prefix("teacher", _design_factory)
