"""Trace generation: schema, labels equal to the teacher's, resumption without loss or repeats."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import bayesdesign as bd
from bayesdesign.cli import main
from bayesdesign.io import load_dataset
from bayesdesign.teachers import make_teacher
from bayesdesign.teachers.base import TeacherConfig
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


def _dose_prior(tmp_path):
    path = tmp_path / "dose.yaml"
    path.write_text(
        "name: dose\ndescription: dose-response user model\ncovariates:\n  - {name: dose, low: 0, high: 10}\n"
        'model: "_user_models:dose_response"\n'
    )
    return path


def test_nuts_traces_from_a_user_model(tmp_path):
    """Tasks drawn from the model's prior: the recorded truth is the model's sd at the queries for
    the latents of the task (closed form from the same draws), and the labels are posterior Neyman."""
    from bayesdesign.models import sample_tasks

    prior = _dose_prior(tmp_path)
    out = generate_traces(prior, "nuts", tasks=3, horizon=40, queries=4, out=tmp_path / "t.nc", refit_every=20,
                          seed=5, teacher_kwargs={"num_warmup": 150, "num_samples": 100})
    ds = load_dataset(out)
    spec = bd.spec.load_prior(prior)
    env, _ = sample_tasks(spec, np.random.default_rng(np.random.SeedSequence([5, 0]).spawn(5)[0]), 3)
    lat = {k: np.asarray(v, float) for k, v in env.env.latent.items()}
    u = ds.x_query.values[..., 0].astype(float) / 10.0  # (task, step, query)
    for a in (0, 1):
        expect = lat["g0"][:, a, None, None] + lat["g1"][:, a, None, None] * u
        np.testing.assert_allclose(ds.true_log_sd.values[:, :, a], expect, atol=1e-4)
    assert np.all(ds.pi.values[:, :10] == 0.5) and np.all(ds.class_prob.values == 1.0)
    assert np.all(np.isfinite(ds.fit_ess.values[:, 1])) and ds.attrs["prior_name"] == "dose"
    # after 20 units the teacher's rule is its posterior's: sbar-ratio away from 1/2 on these tasks
    assert np.abs(ds.pi_raw.values[:, 1] - 0.5).mean() > 0.02


def test_traces_cli_svi_on_a_user_model(tmp_path):
    out = tmp_path / "s.nc"
    res = CliRunner().invoke(main, ["traces", "--prior", str(_dose_prior(tmp_path)), "--teacher", "svi", "-N", "2",
                                    "-T", "20", "-Q", "2", "--refit-every", "20", "--out", str(out)])
    assert res.exit_code == 0, res.output
    ds = load_dataset(out)
    assert ds.attrs["teacher"] == "svi" and np.all(np.isfinite(ds.true_log_sd.values))
    # distil consumes them: the plain network (no conjugate layer for a user model), loadable as a
    # policy for that prior
    from bayesdesign.student.checkpoint import load_student

    res = CliRunner().invoke(main, ["distil", "--traces", str(out), "--out", str(tmp_path / "st"), "--steps", "2",
                                    "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    st = load_student(tmp_path / "st", prior=_dose_prior(tmp_path))
    assert st.model.conj is None and st.meta["prior_hash"] == ds.attrs["prior_hash"]
    _working_prior_student(tmp_path, out)


WORKING = """name: dose-working
description: unit-free beta 1 series, the dose student's working model
covariates:
  - {name: u, low: 0, high: 1}
outcome: {family: gaussian, standardize: true}
arms:
  shared:
    mean: {terms: 5, beta: 1.0, scale: 1.0}
    log_sd: {terms: 5, beta: 1.0, scale: 0.6}
