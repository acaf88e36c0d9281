"""Outcomes enter the student as the teacher sees them: no clamp, so on heavy-tailed prior draws
(``student-t``: standardized outcomes beyond 20) the untrained student is still its closed form."""

import numpy as np
import torch

from bayesdesign.design.environment import evaluate
from bayesdesign.models import sample_tasks
from bayesdesign.spec import load_prior
from bayesdesign.student import engine
from bayesdesign.student.conjugate import layer_prior
from bayesdesign.student.model import StudentConfig, StudentModel
from bayesdesign.student.scaling import Y_CLAMP, InputScaling
from bayesdesign.teachers import make_teacher
from bayesdesign.teachers.conjugate import prior_from_spec


def _wild_histories(spec, b, n, seed):
    """``b`` student-t prior histories of ``n`` units, each with a standardized outcome beyond 10."""
    rng = np.random.default_rng(seed)
    sc = InputScaling.from_spec(spec)
    out = []
    while len(out) < b:
        env, _ = sample_tasks(spec, rng, 64)
        x = env.sample_covariates(rng, 64 * n).reshape(64, n, spec.d)
        a = (rng.uniform(size=(64, n)) < 0.5).astype(float)
        y = np.where(a == 1, evaluate(env, "sample_outcomes", x, 1, rng), evaluate(env, "sample_outcomes", x, 0, rng))
        ys = (y - np.where(a == 1, sc.y_offset[1], sc.y_offset[0])) / np.where(a == 1, sc.y_scale[1], sc.y_scale[0])
        out += [(x[i], a[i], y[i]) for i in np.flatnonzero(np.abs(ys).max(1) > 10.0)]
    return [np.stack(v) for v in zip(*out[:b], strict=True)]


def test_untrained_student_matches_its_closed_form_on_student_t_draws():
    spec = load_prior("student-t")
    x, a, y = _wild_histories(spec, 6, 300, seed=4)
    sc = InputScaling.from_spec(spec)
    ys = sc.standardize(y, a)
    assert np.abs(ys).max() > 15  # outcomes the old clamp at 10 cut
    teacher = make_teacher("conjugate", spec)
    xq = np.random.default_rng(1).uniform(size=(6, 9, spec.d))
    ref = teacher.decide(teacher.update(teacher.init(6), x, a, y, None), xq)
    torch.manual_seed(0)
    cfg = StudentConfig(d=spec.d, n_classes=1, n_terms=prior_from_spec(spec).n_terms, d_model=32)
    model = StudentModel(cfg).eval()
    model.conj.set_prior(layer_prior(spec), teacher.config.to_dict())
    t = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        out = model(t(sc.to_unit(x)), t(a), t(ys), t(sc.to_unit(xq)))
    np.testing.assert_allclose(out["pi"].numpy(), ref["pi"], atol=2e-3)
    np.testing.assert_allclose(out["log_sd_mean"].numpy(), ref["log_sd_mean"], atol=1e-2)
    # the compiled engine standardizes the same way (float32 values)
    eng = engine.standardize(y, a.astype(np.int8), np.asarray(sc.y_offset), np.asarray(sc.y_scale), Y_CLAMP)
    np.testing.assert_array_equal(eng, ys.astype(np.float64))


def test_standardize_rejects_nothing_finite_and_keeps_ordinary_values():
    sc = InputScaling((0.0,), (1.0,), (0.5, -1.0), (2.0, 0.5))
    y = np.array([[0.5, 40.5, -1.0, -2.0]])
    a = np.array([[0, 0, 1, 1]])
    np.testing.assert_array_equal(sc.standardize(y, a), np.array([[0.0, 20.0, 0.0, -2.0]], np.float32))
