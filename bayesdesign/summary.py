r"""Per-design summary of a results dataset: the table the CLI prints and its JSON contract.

Fields (stable; scripts read them): ``mse``, ``mse_ratio`` (to the oracle on the same seeds),
``bias``, ``coverage`` (of the 95% Wald interval), ``mean_abs_pi_error`` (mean
:math:`|\pi_t - \pi^*(X_t)|`) and ``design_var_ratio`` (the variance the realised allocations
imply, with the true sds, over :math:`V^*`) and ``realized_over_design`` (:math:`T \cdot` MSE over
the mean design variance: 1 when the estimator keeps what the design gains) with its Monte Carlo
standard error ``realized_over_design_se`` (:math:`T\,\text{sd}(e^2) / (\sqrt R\,\bar V)` over
the :math:`R` replications' squared errors :math:`e^2`; about :math:`\sqrt{2/R}` for Gaussian
errors, 0.063 at 500 replications, so a tolerance of 0.05 needs thousands of replications).
``realized_over_design_cv`` estimates :math:`T \cdot` MSE over the design variance with the
control variate of :func:`~bayesdesign.efficiency.oracle_error_control` (the same replications'
AIPW error with the true arm means as nuisances, whose expected square is known exactly): the
mean of :math:`T e^2 - C` over the mean design variance, unbiased for the same ratio as
``realized_over_design`` and with standard error ``realized_over_design_cv_se`` several times
smaller, because :math:`T e^2 - C` keeps only the part of the error the nuisance fits add.
``score_over_design`` estimates the same expectation with far less Monte Carlo noise: the mean
over replications of :math:`T \cdot \widehat{se}^2 \cdot T/(T-1)` (the interval's own variance
estimate) over the mean design variance, with its standard error ``score_over_design_se``.
Because the AIPW scores :math:`G_t - \tau` are martingale differences,
:math:`E[(\sum_t (G_t - \tau))^2] = \sum_t E[(G_t - \tau)^2]`, so
:math:`E[\text{MSE}] = E[\widehat{se}^2]\, T_s/(T_s - 1)` over the :math:`T_s` scored units
(here :math:`T_s \approx T`): each replication contributes its whole mean square of scores
instead of one squared error. Where the two fields differ by more than their errors, the
interval's variance estimate is what is off (it is the estimate of ``score_over_design``).
``cs_coverage``: share of replications whose anytime-valid confidence sequence
(:mod:`~bayesdesign.confseq`) holds the ATE at every look from the first scored unit to T.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["FIELDS", "summarize", "format_table", "to_json_dict"]

FIELDS = (
    "mse",
    "mse_ratio",
    "bias",
    "coverage",
    "mean_abs_pi_error",
    "design_var_ratio",
    "realized_over_design",
    "realized_over_design_se",
    "realized_over_design_cv",
    "realized_over_design_cv_se",
    "score_over_design",
    "score_over_design_se",
    "cs_coverage",
)


def summarize(ds: xr.Dataset) -> pd.DataFrame:
    """One row per design with the :data:`FIELDS` (NaN where the truth is unknown)."""
    rows = {}
    has_truth = "ate" in ds
    if has_truth:
        err = ds.tau_hat - ds.ate
        mse = (err**2).mean("rep")
        ref = mse.sel(design="oracle") if "oracle" in ds.design.values else np.nan
        dvr = (ds.design_var / ds.v_star).mean("rep")
        dv = ds.design_var.mean("rep")
        horizon = ds.attrs["horizon"]
        score_var = horizon * ds.se**2 * horizon / max(horizon - 1, 1)
    for name in ds.design.values:
        if not has_truth:
            rows[name] = dict.fromkeys(FIELDS, math.nan)
            continue
        rows[name] = {
            "mse": float(mse.sel(design=name)),
            "mse_ratio": float(mse.sel(design=name) / ref),
            "bias": float(err.sel(design=name).mean()),
            "coverage": float(ds.covered.sel(design=name).mean()),
            "mean_abs_pi_error": float(ds.abs_pi_err.sel(design=name).mean()),
            "design_var_ratio": float(dvr.sel(design=name)),
            "realized_over_design": float(ds.attrs["horizon"] * mse.sel(design=name) / dv.sel(design=name)),
            "realized_over_design_se": float(
                ds.attrs["horizon"] * (err.sel(design=name) ** 2).std("rep") / np.sqrt(ds.sizes["rep"])
                / dv.sel(design=name)
            ),
            **_control_variate(ds, name, err, dv, horizon),
            "score_over_design": float(score_var.sel(design=name).mean("rep") / dv.sel(design=name)),
            "score_over_design_se": float(
                score_var.sel(design=name).std("rep") / np.sqrt(ds.sizes["rep"]) / dv.sel(design=name)
            ),
            "cs_coverage": float(ds.cs_covered.sel(design=name).mean()) if "cs_covered" in ds else math.nan,
        }
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "design"
    return df


def _control_variate(ds: xr.Dataset, name: str, err: xr.DataArray, dv: xr.DataArray, horizon: int) -> dict:
    """``realized_over_design_cv`` and its standard error (NaN where the dataset has no
    ``error_control``, e.g. one saved before the field existed)."""
    if "error_control" not in ds:
        return {"realized_over_design_cv": math.nan, "realized_over_design_cv_se": math.nan}
    e = horizon * err.sel(design=name) ** 2 - ds.error_control.sel(design=name)
    d = dv.sel(design=name)
    return {
        "realized_over_design_cv": float(e.mean("rep") / d),
        "realized_over_design_cv_se": float(e.std("rep") / np.sqrt(ds.sizes["rep"]) / d),
    }


def format_table(df: pd.DataFrame, title: str | None = None) -> str:
    """A plain aligned text table (floats to 4 significant digits)."""
    cols = ["design", *df.columns]
    body = [[str(i), *(f"{v:.4g}" for v in row)] for i, row in zip(df.index, df.to_numpy(), strict=True)]
    widths = [max(len(c), *(len(r[j]) for r in body)) for j, c in enumerate(cols)]
    line = lambda r: "  ".join(s.rjust(w) if j else s.ljust(w) for j, (s, w) in enumerate(zip(r, widths, strict=True)))  # noqa: E731
    out = [line(cols), line(["-" * w for w in widths]), *(line(r) for r in body)]
    return "\n".join(([title] if title else []) + out)


def to_json_dict(df: pd.DataFrame) -> dict:
    """``{design: {field: value}}`` with NaN as ``None``."""
    return {
        name: {k: (None if not math.isfinite(v) else float(v)) for k, v in row.items()}
        for name, row in df.to_dict(orient="index").items()
    }
