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

__all__ = ["History", "Policy", "IncrementalPolicy", "ClipSchedule", "SequentialPolicy", "as_batch"]


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
        """:class:`Policy` protocol: fold the history into state, then decide for ``x``."""
        state, squeeze = self.fold(history)
        _, xb, _ = as_batch(history, x)
        pi = self.propensity_at(state, xb)
        return pi[0] if squeeze else pi

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