"""


def _working_prior_student(tmp_path, traces):
    """With ``--working-prior`` a user model's student starts as the conjugate teacher of that
    (unit-free) prior on the model's histories: zero corrections decide as ``teacher:conjugate``
    (JAX, an independent code path) on outcomes in any units; a working prior of the wrong shape
    is refused by name."""
    from bayesdesign.student import StudentPolicy
    from bayesdesign.student.checkpoint import load_student
    from bayesdesign.student.measure import zero_corrections

    working = tmp_path / "working.yaml"
    working.write_text(WORKING)
    args = ["distil", "--traces", str(traces), "--steps", "2", "--batch-size", "2"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "w"), "--working-prior", str(working)])
    assert res.exit_code == 0, res.output
    st = load_student(tmp_path / "w")
    assert st.model.conj is not None and st.scaling.in_context and st.meta["working_prior_hash"]
    st.model.load_state_dict(zero_corrections(st.model).state_dict())
    rng = np.random.default_rng(3)
    b, n = 4, 80
    x = rng.uniform(0, 10, (b, n, 1))
    a = (rng.uniform(size=(b, n)) < 0.5).astype(float)
    y = 20.0 + 7.0 * rng.normal(size=(b, n)) * np.where(a == 1, 1 + x[..., 0] / 3, 1.0)
    xq = rng.uniform(0, 10, (b, 6, 1))
    policy = StudentPolicy(st)
    pi = policy._raw(policy.update(policy.init(b), x, a, y, None), xq)
    teacher = make_teacher("conjugate", working, TeacherConfig.from_dict(st.teacher_config))  # SVI's rule
    ref = teacher.decide(teacher.update(teacher.init(b), x / 10, a, y, None), xq / 10)["pi"]
    assert np.abs(pi - ref).max() < 1e-4 and np.abs(ref - 0.5).max() > 0.1
    assert load_student(tmp_path / "st").scaling.in_context is False  # the plain network sees raw outcomes
    with pytest.raises(ValueError, match="covariate bounds"):
        load_student(tmp_path / "w", bounds=(np.zeros(1), np.ones(1)))  # a user model's box is its own
    bad = [("unit-free", "4 smoothness class"), ("unit-free-2", "dimension mismatch"),
           ("beta1", "expected a unit-free prior")]
    for name, match in bad:
        res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / name), "--working-prior", name])
        assert res.exit_code == 2 and "working_prior" in res.output and match in res.output, res.output


def test_traces_cli_teacher_options(tmp_path):
    args = ["traces", "--prior", "beta1", "-N", "2", "-T", "20", "--refit-every", "10", "--out", str(tmp_path / "o.nc")]
    res = CliRunner().invoke(main, [*args, "-o", "no_such_setting=1"])
    assert res.exit_code == 2 and "teacher_kwargs: ['no_such_setting'] are not all settings of teacher 'conjugate'" in (
        res.output)
    res = CliRunner().invoke(main, [*args, "-o", "num_warmup"])
    assert res.exit_code == 2 and "--teacher-option: expected KEY=VALUE, got 'num_warmup'" in res.output
    res = CliRunner().invoke(main, [*args, "--teacher", "nuts", "-o", "num_warmup=20", "-o", "num_samples=10"])
    assert res.exit_code == 0, res.output
    assert json.loads(load_dataset(tmp_path / "o.nc").attrs["teacher_kwargs"]) == {
        "num_warmup": 20, "num_samples": 10, "refit_every": 10}
    # TeacherConfig fields set the configuration (as the design suffix :lognormal), and are checked
    args = ["traces", "--prior", "unit-free", "--teacher", "mixture", "-N", "2", "-T", "20", "--refit-every", "10"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "ln.nc"), "-o", "variance_law=lognormal",
                                    "-o", "spike=0.6"])
    assert res.exit_code == 0, res.output
    cfg = json.loads(load_dataset(tmp_path / "ln.nc").attrs["teacher_config"])
    assert (cfg["variance_law"], cfg["spike"]) == ("lognormal", 0.6)
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "bad.nc"), "-o", "variance_law=gamma"])
    assert res.exit_code == 2 and "variance_law: expected one of ['normal', 'lognormal'], got 'gamma'" in res.output
