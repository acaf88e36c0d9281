"""Chunked work on Ray (bayesdesign.parallel): results identical whatever the worker count, with a
real local Ray instance, and a run killed mid-way resumes without losing or repeating a task."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from bayesdesign.diagnostics.sbc import run_sbc
from bayesdesign.io import load_dataset
from bayesdesign.parallel import map_chunks, ray_session
from bayesdesign.traces import generate_traces

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parent.parent
DOSE = ("name: dose\ndescription: dose-response user model\ncovariates:\n  - {name: dose, low: 0, high: 10}\n"
        'model: "_user_models:dose_response"\n')


def test_map_chunks_checks_its_arguments():
    with pytest.raises(ValueError, match="workers: expected an integer >= 1, got 0"):
        map_chunks(abs, [(-1,)], workers=0)
    with pytest.raises(ValueError, match="ray_address: expected a Ray address"):
        map_chunks(abs, [(-1,)], address=" ")
    assert map_chunks(abs, [(-1,), (2,), (-3,)]) == [1, 2, 3]


def test_one_local_ray_instance_gives_the_in_process_results(tmp_path):
    """A local Ray instance (started and stopped by ray_session, as a run does): conjugate traces
    and SBC identical with one and two workers, and workers import a user model through the
    driver's sys.path (tests/ is on it under pytest)."""
    from _user_models import niceness, task_truth

    prior = tmp_path / "dose.yaml"
    prior.write_text(DOSE)
    kw = dict(tasks=6, horizon=40, queries=3, refit_every=20, chunk_tasks=2, seed=3)
    sbc_kw = dict(sims=12, units=30, draws=20, batch=4, seed=2)
    one = load_dataset(generate_traces("beta1", "conjugate", out=tmp_path / "one.nc", **kw))
    sbc_one = run_sbc("beta2", "conjugate", **sbc_kw)
    truth_one = map_chunks(task_truth, [(str(prior), s) for s in range(3)])
    with ray_session(2):
        assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2
        two = load_dataset(generate_traces("beta1", "conjugate", out=tmp_path / "two.nc", workers=2, **kw))
        sbc_two = run_sbc("beta2", "conjugate", workers=2, **sbc_kw)
        truth_two = map_chunks(task_truth, [(str(prior), s) for s in range(3)], workers=2)
        # workers at the driver's priority (Ray's default is nice 15), so a busy machine does not starve them
        assert map_chunks(niceness, [(0,), (1,)], workers=2) == [os.nice(0)] * 2
    assert not ray.is_initialized()
    xr.testing.assert_identical(one, two)
    assert list(two.task.values) == list(range(6))
    np.testing.assert_array_equal(sbc_one["rank"].values, sbc_two["rank"].values)
    np.testing.assert_array_equal(sbc_one["post_mean"].values, sbc_two["post_mean"].values)
    for a, b in zip(truth_one, truth_two, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(truth_one[0], truth_one[1])  # the chunks' seeds differ


@pytest.mark.slow
def test_nuts_traces_of_a_user_model_identical_with_one_and_two_workers(tmp_path):
    prior = tmp_path / "dose.yaml"
    prior.write_text(DOSE)
    kw = dict(tasks=4, horizon=20, queries=3, refit_every=10, chunk_tasks=2, seed=3,
              teacher_kwargs={"num_warmup": 40, "num_samples": 30})
    one = generate_traces(prior, "nuts", out=tmp_path / "one.nc", **kw)
    try:
        two = generate_traces(prior, "nuts", out=tmp_path / "two.nc", workers=2, **kw)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    xr.testing.assert_identical(load_dataset(one), load_dataset(two))


def _traces_cmd(out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "bayesdesign.cli", "traces", "--prior", "beta1", "--teacher", "conjugate",
            "-N", "24", "-T", "300", "-Q", "2", "--refit-every", "10", "--chunk-tasks", "2", "--seed", "4",
            "--workers", str(workers), "--no-progress", "--out", str(out)]


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_killed_run_resumes_without_loss_or_repeats(tmp_path, workers):
    """The driver (with Ray and its workers: one process group) is killed with SIGKILL once some
    chunks are written; the same command again completes the run, identical to an uninterrupted
    one. (Default run: one worker; the Ray variant is slow.)"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "killed.nc"
    parts = tmp_path / "killed.nc.parts"
    log = tmp_path / "killed.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(_traces_cmd(out, workers), env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None and len(list(parts.glob("chunk-*.nc"))) < 2:
                time.sleep(0.05)
            assert proc.poll() is None, f"the run ended before it could be killed: {log.read_text()[-2000:]}"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    written = sorted(p.name for p in parts.glob("chunk-*.nc"))
    assert 2 <= len(written) < 12 and not out.exists()
    res = subprocess.run(_traces_cmd(out, workers), env=env, capture_output=True, text=True, timeout=600,
                         start_new_session=True)
    assert res.returncode == 0, res.stderr[-2000:]
    ref = tmp_path / "ref.nc"
    generate_traces("beta1", "conjugate", tasks=24, horizon=300, queries=2, out=ref, refit_every=10,
                    chunk_tasks=2, seed=4)
    a, b = load_dataset(out), load_dataset(ref)
    assert list(a.task.values) == list(range(24))  # nothing lost, nothing repeated
    for v in ("x", "y", "pi", "pi_query", "pi_raw", "log_sd_mean"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    assert not parts.exists()
