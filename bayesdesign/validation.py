"""Input checks shared by the runner, the estimator, the policies and the log reader: clear
errors that name the argument (or column) and say what was expected.

``at`` maps the position of the first offending value to words: ``index 3`` by default; the
log reader passes one that names the file's line (see :mod:`bayesdesign.logs`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["check_finite", "check_arms", "check_propensity", "check_in_bounds", "check_shape"]


def _index(idx: tuple[int, ...]) -> str:
    return f"index {idx if len(idx) > 1 else idx[0]}"


def _first(bad: np.ndarray, at: Callable[[tuple[int, ...]], str] | None) -> str:
    idx = tuple(int(i[0]) for i in np.nonzero(bad))
    return (at or _index)(idx)


def check_shape(name: str, arr, shape: tuple) -> np.ndarray:
    """``arr`` as an array of exactly ``shape``."""
    arr = np.asarray(arr)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    return arr


def check_finite(name: str, arr, at: Callable | None = None) -> np.ndarray:
    arr = np.asarray(arr, dtype=float)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{name}: expected finite numbers, found {int(bad.sum())} NaN or infinite value(s) "
            f"(first at {_first(bad, at)})"
        )
    return arr


def check_arms(name: str, arr, at: Callable | None = None) -> np.ndarray:
    arr = np.asarray(arr)
    try:
        f = arr.astype(float)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected arms coded 0 (control) and 1 (treated), got non-numeric values") from None
    bad = ~np.isin(f, (0.0, 1.0))
    if bad.any():
        vals = [int(v) if float(v).is_integer() else float(v) for v in np.unique(f[bad])[:5]]
        raise ValueError(
            f"{name}: expected arms coded 0 (control) and 1 (treated), found {vals} "
            f"(first at {_first(bad, at)})"
        )
    return f.astype(np.int8)


def check_propensity(name: str, arr, at: Callable | None = None) -> np.ndarray:
    arr = check_finite(name, arr, at)
    bad = (arr <= 0.0) | (arr >= 1.0)
    if bad.any():
        raise ValueError(
            f"{name}: expected treatment probabilities strictly inside (0, 1), found "
            f"{int(bad.sum())} outside (first at {_first(bad, at)}: {float(arr[bad].ravel()[0])})"
        )
    return arr


def check_in_bounds(name: str, x: np.ndarray, low: np.ndarray, high: np.ndarray, tol: float = 1e-9) -> None:
    """Every covariate ``x[..., j]`` inside ``[low_j, high_j]`` (up to ``tol`` of the span)."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    span = np.maximum(high - low, 1.0)
    out = (x < low - tol * span) | (x > high + tol * span)
    if out.any():
        cols = np.nonzero(out.reshape(-1, x.shape[-1]).any(0))[0]
        j = int(cols[0])
        raise ValueError(
            f"{name}: covariate {j} has {int(out[..., j].sum())} value(s) outside the declared "
            f"bounds [{float(low[j])}, {float(high[j])}] (e.g. {float(x[..., j][out[..., j]].ravel()[0])})"
        )
