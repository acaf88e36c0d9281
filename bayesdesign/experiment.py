"""A live experiment in-process: :class:`Experiment` gives the service's operations on the same
database, through the same code (:class:`bayesdesign.serve.core.Core`), for batch jobs and
notebooks. A service and any number of :class:`Experiment` objects may share one database."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .serve.core import Assignment, Core, Definition

__all__ = ["Experiment", "Assignment"]


class Experiment:
    """One experiment of the log at ``db`` (a SQLite path or a database URL).

    >>> exp = Experiment.create("trial.db", "pilot", "plugin-neyman", {"age": (18, 90)})
    >>> a = exp.assign("unit-1", {"age": 42})          # Assignment(unit_id, arm, propensity, policy_version)
    >>> exp.record("unit-1", 3.2)                       # the outcome, any time later
    >>> exp.analysis()                                  # ate, se, Wald interval, confidence sequence
    """

    def __init__(self, db: str, name: str, _core: Core | None = None):
        self._core = _core or Core(db)
        self.definition: Definition = self._core.definition(name)
        self.name = name

    @classmethod
    def create(cls, db: str, name: str, design: str, covariates, batch_size: int = 1, horizon: int = 2000,
               seed: int | None = None) -> Experiment:
        """Create experiment ``name`` with ``design`` (any runner design name) and ``covariates``:
        ``{name: (low, high)}`` or ``[{"name", "low", "high"}, ...]``, in the order the log keeps."""
        if isinstance(covariates, dict):
            covariates = [{"name": k, "low": lo, "high": hi} for k, (lo, hi) in covariates.items()]
        core = Core(db)
        core.create(name, design, list(covariates), batch_size=batch_size, horizon=horizon, seed=seed)
        return cls(db, name, core)

    @classmethod
    def open(cls, db: str, name: str) -> Experiment:
        """An existing experiment (:class:`~bayesdesign.serve.core.NotFound` if there is none)."""
        return cls(db, name)

    def assign(self, unit_id: str, x: dict) -> Assignment:
        """The unit's arm and propensity; the recorded one for a ``unit_id`` seen before."""
        return self._core.assign(self.name, unit_id, x)

    def record(self, unit_id: str, y: float, arm: int | None = None) -> bool:
        """Log an outcome; ``False`` if this same outcome was already logged."""
        return self._core.record(self.name, unit_id, y, arm)["recorded"]

    def analysis(self, level: float = 0.95) -> dict:
        """What ``GET /experiments/{name}/analysis`` returns."""
        return self._core.analysis(self.name, level)

    def log(self) -> pd.DataFrame:
        """One row per unit in assignment order (``unit_id``, covariates, ``a``, ``pi``, ``y``)."""
        return self._core.log(self.name)

    def to_csv(self, path: str | Path) -> Path:
        """Write the log as ``GET /experiments/{name}/log.csv`` does (atomically)."""
        from .io import atomic_path

        with atomic_path(path) as tmp:
            Path(tmp).write_text(self._core.log_csv(self.name))
        return Path(path)

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, design={self.definition.design!r})"
