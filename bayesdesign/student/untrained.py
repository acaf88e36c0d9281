"""A student before training: the network initialized with its corrections at zero, so that it
decides exactly as the conjugate layer, i.e. as the mixture teacher's working model of its prior.

:func:`untrained_student` writes such a checkpoint. It is the reference every trained student is
measured against (its "zeroed copy"), and the shipped unit-free students are this
(``bayesdesign/pretrained/student-d1`` ... ``student-d3``; docs/student.md says why).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..spec import load_prior
from ..teachers.base import TeacherConfig
from .checkpoint import save_student
from .conjugate import layer_prior
from .model import StudentConfig, StudentModel
from .scaling import InputScaling

__all__ = ["untrained_student"]


def untrained_student(prior, out_dir: str | Path, *, seed: int = 0, teacher_config: TeacherConfig | None = None,
                      architecture: dict | None = None) -> Path:
    """Write the untrained student of ``prior`` (a path, shipped name or spec) for the mixture
    teacher with ``teacher_config`` (default :class:`~bayesdesign.teachers.base.TeacherConfig`;
    its ``safe`` rule and ``robust`` second-moment variance included) to ``out_dir``;
    ``architecture`` overrides :class:`~bayesdesign.student.model.StudentConfig`
    fields, ``seed`` seeds the (inert) network weights. Returns the folder."""
    from ..teachers.conjugate import prior_from_spec  # lazy: JAX only to build the prior

    spec = prior if hasattr(prior, "hash") else load_prior(prior)
    if spec.arms is None:
        raise ValueError(f"{spec.source}: an untrained student needs a series prior (the conjugate layer)")
    tc = (teacher_config or TeacherConfig()).to_dict()
    p = prior_from_spec(spec)
    cfg = StudentConfig(**{"d": p.d, "n_classes": len(p.log_w), "n_terms": p.n_terms,
                           "standardize": bool(spec.outcome.standardize), **(architecture or {})})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StudentModel(cfg)
    model.conj.set_prior(layer_prior(spec), tc)
    scaling = InputScaling.from_spec(spec)
    meta = {"prior": spec.to_dict(), "prior_hash": spec.hash(), "scaling": scaling.to_dict(), "teacher": "mixture",
            "teacher_config": tc, "training": None, "metrics": {}}
    return save_student(out_dir, model, meta)
