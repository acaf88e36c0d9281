"""Figures of the diagnostics (matplotlib, ECDF panels through ArviZ).

Every function returns a ``matplotlib.figure.Figure`` on the Agg canvas (no display needed);
:func:`to_png` encodes one and closes it. How to read them is in ``docs/diagnostics.md``.
"""

from __future__ import annotations

import base64
import io

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from scipy.stats import uniform

from .ecdf import ranks_to_unit

__all__ = [
    "plot_uniformity_panels",
    "plot_sbc",
    "plot_pit",
    "plot_reliability",
    "plot_imitation",
    "plot_coverage",
    "plot_pi_over_time",
    "to_png",
]


def _figure(nrows: int = 1, ncols: int = 1, width: float = 4.2, height: float = 3.2):
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def to_png(fig: Figure, dpi: int = 90) -> bytes:
    """PNG bytes of ``fig`` (the figure is then released)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    fig.clear()
    return buf.getvalue()


def to_base64(fig: Figure, dpi: int = 90) -> str:
    """``data:image/png;base64,...`` URI of ``fig``."""
    return "data:image/png;base64," + base64.b64encode(to_png(fig, dpi)).decode("ascii")


def _ecdf_panel(ax, u: np.ndarray, z: np.ndarray, level: float, title: str, passed: bool) -> None:
    """ECDF difference :math:`F_N(z) - z` of ``u`` with ArviZ's simultaneous band at ``level``."""
    az.plot_ecdf(
        u, eval_points=z, cdf=uniform(0, 1).cdf, difference=True, confidence_bands="optimized", ci_prob=level, ax=ax
    )
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_title(f"{title}: {'pass' if passed else 'FAIL'}", color="black" if passed else "firebrick", fontsize=10)
    ax.set_xlabel("fractional rank / PIT")
    ax.set_ylabel("ECDF - uniform CDF")


