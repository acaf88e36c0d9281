"""Posterior Neyman teachers: ``conjugate`` (closed form), ``mixture`` (conjugate over
smoothness classes), ``nuts`` and ``svi`` (NumPyro), behind one :class:`Teacher` protocol.

On the command line and in :func:`bayesdesign.simulate` a teacher is the design
``teacher:BACKEND:PRIOR``, e.g. ``teacher:conjugate:priors/beta1.yaml`` or
``teacher:mixture:smoothness-mixture`` (a shipped prior's name).
"""

from __future__ import annotations

from ..design.registry import register_prefix
from ..spec import load_prior
from .base import Teacher, TeacherConfig
from .conjugate import ConjugateTeacher

__all__ = ["Teacher", "TeacherConfig", "ConjugateTeacher", "make_teacher", "BACKENDS"]

BACKENDS = ("conjugate", "mixture", "nuts", "svi")


def make_teacher(backend: str, prior, config: TeacherConfig | None = None, **kwargs):
    """The teacher ``backend`` for prior file (or spec) ``prior``."""
    spec = prior if hasattr(prior, "hash") else load_prior(prior)
    if backend == "conjugate":
        return ConjugateTeacher(spec, config, **kwargs)
    if backend == "mixture":
        if not spec.is_mixture:
            raise ValueError(
                f"{spec.source}: teacher 'mixture' needs a prior with a smoothness block "
                "(smoothness: {choices: [...], weights: [...]}); use 'conjugate' for a single class"
            )
        teacher = ConjugateTeacher(spec, config, **kwargs)
        teacher.name = "teacher:mixture"
        return teacher
    if backend == "nuts":
        from .nuts import NUTSTeacher  # lazy: NumPyro's samplers load only for this backend

        return NUTSTeacher(spec, config, **kwargs)
    if backend == "svi":
        from .svi import SVITeacher  # lazy: as above

        return SVITeacher(spec, config, **kwargs)
    raise ValueError(f"teacher: unknown backend {backend!r}; expected one of {list(BACKENDS)}")


def _design_factory(rest: str, env, horizon: int):
    backend, sep, prior = rest.partition(":")
    if not sep or not prior:
        raise ValueError(f"design: expected 'teacher:BACKEND:PRIOR' (backends {list(BACKENDS)}), got 'teacher:{rest}'")
    return make_teacher(backend, prior)  # make_design checks its box against the environment's


register_prefix("teacher", _design_factory)
