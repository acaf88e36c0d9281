"""The live-experiment service as a real process on 127.0.0.1: the HTTP contract, bad input (one
test per kind, each checking the status and the field named), authentication, concurrency, a
``kill -9`` in the middle of a run, and propensities rebuilt from the log. With PostgreSQL
(a private cluster started here) the stateful tests run against it too, and two processes share
one database."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")

from bayesdesign.serve.testing import ROOT, PostgresCluster, ServerProcess, replay_check  # noqa: E402

KEY = "test-key-0123456789abcdef"
COVS = [{"name": "age", "low": 18, "high": 90}, {"name": "score", "low": 0, "high": 1}]


def _outcome(x: dict, arm: int, rng) -> float:
    sd = 0.5 + 1.5 * x["score"] if arm else 1.0
    return float(0.02 * x["age"] + 0.5 * arm + sd * rng.normal())


def _x(rng) -> dict:
    return {"age": float(rng.uniform(18, 90)), "score": float(rng.uniform())}


# ---- databases ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres():
    reason = PostgresCluster.available()
    if reason:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    cluster = PostgresCluster()
    try:
        cluster.start()
    except (subprocess.CalledProcessError, OSError) as e:
        cluster.stop()
        pytest.skip(f"PostgreSQL tests skipped: could not start a cluster: {getattr(e, 'stderr', e)}")
    yield cluster
    cluster.stop()


_counter = iter(range(10**6))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "log.db")
    cluster = request.getfixturevalue("postgres")
    return cluster.create_database(f"t{next(_counter)}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the stateless contract tests (SQLite)."""
    srv = ServerProcess(str(tmp_path_factory.mktemp("srv") / "log.db"), KEY).start()
    with srv.client() as c:
        r = c.post("/experiments", json={"name": "contract", "design": "plugin-neyman", "covariates": COVS})
        assert r.status_code == 201, r.text
        assert c.post("/experiments/contract/assign", json={"unit_id": "u1", "x": {"age": 30, "score": 0.5}}
                      ).status_code == 200
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


# ---- contract ------------------------------------------------------------------------------------
def test_health_needs_no_key_and_everything_else_does(server):
    import httpx

    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": f"Basic {KEY}"}):
        r = httpx.get(server.url + "/experiments/contract/analysis", headers=headers)
        assert r.status_code == 401, headers
        r = httpx.post(server.url + "/experiments/contract/assign", headers=headers,
                       json={"unit_id": "nokey", "x": {"age": 30, "score": 0.5}})
        assert r.status_code == 401
    with server.client() as c:
        assert "nokey" not in c.get("/experiments/contract/log.csv").text


def test_create_twice_is_409_and_unknown_experiment_404(client):
    r = client.post("/experiments", json={"name": "contract", "design": "uniform", "covariates": COVS})
    assert r.status_code == 409 and r.json()["field"] == "name"
    assert client.post("/experiments/nope/assign", json={"unit_id": "a", "x": {}}).status_code == 404


def test_unknown_design_is_422_naming_design(client):
    r = client.post("/experiments", json={"name": "d1", "design": "no-such-design", "covariates": COVS})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "design"]


def test_outcomes_404_409_and_idempotent(client):
    x = {"age": 40, "score": 0.2}
    arm = client.post("/experiments/contract/assign", json={"unit_id": "o1", "x": x}).json()["arm"]
    assert client.post("/experiments/contract/outcomes", json={"unit_id": "ghost", "y": 1.0}).status_code == 404
    assert client.post("/experiments/contract/outcomes", json={"unit_id": "o1", "y": 1.5}).json()["recorded"]
    again = client.post("/experiments/contract/outcomes", json={"unit_id": "o1", "y": 1.5})
    assert again.status_code == 200 and again.json()["recorded"] is False
    r = client.post("/experiments/contract/outcomes", json={"unit_id": "o1", "y": 2.5})
    assert r.status_code == 409 and r.json()["field"] == "y"
    r = client.post("/experiments/contract/outcomes", json={"unit_id": "o1", "y": 1.5, "arm": 1 - arm})
    assert r.status_code == 409 and r.json()["field"] == "arm"
    r = client.post("/experiments/contract/assign", json={"unit_id": "o1", "x": {"age": 41, "score": 0.2}})
    assert r.status_code == 409 and r.json()["field"] == "x"


