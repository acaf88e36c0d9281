"""Diagnostics: are the teachers' posteriors and the student's outputs calibrated, and do the
intervals cover?

* :mod:`~bayesdesign.diagnostics.convergence` — R-hat, bulk and tail ESS, divergences of NUTS fits
  (ArviZ), with warning thresholds;
* :mod:`~bayesdesign.diagnostics.ecdf` — the ECDF uniformity check with ArviZ's simultaneous band;
* :mod:`~bayesdesign.diagnostics.sbc` — simulation-based calibration of the teachers;
* :mod:`~bayesdesign.diagnostics.calibration` — PIT, gate reliability and imitation error of a
  student on held-out traces;
* :mod:`~bayesdesign.diagnostics.coverage` — interval coverage with Wilson error bars;
* :mod:`~bayesdesign.diagnostics.plots` — the figures (matplotlib through ArviZ);
* :mod:`~bayesdesign.diagnostics.report` — the self-contained HTML report.

Every saved result is an ``xarray.Dataset`` whose ``attrs["kind"]`` says what it is
(``"sbc"``, ``"student-calibration"``), so that the report recognises its inputs.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "expected_calibration_error": "calibration",
    "pit_gaussian": "calibration",
    "student_calibration": "calibration",
    "THRESHOLDS": "convergence",
    "ConvergenceWarning": "convergence",
    "convergence_flags": "convergence",
    "convergence_summary": "convergence",
    "ess_tail": "convergence",
    "coverage_table": "coverage",
    "wilson_interval": "coverage",
    "uniformity_check": "ecdf",
    "build_report": "report",
    "write_report": "report",
    "run_sbc": "sbc",
    "sbc_ranks": "sbc",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """Import submodules on first use (``bayesdesign --help`` need not load scipy and ArviZ)."""
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
