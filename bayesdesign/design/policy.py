r"""The :class:`Policy` protocol, histories, and the clipping schedule every design uses.

A policy maps the history of an experiment and new covariates to treatment probabilities,
``propensity(history, x) -> pi``. Built-in policies also expose an incremental form,
``init / update / propensity_at`` over explicit state (named tuples, as in Optax), which the
runner uses to run many replications in lockstep; ``propensity(history, x)`` is that same
computation folded over the history, so both forms agree by construction (and in the tests).

**Clipping.** Every built-in policy clips to :math:`[\varepsilon_t, 1 - \varepsilon_t]` with
:math:`\varepsilon_t = \max(\varepsilon_{\min}, \tfrac12 t^{-1/3})` for the :math:`t`-th unit
(ClipSMT's schedule, floored). It equals 1/2 at :math:`t = 1`, is 0.1 at :math:`t = 125`
and reaches :math:`\varepsilon_{\min} = 0.02` at :math:`t \approx 15{,}600`, so
:math:`1/\pi_t` stays bounded and the Wald interval of the AIPW estimator stays valid.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from ..validation import check_in_bounds

__all__ = [
    "History",
    "Policy",
    "IncrementalPolicy",
    "ClipSchedule",
    "SequentialPolicy",
    "as_batch",
    "check_policy_fits",
]


class History(NamedTuple):
    """Observed units in arrival order: ``x`` (..., n, d), ``a``, ``y``, ``pi`` (..., n).

    A leading batch axis (replications run in lockstep) is optional.
    """

    x: np.ndarray
    a: np.ndarray
    y: np.ndarray
    pi: np.ndarray

    @classmethod
    def empty(cls, d: int, batch: int | None = None) -> History:
        lead = () if batch is None else (batch,)
        return cls(np.zeros((*lead, 0, d)), np.zeros((*lead, 0)), np.zeros((*lead, 0)), np.zeros((*lead, 0)))

    def __len__(self) -> int:
        return int(self.y.shape[-1])


@runtime_checkable
class Policy(Protocol):
    """Anything with ``propensity(history, x) -> pi`` in (0, 1), vectorized over rows of ``x``."""

    def propensity(self, history: History, x: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class IncrementalPolicy(Policy, Protocol):
    """A policy with explicit state, run by the runner over a batch of replications."""

    name: str

    def init(self, batch: int) -> Any: ...

    def update(self, state: Any, x: np.ndarray, a: np.ndarray, y: np.ndarray, pi: np.ndarray) -> Any: ...

    def propensity_at(self, state: Any, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ClipSchedule:
    r""":math:`\varepsilon_t = \max(\varepsilon_{\min}, c\, t^{-p})`; defaults ``c = 1/2, p = 1/3``."""

    eps_min: float = 0.02
    scale: float = 0.5
    power: float = 1.0 / 3.0

    def __post_init__(self):
        if not 0 < self.eps_min < 0.5:
            raise ValueError(f"eps_min: expected a number in (0, 0.5), got {self.eps_min}")

    def eps(self, t) -> np.ndarray:
        """Clip level for the ``t``-th unit (``t >= 1``)."""
        if isinstance(t, int | float):  # one unit: plain floats (a decision's hot path)
            return min(max(self.eps_min, self.scale * max(float(t), 1.0) ** (-self.power)), 0.5)
        t = np.maximum(np.asarray(t, dtype=float), 1.0)
        return np.clip(np.maximum(self.eps_min, self.scale * t ** (-self.power)), 0.0, 0.5)

    def clip(self, pi: np.ndarray, t) -> np.ndarray:
        e = self.eps(t)
        return np.clip(pi, e, 1.0 - e)


def as_batch(history: History, x: np.ndarray) -> tuple[History, np.ndarray, bool]:
    """Add a batch axis of one to an unbatched history and query (``x`` of shape (m, d))."""
    x = np.asarray(x, dtype=float)
    if history.y.ndim == 1:
        h = History(*(np.asarray(v, dtype=float)[None] for v in history))
        return h, x[None], True
    return History(*(np.asarray(v, dtype=float) for v in history)), x, False


class SequentialPolicy(ABC):
    """Base class of the built-in policies: state in, state out, probabilities clipped.

    Subclasses implement :meth:`init`, :meth:`update` and :meth:`_raw` (the unclipped rule);
    the state must carry ``t``, the number of units observed so far.
    """

    name: str = "policy"
    box_origin: str = "the policy's covariate box"  # how errors name [low, high]

    def __init__(self, bounds, clip: ClipSchedule | None = None):
        self.low = np.atleast_1d(np.asarray(bounds[0], dtype=float))
        self.high = np.atleast_1d(np.asarray(bounds[1], dtype=float))
        self.d = self.low.shape[0]
        self.clip = clip or ClipSchedule()

    @abstractmethod
    def init(self, batch: int) -> Any: ...

    @abstractmethod
    def update(self, state, x, a, y, pi) -> Any: ...

    @abstractmethod
    def _raw(self, state, x: np.ndarray) -> np.ndarray:
        """Unclipped probabilities for ``x`` (B, m, d) -> (B, m)."""

    def propensity_at(self, state, x: np.ndarray) -> np.ndarray:
        """Clipped probabilities for the next units ``x`` (B, m, d) given ``state``."""
        return self.clip.clip(self._raw(state, x), state.t + 1)

    def fold(self, history: History) -> tuple[Any, bool]:
        """State after a (possibly batched) history; ``True`` if a batch axis of one was added."""
        h, _, squeeze = as_batch(history, np.zeros((0, self.d)))
        state = self.init(h.y.shape[0])
        if len(h):
            state = self.update(state, h.x, h.a, h.y, h.pi)
        return state, squeeze

    def propensity(self, history: History, x: np.ndarray) -> np.ndarray:
        """:class:`Policy` protocol: fold the history into state, then decide for ``x``.

        ``x`` must have ``d`` columns inside ``[low, high]``: the rule is defined only there, and
        a covariate outside would be clipped to the edge without a word.
        """
        x = np.asarray(x, dtype=float)
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise ValueError(f"x: expected shape (..., {self.d}) ({self.d} covariate(s) per unit), got {x.shape}")
        check_in_bounds(f"x (design {self.name!r}, {self.box_origin})", x, self.low, self.high)
        state, squeeze = self.fold(history)
        _, xb, _ = as_batch(history, x)
        pi = self.propensity_at(state, xb)
        return pi[0] if squeeze else pi

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def check_policy_fits(policy, env, name: str) -> None:
    """Refuse a policy whose covariate dimension ``d`` differs from the environment's, or whose box
    ``[low, high]`` does not contain the environment's (its covariates would be clipped to the box's
    edge silently). Policies without ``d`` / ``low`` / ``high`` are not checked for them."""
    lo, hi = (np.atleast_1d(np.asarray(b, dtype=float)) for b in env.bounds)
    d = getattr(policy, "d", None)
    if d is not None and int(d) != lo.shape[0]:
        raise ValueError(
            f"design {name!r}: dimension mismatch: the design takes {int(d)} covariate(s), the environment "
            f"has {lo.shape[0]}"
        )
    plo, phi = getattr(policy, "low", None), getattr(policy, "high", None)
    if plo is None or phi is None:
        return
    plo, phi = np.atleast_1d(np.asarray(plo, dtype=float)), np.atleast_1d(np.asarray(phi, dtype=float))
    tol = 1e-12 * np.maximum(phi - plo, 1.0)
    if np.any(lo < plo - tol) or np.any(hi > phi + tol):
        origin = getattr(policy, "box_origin", "the design's covariate box")
        raise ValueError(
            f"design {name!r}: the environment's covariate box (low {lo.tolist()}, high {hi.tolist()}) is not "
            f"inside {origin} (low {plo.tolist()}, high {phi.tolist()}): covariates outside would be clipped to "
            "its edge; "
            "move the environment with bayesdesign.rescale or give the design a box that covers it"
        )
