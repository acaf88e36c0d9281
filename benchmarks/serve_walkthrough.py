"""The live experiment end to end, as issue 12's "done when" asks: start ``bayesdesign serve``,
create an experiment, assign 2000 units from 8 concurrent clients with outcomes arriving late and
out of order, ``kill -9`` the server half way, restart it, finish; then check the log (every unit
once, every propensity inside its policy version's clip bounds and rebuilt exactly from the log,
every acknowledged arm as acknowledged) and that ``bayesdesign analyze log.csv`` gives the ATE and
se of ``GET /analysis``.

    python benchmarks/serve_walkthrough.py             # 2000 units, plugin-neyman, SQLite
    python benchmarks/serve_walkthrough.py --quick     # 400 units
    python benchmarks/serve_walkthrough.py --db postgresql://...   # on a PostgreSQL database
    python benchmarks/serve_walkthrough.py --postgres  # on a private PostgreSQL cluster started here
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _common import ROOT, command, md_table, stamp, write_section

from bayesdesign.serve.testing import PostgresCluster, ServerProcess, replay_check

KEY = "walkthrough-key-0123456789"


def outcome(x: dict, arm: int, rng) -> float:
    """A heteroscedastic outcome: treated units are noisier at high ``score`` (true ATE 0.5)."""
    sd = 0.5 + 2.0 * x["score"] if arm else 1.0
    return float(0.02 * x["age"] + 0.5 * arm + sd * rng.normal())


class Client(threading.Thread):
    """Assigns its units in order; reports each outcome 1 to 20 of its own assignments later (late,
    out of order); on a transport error (the server is down) retries the same request until it
    answers, as a real client with an idempotent API would."""

    def __init__(self, k: int, ids: list[str], state: dict):
        super().__init__(daemon=True)
        self.k, self.ids, self.state = k, ids, state
        self.rng = np.random.default_rng(100 + k)
        self.errors = 0

    def _post(self, client, path, body):
        import httpx

        while True:
            try:
                r = client.post(path, json=body)
                if r.status_code < 500:
                    r.raise_for_status()
                    return r.json()
            except httpx.TransportError:
                pass
            self.errors += 1
            time.sleep(0.2)

    def run(self):
        srv: ServerProcess = self.state["server"]
        pending = []  # (due, unit_id, y)
        with srv.client(timeout=10.0) as c:
            for i, u in enumerate(self.ids):
                x = {"age": float(self.rng.uniform(18, 90)), "score": float(self.rng.uniform())}
                a = self._post(c, "/experiments/walk/assign", {"unit_id": u, "x": x})
                with self.state["lock"]:
                    self.state["acked"][u] = (a["arm"], a["propensity"], a["policy_version"])
                pending.append((i + int(self.rng.integers(1, 21)), u, outcome(x, a["arm"], self.rng)))
                for item in [p for p in pending if p[0] <= i]:
                    pending.remove(item)
                    self._post(c, "/experiments/walk/outcomes", {"unit_id": item[1], "y": item[2]})
            for _, u, y in pending:
                self._post(c, "/experiments/walk/outcomes", {"unit_id": u, "y": y})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--units", type=int, default=None)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--design", default="plugin-neyman")
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--db", default=None, help="database (default: a SQLite file in a temporary folder)")
    ap.add_argument("--postgres", action="store_true", help="on a private PostgreSQL cluster started here")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = ap.parse_args()
    if args.postgres:
        with PostgresCluster() as cluster:
            args.db, args.postgres = cluster.create_database("walk"), False
            return run(args, "PostgreSQL (a private cluster)")
    return run(args, "SQLite" if args.db is None else "the given database")


def run(args, where: str) -> None:
    n = args.units or (400 if args.quick else 2000)
    tmp = Path(tempfile.mkdtemp(prefix="walk-"))
    db = args.db or str(tmp / "live.db")
    state = {"lock": threading.Lock(), "acked": {}, "server": ServerProcess(db, KEY).start()}
    t0 = time.time()
    with state["server"].client() as c:
        r = c.post("/experiments", json={"name": "walk", "design": args.design, "batch_size": args.batch_size,
                                         "horizon": n, "seed": 2026, "covariates": [
                                             {"name": "age", "low": 18, "high": 90},
                                             {"name": "score", "low": 0, "high": 1}]})
        r.raise_for_status()
    ids = [f"unit-{i:05d}" for i in range(n)]
    clients = [Client(k, ids[k::args.clients], state) for k in range(args.clients)]
    for cl in clients:
        cl.start()
    while len(state["acked"]) < n // 2:
        time.sleep(0.01)
    port = state["server"].port
    state["server"].kill()
    killed_at = len(state["acked"])
    print(f"kill -9 after {killed_at} acknowledged assignments", flush=True)
    state["server"] = ServerProcess(db, KEY, port=port).start()
    for cl in clients:
        cl.join()
    srv = state["server"]
    with srv.client() as c:
        served = c.get("/experiments/walk/analysis").json()
        (tmp / "log.csv").write_text(c.get("/experiments/walk/log.csv").text)
    srv.stop()
    wall = time.time() - t0
    cli = subprocess.run([sys.executable, "-m", "bayesdesign.cli", "analyze", str(tmp / "log.csv"), "--json"],
                         capture_output=True, text=True, env={**srv.env}, cwd=ROOT, check=True)
    offline = json.loads(cli.stdout)
    check = replay_check(db, "walk")
    import pandas as pd

    log = pd.read_csv(tmp / "log.csv")
    acked = state["acked"]
    same = all((int(row.a), float(row.pi)) == acked[row.unit_id][:2] for row in log.itertuples())
    row = {
        "units": len(log), "distinct_unit_ids": int(log["unit_id"].nunique()), "outcomes": int(log["y"].notna().sum()),
        "killed_after": killed_at, "client_retries": sum(cl.errors for cl in clients),
        "policy_versions": check["versions"], "pi_min": float(log["pi"].min()), "pi_max": float(log["pi"].max()),
        "pi_replay_max_diff": check["max_abs_pi_diff"], "acked_arms_kept": same,
        "ate_service": served["ate"], "ate_analyze": offline["ate"], "se_service": served["se"],
        "se_analyze": offline["se"], "cs": f"[{served['cs_low']:.4f}, {served['cs_high']:.4f}]",
        "ci": f"[{served['ci_low']:.4f}, {served['ci_high']:.4f}]", "seconds": wall,
    }
    ok = (row["units"] == n == row["distinct_unit_ids"] == row["outcomes"] and same
          and abs(row["ate_service"] - row["ate_analyze"]) <= 1e-12 * max(1, abs(row["ate_service"]))
          and abs(row["se_service"] - row["se_analyze"]) <= 1e-12 * row["se_service"])
    for k, v in row.items():
        print(f"{k:20s} {v}")
    print("PASS" if ok else "FAIL")
    if not args.no_doc:
        cols = ["units", "distinct_unit_ids", "outcomes", "killed_after", "client_retries", "policy_versions",
                "pi_min", "pi_max", "pi_replay_max_diff", "acked_arms_kept"]
        cols2 = ["ate_service", "ate_analyze", "se_service", "se_analyze", "ci", "cs", "seconds"]
        body = f"""## Live experiment walk-through (`{command()}`)

{stamp()} `bayesdesign serve` on {where}, design
`{args.design}`, `batch_size = {args.batch_size}`, {n} units from {args.clients} concurrent clients;
each outcome is reported 1 to 20 of its client's assignments later; the server is killed with
SIGKILL half way and restarted on the same log while the clients retry. Every propensity is
rebuilt from the log outside the service (`pi_replay_max_diff`) and checked against its policy
version's clip bounds; `bayesdesign analyze log.csv` against `GET /analysis`
({'equal' if ok else 'NOT equal'}). The true ATE is 0.5.

{md_table([row], cols)}

{md_table([row], cols2)}
"""
        write_section("serve-walkthrough" + ("-postgres" if "PostgreSQL" in where else ""), body)
    shutil.rmtree(tmp, ignore_errors=True)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
