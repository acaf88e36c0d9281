"""Example user NumPyro models shipped with the package (importable everywhere, so a prior file
and a student distilled from them load on any machine).

- :mod:`~bayesdesign.examples_models.revenue`: revenue per visitor, a zero-inflated lognormal
  whose posterior the series working model cannot express; prior file :data:`REVENUE_PRIOR`.
"""

from pathlib import Path

REVENUE_PRIOR = Path(__file__).resolve().parent / "revenue.yaml"

__all__ = ["REVENUE_PRIOR"]
