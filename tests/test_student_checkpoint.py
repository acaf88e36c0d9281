"""Student checkpoints: safetensors + JSON round trip, refusal of another prior or covariate box."""

import json

import numpy as np
import pytest
import torch

from bayesdesign.spec import load_prior
from bayesdesign.student import InputScaling, StudentConfig, StudentModel, load_student, save_student
from bayesdesign.student.checkpoint import read_config
from bayesdesign.student.conjugate import layer_prior
from bayesdesign.teachers import make_teacher
from bayesdesign.teachers.conjugate import prior_from_spec


def make_checkpoint(path, prior="smoothness-mixture", seed=0):
    """A randomly initialised student saved like a trained one."""
    spec = load_prior(prior)
    torch.manual_seed(seed)
    model = StudentModel(StudentConfig(d=spec.d, n_classes=len(spec.classes), d_model=32, token_hidden=32))
    meta = {
        "prior": spec.to_dict(),
        "prior_hash": spec.hash(),
        "scaling": InputScaling.from_spec(spec).to_dict(),
        "teacher": "mixture",
        "teacher_config": {"burn_in": 10, "floor": 0.05, "prior_obs": 5.0,
                           "clip": {"eps_min": 0.02, "scale": 0.5, "power": 1 / 3}},
    }
    save_student(path, model, meta)
    return model, spec


def test_round_trip_gives_identical_outputs(tmp_path):
    model, _ = make_checkpoint(tmp_path / "s")
    loaded = load_student(tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["config.json", "model.safetensors"]
    g = torch.Generator().manual_seed(1)
    u, a, y, uq = torch.rand(2, 30, 1, generator=g), torch.rand(2, 30, generator=g).round(), torch.randn(
        2, 30, generator=g), torch.rand(2, 8, 1, generator=g)
    model.eval()
    with torch.no_grad():
        before, after = model(u, a, y, uq), loaded.model(u, a, y, uq)
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert loaded.teacher_config["burn_in"] == 10 and loaded.spec.name == "smoothness-mixture"
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    assert cfg["architecture"]["d_model"] == 32 and cfg["format"] == "bayesdesign-student"


def test_refuses_another_prior_unless_overridden(tmp_path):
    make_checkpoint(tmp_path / "s")
    with pytest.raises(ValueError, match=r"not the prior the student was trained on.*override=True"):
        load_student(tmp_path / "s", prior="beta1")
    assert load_student(tmp_path / "s", prior="smoothness-mixture").spec.name == "smoothness-mixture"
    assert load_student(tmp_path / "s", prior="beta1", override=True).model.conj is None  # no layer to swap


def test_override_with_another_prior_uses_its_conjugate_layer(tmp_path):
    """An untrained student decides as the conjugate teacher of its layer's prior (corrections are
    zero at init), so after ``prior='beta4', override=True`` a student built for beta0.5 must decide
    as beta4's teacher (the JAX implementation), not as beta0.5's."""
    spec = load_prior("beta0.5")
    tc = {"burn_in": 10, "floor": 0.05, "prior_obs": 5.0, "clip": {"eps_min": 0.02, "scale": 0.5, "power": 1 / 3}}
    torch.manual_seed(0)
    model = StudentModel(StudentConfig(d=1, n_classes=1, n_terms=prior_from_spec(spec).n_terms, d_model=32))
    model.conj.set_prior(layer_prior(spec), tc)
    meta = {"prior": spec.to_dict(), "prior_hash": spec.hash(), "scaling": InputScaling.from_spec(spec).to_dict(),
            "teacher": "conjugate", "teacher_config": tc}
    save_student(tmp_path / "s", model, meta)
    st = load_student(tmp_path / "s", prior="beta4", override=True)

    rng = np.random.default_rng(4)
    x = rng.uniform(size=(4, 200, 1))
    a = (rng.uniform(size=(4, 200)) < 0.5).astype(float)
    y = np.sin(6 * x[..., 0]) * a + (0.3 + a * x[..., 0]) * rng.standard_normal((4, 200))
    xq = rng.uniform(size=(4, 16, 1))
    sc = st.scaling
    t = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        pi = st.model(t(sc.to_unit(x)), t(a), t(sc.standardize(y, a)), t(sc.to_unit(xq)))["pi"].numpy()
    ref = {}
    for name in ("beta4", "beta0.5"):
        teacher = make_teacher("conjugate", name)
        ref[name] = teacher.decide(teacher.update(teacher.init(4), x, a, y, None), xq)["pi"]
    np.testing.assert_allclose(pi, ref["beta4"], atol=2e-3)
    assert np.abs(ref["beta4"] - ref["beta0.5"]).max() > 0.02  # the two priors' decisions differ
    with pytest.raises(
        ValueError,
        match=r"cannot override with prior 'smoothness-mixture': its conjugate layer has \(arms, smoothness classes, "
        r"features\) \(2, 4, 11\), the student's \(2, 1, 11\)",
    ):
        load_student(tmp_path / "s", prior="smoothness-mixture", override=True)


def test_refuses_other_bounds_unless_overridden(tmp_path):
    make_checkpoint(tmp_path / "s")
    with pytest.raises(ValueError, match=r"covariate bounds low=\[10.0\], high=\[20.0\] differ"):
        load_student(tmp_path / "s", bounds=([10.0], [20.0]))
    st = load_student(tmp_path / "s", bounds=([10.0], [20.0]), override=True)
    np.testing.assert_allclose(st.scaling.to_unit(np.array([[15.0]])), [[0.5]])
    assert load_student(tmp_path / "s", bounds=(np.zeros(1), np.ones(1))).scaling.low == (0.0,)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a student checkpoint"):
        read_config(tmp_path)
