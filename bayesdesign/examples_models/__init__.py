"""Example user NumPyro models shipped with the package (importable everywhere, so a prior file
and a student distilled from them load on any machine).

- :mod:`~bayesdesign.examples_models.revenue`: revenue per visitor, a zero-inflated lognormal
  whose posterior the series working model cannot express; prior file :data:`REVENUE_PRIOR`,
  and :data:`REVENUE_WORKING_PRIOR`, the unit-free series prior whose conjugate teacher is the
  working model (closed-form start) of the student distilled from its NUTS teacher.
"""

from pathlib import Path

REVENUE_PRIOR = Path(__file__).resolve().parent / "revenue.yaml"
REVENUE_WORKING_PRIOR = Path(__file__).resolve().parent / "revenue-working.yaml"

__all__ = ["REVENUE_PRIOR", "REVENUE_WORKING_PRIOR"]