def plot_uniformity_panels(
    values: dict[str, np.ndarray],
    z: np.ndarray,
    level: float,
    passed: dict[str, bool],
    suptitle: str = "",
    ncols: int = 4,
) -> Figure:
    """One ECDF-difference panel per entry of ``values`` (values already mapped to (0, 1))."""
    names = list(values)
    ncols = min(ncols, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = _figure(nrows, ncols)
    for ax, name in zip(axes, names, strict=False):
        _ecdf_panel(ax, values[name], z, level, name, passed[name])
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def plot_sbc(ds: xr.Dataset) -> Figure:
    """The rank ECDF-difference panels of an SBC dataset (one per quantity)."""
    n_draws = int(ds.attrs["num_draws"])
    vals = {str(q): ranks_to_unit(ds["rank"].sel(quantity=q).values.ravel(), n_draws) for q in ds.quantity.values}
    passed = {str(q): bool(ds.passed.sel(quantity=q)) for q in ds.quantity.values}
    title = (
        f"SBC of the {ds.attrs.get('teacher')} teacher on {ds.attrs.get('prior_name')}: "
        f"{ds.sizes['sim']} simulations, {ds.attrs.get('units')} units, {n_draws} draws"
    )
    return plot_uniformity_panels(vals, ds.z.values, float(ds.attrs["band_level"]), passed, title)


def plot_pit(ds: xr.Dataset) -> Figure:
    """PIT ECDF-difference panels of a student-calibration dataset (student and teacher)."""
    names = [str(s) for s in ds.source.values]
    vals = {f"{s} PIT of log sigma": ds.pit.sel(source=s).values.ravel() for s in names}
    passed = {f"{s} PIT of log sigma": bool(ds.pit_passed.sel(source=s)) for s in names}
    return plot_uniformity_panels(
        vals,
        ds.z.values,
        float(ds.attrs["band_level"]),
        passed,
        "PIT of the true log sigma_a(x_q) under the Gaussian posterior",
        ncols=2,
    )


def plot_reliability(ds: xr.Dataset) -> Figure:
    """Gate reliability: mean predicted probability against observed frequency per bin."""
    fig, (ax,) = _figure(width=4.6, height=3.6)
    ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--", label="calibrated")
    for s in ds.source.values:
        sel = ds.sel(source=s)
        keep = sel.rel_count.values > 0
        ax.plot(
            sel.rel_pred.values[keep], sel.rel_freq.values[keep], "o-", ms=4, label=f"{s} (ECE {float(sel.ece):.3f})"
        )
    ax.set_xlabel("predicted P(class)")
    ax.set_ylabel("observed frequency of the class")
    ax.set_title("Smoothness gate reliability", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def plot_imitation(ds: xr.Dataset) -> Figure:
    """Mean |pi_student - pi_teacher| by history length."""
    fig, (ax,) = _figure(width=4.6, height=3.6)
    ax.plot(ds.n_obs.values, ds.imitation_error.values, "o-", ms=4)
    ax.axhline(0.02, color="firebrick", lw=0.8, ls="--", label="target 0.02")
    ax.set_xlabel("units in the history")
    ax.set_ylabel("mean |pi_student - pi_teacher|")
    ax.set_title("Imitation error by history length", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def plot_coverage(table: pd.DataFrame, nominal: float = 0.95) -> Figure:
    """Coverage per design (one panel per scenario) with Wilson error bars and the nominal level."""
    scenarios = list(dict.fromkeys(table["scenario"]))
    ncols = min(3, len(scenarios))
    nrows = -(-len(scenarios) // ncols)
    fig, axes = _figure(nrows, ncols, width=4.4, height=0.5 + 0.32 * table["design"].nunique() + 1.0)
    for ax, sc in zip(axes, scenarios, strict=False):
        t = table[table["scenario"] == sc].reset_index(drop=True)
        y = np.arange(len(t))
        err = np.maximum(np.stack([t["coverage"] - t["lower"], t["upper"] - t["coverage"]]), 0.0)
        colors = ["firebrick" if f else "C0" for f in t["flag"]]
        for i, c in enumerate(colors):
            ax.errorbar(t["coverage"][i], y[i], xerr=err[:, i : i + 1], fmt="o", ms=4, color=c, capsize=3)
        ax.axvline(nominal, color="0.3", lw=0.8, ls="--")
        ax.axvspan(0.93, 0.97, color="0.9", zorder=0)
        ax.set_yticks(y, t["design"], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{sc}: coverage of the 95% interval", fontsize=10)
        ax.set_xlabel("coverage (Wilson 95% bars)")
    for ax in axes[len(scenarios) :]:
        ax.set_visible(False)
    return fig


def plot_pi_over_time(ds: xr.Dataset, bins: int = 20) -> Figure:
    r"""How each design's :math:`\pi_t(X_t)` approaches the oracle :math:`\pi^*(X_t)`.

    Left: mean :math:`|\pi_t - \pi^*(X_t)|` over the kept replications in ``bins`` windows of
    :math:`t`. Right, over the last quarter of the units of the first kept replication: with one
    covariate, :math:`\pi_t` against :math:`x` with the oracle rule as a line; with several (where
    a rule against one covariate would be a jagged cloud), :math:`\pi_t` against
    :math:`\pi^*(X_t)` per unit, on which the oracle is the diagonal.
    """
    needed = [v for v in ("pi", "pi_star", "x") if v not in ds]
    if needed or ds.sizes.get("unit_rep", 0) == 0:
        raise ValueError(
            f"results: no per-unit records to plot (missing {needed or ['unit_rep']}; simulate with keep_units > 0)"
        )
    fig, (ax1, ax2) = _figure(1, 2, width=5.0, height=3.8)
    horizon = ds.sizes["t"]
    edges = np.linspace(0, horizon, bins + 1).astype(int)
    mid = (edges[:-1] + edges[1:]) / 2
    err = np.abs(ds.pi - ds.pi_star)  # (design, unit_rep, t)
    tail = slice(3 * horizon // 4, horizon)
    one = ds.sizes.get("covariate", 1) == 1
    star = ds.pi_star.isel(unit_rep=0).values[tail]
    ref = ds.x.isel(unit_rep=0, covariate=0).values[tail] if one else star
    for i, design in enumerate(ds.design.values):
        e = err.sel(design=design).mean("unit_rep").values
        ax1.plot(
            mid, [e[a:b].mean() for a, b in zip(edges[:-1], edges[1:], strict=True)], label=str(design), color=f"C{i}"
        )
        if design != "oracle":
            pi = ds.pi.sel(design=design).isel(unit_rep=0).values[tail]
            ax2.scatter(ref, pi, s=3, alpha=0.4, color=f"C{i}", label=str(design))
    if one:
        order = np.argsort(ref)
        ax2.plot(ref[order], star[order], color="black", lw=1.5, label="oracle")
        ax2.set_xlabel("x (the covariate)")
        ax2.set_ylabel("pi(x)")
    else:
        ax2.plot([0, 1], [0, 1], color="black", lw=1.5, label="oracle (pi = pi*)")
        ax2.set_xlim(0, 1)
        ax2.set_xlabel(f"oracle pi*(x_t) ({ds.sizes['covariate']} covariates)")
        ax2.set_ylabel("design pi_t")
    ax1.set_xlabel("unit t")
    ax1.set_ylabel("mean |pi_t - pi*(x_t)|")
    ax1.set_title("Distance to the oracle Neyman rule", fontsize=10)
    ax1.legend(fontsize=7)
    ax2.set_ylim(0, 1)
    ax2.set_title(f"pi(x), units {tail.start}..{horizon - 1} of replication 0", fontsize=10)
    ax2.legend(fontsize=7, markerscale=3)
    return fig