# ---- bad input: one test per kind, each checks the status and the field named ---------------------
def _bad(client, path, body=None, content=None):
    before = client.get("/experiments/contract/log.csv").text
    if content is not None:
        r = client.post(path, content=content, headers={"Content-Type": "application/json"})
    else:
        r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert client.get("/experiments/contract/log.csv").text == before  # nothing logged changed
    return [d["loc"] for d in r.json()["detail"]]


def test_bad_unknown_covariate(client):
    locs = _bad(client, "/experiments/contract/assign", {"unit_id": "b1", "x": {"age": 30, "score": 0.5, "z": 1}})
    assert locs == [["body", "x", "z"]]


def test_bad_missing_covariate(client):
    assert _bad(client, "/experiments/contract/assign", {"unit_id": "b2", "x": {"age": 30}}) == [["body", "x", "score"]]


def test_bad_out_of_bounds(client):
    locs = _bad(client, "/experiments/contract/assign", {"unit_id": "b3", "x": {"age": 17.9, "score": 0.5}})
    assert locs == [["body", "x", "age"]]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_bad_nan_or_inf_covariate(client, literal):
    content = f'{{"unit_id": "b4", "x": {{"age": {literal}, "score": 0.5}}}}'.encode()
    assert _bad(client, "/experiments/contract/assign", content=content) == [["body", "x", "age"]]


def test_bad_nan_outcome(client):
    content = b'{"unit_id": "u1", "y": NaN}'
    assert _bad(client, "/experiments/contract/outcomes", content=content) == [["body", "y"]]


def test_bad_covariate_type(client):
    locs = _bad(client, "/experiments/contract/assign", {"unit_id": "b5", "x": {"age": "30", "score": 0.5}})
    assert locs == [["body", "x", "age"]]


def test_bad_outcome_type(client):
    assert _bad(client, "/experiments/contract/outcomes", {"unit_id": "u1", "y": "1.0"}) == [["body", "y"]]
    assert _bad(client, "/experiments/contract/outcomes", {"unit_id": "u1", "y": True}) == [["body", "y"]]


def test_bad_arm_type(client):
    assert _bad(client, "/experiments/contract/outcomes", {"unit_id": "u1", "y": 1.0, "arm": "1"}) == [["body", "arm"]]
    assert _bad(client, "/experiments/contract/outcomes", {"unit_id": "u1", "y": 1.0, "arm": 2}) == [["body", "arm"]]


def test_bad_unit_id_type(client):
    assert _bad(client, "/experiments/contract/assign", {"unit_id": 7, "x": {"age": 30, "score": 0.5}}) == [
        ["body", "unit_id"]]


def test_bad_body_over_64k(client):
    pad = "p" * (64 * 1024)
    locs = _bad(client, "/experiments/contract/assign", {"unit_id": "b6", "x": {"age": 30, "score": 0.5}, "pad": pad})
    assert locs == [["body"]]


def test_bad_experiment_name_in_path(client):
    for name in ("bad%20name", "x" * 65, "semi;colon"):
        assert _bad(client, f"/experiments/{name}/assign", {"unit_id": "b7", "x": {}}) == [["path", "name"]]


def test_bad_experiment_name_in_body(client):
    r = client.post("/experiments", json={"name": "no spaces", "design": "uniform", "covariates": COVS})
    assert r.status_code == 422 and [d["loc"] for d in r.json()["detail"]] == [["body", "name"]]


