"""The durable log: two SQLAlchemy Core tables in SQLite (WAL, the embedded default) or PostgreSQL.

``experiments`` holds each experiment's definition and two counters (units assigned, outcomes
received); ``units`` holds one row per assigned unit: its sequence number, covariates, arm, the
propensity used, the uniform that drew the arm, the policy version, and its outcome once it
arrives with the outcome's own sequence number. Every write locks the experiment's row first
(``SELECT ... FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite takes the database's write
lock), so several threads or processes serialise per experiment and the counters give gap-free
sequence numbers.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    Column,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)

__all__ = ["metadata", "experiments", "units", "database_url", "make_engine"]

metadata = MetaData()

experiments = Table(
    "experiments",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("design", Text, nullable=False),
    Column("covariates", Text, nullable=False),  # JSON [{"name", "low", "high"}, ...]
    Column("batch_size", Integer, nullable=False),
    Column("horizon", Integer, nullable=False),
    Column("seed", String(32), nullable=False),  # decimal string: 63-bit integers, portable across databases
    Column("created_at", Float, nullable=False),
    Column("n_units", Integer, nullable=False, default=0),
    Column("n_outcomes", Integer, nullable=False, default=0),
)

units = Table(
    "units",
    metadata,
    Column("experiment", String(64), ForeignKey("experiments.name"), primary_key=True),
    Column("seq", Integer, primary_key=True),  # 1, 2, ... in assignment order
    Column("unit_id", String(128), nullable=False),
    Column("x", Text, nullable=False),  # JSON list in the declared covariate order
    Column("arm", Integer, nullable=False),
    Column("pi", Float, nullable=False),
    Column("u", Float, nullable=False),  # the uniform: arm = 1 iff u < pi
    Column("policy_version", Integer, nullable=False),
    Column("assigned_at", Float, nullable=False),
    Column("y", Float, nullable=True),
    Column("outcome_seq", Integer, nullable=True),  # 1, 2, ... in arrival order of outcomes
    Column("outcome_at", Float, nullable=True),
    UniqueConstraint("experiment", "unit_id", name="uq_units_unit_id"),
    UniqueConstraint("experiment", "outcome_seq", name="uq_units_outcome_seq"),
)
Index("ix_units_outcome", units.c.experiment, units.c.outcome_seq)


def database_url(db: str) -> str:
    """A SQLAlchemy URL from ``--db``: a URL as given (``postgresql://`` uses psycopg 3), else a
    SQLite file path."""
    if "://" in db:
        if db.startswith("postgresql://") or db.startswith("postgres://"):
            return "postgresql+psycopg://" + db.split("://", 1)[1]
        return db
    path = Path(db).expanduser().resolve()
    if not path.parent.is_dir():
        raise ValueError(f"--db: folder {path.parent} does not exist")
    return f"sqlite:///{path}"


SYNC_MODES = ("full", "normal")


def make_engine(db: str, sqlite_sync: str = "full") -> Engine:
    """Engine over ``db`` with the tables created. SQLite: WAL journal, a 30 s busy timeout,
    ``BEGIN IMMEDIATE`` for every transaction (the write lock is taken up front, so concurrent
    writers queue instead of failing) and ``synchronous`` = ``sqlite_sync``: ``full`` (default)
    syncs the log to disk at every commit, so a commit survives a power cut; ``normal`` syncs at
    checkpoints only: a commit survives the process being killed, not the machine losing power."""
    if sqlite_sync not in SYNC_MODES:
        raise ValueError(f"sqlite_sync: expected one of {SYNC_MODES}, got {sqlite_sync!r}")
    url = database_url(db)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # transactions are begun explicitly below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sqlite_sync.upper()}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_size=8, max_overflow=16, pool_pre_ping=True)
    with engine.begin() as conn:  # processes starting together create the tables once
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(2026113012)")
        metadata.create_all(conn, checkfirst=True)
    return engine
