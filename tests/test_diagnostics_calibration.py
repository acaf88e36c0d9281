"""Student calibration: PIT and ECE against synthetic truths, and the full check of a tiny
trained student on traces."""

import numpy as np
import pytest
from click.testing import CliRunner

from bayesdesign.cli import main
from bayesdesign.diagnostics.calibration import expected_calibration_error, pit_gaussian, student_calibration
from bayesdesign.diagnostics.ecdf import uniformity_check
from bayesdesign.io import load_dataset
from bayesdesign.student import distil, load_policy
from bayesdesign.traces import generate_traces

KW = dict(
    steps=12,
    batch_size=8,
    lr=3e-3,
    warmup=5,
    val_fraction=0.25,
    val_every=10,
    checkpoint_every=10,
    progress=False,
    architecture={"d_model": 32, "token_hidden": 32, "gate_dim": 32, "expert_hidden": 16},
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("calib")
    traces = generate_traces(
        "smoothness-mixture", "mixture", tasks=32, horizon=40, queries=4, out=base / "t.nc", refit_every=10, seed=1
    )
    distil([traces], base / "student", seed=0, **KW)
    return base / "student", traces


def test_pit_of_exact_gaussian_posterior_is_uniform_and_of_narrow_one_is_not(rng):
    n = 500
    m = rng.normal(size=n)  # posterior mean, sd 0.3 around it: the truth is a draw from it
    truth = m + 0.3 * rng.standard_normal(n)
    assert uniformity_check(pit_gaussian(truth, m, 0.3))["passed"]
    narrow = pit_gaussian(truth, m, 0.1)
    res = uniformity_check(narrow)
    assert not res["passed"] and np.mean((narrow < 0.05) | (narrow > 0.95)) > 0.4
    assert pit_gaussian(1.0, 0.0, 0.0) == 1.0 and pit_gaussian(-1.0, 0.0, 0.0) == 0.0


def test_ece_small_for_calibrated_and_large_for_overconfident(rng):
    p = rng.uniform(size=20000)
    calibrated = rng.uniform(size=p.size) < p
    res = expected_calibration_error(p, calibrated)
    assert res["ece"] < 0.02 and res["count"].sum() == p.size
    np.testing.assert_allclose(res["freq"], res["pred"], atol=0.05)
    # an overconfident forecaster: true probability is pulled towards 1/2
    truth = 0.5 + 0.5 * (p - 0.5)
    res = expected_calibration_error(p, rng.uniform(size=p.size) < truth)
    assert res["ece"] > 0.1  # E|p - truth| = 0.125
    with pytest.raises(ValueError, match="prob"):
        expected_calibration_error([0.2, 1.3], [0, 1])


def test_student_calibration_on_traces(trained, tmp_path):
    student_dir, traces = trained
    ds = student_calibration(student_dir, traces, bins=5)
    assert ds.attrs["kind"] == "student-calibration"
    assert list(ds.source.values) == ["student", "teacher"] and ds.pit.shape == (2, 32)
    assert ((ds.pit >= 0) & (ds.pit <= 1)).all()
    n_obs = ds.n_obs.values
    np.testing.assert_array_equal(n_obs, np.arange(4) * 10)
    # before the burn-in (10 units) teacher and student both randomize at 1/2
    assert float(ds.imitation_error.sel(step=0)) == 0.0
    # the student's outputs are those of its policy: imitation error recomputed from the policy
    tr = load_dataset(traces)
    policy = load_policy(student_dir)
    s = 3
    n = int(n_obs[s])
    state = policy.update(
        policy.init(32), tr.x.values[:, :n], tr.a.values[:, :n], tr.y.values[:, :n], tr.pi.values[:, :n]
    )
    pi = policy.propensity_at(state, tr.x_query.values[:, s])
    np.testing.assert_allclose(
        float(ds.imitation_error.sel(step=s)), np.abs(pi - tr.pi_query.values[:, s]).mean(), atol=1e-5
    )
    # the teacher's PIT values are Phi((truth - m) / s) of the trace's own posterior
    assert 0 <= float(ds.ece.sel(source="teacher")) < 0.5
    res = CliRunner().invoke(
        main,
        ["diagnose", "student", str(student_dir), "--traces", str(traces), "--out", str(tmp_path / "pit.nc"), "--json"],
    )
    assert res.exit_code == 0, res.output
    assert load_dataset(tmp_path / "pit.nc").attrs["kind"] == "student-calibration"


def test_student_calibration_refuses_other_priors(trained, tmp_path):
    from bayesdesign.io import save_dataset

    student_dir, traces = trained
    ds = load_dataset(traces)
    ds.attrs["prior_hash"] = "0" * 64
    save_dataset(ds, tmp_path / "other.nc")
    with pytest.raises(ValueError, match="another prior"):
        student_calibration(student_dir, tmp_path / "other.nc")
    with pytest.raises(FileNotFoundError, match="none.nc"):
        student_calibration(student_dir, tmp_path / "none.nc")


def test_one_class_prior_has_no_gate_ece(tmp_path):
    """beta1 has one smoothness class: the gate is trivially right, so no ECE is reported (was 0.000)."""
    import json

    import torch

    from bayesdesign.spec import load_prior
    from bayesdesign.student import InputScaling, StudentConfig, StudentModel, save_student

    spec = load_prior("beta1")
    torch.manual_seed(0)
    model = StudentModel(StudentConfig(d=1, n_classes=1, d_model=32, token_hidden=32))
    tc = {"burn_in": 10, "floor": 0.05, "prior_obs": 5.0, "clip": {"eps_min": 0.02, "scale": 0.5, "power": 1 / 3}}
    meta = {"prior": spec.to_dict(), "prior_hash": spec.hash(), "scaling": InputScaling.from_spec(spec).to_dict(),
            "teacher": "conjugate", "teacher_config": tc}
    save_student(tmp_path / "s", model, meta)
    traces = generate_traces("beta1", "conjugate", tasks=8, horizon=20, queries=2, out=tmp_path / "t.nc",
                             refit_every=10, seed=0)
    ds = student_calibration(tmp_path / "s", traces, bins=5)
    assert np.isnan(ds.ece.values).all()
    assert "no gate ECE (the prior has one smoothness class)" in ds.attrs["verdict"]
    assert "gate ECE 0" not in ds.attrs["verdict"]
    res = CliRunner().invoke(main, ["diagnose", "student", str(tmp_path / "s"), "--traces", str(traces), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["gate_ece"] == {"student": None, "teacher": None}
