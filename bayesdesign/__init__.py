"""bayesdesign: adaptive randomized experiments that estimate an ATE as precisely as the data allow."""

__version__ = "0.1.0"

from .jax_cache import configure as _configure_jax_cache  # noqa: E402

_configure_jax_cache()  # before any JAX program compiles: bayesdesign.jax_cache says why and how to opt out

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


def load_policy(path="pretrained", prior=None, bounds=None, override: bool = False, device: str = "cpu",
                backend: str = "auto"):
    """A trained student as a design (:func:`bayesdesign.student.load_policy`): ``'pretrained'`` for
    the shipped one, or a checkpoint folder. Imported lazily, so torch loads only when used."""
    from .student import load_policy as _load

    return _load(path, prior=prior, bounds=bounds, override=override, device=device, backend=backend)


def __getattr__(name: str):
    """``Experiment`` (:mod:`bayesdesign.experiment`) is imported on first use: it needs the ``serve``
    extra (SQLAlchemy)."""
    if name == "Experiment":
        from .experiment import Experiment

        return Experiment
    raise AttributeError(f"module 'bayesdesign' has no attribute {name!r}")


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
    "load_policy",
    "Environment",
    "Policy",
    "History",
    "ClipSchedule",
    "Experiment",
]
