"""Input checks shared by the runner, the estimator and the CLI: clear errors that name the
argument (or column) and say what was expected."""

from __future__ import annotations

import numpy as np

__all__ = ["check_finite", "check_arms", "check_propensity", "check_in_bounds", "check_shape"]


def check_shape(name: str, arr: np.ndarray, shape: tuple) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    return arr


def check_finite(name: str, arr) -> np.ndarray:
    arr = np.asarray(arr, dtype=float)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i[0]) for i in np.nonzero(bad))
        raise ValueError(
            f"{name}: expected finite numbers, found {int(bad.sum())} NaN or infinite value(s) "
            f"(first at index {idx if len(idx) > 1 else idx[0]})"
        )
    return arr


def check_arms(name: str, arr) -> np.ndarray:
    arr = np.asarray(arr)
    try:
        f = arr.astype(float)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected arms coded 0 (control) and 1 (treated), got non-numeric values") from None
    bad = ~np.isin(f, (0.0, 1.0))
    if bad.any():
        vals = np.unique(arr[bad])[:5]
        raise ValueError(f"{name}: expected arms coded 0 (control) and 1 (treated), found {vals.tolist()}")
    return f.astype(np.int8)


def check_propensity(name: str, arr) -> np.ndarray:
    arr = check_finite(name, arr)
    bad = (arr <= 0.0) | (arr >= 1.0)
    if bad.any():
        raise ValueError(
            f"{name}: expected treatment probabilities strictly inside (0, 1), found "
            f"{int(bad.sum())} outside (e.g. {arr[bad].ravel()[0]!r})"
        )
    return arr


def check_in_bounds(name: str, x: np.ndarray, low: np.ndarray, high: np.ndarray, tol: float = 1e-9) -> None:
    span = np.maximum(high - low, 1.0)
    out = (x < low - tol * span) | (x > high + tol * span)
    if out.any():
        cols = np.nonzero(out.reshape(-1, x.shape[-1]).any(0))[0]
        j = int(cols[0])
        raise ValueError(
            f"{name}: covariate {j} has {int(out[..., j].sum())} value(s) outside the declared "
            f"bounds [{low[j]}, {high[j]}] (e.g. {x[..., j][out[..., j]].ravel()[0]!r})"
        )
