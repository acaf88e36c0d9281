"""The student: an in-context transformer that imitates a posterior Neyman teacher in 0.13 ms per
decision at a history of 1000 units (docs/benchmarks.md; DESIGN.md sections 1, 5 and 6).

* :mod:`~bayesdesign.student.model` — the network (per-token history embeddings, query
  cross-attention, mixture of experts over smoothness classes with a gate for :math:`P(k \\mid H)`);
* :mod:`~bayesdesign.student.data` — training examples from teacher traces;
* :mod:`~bayesdesign.student.distil` — :func:`distil`, the training procedure;
* :mod:`~bayesdesign.student.checkpoint` — safetensors + JSON checkpoints, :func:`load_student`;
* :mod:`~bayesdesign.student.policy` — :class:`StudentPolicy`, the design ``student:DIR``
  (``student:pretrained`` for the shipped one).
"""

from __future__ import annotations

from ..design.registry import register_prefix
from .checkpoint import Student, load_student, save_student
from .distil import DistilResult, distil
from .model import StudentConfig, StudentModel
from .policy import StudentPolicy, design_factory, load_policy
from .scaling import InputScaling

__all__ = [
    "Student",
    "StudentConfig",
    "StudentModel",
    "StudentPolicy",
    "InputScaling",
    "DistilResult",
    "distil",
    "load_student",
    "save_student",
    "load_policy",
]

register_prefix("student", design_factory)
