"""A live experiment as a service: ``bayesdesign serve`` (FastAPI over a durable SQLAlchemy log).

* :mod:`~bayesdesign.serve.store` — the log's tables, SQLite (WAL) or PostgreSQL;
* :mod:`~bayesdesign.serve.core` — the operations (create, assign, record, analyse), shared with
  :class:`bayesdesign.Experiment`;
* :mod:`~bayesdesign.serve.app` — the HTTP API (imported only when serving);
* :mod:`~bayesdesign.serve.auth` — Bearer keys, kept as hashes;
* :mod:`~bayesdesign.serve.logfile` — the log as the table :func:`bayesdesign.analyze` reads.

The contract is documented in ``docs/serve.md``.
"""
