r"""The :class:`Teacher` protocol and the configuration every posterior Neyman teacher shares.

A teacher is a policy whose posterior can be inspected. Given the history :math:`H`, its
probability for covariate :math:`x` is the posterior Neyman rule

.. math::
    \pi_T(x \mid H) = \mathrm{clip}\!\left(\frac{\bar s_1(x)}{\bar s_1(x) + \bar s_0(x)},
    \varepsilon_t, 1 - \varepsilon_t\right), \qquad \bar s_a(x) = E[\sigma_a(x) \mid H],

with the burn-in, variance floor and clip schedule of :class:`TeacherConfig`, all recorded in
traces so that a student learns them too. The conjugate teachers follow by default the
*spike-and-slab log-odds* rule instead (``rule="log_sd"``, ``spike=0.3``): the Neyman log-odds
:math:`\log\sigma_1 - \log\sigma_0` estimated by its posterior mean under a prior that gives
probability ``spike`` to "the arms' sds are equal here" (:func:`~bayesdesign.efficiency.safe_rule`),
optionally shrunk further (the safe rule, ``safe > 0``). The sampling teachers (NUTS, SVI) follow
the ratio above (:data:`SAMPLING_DEFAULT`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..design.policy import ClipSchedule, History
from ..efficiency import RULES

__all__ = ["TeacherConfig", "Teacher", "SAMPLING_DEFAULT", "LEGACY"]


VARIANCE_LAWS = ("normal", "lognormal")
r"""The laws of :math:`\sigma^2` the conjugate teachers offer (``TeacherConfig.variance_law``)."""


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
        sds apart by more than :math:`k` posterior sds the design stays at 1/2. 0 (default): no
        threshold; ``rule`` and ``spike`` decide.
    rule : ``"log_sd"`` (default): :math:`\pi = \text{sigmoid}(m)` with :math:`m` shrunk by the
        spike and the safe rule (:func:`~bayesdesign.efficiency.safe_rule`); ``"sd"``:
        :math:`\pi = \bar s_1 / (\bar s_1 + \bar s_0)` (with ``spike = 0`` and ``safe = 0``).
        By Jensen :math:`\exp E\log\sigma_a \le E\sigma_a`, and the gap grows with the
        posterior spread of :math:`\sigma_a`, so ``log_sd`` weighs down the arm whose sd is
        uncertain where ``sd`` does not (docs/concepts.md, *Which Neyman rule*, has the figures).
        Conjugate and mixture teachers only; configurations written before this field existed
        used ``"sd"`` (:data:`LEGACY`).
    spike : :math:`\rho \in [0, 1)`, the prior probability that the arms' sds are equal at a
        covariate (a point mass at :math:`\log\sigma_1 - \log\sigma_0 = 0` beside the working
        model's continuous prior); the log-odds rule then uses the posterior mean of the
        log-odds under that spike-and-slab prior, so where nothing is to be gained the design
        stays near 1/2. 0.3 by default (docs/concepts.md, *safe adaptivity*, has the figures);
        0 before this field existed.
    robust : when true the conjugate teachers give the second-moment regression the noise
        variance :math:`(\hat\kappa_a - 1)\hat v_a^2` with the arm's empirical kurtosis
        :math:`\hat\kappa_a` (shrunk to 3 with ``prior_obs`` pseudo-observations) instead of the
        Gaussian :math:`2 \hat v_a^2`, so heavy-tailed outcomes widen the posterior of the sds.
    atom : :math:`q \in [0, 1]`; the conjugate teachers of continuous outcome families
        (``gaussian``, ``student_t``) treat the outcomes as having an *atom* once at least two of
        the :math:`n` outcomes so far, and at least :math:`q n`, equal the smallest (or largest)
        one (:func:`~bayesdesign.efficiency.has_atom`; a zero-heavy revenue), and then decide by
        the robust variance and the log-odds rule with ``safe`` at least 0.5
        (:func:`~bayesdesign.efficiency.atom_settings`) in that experiment. 0.2 by default
        (docs/concepts.md, *outcomes with an atom*, has the figures); 0 turns it off, and so did
        configurations written before this field existed. The sampling teachers ignore it.
    reweight : :math:`n_0 \ge 0`; when positive the conjugate teachers of continuous outcome
        families average (as a model choice, by the marginal likelihoods) the second-moment
        regression above with a *reweighted* one, in which unit :math:`i` of arm :math:`a` has
        the noise variance :math:`2\hat v_a^2 / w_i`, its weight :math:`w_i` fixed when it arrives
        from the posterior of the units before it (:func:`~bayesdesign.teachers.conjugate.unit_weights`;
        :math:`n_0` pseudo-units shrink the early weights to 1). For variance functions that
        jump (scenario S10). 0 (default) is off; the design suffix ``:reweight`` sets 50
        (docs/concepts.md, *a variance that jumps*, has the figures). The students' compiled
        inference engine implements it (``student:pretrained:reweight`` decides as
        ``teacher:mixture:unit-free-flex:lognormal:reweight``); the torch student (its ``backend='torch'``,
        training and distillation) and the sampling teachers do not and refuse it.
    variance_law : ``"normal"`` (default) or ``"lognormal"``: the law of :math:`\sigma_a^2(x)` under
        which the conjugate teachers of continuous outcome families take the expectations of
        :math:`\sigma` and :math:`\log\sigma`, given the working posterior's mean and variance of
        :math:`\sigma^2` (:func:`~bayesdesign.teachers.conjugate.variance_nodes`). The normal law
        puts the mass it gives to negative variances on the floor; the lognormal one (the prior's
        own family: normal on :math:`\log\sigma`) lets a small, uncertain variance be small, so the
        design moves further where the sds differ much. In an experiment where the atom rule fires
        the normal law is used. The design suffix ``:lognormal`` sets it with ``spike = 0.6``
        (docs/concepts.md, *The law of the variance*, has the figures). The students follow it
        (both backends; the shipped ``student:pretrained`` uses it); the sampling teachers
        implement the normal law only and refuse it.
    """

    burn_in: int = 10
    floor: float = 0.05
    prior_obs: float = 5.0
    clip: ClipSchedule = field(default_factory=ClipSchedule)
    safe: float = 0.0
    robust: bool = False
    rule: str = "log_sd"
    spike: float = 0.3
    atom: float = 0.2
    reweight: float = 0.0
    variance_law: str = "normal"

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
        if self.variance_law not in VARIANCE_LAWS:
            raise ValueError(f"variance_law: expected one of {list(VARIANCE_LAWS)}, got {self.variance_law!r}")
        if not 0.0 <= self.spike < 1.0:
            raise ValueError(f"spike: expected a prior probability in [0, 1), got {self.spike}")
        if not 0.0 <= self.atom <= 1.0:
            raise ValueError(f"atom: expected a share of the outcomes in [0, 1], got {self.atom}")
        if not (0.0 <= self.reweight < float("inf")):
            raise ValueError(f"reweight: expected a finite number of pseudo-units >= 0 (0: off), got {self.reweight}")

    @classmethod
    def from_dict(cls, data: dict) -> TeacherConfig:
        """A configuration from its :meth:`to_dict` (as traces and checkpoints store it); fields
        missing from a dict written before they existed take the values of that time
        (:data:`LEGACY`), not today's defaults."""
        data = {**LEGACY, **data}
        if isinstance(data.get("clip"), dict):
            data["clip"] = ClipSchedule(**data["clip"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LEGACY = {"rule": "sd", "spike": 0.0, "atom": 0.0}
"""Values of the fields a stored configuration may lack: those it was written under."""

SAMPLING_DEFAULT = TeacherConfig(rule="sd", spike=0.0, atom=0.0)
"""The default of the sampling teachers (NUTS, SVI): the posterior Neyman ratio of
:math:`\bar s_a` (they do not offer the log-odds rules)."""


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
