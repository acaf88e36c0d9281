"""The student's conjugate layer against the JAX conjugate teacher (an independent implementation)."""

import numpy as np
import pytest
import torch

from bayesdesign.design.environment import evaluate
from bayesdesign.models import sample_tasks
from bayesdesign.spec import load_prior
from bayesdesign.student.conjugate import layer_prior
from bayesdesign.student.model import StudentConfig, StudentModel
from bayesdesign.student.scaling import InputScaling
from bayesdesign.teachers import make_teacher
from bayesdesign.teachers.conjugate import prior_from_spec


def _prior_history(spec, b, n, seed):
    rng = np.random.default_rng(seed)
    env, _ = sample_tasks(spec, rng, b)
    x = env.sample_covariates(rng, b * n).reshape(b, n, spec.d)
    a = (rng.uniform(size=(b, n)) < 0.5).astype(float)
    y = np.where(a == 1, evaluate(env, "sample_outcomes", x, 1, rng), evaluate(env, "sample_outcomes", x, 0, rng))
    return x, a, y


@pytest.mark.parametrize("prior", ["smoothness-mixture", "treated-control"])
@pytest.mark.parametrize("n", [12, 300])
def test_untrained_student_is_the_conjugate_teacher(prior, n):
    """Zero corrections: probability, class posterior and log-sd posterior equal the teacher's.
    treated-control has arm-specific locations, scales and basis sizes (padding)."""
    spec = load_prior(prior)
    teacher = make_teacher("mixture" if spec.is_mixture else "conjugate", spec)
    x, a, y = _prior_history(spec, 6, n, seed=n)
    xq = np.random.default_rng(1).uniform(size=(6, 9, spec.d))
    ref = teacher.decide(teacher.update(teacher.init(6), x, a, y, None), xq)

    sc = InputScaling.from_spec(spec)
    torch.manual_seed(0)
    cfg = StudentConfig(d=spec.d, n_classes=len(spec.classes), n_terms=prior_from_spec(spec).n_terms, d_model=32)
    model = StudentModel(cfg).eval()
    model.conj.set_prior(layer_prior(spec), teacher.config.to_dict())
    t = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        out = model(t(sc.to_unit(x)), t(a), t(sc.standardize(y, a)), t(sc.to_unit(xq)))
    np.testing.assert_allclose(out["pi"].numpy(), ref["pi"], atol=2e-3)
    np.testing.assert_allclose(out["class_prob"].numpy(), ref["class_prob"], atol=5e-3)
    np.testing.assert_allclose(out["log_sd_mean"].numpy(), ref["log_sd_mean"], atol=1e-2)
    np.testing.assert_allclose(out["log_sd_sd"].numpy(), ref["log_sd_sd"], atol=1e-2)
    assert np.std(ref["pi"]) > 0.01  # the check is not vacuous: probabilities vary across queries


def test_layer_corrections_are_learnable_and_off_at_init():
    spec = load_prior("smoothness-mixture")
    cfg = StudentConfig(d=1, n_classes=4, n_terms=10, d_model=32)
    model = StudentModel(cfg)
    assert torch.count_nonzero(model.expert_w) == 0 and torch.count_nonzero(model.gate[-1].weight) == 0
    assert not any(p.requires_grad for p in model.conj.buffers())
    model.conj.set_prior(layer_prior(spec))
    with pytest.raises(ValueError, match="s_mean: expected shape"):
        StudentModel(StudentConfig(d=1, n_classes=4, n_terms=5)).conj.set_prior(layer_prior(spec))
    with pytest.raises(ValueError, match="n_terms"):
        StudentConfig(n_terms=-1)
