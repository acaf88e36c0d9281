r"""The live experiment's operations over the durable log, shared by the HTTP service and
:class:`bayesdesign.Experiment`.

**Policy versions.** Version :math:`k` of an experiment's design is the policy state after the
first :math:`k b` outcomes in their order of arrival (``b = batch_size``), fed to the design's
``update`` in batches of :math:`b`; a unit assigned when :math:`n` outcomes are logged is drawn by
version :math:`\lfloor n / b \rfloor`, and the version is logged with it. Every version is a pure
function of the log, so a restarted process, or a second process on the same database, rebuilds
exactly the same propensities.

**The coin.** Unit number :math:`s` is treated iff :math:`u_s < \pi_s` with
:math:`u_s = \mathrm{SHA256}(\text{seed}:s)` read as a 53-bit fraction: reproducible from the
experiment's seed and the unit's sequence number alone, and logged with the unit.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..efficiency import atom_note
from .logfile import for_analysis
from .store import experiments, make_engine, units

__all__ = ["InputError", "NotFound", "Conflict", "Covariate", "Definition", "Assignment", "Core", "coin"]

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
COVARIATE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
RESERVED = ("unit_id", "a", "pi", "y")


# statements built once (per call, building them cost more than running them)
_LOCK_ROW = (select(experiments.c.n_units, experiments.c.n_outcomes)
             .where(experiments.c.name == bindparam("e")).with_for_update())
_SET_COUNTERS = (update(experiments).where(experiments.c.name == bindparam("e"))
                 .values(n_units=bindparam("nu"), n_outcomes=bindparam("no")))
_UNIT = (select(units.c.seq, units.c.x, units.c.arm, units.c.pi, units.c.policy_version, units.c.y)
         .where(units.c.experiment == bindparam("e"), units.c.unit_id == bindparam("uid")))
_INSERT_UNIT = insert(units)
_OUTCOMES = (select(units.c.x, units.c.arm, units.c.y, units.c.pi)
             .where(units.c.experiment == bindparam("e"), units.c.outcome_seq > bindparam("lo"),
                    units.c.outcome_seq <= bindparam("hi"))
             .order_by(units.c.outcome_seq))
_SET_OUTCOME = (update(units).where(units.c.experiment == bindparam("e"), units.c.seq == bindparam("s"))
                .values(y=bindparam("yv"), outcome_seq=bindparam("os"), outcome_at=bindparam("at")))


class InputError(ValueError):
    """Bad input; ``loc`` names the field, as in FastAPI's 422 bodies (e.g. ``("body", "x", "age")``)."""

    def __init__(self, loc: tuple, msg: str):
        super().__init__(f"{'.'.join(str(v) for v in loc)}: {msg}")
        self.loc, self.msg = tuple(loc), msg


class NotFound(LookupError):
    """An experiment or unit that the log does not hold (HTTP 404)."""


class Conflict(ValueError):
    """A request that contradicts the log (HTTP 409); ``field`` names what differs."""

    def __init__(self, field: str, msg: str):
        super().__init__(msg)
        self.field = field


@dataclass(frozen=True)
class Covariate:
    name: str
    low: float
    high: float


