"""The live-experiment service: assignments per second and assignment latency (p50, p99) with 16
concurrent clients, for ``plugin-neyman`` and the shipped student, on SQLite and (where it can be
started here) PostgreSQL.

    python benchmarks/serve.py            # 4000 units per configuration
    python benchmarks/serve.py --quick    # 800 units per configuration

The service runs as its own process (``bayesdesign serve``, one uvicorn worker) on 127.0.0.1; the
clients are asyncio tasks of this process sharing the same cores. Each client assigns a unit,
then reports the outcome of the unit it assigned 5 steps before (outcomes arrive late), with
``batch_size = 1`` (a new policy version after every outcome: the most refitting there can be).
Latency is the client-side time of ``POST /assign``: request, validation, the policy decision,
the commit (SQLite: WAL with ``synchronous=FULL``) and the response. A warm-up of 200 units (and,
for the student, the first-use compile of its engine) is not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DOC, md_table, stamp, write_section

from bayesdesign.serve.testing import PostgresCluster, ServerProcess

KEY = "benchmark-key-0123456789"
DESIGNS = ("plugin-neyman", "student:pretrained")


async def _health(url: str, n: int, clients: int) -> None:
    import httpx

    counter = iter(range(n))
    async with httpx.AsyncClient(base_url=url) as client:

        async def one():
            for _ in counter:
                (await client.get("/health")).raise_for_status()

        await asyncio.gather(*(one() for _ in range(clients)))


def health_cpu_ms(db: str, clients: int, n: int = 2000) -> float:
    """CPU time of the server per ``GET /health``: the floor of the HTTP stack on this machine."""
    with ServerProcess(db, KEY) as srv:
        asyncio.run(_health(srv.url, 200, clients))
        cpu0 = _cpu_seconds(srv.proc.pid)
        asyncio.run(_health(srv.url, n, clients))
        return 1e3 * (_cpu_seconds(srv.proc.pid) - cpu0) / n


async def _run_clients(url: str, name: str, n_units: int, clients: int, offset: int, lag: int = 5):
    import httpx

    lat = []
    counter = iter(range(offset, offset + n_units))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, limits=limits,
                                 timeout=600.0) as client:

        async def one(k: int):
            rng = np.random.default_rng(k)
            done = []
            for i in counter:
                x = float(rng.uniform())
                t0 = time.perf_counter()
                r = await client.post(f"/experiments/{name}/assign", json={"unit_id": f"u{i}", "x": {"x": x}})
                lat.append(time.perf_counter() - t0)
                r.raise_for_status()
                arm = r.json()["arm"]
                done.append((f"u{i}", float(x + 0.5 * arm + (0.5 + x * arm) * rng.normal())))
                if len(done) > lag:
                    u, y = done.pop(0)
                    (await client.post(f"/experiments/{name}/outcomes", json={"unit_id": u, "y": y})).raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(k) for k in range(clients)))
        wall = time.perf_counter() - t0
    return np.array(lat), wall


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(db: str, backend: str, design: str, n_units: int, clients: int, sync: str = "full") -> dict:
    with ServerProcess(db, KEY, extra_args=("--sqlite-sync", sync)) as srv:
        name = design.replace(":", "-")
        with srv.client() as c:
            r = c.post("/experiments", json={"name": name, "design": design, "batch_size": 1, "seed": 1,
                                             "horizon": n_units + 200,
                                             "covariates": [{"name": "x", "low": 0.0, "high": 1.0}]})
            r.raise_for_status()
        asyncio.run(_run_clients(srv.url, name, 200, clients, 0))  # warm-up (and the student's compile)
        cpu0 = _cpu_seconds(srv.proc.pid)
        lat, wall = asyncio.run(_run_clients(srv.url, name, n_units, clients, 200))
        cpu = _cpu_seconds(srv.proc.pid) - cpu0
    row = {"database": backend if backend != "SQLite" else f"SQLite ({sync})", "design": design,
           "clients": clients, "units": n_units,
           "assignments_per_s": n_units / wall, "p50_ms": 1e3 * float(np.percentile(lat, 50)),
           "p99_ms": 1e3 * float(np.percentile(lat, 99)), "server_cpu_ms_per_unit": 1e3 * cpu / n_units}
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--doc", default=str(DOC))
    args = ap.parse_args()
    n_units = 800 if args.quick else 4000
    designs = [d for d in args.designs.split(",") if d]
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for design in designs:
            rows.append(measure(str(Path(tmp) / f"{design.replace(':', '-')}.db"), "SQLite", design, n_units,
                                args.clients))
        rows.append(measure(str(Path(tmp) / "normal.db"), "SQLite", designs[0], n_units, args.clients, "normal"))
        health = health_cpu_ms(str(Path(tmp) / "health.db"), args.clients)
    pg_note = ""
    reason = "--no-postgres" if args.no_postgres else PostgresCluster.available()
    if reason is None:
        with PostgresCluster() as cluster:
            for k, design in enumerate(designs):
                rows.append(measure(cluster.create_database(f"bench{k}"), "PostgreSQL", design, n_units,
                                    args.clients))
    else:
        pg_note = f" PostgreSQL not measured: {reason}."
    load1 = os.getloadavg()
    cols = ["database", "design", "clients", "units", "assignments_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_unit"]
    table = md_table(rows, cols)
    print(table)
    body = f"""## Live-experiment service (`benchmarks/serve.py`{' --quick' if args.quick else ''})

{stamp()} One `bayesdesign serve` process (one uvicorn worker) on 127.0.0.1 and {args.clients}
concurrent asyncio clients in the benchmark's process, sharing the machine's cores. Each client
assigns a unit and reports the outcome of the unit it assigned 5 steps before; `batch_size = 1`
(a new policy version after every outcome). Latency: client-side time of `POST /assign`, commit
included (SQLite WAL with `--sqlite-sync full`, the default, or `normal`; PostgreSQL: a private
cluster with `fsync=on`). Concurrent requests share a transaction (group commit). After a
warm-up of 200 units. Load average (1 min) {load0[0]:.1f} at the start and {load1[0]:.1f} at the end
(other jobs shared the machine: these figures are lower bounds). `server_cpu_ms_per_unit`: CPU
time of the service process per unit (its assignment and its outcome; less sensitive to the load
than the throughput): one core serves at most 1000 / that many units per second. For scale, the
same server spent {health:.2f} ms of CPU per `GET /health` (no database, no design) under the same
clients.{pg_note}

{table}
"""
    write_section("serve", body, Path(args.doc))
    print(f"written to {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
