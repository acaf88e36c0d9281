"""The shipped student: it loads without training, imitates its teacher on fresh prior draws, and
beats complete randomization as a design."""

from pathlib import Path

import numpy as np
import pytest

import bayesdesign as bd
from bayesdesign.design.environment import evaluate
from bayesdesign.models import sample_tasks
from bayesdesign.spec import load_prior
from bayesdesign.student.policy import resolve_student_path
from bayesdesign.teachers import make_teacher

PRETRAINED = resolve_student_path("pretrained")


def test_shipped_and_small():
    size = sum(p.stat().st_size for p in Path(PRETRAINED).iterdir())
    assert size < 20 * 2**20
    policy = bd.load_policy("pretrained", prior="smoothness-mixture")  # the prior hash matches
    assert policy.student.meta["teacher"] == "mixture" and policy.model.conj is not None


@pytest.mark.parametrize("n", [30, 400])
def test_imitates_the_mixture_teacher_on_fresh_prior_draws(n):
    spec = load_prior("smoothness-mixture")
    rng = np.random.default_rng(100 + n)
    b = 16
    env, _ = sample_tasks(spec, rng, b)
    x = env.sample_covariates(rng, b * n).reshape(b, n, 1)
    a = (rng.uniform(size=(b, n)) < 0.5).astype(float)
    y = np.where(a == 1, evaluate(env, "sample_outcomes", x, 1, rng), evaluate(env, "sample_outcomes", x, 0, rng))
    xq = rng.uniform(size=(b, 8, 1))
    teacher = make_teacher("mixture", spec)
    ref = teacher.decide(teacher.update(teacher.init(b), x, a, y, None), xq)
    policy = bd.load_policy("pretrained", backend="torch")
    out = policy.outputs(policy.update(policy.init(b), x, a, y, np.full((b, n), 0.5)), xq)
    assert np.abs(out["pi"] - ref["pi"]).mean() < 0.01
    assert 0.5 * np.abs(out["class_prob"] - ref["class_prob"]).sum(-1).mean() < 0.03
    # the log-sd heads are fit to the truth, not to the teacher's (overdispersed) posterior: close, not equal
    truth = np.stack([np.log(evaluate(env, "sd", xq, arm)) for arm in (0, 1)], 1)
    err_s, err_t = (np.abs(v["log_sd_mean"] - truth).mean() for v in (out, ref))
    assert np.abs(out["log_sd_mean"] - ref["log_sd_mean"]).mean() < 0.15 and err_s < 1.1 * err_t


def test_student_design_beats_complete_randomization_on_s2():
    ds = bd.simulate(bd.get_scenario("S2"), ["uniform", "student:pretrained"], horizon=300, reps=16, seed=3,
                     keep_units=0)
    dvr = (ds.design_var / ds.v_star).mean("rep")
    assert float(dvr.sel(design="uniform")) > 1.25
    assert float(dvr.sel(design="student:pretrained")) < 1.12
