r"""How the student sees the data: covariates on the unit cube, outcomes on the prior's scale.

Covariates ``x`` in user units are mapped to :math:`u = (x - \text{low}) / (\text{high} - \text{low})`
(clipped to :math:`[0, 1]^d`) with the prior's declared bounds, as the teacher's basis does.

Outcomes are standardized per arm with the prior's own location and scale,

.. math::
    y_{\text{std}} = (y - \text{offset}^{\text{mean}}_a) / \exp(\text{offset}^{\log\sigma}_a),

i.e. by the prior mean of :math:`\mu_a` and the prior's typical sd :math:`\sqrt{v_0}` — exactly
the quantities the conjugate teacher centres and scales its regressions with, so the student sees
what the teacher's prior sees and its labels are functions of :math:`y_{\text{std}}` and
:math:`u` alone. For ``bernoulli`` outcomes the location is :math:`p_0 = \text{sigmoid}(\text{offset})`
and the scale :math:`\sqrt{p_0(1 - p_0)}` (the teacher's working model); priors given as a user
model (no series) use location 0 and scale 1. Standardized outcomes are **not** clamped
(:data:`Y_CLAMP` is infinite): the conjugate layer must see the outcomes the teacher sees. A clamp
at 10 standardized units used to cut heavy-tailed prior draws (``student-t``: 23.5 among 500
units), and the untrained student then differed from its own closed form by up to 0.14 in
:math:`\pi` on such histories (tests/test_student_scaling.py). Outcomes below 10 units, all the
shipped student was trained on, are mapped exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["InputScaling", "Y_CLAMP", "running_atom", "running_standardize"]

Y_CLAMP = float("inf")  # kept as the compiled engine's argument; no finite clamp


def _running_moments(y: np.ndarray, n0, s1, s2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per new unit the pooled mean and variance of all outcomes up to and including it, and
    whether they are defined (two distinct outcomes so far), given the earlier count and sums."""
    n = np.asarray(n0, float)[:, None] + np.arange(1, y.shape[1] + 1)
    c = (np.asarray(s1, float)[:, None] + np.cumsum(y, 1)) / n
    var = (np.asarray(s2, float)[:, None] + np.cumsum(y * y, 1)) / n - c**2
    return c, var, (n > 1) & (var > 1e-12 * np.maximum(c**2, 1e-300))


