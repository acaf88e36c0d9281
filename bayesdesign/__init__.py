"""bayesdesign: adaptive randomized experiments that estimate an ATE as precisely as the data allow."""

__version__ = "0.1.0"

from . import io, summary  # noqa: E402
from .design import (  # noqa: E402
    ClipSchedule,
    Environment,
    History,
    Policy,
    get_scenario,
    make_design,
    rescale,
    simulate,
)
from .estimation import aipw, analyze  # noqa: E402

__all__ = [
    "__version__",
    "io",
    "summary",
    "simulate",
    "analyze",
    "aipw",
    "get_scenario",
    "rescale",
    "make_design",
    "Environment",
    "Policy",
    "History",
    "ClipSchedule",
]
