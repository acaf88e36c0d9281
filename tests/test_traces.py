"""Trace generation: schema, labels equal to the teacher's, resumption without loss or repeats."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import bayesdesign as bd
from bayesdesign.cli import main
from bayesdesign.io import load_dataset
from bayesdesign.teachers import make_teacher
from bayesdesign.traces import generate_traces, simulate_chunk


def test_chunk_labels_are_the_teachers(rng):
    teacher = make_teacher("mixture", "smoothness-mixture")
    ds = simulate_chunk(teacher, teacher.spec, 6, 200, 5, 25, seed=[3, 0])
    assert dict(ds.sizes) == {"task": 6, "unit": 200, "covariate": 1, "step": 8, "query": 5, "arm": 2, "class": 4}
    # relabel step 4 (100 units seen) from the recorded history with the teacher's own API
    s, n = 4, 100
    h = bd.History(
        ds.x.values[:, :n].astype(float),
        ds.a.values[:, :n].astype(float),
        ds.y.values[:, :n].astype(float),
        ds.pi.values[:, :n].astype(float),
    )
    state, _ = teacher.fold(h)
    out = teacher.decide(state, ds.x_query.values[:, s].astype(float))
    np.testing.assert_allclose(ds.pi_raw.values[:, s], out["pi"], atol=2e-4)
    np.testing.assert_allclose(ds.pi_query.values[:, s], teacher.clip.clip(out["pi"], n + 1), atol=2e-4)
    np.testing.assert_allclose(ds.class_prob.values[:, s], out["class_prob"], atol=1e-4)
    # the history's probabilities are the teacher's decisions: burn-in first, then its rule
    assert np.all(ds.pi.values[:, :25] == 0.5)
    np.testing.assert_allclose(
        ds.true_pi, bd.efficiency.neyman(np.exp(ds.true_log_sd[:, :, 1]), np.exp(ds.true_log_sd[:, :, 0])), rtol=1e-5
    )


def test_resume_keeps_chunks_and_refuses_other_arguments(tmp_path, monkeypatch):
    out = tmp_path / "tr.nc"
    import bayesdesign.traces as tr

    calls, real = [], tr.simulate_chunk

    def failing(*args, seed, **kw):
        calls.append(seed[1])
        if seed[1] == 2:
            raise KeyboardInterrupt  # the run is interrupted while generating chunk 2
        return real(*args, seed=seed, **kw)

    monkeypatch.setattr(tr, "simulate_chunk", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_traces("beta1", "conjugate", tasks=10, horizon=40, queries=3, out=out, refit_every=20, chunk_tasks=3)
    parts = sorted(p.name for p in (tmp_path / "tr.nc.parts").glob("chunk-*.nc"))
    assert parts == ["chunk-00000.nc", "chunk-00001.nc"] and not out.exists()
    with pytest.raises(
        ValueError, match=r"an interrupted run with other arguments is here \(differs in \['queries'\]\)"
    ):
        generate_traces("beta1", "conjugate", tasks=10, horizon=40, queries=4, out=out, refit_every=20, chunk_tasks=3)
    monkeypatch.setattr(tr, "simulate_chunk", real)
    generate_traces("beta1", "conjugate", tasks=10, horizon=40, queries=3, out=out, refit_every=20, chunk_tasks=3)
    resumed = load_dataset(out)
    fresh_path = tmp_path / "fresh.nc"
    generate_traces(
        "beta1", "conjugate", tasks=10, horizon=40, queries=3, out=fresh_path, refit_every=20, chunk_tasks=3
    )
    fresh = load_dataset(fresh_path)
    assert list(resumed.task.values) == list(range(10))  # nothing lost, nothing repeated
    np.testing.assert_array_equal(resumed.y, fresh.y)
    np.testing.assert_array_equal(resumed.pi_query, fresh.pi_query)
    assert not (tmp_path / "tr.nc.parts").exists()
    assert resumed.attrs["prior_hash"] == bd.spec.load_prior("beta1").hash()
    assert json.loads(resumed.attrs["teacher_config"])["floor"] == 0.05


def test_traces_cli(tmp_path):
    out = tmp_path / "t.nc"
    res = CliRunner().invoke(
        main,
        [
            "traces",
            "--prior",
            "beta1",
            "--teacher",
            "conjugate",
            "-N",
            "4",
            "-T",
            "60",
            "-Q",
            "2",
            "--refit-every",
            "20",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert load_dataset(out).sizes["step"] == 3
    res = CliRunner().invoke(
        main, ["traces", "--prior", "beta1", "-N", "4", "-T", "50", "--refit-every", "20", "--out", str(out)]
    )
    assert res.exit_code == 2 and "refit_every: expected a divisor of the horizon 50" in res.output
