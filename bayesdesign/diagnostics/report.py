"""One self-contained HTML page from results, SBC and student-calibration datasets.

Inputs are recognised by content: ``attrs["kind"]`` of ``"sbc"`` (:func:`~bayesdesign.diagnostics.sbc.run_sbc`)
or ``"student-calibration"`` (:func:`~bayesdesign.diagnostics.calibration.student_calibration`),
or a results dataset of :func:`~bayesdesign.design.simulate` (``attrs["kind"] = "results"``, or a
``tau_hat`` variable over a ``design`` dimension). Any subset may be given. Figures are embedded
as base64 PNG, styles inline: the page needs no other file and no network.
"""

from __future__ import annotations

import datetime as _dt
import html
import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .. import __version__
from ..io import load_dataset, write_text
from ..summary import summarize
from .coverage import coverage_table
from .plots import plot_coverage, plot_imitation, plot_pi_over_time, plot_pit, plot_reliability, plot_sbc, to_base64
from .sbc import summary_rows

__all__ = ["KINDS", "identify", "load_inputs", "build_report", "write_report"]

KINDS = ("results", "sbc", "student-calibration")

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.pass { color: #176b2c; font-weight: 600; } .fail { color: #a11; font-weight: 600; }
.note { color: #555; font-size: .9em; } img { max-width: 100%; display: block; margin: .6em 0; }
code { background: #f5f5f5; padding: 0 .2em; }
"""


def identify(ds: xr.Dataset, path: str | os.PathLike = "dataset") -> str:
    """The kind of a diagnostics input (one of :data:`KINDS`); ``ValueError`` naming ``path``
    otherwise."""
    kind = ds.attrs.get("kind")
    if kind in KINDS:
        return str(kind)
    if kind is None and "tau_hat" in ds and "design" in ds.dims:
        return "results"
    raise ValueError(
        f"{path}: not a report input (expected a results dataset from `bayesdesign simulate --out`, an SBC file "
        f"from `bayesdesign diagnose sbc` or a student calibration file from `bayesdesign diagnose student`; "
        f"attrs['kind'] is {kind!r})"
    )


def load_inputs(paths) -> list[tuple[str, str, xr.Dataset]]:
    """``(kind, path, dataset)`` for each input file (netCDF), in the given order."""
    out = []
    for p in paths:
        try:
            ds = load_dataset(p)
        except FileNotFoundError:
            raise
        except Exception as e:  # not netCDF at all
            raise ValueError(f"{p}: cannot be read as a netCDF dataset ({type(e).__name__}: {e})") from e
        out.append((identify(ds, p), str(p), ds))
    if not out:
        raise ValueError("inputs: expected at least one results, SBC or student calibration file")
    return out


def _img(fig, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{to_base64(fig)}">'


def _table(df: pd.DataFrame, digits: int = 4) -> str:
    def fmt(v):
        if isinstance(v, bool | np.bool_):
            return "pass" if v else "FAIL"
        if isinstance(v, float | np.floating):
            return "" if not np.isfinite(v) else f"{v:.{digits}g}"
        return str(v)

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for v in r:
            cls = (
                ' class="pass"'
                if v is True or v is np.True_
                else (' class="fail"' if v is False or v is np.False_ else "")
            )
            cells.append(f"<td{cls}>{html.escape(fmt(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _verdict(ok: bool, text: str) -> str:
    return f'<p class="{"pass" if ok else "fail"}">{html.escape(text)}</p>'


def _results_section(path: str, ds: xr.Dataset) -> str:
    env = ds.attrs.get("environment", "")
    parts = [
        f"<h2>Design comparison: {html.escape(str(env))}</h2>",
        f'<p class="note">{html.escape(path)}: T = {ds.attrs.get("horizon")}, {ds.sizes.get("rep")} '
        f"replications, seed {ds.attrs.get('seed')}.</p>",
    ]
    if "ate" in ds:
        ate = ds.ate.values
        told = (
            f"True ATE {float(ate[0]):.6g}"
            if np.allclose(ate, ate[0])
            else f"True ATE differs by task (one per replication): mean {float(ate.mean()):.6g}, range "
            f"[{float(ate.min()):.6g}, {float(ate.max()):.6g}]"
        )
        parts.append(
            f'<p class="note">{told}, in the outcome\'s units, as are <code>bias</code> and the ATE '
            "estimates; <code>mse</code> is in those units squared.</p>"
        )
    table = summarize(ds).reset_index()
    parts.append(_table(table))
    parts.append(
        '<p class="note"><code>mse_ratio</code>: MSE of the ATE estimate over the oracle Neyman design\'s '
        "on the same seeds (1 is the limit); <code>design_var_ratio</code>: variance implied by the realised "
        "allocations over V* (less noisy); <code>coverage</code>: of the 95% interval.</p>"
    )
    try:
        parts.append(_img(plot_pi_over_time(ds), f"pi(x) over time, {env}"))
    except ValueError as e:
        parts.append(f'<p class="note">No pi(x) figure: {html.escape(str(e))}</p>')
    return "\n".join(parts)


def _coverage_section(results: list[tuple[str, xr.Dataset]]) -> str:
    usable = {}
    for path, ds in results:
        if "covered" in ds:
            name = str(ds.attrs.get("environment", Path(path).stem))
            while name in usable:
                name += "'"
            usable[name] = ds
    if not usable:
        return ""
    table = coverage_table(usable)
    bad = table[table["flag"] != ""]
    parts = [
        "<h2>Interval coverage</h2>",
        '<p class="note">Share of replications whose 95% interval contains the true ATE, with Wilson 95% '
        "intervals. Flagged rows: the Wilson interval excludes 0.95. Target band [0.93, 0.97] shaded.</p>",
        _table(table[["scenario", "design", "reps", "coverage", "lower", "upper", "flag"]]),
        _img(plot_coverage(table), "coverage"),
    ]
    parts.append(
        _verdict(
            bad.empty,
            "every design covers at the nominal level within Monte Carlo error"
            if bad.empty
            else f"{len(bad)} design/scenario cells exclude 0.95: "
            + ", ".join(f"{r.design} on {r.scenario} ({r.coverage:.3f})" for r in bad.itertuples()),
        )
    )
    return "\n".join(parts)


def _sbc_section(path: str, ds: xr.Dataset) -> str:
    a = ds.attrs
    parts = [
        f"<h2>Simulation-based calibration: {html.escape(str(a.get('teacher')))} teacher on "
        f"{html.escape(str(a.get('prior_name')))}</h2>",
        f'<p class="note">{html.escape(path)}: {ds.sizes["sim"]} simulations of {a.get("units")} units '
        f"(uniform assignment), {a.get('num_draws')} posterior draws each (thinning {a.get('thin')}), "
        f"{a.get('seconds')} s. Simultaneous band level {float(a.get('band_level')):.4f} per quantity "
        f"(Bonferroni over {ds.sizes['quantity']}).</p>",
        _verdict(bool(a.get("passed")), str(a.get("verdict"))),
    ]
    parts.append(_table(pd.DataFrame(summary_rows(ds))))
    if a.get("teacher") == "conjugate":
        parts.append(
            '<p class="note">The conjugate teacher\'s sigma is a plug-in from two Gaussian working '
            "regressions (first and second moment), not a posterior under the prior's model: its ranks "
            "say how far that plug-in is from one. Its mean regression is exact when the noise sd is "
            "known.</p>"
        )
    fit_vars = [v for v in ds.data_vars if str(v).startswith("fit_")]
    if fit_vars:
        fits = pd.DataFrame(
            [
                {
                    "diagnostic": str(v)[4:],
                    "mean": float(ds[v].mean()),
                    "min": float(ds[v].min()),
                    "max": float(ds[v].max()),
                }
                for v in fit_vars
            ]
        )
        parts.append(_table(fits))
    parts.append(_img(plot_sbc(ds), "SBC rank ECDF"))
    return "\n".join(parts)


def _student_section(path: str, ds: xr.Dataset) -> str:
    a = ds.attrs
    parts = [
        f"<h2>Student calibration: {html.escape(str(a.get('prior_name')))}</h2>",
        f'<p class="note">{html.escape(path)}: student {html.escape(str(a.get("student")))} on held-out '
        f"traces {html.escape(str(a.get('traces')))} ({ds.sizes['task']} tasks, one PIT value per task).</p>",
        _verdict(bool(a.get("passed")), str(a.get("verdict"))),
    ]
    rows = pd.DataFrame(
        {
            "source": [str(s) for s in ds.source.values],
            "PIT uniform": [bool(v) for v in ds.pit_passed.values],
            "share outside band": ds.pit_outside.values.astype(float),
            "KS distance": ds.pit_ks.values.astype(float),
            "gate ECE": ds.ece.values.astype(float),
        }
    )
    parts.append(_table(rows))
    parts.append(_img(plot_pit(ds), "PIT ECDF"))
    if int(a.get("n_classes", 1)) > 1:
        parts.append(_img(plot_reliability(ds), "gate reliability"))
    parts.append(_img(plot_imitation(ds), "imitation error"))
    return "\n".join(parts)


def build_report(paths, title: str = "bayesdesign diagnostics report") -> str:
    """The HTML text of the report of ``paths`` (see the module notes)."""
    inputs = load_inputs(paths)
    results = [(p, ds) for k, p, ds in inputs if k == "results"]
    body = []
    for kind, p, ds in inputs:
        if kind == "results":
            body.append(_results_section(p, ds))
    if results:
        body.append(_coverage_section(results))
    for kind, p, ds in inputs:
        if kind == "sbc":
            body.append(_sbc_section(p, ds))
        elif kind == "student-calibration":
            body.append(_student_section(p, ds))
    ecdf = (
        " ECDF panels show the empirical CDF minus the uniform CDF of normalized ranks or PIT values; a calibrated "
        "posterior stays inside the shaded simultaneous band."
        if any(k != "results" for k, _, _ in inputs)
        else ""
    )
    listing = "".join(f"<li><code>{html.escape(p)}</code> ({k})</li>" for k, p, _ in inputs)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="note">bayesdesign {__version__}, {stamp}. Inputs:</p>'
        f"<ul>{listing}</ul>"
        f'<p class="note">How to read each check: docs/diagnostics.md.{ecdf}</p>'
        + "\n".join(b for b in body if b)
        + "</body></html>\n"
    )


def write_report(paths, out: str | os.PathLike, title: str = "bayesdesign diagnostics report") -> Path:
    """Build the report and write it atomically to ``out``."""
    return write_text(out, build_report(paths, title))