@dataclass(frozen=True)
class Definition:
    """An experiment as created: design name, covariates in order, batch size, horizon, seed."""

    name: str
    design: str
    covariates: tuple[Covariate, ...]
    batch_size: int
    horizon: int
    seed: int

    @property
    def d(self) -> int:
        return len(self.covariates)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([c.low for c in self.covariates]), np.array([c.high for c in self.covariates]))

    def public(self) -> dict:
        return {
            "name": self.name,
            "design": self.design,
            "covariates": [{"name": c.name, "low": c.low, "high": c.high} for c in self.covariates],
            "batch_size": self.batch_size,
            "horizon": self.horizon,
            "seed": self.seed,
        }

    def check_x(self, x: Any, loc: tuple = ("body", "x")) -> list[float]:
        """Covariate values in declared order; every declared covariate present, no other, each a
        finite number inside its bounds."""
        if not isinstance(x, dict):
            raise InputError(loc, "expected an object {covariate: value}")
        names = [c.name for c in self.covariates]
        for k in x:
            if k not in names:
                raise InputError((*loc, k), f"unknown covariate; this experiment declares {names}")
        out = []
        for c in self.covariates:
            if c.name not in x:
                raise InputError((*loc, c.name), f"missing covariate; this experiment declares {names}")
            v = x[c.name]
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise InputError((*loc, c.name), f"expected a number, got {type(v).__name__}")
            v = float(v)
            if not math.isfinite(v):
                raise InputError((*loc, c.name), f"expected a finite number, got {v}")
            if not c.low <= v <= c.high:
                raise InputError((*loc, c.name), f"value {v} outside the declared bounds [{c.low}, {c.high}]")
            out.append(v)
        return out


@dataclass(frozen=True)
class Assignment:
    unit_id: str
    arm: int
    propensity: float
    policy_version: int


class _Env:
    """The environment-like object :func:`~bayesdesign.design.registry.make_design` needs: a box."""

    def __init__(self, definition: Definition):
        self.d = definition.d
        self.bounds = definition.bounds
        self.name = definition.name


@dataclass
class _Live:
    """A process's copy of one experiment's design at its latest policy version."""

    definition: Definition
    policy: Any
    version: int = 0
    state: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # held by the group's leader
    queue_lock: threading.Lock = field(default_factory=threading.Lock)
    queue: list = field(default_factory=list)


@dataclass
class _Counters:
    n_units: int
    n_outcomes: int


@dataclass
class _Pending:
    op: Any
    result: Any = None
    error: BaseException | None = None
    done: bool = False


def coin(seed: int, seq: int) -> float:
    """The uniform of unit number ``seq``: SHA-256 of ``"seed:seq"`` as a fraction in [0, 1)."""
    h = hashlib.sha256(f"{seed}:{seq}".encode()).digest()
    return (int.from_bytes(h[:8], "big") >> 11) / 2.0**53


def check_name(name: str, loc: tuple = ("path", "name")) -> str:
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise InputError(loc, f"experiment name must match {NAME_PATTERN}, got {name!r}")
    return name


def check_y(y: Any, loc: tuple = ("body", "y")) -> float:
    if isinstance(y, bool) or not isinstance(y, int | float):
        raise InputError(loc, f"expected a number, got {type(y).__name__}")
    y = float(y)
    if not math.isfinite(y):
        raise InputError(loc, f"expected a finite number, got {y}")
    return y