def test_serve_refuses_to_start_without_a_key(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "bayesdesign.cli", "serve", "--db", str(tmp_path / "x.db")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--insecure-no-auth" in r.stderr


# ---- state: concurrency, crash, restart -----------------------------------------------------------
def _create(c, name="live", design="plugin-neyman", batch_size=1, seed=11):
    r = c.post("/experiments", json={"name": name, "design": design, "covariates": COVS, "batch_size": batch_size,
                                     "seed": seed, "horizon": 400})
    assert r.status_code == 201, r.text


def test_concurrent_clients_and_retries_get_one_draw_each(db):
    with ServerProcess(db, KEY) as srv, srv.client() as c:
        _create(c, batch_size=5)
        rng = np.random.default_rng(1)
        xs = {f"u{i}": _x(rng) for i in range(120)}
        answers: dict[str, list] = {u: [] for u in xs}
        lock = threading.Lock()

        def work(ids):
            with srv.client() as cc:
                r_out = np.random.default_rng(len(ids[0]) + hash(ids[0]) % 1000)
                for u in ids:
                    for _ in range(2):  # every request is retried once
                        a = cc.post("/experiments/live/assign", json={"unit_id": u, "x": xs[u]}).json()
                        with lock:
                            answers[u].append(a)
                    cc.post("/experiments/live/outcomes", json={"unit_id": u, "y": _outcome(xs[u], a["arm"], r_out)})

        ids = list(xs)
        with ThreadPoolExecutor(8) as pool:  # 8 clients; units shared by pairs of clients
            list(pool.map(work, [ids[i::4] for i in range(4)] * 2))
        for u, seen in answers.items():
            assert len(seen) == 4 and all(s == seen[0] for s in seen), u
        check = replay_check(db, "live")
        assert check["units"] == 120 and check["outcomes"] == 120 and check["versions"] > 10


def test_kill_9_mid_run_loses_nothing_acknowledged(db):
    rng = np.random.default_rng(2)
    xs = {f"k{i}": _x(rng) for i in range(240)}
    acked: dict[str, tuple] = {}
    lock = threading.Lock()
    srv = ServerProcess(db, KEY).start()
    with srv.client() as c:
        _create(c, name="crash", batch_size=2)

    def work(ids):
        import httpx

        r_out = np.random.default_rng(int(ids[0][1:]))
        with srv.client(timeout=5.0) as cc:
            for u in ids:
                try:
                    a = cc.post("/experiments/crash/assign", json={"unit_id": u, "x": xs[u]}).json()
                    with lock:
                        acked[u] = (a["arm"], a["propensity"], a["policy_version"])
                    cc.post("/experiments/crash/outcomes", json={"unit_id": u, "y": _outcome(xs[u], a["arm"], r_out)})
                except httpx.TransportError:
                    return

    ids = list(xs)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(work, ids[i::8]) for i in range(8)]
        while len(acked) < 100:
            threading.Event().wait(0.01)
        srv.kill()
        [f.result() for f in futures]
    n_acked = len(acked)
    assert 100 <= n_acked < 240
    srv = ServerProcess(db, KEY, port=srv.port).start()
    try:
        with srv.client() as c:
            log = c.get("/experiments/crash/log.csv").text.splitlines()
            logged = {ln.split(",")[0] for ln in log[1:]}
            assert set(acked) <= logged  # every acknowledged unit survived the crash ...
            assert len(logged) == len(log) - 1 <= n_acked + 8  # ... once; at most one in flight per client
            r_out = np.random.default_rng(99)
            for u in ids:  # clients retry everything: acknowledged units get their recorded arm back
                a = c.post("/experiments/crash/assign", json={"unit_id": u, "x": xs[u]}).json()
                if u in acked:
                    assert (a["arm"], a["propensity"], a["policy_version"]) == acked[u]
                c.post("/experiments/crash/outcomes", json={"unit_id": u, "y": _outcome(xs[u], a["arm"], r_out)})
            analysis = c.get("/experiments/crash/analysis").json()
            csv = c.get("/experiments/crash/log.csv").text
    finally:
        srv.stop()
    check = replay_check(db, "crash")
    assert check["units"] == 240 and check["outcomes"] <= 240
    assert analysis["units"] == 240 and analysis["cs_low"] < analysis["ci_low"] < analysis["ci_high"] < analysis[
        "cs_high"]
    assert analysis["warnings"] == []  # Gaussian outcomes: Cochran's rule is met (bayesdesign.estimation.normal_check)
    assert csv.splitlines()[0] == "unit_id,age,score,a,pi,y"


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)], indirect=True)
def test_restart_reproduces_propensities_and_matches_in_process_experiment(db, tmp_path):
    """The same events through the service (killed and restarted half way) and through
    :class:`bayesdesign.Experiment` on a fresh database give the same log, figure for figure."""
    from bayesdesign import Experiment

    rng = np.random.default_rng(3)
    events, pending = [], []
    for i in range(60):
        events.append(("assign", f"r{i}", _x(rng)))
        pending.append(f"r{i}")
        if rng.uniform() < 0.6 and len(pending) > 3:  # outcomes late and out of order
            events.append(("outcome", pending.pop(int(rng.integers(len(pending)))), None))
    y_rng = np.random.default_rng(4)
    ys = {f"r{i}": float(y_rng.normal()) for i in range(60)}

    def run(do_assign, do_outcome, restart=None):
        arms = {}
        for k, (kind, u, x) in enumerate(events):
            if restart and k == len(events) // 2:
                restart()
            if kind == "assign":
                arms[u] = do_assign(u, x)
            else:
                do_outcome(u, ys[u] + arms[u])

    holder = {}

    def start():
        holder["srv"] = ServerProcess(db, KEY).start()
        holder["c"] = holder["srv"].client()

    def restart():
        holder["c"].close()
        holder["srv"].kill()
        start()

    start()
    try:
        _create(holder["c"], name="rep", batch_size=3, seed=5)
        run(lambda u, x: holder["c"].post("/experiments/rep/assign", json={"unit_id": u, "x": x}).json()["arm"],
            lambda u, y: holder["c"].post("/experiments/rep/outcomes", json={"unit_id": u, "y": y}), restart)
        served = holder["c"].get("/experiments/rep/log.csv").text
        analysis = holder["c"].get("/experiments/rep/analysis").json()
    finally:
        holder["c"].close()
        holder["srv"].stop()
    exp = Experiment.create(str(tmp_path / "inproc.db"), "rep", "plugin-neyman",
                            {c["name"]: (c["low"], c["high"]) for c in COVS}, batch_size=3, horizon=400, seed=5)
    run(lambda u, x: exp.assign(u, x).arm, exp.record)
    assert exp.log().to_csv(index=False) == served
    in_process = exp.analysis()
    assert in_process.pop("warnings") == analysis.pop("warnings")
    assert in_process == pytest.approx(analysis)
    replay_check(db, "rep")


