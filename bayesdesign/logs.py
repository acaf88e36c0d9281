"""Reading logged trials: one row per unit in arrival order, from a CSV or parquet file or a
pandas DataFrame.

Every error names the file (``table`` for a DataFrame), the column and the first offending row
and says what was expected. Rows are named as a reader finds them: ``line N`` of a CSV file
(the header is line 1), ``row N`` (0-based position) of a parquet file or a DataFrame.

Covariates are never chosen silently: :func:`choose_covariates` returns the columns it took and
refuses a non-numeric column or an identifier (a distinct integer in every row, such as a
visitor id) unless the caller named it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .validation import check_arms, check_finite, check_propensity

__all__ = ["read_log", "describe", "choose_covariates", "numeric_column", "LoggedUnits", "read_units"]

_PARQUET = (".parquet", ".pq")


def describe(source) -> str:
    """How errors name ``source``: its path, or ``table`` for a DataFrame."""
    return "table" if isinstance(source, pd.DataFrame) else str(source)


def _rows(source):
    """``at`` for :mod:`bayesdesign.validation`: the words naming row ``i`` of ``source``."""
    csv = not isinstance(source, pd.DataFrame) and Path(source).suffix.lower() not in _PARQUET
    return (lambda idx: f"line {idx[0] + 2}") if csv else (lambda idx: f"row {idx[0]}")


def read_log(source) -> pd.DataFrame:
    """A table of logged units from a DataFrame or a CSV / parquet path (``.parquet``, ``.pq``)."""
    if isinstance(source, pd.DataFrame):
        df = source
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        df = _read_file(path)
    if len(df.columns) == 0:
        raise ValueError(f"{describe(source)}: no columns; expected a header row naming the columns")
    if len(df) == 0:
        raise ValueError(
            f"{describe(source)}: no rows (only the header {list(df.columns)}); expected one row per unit"
        )
    return df


def _read_file(path: Path) -> pd.DataFrame:
    if path.suffix.lower() in _PARQUET:
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"{path}: not a readable parquet file ({e})") from None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"{path}: the file is empty; expected a CSV table with a header row naming the columns "
            "(or a parquet file ending in .parquet)"
        ) from None
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not a text CSV file (byte {e.object[e.start]:#04x} at position {e.start} is not "
            "UTF-8); expected a CSV table or a parquet file ending in .parquet"
        ) from None
    except pd.errors.ParserError as e:
        raise ValueError(f"{path}: not a well-formed CSV table ({e})") from None


def numeric_column(df: pd.DataFrame, name: str, source=None) -> np.ndarray:
    """Column ``name`` as floats; a non-numeric entry is reported with its row."""
    col = df[name]
    if col.dtype == bool:
        return col.to_numpy(dtype=float)
    num = pd.to_numeric(col, errors="coerce")
    bad = (num.isna() & col.notna()).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        row = _rows(source if source is not None else df)((i,))
        raise ValueError(
            f"{describe(source if source is not None else df)}: column {name!r} is not numeric "
            f"({row}: {col.iloc[i]!r}); expected numbers"
        )
    return num.to_numpy(dtype=float)


def _is_identifier(values: np.ndarray) -> bool:
    """A distinct integer in every row (at least 3 rows): an id, not a measurement."""
    return len(values) >= 3 and bool(np.all(values == np.round(values))) and len(np.unique(values)) == len(values)


def choose_covariates(
    df: pd.DataFrame,
    covariates: Sequence[str] | None,
    exclude: Sequence[str],
    source=None,
    prefer: Sequence[str] | None = None,
) -> list[str]:
    """The covariate columns: ``covariates`` when given (each must exist), else ``prefer`` when
    the table has all of them (a prior's covariate names), else every column not in ``exclude``,
    refusing non-numeric and identifier columns with an error that names them and shows
    ``--covariates`` (``covariates=`` in Python) with the usable columns."""
    where = describe(source if source is not None else df)
    if covariates is None and prefer and all(c in df.columns for c in prefer):
        covariates = prefer
    if covariates is not None:
        covariates = [covariates] if isinstance(covariates, str) else list(covariates)
        missing = [c for c in covariates if c not in df.columns]
        if missing:
            raise ValueError(f"{where}: missing covariate column(s) {missing}; columns are {list(df.columns)}")
        if not covariates:
            raise ValueError(f"{where}: covariates: expected at least one covariate column")
        return covariates
    rest = [c for c in df.columns if c not in exclude]
    usable, refused = [], []
    for c in rest:
        try:
            values = numeric_column(df, c, source)
        except ValueError as e:
            refused.append(str(e).removeprefix(f"{where}: "))
            continue
        if _is_identifier(values):
            refused.append(f"column {c!r} looks like an identifier (a distinct integer in every row)")
        else:
            usable.append(c)
    if refused:
        hint = f"--covariates {','.join(usable)}" if usable else "--covariates COL1,COL2"
        them = "it cannot be taken as a covariate" if len(refused) == 1 else "they cannot be taken as covariates"
        raise ValueError(
            f"{where}: {'; '.join(refused)}, so {them}; name the covariate columns, e.g. {hint} "
            "(covariates= in Python)"
        )
    if not usable:
        raise ValueError(
            f"{where}: no covariate columns (every column is one of {list(exclude)}); columns are {list(df.columns)}"
        )
    return usable


class LoggedUnits(NamedTuple):
    """Logged units: ``x`` (T, d), ``a``, ``y``, ``pi`` (T,) (``pi`` is ``None`` when the log has
    no propensity column and none was required), and the ``covariates`` used, in order."""

    x: np.ndarray
    a: np.ndarray
    y: np.ndarray
    pi: np.ndarray | None
    covariates: list[str]


def read_units(
    source,
    covariates: Sequence[str] | None = None,
    arm: str = "a", outcome: str = "y", propensity: str = "pi",  # the column names
    require_propensity: bool = True,
    prefer: Sequence[str] | None = None,
) -> LoggedUnits:
    """Read and check a log: arms 0/1, finite outcomes and covariates, probabilities in (0, 1).

    The ``propensity`` column is never a covariate. When ``require_propensity`` is false it may
    be absent (a trial log to replay) and ``pi`` is then ``None``. ``prefer``: see
    :func:`choose_covariates`.
    """
    df = read_log(source)
    where = describe(source)
    need = (arm, outcome, propensity) if require_propensity else (arm, outcome)
    for col in need:
        if col not in df.columns:
            raise ValueError(f"{where}: missing column {col!r}; columns are {list(df.columns)}")
    cov = choose_covariates(df, covariates, (arm, outcome, propensity), source, prefer)
    at = _rows(source)

    def check(col, fn):
        return fn(f"{where}: column {col!r}", numeric_column(df, col, source), at)

    x = np.stack([check(c, check_finite) for c in cov], axis=-1)
    a = check(arm, check_arms)
    y = check(outcome, check_finite)
    pi = check(propensity, check_propensity) if propensity in df.columns else None
    return LoggedUnits(x, a, y, pi, cov)