class Core:
    """The operations of a live experiment on the database ``db`` (a SQLite path or a URL)."""

    def __init__(self, db: str | Engine, sqlite_sync: str = "full"):
        self.engine = db if isinstance(db, Engine) else make_engine(db, sqlite_sync)
        self._live: dict[str, _Live] = {}
        self._guard = threading.Lock()

    # ---- experiments -------------------------------------------------------------------
    def create(self, name: str, design: str, covariates: list[dict], batch_size: int = 1, horizon: int = 2000,
               seed: int | None = None) -> Definition:
        """Create an experiment; the design is built once here so that a bad name fails now."""
        from ..design.registry import make_design

        check_name(name, ("body", "name"))
        if not isinstance(covariates, list | tuple) or not covariates:
            raise InputError(("body", "covariates"), "expected a non-empty list of {name, low, high}")
        covs, seen = [], set()
        for i, c in enumerate(covariates):
            loc = ("body", "covariates", i)
            c = dict(c)
            cname = c.get("name")
            if not isinstance(cname, str) or not re.fullmatch(COVARIATE_PATTERN, cname) or cname in RESERVED:
                raise InputError((*loc, "name"), f"expected a name matching {COVARIATE_PATTERN} other than "
                                                 f"{list(RESERVED)}, got {cname!r}")
            if cname in seen:
                raise InputError((*loc, "name"), f"covariate {cname!r} declared twice")
            seen.add(cname)
            lo, hi = (check_y(c.get(k), (*loc, k)) for k in ("low", "high"))
            if not lo < hi:
                raise InputError((*loc, "high"), f"expected high > low, got low {lo}, high {hi}")
            covs.append(Covariate(cname, lo, hi))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(("body", "batch_size"), f"expected an integer >= 1, got {batch_size!r}")
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 10:
            raise InputError(("body", "horizon"), f"expected an integer >= 10, got {horizon!r}")
        if seed is None:
            seed = secrets.randbits(63)
        elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise InputError(("body", "seed"), f"expected an integer in [0, 2^63), got {seed!r}")
        if not isinstance(design, str):
            raise InputError(("body", "design"), "expected a design name")
        definition = Definition(name, design, tuple(covs), batch_size, horizon, int(seed))
        try:
            policy = make_design(design, _Env(definition), horizon)
        except (ValueError, FileNotFoundError) as e:
            raise InputError(("body", "design"), str(e)) from None
        try:
            with self.engine.begin() as conn:
                if conn.execute(select(experiments.c.name).where(experiments.c.name == name)).first():
                    raise Conflict("name", f"experiment {name!r} exists")
                conn.execute(insert(experiments).values(
                    name=name, design=design, covariates=json.dumps(definition.public()["covariates"]),
                    batch_size=batch_size, horizon=horizon, seed=str(seed), created_at=time.time(), n_units=0,
                    n_outcomes=0,
                ))
        except IntegrityError:  # another process created it between our check and our insert
            raise Conflict("name", f"experiment {name!r} exists") from None
        with self._guard:
            self._live[name] = _Live(definition, policy, 0, policy.init(1))
        return definition

    def definition(self, name: str) -> Definition:
        return self._get(name).definition

    def _get(self, name: str) -> _Live:
        live = self._live.get(name)
        if live is not None:
            return live
        check_name(name)
        with self.engine.connect() as conn:
            row = conn.execute(select(experiments).where(experiments.c.name == name)).mappings().first()
        if row is None:
            raise NotFound(f"experiment {name!r} does not exist")
        from ..design.registry import make_design

        definition = Definition(
            row["name"], row["design"], tuple(Covariate(**c) for c in json.loads(row["covariates"])),
            row["batch_size"], row["horizon"], int(row["seed"]),
        )
        policy = make_design(definition.design, _Env(definition), definition.horizon)
        with self._guard:
            return self._live.setdefault(name, _Live(definition, policy, 0, policy.init(1)))

    # ---- policy versions ---------------------------------------------------------------
    def _advance(self, conn, live: _Live, version: int) -> None:
        """Bring ``live`` to ``version`` by feeding the logged outcomes, in arrival order, in batches."""
        if version <= live.version:
            return
        b, d = live.definition.batch_size, live.definition.d
        rows = conn.execute(_OUTCOMES, {"e": live.definition.name, "lo": live.version * b, "hi": version * b}).all()
        if len(rows) != (version - live.version) * b:
            raise RuntimeError(f"log of {live.definition.name!r}: outcome sequence has gaps")
        x = np.array([json.loads(r.x) for r in rows], dtype=float).reshape(-1, d)
        a = np.array([r.arm for r in rows], dtype=np.int8)
        y = np.array([r.y for r in rows], dtype=float)
        pi = np.array([r.pi for r in rows], dtype=float)
        state = live.state
        for k in range(version - live.version):
            s = slice(k * b, (k + 1) * b)
            state = live.policy.update(state, x[None, s], a[None, s], y[None, s], pi[None, s])
        live.state, live.version = state, version

    def clip_bounds(self, name: str, policy_version: int) -> tuple[float, float]:
        """The clip interval of the design's ``policy_version`` (propensities must lie inside)."""
        live = self._get(name)
        t = policy_version * live.definition.batch_size
        clip = getattr(live.policy, "clip", None)
        if hasattr(live.policy, "delta"):  # clip-ogd projects on its own [delta_t, 1 - delta_t]
            e = float(live.policy.delta(t + 1))
        elif clip is not None:
            e = float(clip.eps(t + 1))
        else:
            e = 0.0
        return e, 1.0 - e

    # ---- units ----------------------------------------------------------------------------
    def _commit(self, live: _Live, op):
        """Run ``op(conn, counters)`` in a transaction shared with the operations that other threads
        submit meanwhile (group commit: one lock of the experiment's row, one commit, one fsync for
        all of them), and return its result once that transaction is committed.

        The first thread to take ``live.lock`` leads: it runs every queued operation in arrival
        order and commits; the others find their result ready. An operation's own error (bad unit,
        conflict) is raised to its caller only; if the commit fails, every caller of the group gets
        the error and this process rebuilds the design's state from the log."""
        item = _Pending(op)
        with live.queue_lock:
            live.queue.append(item)
        with live.lock:
            if not item.done:
                with live.queue_lock:
                    group, live.queue = live.queue, []
                try:
                    with self.engine.begin() as conn:
                        name = live.definition.name
                        counters = _Counters(*conn.execute(_LOCK_ROW, {"e": name}).one())
                        start = (counters.n_units, counters.n_outcomes)
                        for it in group:
                            try:
                                it.result = it.op(conn, counters)
                            except (InputError, NotFound, Conflict) as e:
                                it.error = e
                        if (counters.n_units, counters.n_outcomes) != start:
                            conn.execute(_SET_COUNTERS, {"e": name, "nu": counters.n_units,
                                                         "no": counters.n_outcomes})
                except Exception as e:
                    live.state, live.version = live.policy.init(1), 0  # may hold outcomes never committed
                    for it in group:
                        it.result, it.error = None, e
                finally:
                    for it in group:
                        it.done = True
        if item.error is not None:
            raise item.error
        return item.result

    def assign(self, name: str, unit_id: str, x: dict) -> Assignment:
        """The unit's arm: the recorded one if ``unit_id`` was assigned before, else a new draw,
        committed to the log before this returns."""
        live = self._get(name)
        values = live.definition.check_x(x)

        def op(conn, counters: _Counters) -> Assignment:
            old = conn.execute(_UNIT, {"e": name, "uid": unit_id}).first()
            if old is not None:
                if json.loads(old.x) != values:
                    raise Conflict("x", f"unit {unit_id!r} was assigned with other covariates {json.loads(old.x)}")
                return Assignment(unit_id, int(old.arm), float(old.pi), int(old.policy_version))
            version = counters.n_outcomes // live.definition.batch_size
            self._advance(conn, live, version)
            xq = np.asarray(values, dtype=float)[None, None, :]
            pi = float(np.asarray(live.policy.propensity_at(live.state, xq), dtype=float).reshape(-1)[0])
            if not 0.0 < pi < 1.0:
                raise RuntimeError(f"design {live.definition.design!r} returned propensity {pi} outside (0, 1)")
            seq = counters.n_units + 1
            u = coin(live.definition.seed, seq)
            arm = int(u < pi)
            conn.execute(_INSERT_UNIT, {
                "experiment": name, "seq": seq, "unit_id": unit_id, "x": json.dumps(values), "arm": arm, "pi": pi,
                "u": u, "policy_version": version, "assigned_at": time.time(),
            })
            counters.n_units = seq
            return Assignment(unit_id, arm, pi, version)

        return self._commit(live, op)

    def record(self, name: str, unit_id: str, y: Any, arm: int | None = None) -> dict:
        """Log the outcome ``y`` of an assigned unit; the same outcome again is a no-op, a different
        one a :class:`Conflict`. ``arm``, if given, must be the recorded arm."""
        live = self._get(name)
        y = check_y(y)

        def op(conn, counters: _Counters) -> dict:
            row = conn.execute(_UNIT, {"e": name, "uid": unit_id}).first()
            if row is None:
                raise NotFound(f"unit {unit_id!r} was never assigned in experiment {name!r}")
            if arm is not None and int(arm) != row.arm:
                raise Conflict("arm", f"unit {unit_id!r} was assigned arm {row.arm}, not {arm}")
            if row.y is not None:
                if row.y == y:
                    return {"unit_id": unit_id, "y": y, "recorded": False}
                raise Conflict("y", f"unit {unit_id!r} already has outcome {row.y}; got {y}")
            counters.n_outcomes += 1
            conn.execute(_SET_OUTCOME, {"e": name, "s": row.seq, "yv": y, "os": counters.n_outcomes,
                                        "at": time.time()})
            return {"unit_id": unit_id, "y": y, "recorded": True}

        return self._commit(live, op)

    # ---- reading -------------------------------------------------------------------------
    def log(self, name: str, internal: bool = False) -> pd.DataFrame:
        """One row per unit in assignment order: ``unit_id``, the covariates, ``a``, ``pi``, ``y``
        (NaN while pending); with ``internal`` also ``seq, u, policy_version, outcome_seq``."""
        live = self._get(name)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(units.c.unit_id, units.c.x, units.c.arm, units.c.pi, units.c.y, units.c.seq, units.c.u,
                       units.c.policy_version, units.c.outcome_seq)
                .where(units.c.experiment == name).order_by(units.c.seq)
            ).all()
        cov = [c.name for c in live.definition.covariates]
        x = np.array([json.loads(r.x) for r in rows], dtype=float).reshape(-1, len(cov))
        df = pd.DataFrame({"unit_id": pd.Series([r.unit_id for r in rows], dtype=object)})
        for j, c in enumerate(cov):
            df[c] = x[:, j]
        df["a"] = np.array([r.arm for r in rows], dtype=np.int64)
        df["pi"] = np.array([r.pi for r in rows], dtype=float)
        df["y"] = np.array([np.nan if r.y is None else r.y for r in rows], dtype=float)
        if internal:
            df["seq"] = [r.seq for r in rows]
            df["u"] = [r.u for r in rows]
            df["policy_version"] = [r.policy_version for r in rows]
            df["outcome_seq"] = pd.array([r.outcome_seq for r in rows], dtype="Int64")
        return df

    def log_csv(self, name: str) -> str:
        return self.log(name).to_csv(index=False)

    def analysis(self, name: str, level: float = 0.95) -> dict:
        """AIPW on the units with outcomes (:func:`bayesdesign.analyze`, the same as on ``log.csv``),
        its Wald interval and the anytime-valid confidence sequence tuned for the horizon."""
        from ..confseq import analyze_anytime
        from ..estimation import analyze

        live = self._get(name)
        log = self.log(name)
        table, pending = for_analysis(log)
        out = {"units": len(log), "outcomes": len(table), "ate": None, "se": None, "ci_low": None,
               "ci_high": None, "cs_low": None, "cs_high": None, "level": level,
               "cs_horizon": live.definition.horizon, "message": None, "warnings": []}
        if len(table) == 0:
            out["message"] = "no outcomes yet"
            return out
        try:
            res = analyze(table, level=level)
        except ValueError as e:
            out["message"] = f"not enough outcomes yet: {e}"
            return out
        cs = analyze_anytime(table, alpha=1 - level, n_star=live.definition.horizon)
        note = atom_note(table["y"].to_numpy(), getattr(live.policy, "atom_share", 0.0), live.definition.design)
        out.update(ate=res["ate"], se=res["se"], ci_low=res["lower"], ci_high=res["upper"],
                   cs_low=cs["cs_lower"], cs_high=cs["cs_upper"], warnings=res["warnings"] + ([note] if note else []))
        return out
