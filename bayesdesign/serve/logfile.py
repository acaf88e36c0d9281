"""The service's log as the table :func:`bayesdesign.analyze` reads (no database, no web imports).

A service log (``GET /experiments/{name}/log.csv``) has one row per unit in assignment order with
``unit_id``, the covariates, ``a``, ``pi`` and ``y`` (empty while the outcome is pending). The
analysis drops ``unit_id`` and the pending units and keeps the order, so ``bayesdesign analyze
log.csv`` and ``GET /experiments/{name}/analysis`` compute the same thing.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["for_analysis", "analysis_source"]


def for_analysis(log: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``log`` without ``unit_id`` and without pending units (no ``y`` yet), in assignment order;
    and the number of pending units dropped."""
    pending = log["y"].isna()
    return log.loc[~pending].drop(columns=["unit_id"]).reset_index(drop=True), int(pending.sum())


def analysis_source(source, outcome: str = "y"):
    """``source`` unchanged, or, if it is a service log (a ``unit_id`` column), the table to analyse
    and a note saying what was dropped."""
    from ..logs import read_log

    df = read_log(source)
    if "unit_id" not in df.columns or outcome != "y" or "y" not in df.columns:
        return source, None
    table, pending = for_analysis(df)
    return table, f"service log: column unit_id ignored, {pending} unit(s) without an outcome yet left out"