def test_log_csv_is_what_bayesdesign_analyze_reads(tmp_path, server):
    with server.client() as c:
        _create(c, name="csv", design="uniform", seed=8)
        rng = np.random.default_rng(5)
        for i in range(80):
            x = _x(rng)
            a = c.post("/experiments/csv/assign", json={"unit_id": f"c{i}", "x": x}).json()
            if i < 75:  # five outcomes still pending
                c.post("/experiments/csv/outcomes", json={"unit_id": f"c{i}", "y": _outcome(x, a["arm"], rng)})
        (tmp_path / "log.csv").write_text(c.get("/experiments/csv/log.csv").text)
        served = c.get("/experiments/csv/analysis").json()
    args = ["analyze", str(tmp_path / "log.csv"), "--json", "--anytime", "--cs-horizon", "400"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "bayesdesign.cli", *args], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "5 unit(s) without an outcome" in r.stderr
    res = json.loads(r.stdout)
    assert served["units"] == 80 and served["outcomes"] == 75 == res["n_units"]
    assert res["ate"] == pytest.approx(served["ate"], rel=1e-12)
    assert res["se"] == pytest.approx(served["se"], rel=1e-12)
    assert (res["cs_lower"], res["cs_upper"]) == pytest.approx((served["cs_low"], served["cs_high"]), rel=1e-12)


def test_two_processes_share_one_postgresql_database(postgres):
    db = postgres.create_database("twoproc")
    rng = np.random.default_rng(6)
    xs = {f"p{i}": _x(rng) for i in range(80)}
    with ServerProcess(db, KEY) as s1, ServerProcess(db, KEY) as s2:
        with s1.client() as c:
            _create(c, name="shared", batch_size=4)

        def work(args):
            srv, ids = args
            r_out = np.random.default_rng(len(ids))
            with srv.client() as cc:
                for u in ids:
                    a = cc.post("/experiments/shared/assign", json={"unit_id": u, "x": xs[u]}).json()
                    other = s2 if srv is s1 else s1
                    with other.client() as oc:  # the retry goes to the other process
                        assert oc.post("/experiments/shared/assign", json={"unit_id": u, "x": xs[u]}).json() == a
                    cc.post("/experiments/shared/outcomes", json={"unit_id": u, "y": _outcome(xs[u], a["arm"], r_out)})

        ids = list(xs)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(work, [(s1 if i % 2 else s2, ids[i::4]) for i in range(4)]))
    check = replay_check(db, "shared")
    assert check["units"] == 80 and check["outcomes"] == 80 and check["versions"] >= 15


