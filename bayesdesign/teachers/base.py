r"""The :class:`Teacher` protocol and the configuration every posterior Neyman teacher shares.

A teacher is a policy whose posterior can be inspected. Given the history :math:`H`, its
probability for covariate :math:`x` is the posterior Neyman rule

.. math::
    \pi_T(x \mid H) = \mathrm{clip}\!\left(\frac{\bar s_1(x)}{\bar s_1(x) + \bar s_0(x)},
    \varepsilon_t, 1 - \varepsilon_t\right), \qquad \bar s_a(x) = E[\sigma_a(x) \mid H],

with the burn-in, variance floor and clip schedule of :class:`TeacherConfig`, all recorded in
traces so that a student learns them too. The conjugate teachers also offer the *log-odds* rule
(``rule="log_sd"``): the Neyman log-odds :math:`\log\sigma_1 - \log\sigma_0` estimated by its
posterior mean, optionally shrunk towards 0 (the safe rule, ``safe > 0``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..design.policy import ClipSchedule, History
from ..efficiency import RULES

__all__ = ["TeacherConfig", "Teacher"]


@dataclass(frozen=True)
class TeacherConfig:
    r"""Settings of the early-unit behaviour (see DESIGN.md, *Early units*).

    burn_in : units randomized at exactly 1/2 before the posterior is used.
    floor : variance floor, relative to the prior's typical variance
        :math:`v_0 = \exp(2\,\text{offset}_{\log\sigma})`: :math:`\sigma_a^2(x) \ge
        \text{floor}\cdot v_0`. A prototype showed this floor matters most (with 1e-3 the
        teacher did worse than uniform); 0.05 is the default.
    prior_obs : pseudo-observations :math:`\kappa` shrinking the plug-in noise variance to
        :math:`v_0`: :math:`\hat v = (\sum (y - \bar y)^2 + \kappa v_0) / (n + \kappa)`.
    clip : the :class:`~bayesdesign.design.policy.ClipSchedule`.
    safe : :math:`k \ge 0`; when positive the conjugate teachers allocate by the *safe* rule
        :math:`\pi = \text{sigmoid}(\tilde\delta)`, :math:`\tilde\delta = \text{sign}(m)
        \max(|m| - k s, 0)`, with :math:`m` and :math:`s` the posterior mean and sd of
        :math:`\log\sigma_1(x) - \log\sigma_0(x)`: where the posterior cannot tell the arms'
        sds apart by more than :math:`k` posterior sds the design stays at 1/2. 0 (default): the
        posterior Neyman rule of :math:`\bar s_a`, or the log-odds rule when ``rule="log_sd"``.
    rule : ``"sd"`` (default): :math:`\pi = \bar s_1 / (\bar s_1 + \bar s_0)`; ``"log_sd"``:
        :math:`\pi = \text{sigmoid}(m)`, the safe rule with :math:`k = ` ``safe`` (0 by default).
        By Jensen :math:`\exp E\log\sigma_a \le E\sigma_a`, and the gap grows with the
        posterior spread of :math:`\sigma_a`, so ``log_sd`` weighs down the arm whose sd is
        uncertain where ``sd`` does not (docs/concepts.md, *Which Neyman rule*, has the figures).
        Conjugate and mixture teachers only; configurations written before this field existed
        used ``"sd"``.
    robust : when true the conjugate teachers give the second-moment regression the noise
        variance :math:`(\hat\kappa_a - 1)\hat v_a^2` with the arm's empirical kurtosis
        :math:`\hat\kappa_a` (shrunk to 3 with ``prior_obs`` pseudo-observations) instead of the
        Gaussian :math:`2 \hat v_a^2`, so heavy-tailed outcomes widen the posterior of the sds.
    """

    burn_in: int = 10
    floor: float = 0.05
    prior_obs: float = 5.0
    clip: ClipSchedule = field(default_factory=ClipSchedule)
    safe: float = 0.0
    robust: bool = False
    rule: str = "sd"

    def __post_init__(self):
        if self.burn_in < 0:
            raise ValueError(f"burn_in: expected a non-negative integer, got {self.burn_in}")
        if not self.floor > 0:
            raise ValueError(f"floor: expected a positive number, got {self.floor}")
        if self.prior_obs < 0:
            raise ValueError(f"prior_obs: expected a non-negative number, got {self.prior_obs}")
        if not self.safe >= 0:
            raise ValueError(f"safe: expected a non-negative number of posterior sds, got {self.safe}")
        if self.rule not in RULES:
            raise ValueError(f"rule: expected one of {list(RULES)}, got {self.rule!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Teacher(Protocol):
    """A :class:`~bayesdesign.design.policy.Policy` with an inspectable posterior."""

    name: str
    config: TeacherConfig

    def propensity(self, history: History, x: np.ndarray) -> np.ndarray: ...

    def posterior(self, history: History, x_query: np.ndarray, draws: int = 500, seed: int = 0):
        """ArviZ ``InferenceData`` with posterior ``mean``, ``sd`` and ``log_sd`` at the queries,
        dims ``(chain, draw, arm, query)``."""
        ...