def running_standardize(y: np.ndarray, n0: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    r"""Outcomes of new units ``y`` (B, m) as history tokens under in-context standardization:
    :math:`(y_i - c_i)/s_i`, :math:`c_i, s_i` the pooled mean and sd of all outcomes up to and
    including unit :math:`i`, given the count ``n0``, sum ``s1`` and sum of squares ``s2`` (B,)
    of the earlier ones; 0 while fewer than two distinct outcomes exist (the teachers' rule in
    ``standardized_state``). Float64. Invariant to :math:`y \to c_0 + s_0 y` (:math:`s_0 > 0`);
    the torch form for training is :func:`bayesdesign.student.model.running_standardized`."""
    y = np.asarray(y, dtype=float)
    c, var, ok = _running_moments(y, n0, s1, s2)
    return np.where(ok, (y - c) / np.sqrt(np.where(ok, var, 1.0)), 0.0)


def running_atom(y: np.ndarray, n0: np.ndarray, s1: np.ndarray, s2: np.ndarray, low0: np.ndarray) -> np.ndarray:
    r"""Atom features ``(B, m, 2)`` of new units' outcomes ``y`` (B, m): whether :math:`y_i` ties the
    running minimum :math:`m_i` (of all outcomes up to and including unit :math:`i`; ``low0`` (B,)
    the minimum of the earlier ones, ``inf`` for none), and :math:`\log((y_i - m_i)/s_i)` clamped to
    :math:`[-10, 10]` (0 at the minimum, and while fewer than two distinct outcomes exist), given
    the count ``n0``, sum ``s1`` and sum of squares ``s2`` (B,) of the earlier ones (as
    :func:`running_standardize`). Float64. The torch form for training is
    :func:`bayesdesign.student.model.running_atom`."""
    y = np.asarray(y, dtype=float)
    c, var, ok = _running_moments(y, n0, s1, s2)
    low = np.minimum(np.asarray(low0, float)[:, None], np.minimum.accumulate(y, axis=1))
    tie = y <= low
    excess = np.where(ok & ~tie, (y - low) / np.sqrt(np.where(ok, var, 1.0)), 1.0)
    return np.stack([tie.astype(float), np.clip(np.log(excess), -10.0, 10.0)], -1)


@dataclass(frozen=True)
class InputScaling:
    """Affine maps of covariates and outcomes into the student's coordinates.

    ``low``, ``high`` (d,): covariate box; ``y_offset``, ``y_scale`` (2,): per-arm outcome location
    and scale (index 0 control, 1 treated); ``in_context``: the prior leaves the outcome's units
    to the data (``outcome.standardize``): offsets 0 and scales 1 here, and the student
    standardizes in context (:func:`running_standardize`, the conjugate layer's
    :func:`~bayesdesign.student.conjugate.standardize_sums`).
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    y_offset: tuple[float, float]
    y_scale: tuple[float, float]
    in_context: bool = False

    @classmethod
    def from_spec(cls, spec, bounds=None) -> InputScaling:
        """The scaling a :class:`~bayesdesign.spec.PriorSpec` implies (``bounds`` overrides its box)."""
        low, high = spec.bounds if bounds is None else bounds
        off, scale = [0.0, 0.0], [1.0, 1.0]
        if spec.has_mean_series:  # a user model or a hurdle prior: unscaled
            for a in (0, 1):
                arm = spec.arm(a)
                if spec.family == "bernoulli":
                    p0 = 1.0 / (1.0 + np.exp(-arm.mean.offset))
                    off[a], scale[a] = float(p0), float(np.sqrt(p0 * (1.0 - p0)))
                else:
                    off[a], scale[a] = float(arm.mean.offset), float(np.exp(arm.log_sd.offset))
        standardize = bool(spec.outcome.standardize)
        if standardize and (off != [0.0, 0.0] or scale != [1.0, 1.0]):
            raise ValueError(
                f"{spec.source}: a student of a prior with outcome.standardize needs mean offsets 0 and log-sd "
                f"offsets 0 (the standardized outcome's own location and scale); got offsets {off}, scales {scale}"
            )
        return cls(
            tuple(float(v) for v in np.atleast_1d(low)),
            tuple(float(v) for v in np.atleast_1d(high)),
            (off[0], off[1]),
            (scale[0], scale[1]),
            standardize,
        )

    @classmethod
    def from_dict(cls, data: dict) -> InputScaling:
        return cls(
            tuple(data["low"]), tuple(data["high"]), tuple(data["y_offset"]), tuple(data["y_scale"]),
            bool(data.get("in_context", False)),
        )

    def to_dict(self) -> dict:
        return {"low": list(self.low), "high": list(self.high), "y_offset": list(self.y_offset),
                "y_scale": list(self.y_scale), "in_context": self.in_context}

    @property
    def d(self) -> int:
        return len(self.low)

    @cached_property
    def _box(self) -> tuple[np.ndarray, np.ndarray]:
        low = np.asarray(self.low, dtype=float)
        return low, 1.0 / (np.asarray(self.high, dtype=float) - low)

    @cached_property
    def _y_maps(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.y_offset, dtype=float), np.asarray(self.y_scale, dtype=float)

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """Covariates ``(..., d)`` in user units to the unit cube (clipped), float32."""
        low, inv = self._box
        return np.clip((np.asarray(x, dtype=float) - low) * inv, 0.0, 1.0).astype(np.float32)

    def standardize(self, y: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Outcomes on the prior's scale per arm (see the module docstring), float32, unclamped."""
        a = np.asarray(a).astype(bool)
        off = np.where(a, self.y_offset[1], self.y_offset[0])
        scale = np.where(a, self.y_scale[1], self.y_scale[0])
        return np.clip((np.asarray(y, dtype=float) - off) / scale, -Y_CLAMP, Y_CLAMP).astype(np.float32)