# ---- keys and the in-process Experiment (no server) -------------------------------------------------
def test_keys_from_file_or_environment_are_kept_as_hashes(tmp_path):
    from bayesdesign.serve.auth import KeyRing, load_keys

    f = tmp_path / "keys"
    f.write_text("# operators\nfirst-key-0123456789\n\nsecond-key-0123456789\n")
    keys = load_keys(f)
    assert keys == ["first-key-0123456789", "second-key-0123456789"]
    assert load_keys(None, {"BAYESDESIGN_API_KEYS": " a-key-from-env-0123 ,"}) == ["a-key-from-env-0123"]
    ring = KeyRing(keys)
    assert ring.accepts("second-key-0123456789") and not ring.accepts("second-key-012345678")
    assert not ring.accepts(None) and not ring.accepts("")
    assert "first-key-0123456789" not in repr(vars(ring))
    with pytest.raises(ValueError, match="at least 16"):
        load_keys(None, {"BAYESDESIGN_API_KEYS": "short"})
    with pytest.raises(FileNotFoundError, match="--api-keys-file"):
        load_keys(tmp_path / "missing")


def test_experiment_in_process_names_bad_fields(tmp_path):
    from bayesdesign import Experiment
    from bayesdesign.serve.core import Conflict, InputError, NotFound

    exp = Experiment.create(str(tmp_path / "e.db"), "py", "uniform", {"age": (18, 90)}, seed=1)
    a = exp.assign("u1", {"age": 50})
    assert exp.assign("u1", {"age": 50}) == a and 0 < a.propensity < 1
    for x, loc in (({"age": 10}, ("body", "x", "age")), ({"age": float("nan")}, ("body", "x", "age")),
                   ({"agee": 50}, ("body", "x", "agee")), ({"age": "50"}, ("body", "x", "age"))):
        with pytest.raises(InputError) as e:
            exp.assign("u2", x)
        assert e.value.loc == loc
    with pytest.raises(NotFound):
        exp.record("nobody", 1.0)
    assert exp.record("u1", 1.0) and not exp.record("u1", 1.0)
    with pytest.raises(Conflict):
        exp.record("u1", 2.0)
    with pytest.raises(InputError) as e:
        Experiment.create(str(tmp_path / "e.db"), "bad name", "uniform", {"age": (18, 90)})
    assert e.value.loc == ("body", "name")
    assert len(Experiment.open(str(tmp_path / "e.db"), "py").log()) == 1


@pytest.mark.slow
def test_student_design_in_process_reproduces_from_the_log(tmp_path):
    """The shipped student as a live design (one covariate in its [0, 1] box): propensities
    rebuilt from the log outside the service agree, and they move away from 1/2 once outcomes
    arrive (against the untrained start: every propensity of version 0 is 1/2)."""
    from bayesdesign import Experiment

    db = str(tmp_path / "s.db")
    exp = Experiment.create(db, "stu", "student:pretrained", {"x": (0.0, 1.0)}, batch_size=5, horizon=300, seed=3)
    rng = np.random.default_rng(7)
    for i in range(150):
        x = float(rng.uniform())
        a = exp.assign(f"s{i}", {"x": x})
        exp.record(f"s{i}", float((0.2 + 2.0 * x * a.arm) * rng.normal()))
    log = exp.log()
    check = replay_check(db, "stu")
    assert check["versions"] >= 25
    assert (log["pi"].iloc[:1] == 0.5).all() and log["pi"].iloc[100:].std() > 0.02


def test_analysis_says_when_the_design_used_the_rule_for_outcomes_with_an_atom(tmp_path):
    """A live experiment with the shipped student on zero-heavy revenue: the analysis names the
    atom (count and value) and the rule the design used; the same design on continuous outcomes,
    and complete randomization on the revenue, say nothing of it."""
    from bayesdesign import Experiment

    rng = np.random.default_rng(5)
    notes = {}
    for name, design, zeros in (("rev", "student:pretrained", True), ("cont", "student:pretrained", False),
                                ("unif", "uniform", True)):
        exp = Experiment.create(str(tmp_path / f"{name}.db"), name, design, {"x": (0.0, 1.0)}, batch_size=10, seed=2)
        for i in range(80):
            a = exp.assign(f"u{i}", {"x": float(rng.uniform())})
            spend = float(np.exp(rng.normal(3.0, 1.0 + a.arm)))
            exp.record(f"u{i}", 0.0 if zeros and rng.uniform() < 0.7 else spend)
        notes[name] = [w for w in exp.analysis()["warnings"] if "atom" in w]
    assert len(notes["rev"]) == 1 and "outcomes equal 0 (an atom)" in notes["rev"][0]
    assert "student:pretrained" in notes["rev"][0]
    assert notes["cont"] == [] and notes["unif"] == []
