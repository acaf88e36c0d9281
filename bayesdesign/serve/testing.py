"""Real parts for tests, benchmarks and walk-throughs: the service as a child process on
127.0.0.1, a throwaway PostgreSQL cluster, and an independent replay of a log's propensities."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["free_port", "ServerProcess", "PostgresCluster", "replay_check"]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``bayesdesign serve`` as a child process on 127.0.0.1; :meth:`kill` sends SIGKILL."""

    def __init__(self, db: str, key: str | None, port: int | None = None, env: dict | None = None,
                 log_path: str | Path | None = None, extra_args: tuple[str, ...] = ()):
        self.db, self.key, self.port = db, key, port or free_port()
        self.extra_args = tuple(extra_args)
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                    **(env or {})}
        if key is not None:
            self.env["BAYESDESIGN_API_KEYS"] = key
        self._own_log = log_path is None  # a temporary log is removed when the server ends
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="serve-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> ServerProcess:
        import httpx

        args = [sys.executable, "-m", "bayesdesign.cli", "serve", "--db", self.db, "--port", str(self.port)]
        if self.key is None:
            args.append("--insecure-no-auth")
        args.extend(self.extra_args)
        self.log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(args, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text()[-2000:]
                self.stop()
                raise RuntimeError(f"server exited with {self.proc.returncode}: {tail}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        tail = self.log_path.read_text()[-2000:]
        self.stop()
        raise RuntimeError(f"server did not answer /health within {timeout} s: {tail}")

    def kill(self) -> None:
        """``kill -9``: no shutdown handler runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if getattr(self, "log", None) is not None:
            self.log.close()
            self.log = None
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def client(self, **kwargs):
        import httpx

        headers = {} if self.key is None else {"Authorization": f"Bearer {self.key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 30.0), **kwargs)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PostgresCluster:
    """A private PostgreSQL cluster in a temporary folder (``initdb``, then ``postgres`` as the
    ``postgres`` user when run by root), listening on 127.0.0.1 and a socket in that folder only.
    The server is a child of this process started through ``setpriv --pdeathsig``, so it shuts
    down when this process ends, even by ``kill -9`` (``pg_ctl`` where ``setpriv`` is missing);
    :meth:`stop` shuts it down and removes the folder. :meth:`available` says why not, if not."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bd-pg-"))
        self.data = self.dir / "data"

    @staticmethod
    def _bin(name: str) -> str | None:
        found = shutil.which(name)
        if found:
            return found
        for v in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (v / name).exists():
                return str(v / name)
        return None

    @classmethod
    def available(cls) -> str | None:
        """``None`` if a cluster can be started here, else the reason."""
        if cls._bin("initdb") is None or cls._bin("pg_ctl") is None:
            return "PostgreSQL not installed (initdb/pg_ctl not found; Debian: apt-get install postgresql)"
        if os.geteuid() == 0:
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and no 'postgres' user to run the cluster as"
        return None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def start(self, timeout: float = 60.0) -> PostgresCluster:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(self._bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8")
        opts = ["-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.dir), "-c", "fsync=on",
                "-c", "max_connections=200"]
        setpriv = shutil.which("setpriv")
        if setpriv:  # the server is our child and gets SIGINT (fast shutdown) if we die, however we die
            user = ["--reuid", "postgres", "--regid", "postgres", "--init-groups"] if os.geteuid() == 0 else []
            self.log = open(self.dir / "log", "ab")  # noqa: SIM115 (closed in stop)
            self.proc = subprocess.Popen([setpriv, *user, "--pdeathsig", "INT", self._bin("postgres"), "-D",
                                          str(self.data), *opts], stdout=self.log, stderr=subprocess.STDOUT)
        else:
            self.proc = None
            self._run(self._bin("pg_ctl"), "-D", str(self.data), "-o", " ".join(opts), "-l", str(self.dir / "log"),
                      "-w", "start")
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                    log = (self.dir / "log").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"PostgreSQL did not start: {log}") from None
                time.sleep(0.2)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.log.close()
        elif self.data.exists():
            self._run(self._bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def replay_check(db: str, name: str) -> dict:
    """Rebuild every logged propensity from the log alone, outside the service's code: unit ``s``
    drawn by version ``v`` must have ``pi`` = (exactly) the design's propensity after the first ``v b``
    outcomes (arrival order, fed ``b`` at a time), ``u`` = the coin, ``a = 1[u < pi]``, and ``pi``
    inside the version's clip bounds. Returns counts; raises AssertionError on any mismatch."""
    from ..design.registry import make_design
    from .core import Core, _Env, coin

    core = Core(db)
    definition = core.definition(name)
    log = core.log(name, internal=True)
    cov = [c.name for c in definition.covariates]
    b = definition.batch_size
    assert list(log["seq"]) == list(range(1, len(log) + 1)), "sequence numbers are not 1..n"
    assert log["unit_id"].is_unique, "a unit_id appears twice"
    done = log[log["outcome_seq"].notna()].sort_values("outcome_seq")
    assert list(done["outcome_seq"]) == list(range(1, len(done) + 1)), "outcome sequence numbers are not 1..m"
    policy = make_design(definition.design, _Env(definition), definition.horizon)
    state, version = policy.init(1), 0
    x_done, a_done = done[cov].to_numpy(float), done["a"].to_numpy(np.int8)
    y_done, p_done = done["y"].to_numpy(float), done["pi"].to_numpy(float)
    worst = 0.0
    for v in sorted(set(log["policy_version"])):
        while version < v:
            s = slice(version * b, (version + 1) * b)
            state = policy.update(state, x_done[None, s], a_done[None, s], y_done[None, s], p_done[None, s])
            version += 1
        rows = log[log["policy_version"] == v]
        xs = rows[cov].to_numpy(float)  # one query at a time, as the service asks
        pi = np.array([float(np.asarray(policy.propensity_at(state, x[None, None]), float).reshape(-1)[0]) for x in xs])
        worst = max(worst, float(np.abs(pi - rows["pi"].to_numpy()).max()))
        lo, hi = core.clip_bounds(name, v)
        assert ((rows["pi"] >= lo - 1e-12) & (rows["pi"] <= hi + 1e-12)).all(), f"pi outside [{lo}, {hi}]"
    assert worst == 0.0, f"logged propensities differ from the replay by up to {worst}"
    u = np.array([coin(definition.seed, int(s)) for s in log["seq"]])
    assert np.array_equal(u, log["u"].to_numpy()), "logged uniforms differ from the coin"
    assert np.array_equal((u < log["pi"].to_numpy()).astype(int), log["a"].to_numpy()), "arm != 1[u < pi]"
    core.engine.dispose()
    return {"units": len(log), "outcomes": len(done), "versions": int(log["policy_version"].max()) if len(log) else 0,
            "max_abs_pi_diff": worst, "design": json.dumps(definition.design)}
