"""The teachers' reweighted second-moment regression (``TeacherConfig.reweight``) in the student's
compiled engine: ``student:pretrained:reweight`` (learned corrections zeroed) decides as
``teacher:mixture:unit-free-flex:lognormal:reweight`` (JAX, float32; an independent code path with 2K classes
where the engine collapses them to K), draws the same unit weights, does not depend on how units
are grouped into updates or on the outcome's units, and the torch backend refuses it."""

import numpy as np
import pytest
import torch

import bayesdesign as bd
from bayesdesign.design import make_design, simulate
from bayesdesign.student import distil, load_policy
from bayesdesign.teachers import TeacherConfig
from bayesdesign.traces import generate_traces

STUDENT, TEACHER = "student:pretrained:reweight", "teacher:mixture:unit-free-flex:lognormal:reweight"
B, N = 4, 250


@pytest.fixture(scope="module")
def s10():
    """``B`` S10 histories of ``N`` units with random assignment and 25 queries across the box."""
    env = bd.get_scenario("S10")
    rng = np.random.default_rng(3)
    x = env.sample_covariates(rng, B * N).reshape(B, N, -1)
    a = rng.integers(0, 2, (B, N)).astype(float)
    y = np.stack([env.sample_outcomes(rng, x[i], a[i]) for i in range(B)])
    lo, hi = (np.atleast_1d(np.asarray(v, float)) for v in env.bounds)
    xq = (lo + (hi - lo) * np.linspace(0.01, 0.99, 25)[:, None])[None].repeat(B, 0)
    return env, x, a, y, xq


@pytest.fixture(scope="module")
def folded(s10):
    """Each design's policy and its state after the histories (one update of all units)."""
    env, x, a, y, _ = s10
    out = {}
    for name in (STUDENT, TEACHER, "student:pretrained"):
        policy = make_design(name, env, 300)
        out[name] = policy, policy.update(policy.init(B), x, a, y, np.full((B, N), 0.5))
    return out


def test_engine_decides_as_the_reweighted_teacher(s10, folded):
    """Tolerance 2e-5 in the probability, as for the unweighted shipped student against
    ``teacher:mixture`` (test_student_unit_free): the teacher's posterior is float32, the
    engine's float64; the weights add a float32 error of about 1e-6 per unit (next test). The
    reweighting moves the probabilities by far more than that (0.02), so ignoring it fails."""
    xq = s10[-1]
    pi = {name: policy.propensity_at(state, xq) for name, (policy, state) in folded.items()}
    assert folded[STUDENT][0]._uses_engine(B)
    assert np.abs(pi[STUDENT] - pi[TEACHER]).max() < 2e-5
    assert np.abs(pi[STUDENT] - pi["student:pretrained"]).max() > 0.02
    assert np.abs(pi[TEACHER] - 0.5).max() > 0.1  # not a trivial agreement at 1/2


def test_safe_rule_with_reweighting_follows_the_teacher(s10):
    """``:safe:reweight``: the safe log-odds rule and the robust second-moment variance, which the
    reweighted regression shares; the same 2e-5 as above."""
    env, x, a, y, xq = s10
    pi = []
    for name in ("student:pretrained:safe:reweight", "teacher:mixture:unit-free-flex:lognormal:safe:reweight"):
        policy = make_design(name, env, 300)
        pi.append(policy.propensity_at(policy.update(policy.init(B), x[:, :150], a[:, :150], y[:, :150], None), xq))
    assert np.abs(pi[0] - pi[1]).max() < 2e-5
    assert np.abs(pi[1] - 0.5).max() > 0.1


def test_engine_draws_the_teachers_weights(folded):
    """Per arm, :math:`\\sum \\log w_i` and :math:`\\sum w_i` after the same histories agree to
    3e-4 absolute (250 units, each weight from a float32 posterior, relative error about 1e-6)
    and 1e-5 relative; the weights do vary (the sums of their logs are far from 0)."""
    student = folded[STUDENT][1]
    teacher = folded[TEACHER][1].weighted
    np.testing.assert_allclose(student.wlog, teacher.log_w, atol=3e-4, rtol=0)
    half = student.wstats.shape[1] // 2
    sum_w = student.wstats[:, [0, half]]  # the count entry of each arm's weighted Gram matrix
    np.testing.assert_allclose(sum_w, teacher.stats.gram[:, :, 0, 0], rtol=1e-5)
    assert np.abs(teacher.log_w).min() > 5.0


def test_state_does_not_depend_on_how_units_are_grouped(s10):
    env, x, a, y, xq = s10
    policy = make_design(STUDENT, env, 300)
    whole = policy.update(policy.init(B), x[:, :40], a[:, :40], y[:, :40], None)
    parts = policy.init(B)
    for lo, hi in ((0, 1), (1, 8), (8, 40)):
        parts = policy.update(parts, x[:, lo:hi], a[:, lo:hi], y[:, lo:hi], None)
    np.testing.assert_allclose(parts.wstats, whole.wstats, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(parts.wlog, whole.wlog, rtol=1e-12, atol=1e-12)
    assert np.abs(whole.wlog).sum() > 1.0
    np.testing.assert_allclose(policy._raw(parts, xq), policy._raw(whole, xq), rtol=0, atol=1e-12)


def test_decisions_ignore_the_outcome_units(s10, folded):
    env, x, a, y, xq = s10
    policy = make_design(STUDENT, env, 300)
    moved = policy.update(policy.init(B), x, a, 1000.0 + 25.0 * y, None)
    policy0, state0 = folded[STUDENT]
    np.testing.assert_allclose(policy._raw(moved, xq), policy0._raw(state0, xq), rtol=0, atol=1e-6)
    np.testing.assert_allclose(moved.wlog, state0.wlog, rtol=0, atol=1e-6)


def test_simulated_design_variance_is_the_teachers():
    res = simulate(bd.get_scenario("S10"), [STUDENT, TEACHER], horizon=300, reps=8, seed=0)
    dv = res.design_var
    np.testing.assert_allclose(dv.sel(design=STUDENT).values, dv.sel(design=TEACHER).values, rtol=1e-4)
    assert np.abs(res.pi.sel(design=STUDENT) - res.pi.sel(design=TEACHER)).max() < 1e-4


def test_torch_backend_refuses_reweight():
    policy = load_policy("pretrained", backend="torch")
    policy.model.conj.set_rule({**policy.student.teacher_config, "reweight": 50.0})
    with pytest.raises(ValueError, match=r"reweight: StudentPolicy\(backend='torch'\).*backend='engine'"):
        policy.init(1)
    with pytest.raises(ValueError, match=r"reweight: StudentModel .*backend='engine'"):
        t = torch.zeros((1, 5, 1))
        policy.model(t, t[..., 0], t[..., 0], t)
    policy.model.conj.set_rule(policy.student.teacher_config)  # reweight 0: torch runs again
    assert policy.init(1).t == 0


def test_distillation_refuses_traces_of_a_reweighted_teacher(tmp_path):
    traces = generate_traces("unit-free", "mixture", tasks=4, horizon=20, queries=2, out=tmp_path / "t.nc",
                             refit_every=10, seed=1, teacher_config=TeacherConfig(reweight=50.0))
    with pytest.raises(ValueError, match=r"t\.nc: the traces' teacher has reweight=50.*torch student"):
        distil(traces, tmp_path / "s", seed=0, steps=2, batch_size=2, progress=False)


def test_students_without_the_reweighted_regression_refuse_the_suffix(tmp_path):
    """A student without the conjugate layer, or of a Bernoulli prior, is refused ``:reweight``
    rather than running without it."""
    from test_student_checkpoint import make_checkpoint

    from bayesdesign.student.policy import design_factory
    from bayesdesign.student.untrained import untrained_student

    env = bd.get_scenario("S2")
    make_checkpoint(tmp_path / "net")
    with pytest.raises(ValueError, match="reweight: .*needs a student with the conjugate layer.*no conjugate layer"):
        design_factory(f"{tmp_path / 'net'}:reweight", env, 100)
    untrained_student("binary", tmp_path / "bin")
    with pytest.raises(ValueError, match="reweight: .*continuous outcome family.*family bernoulli"):
        design_factory(f"{tmp_path / 'bin'}:reweight", env, 100)
    assert design_factory(f"{tmp_path / 'bin'}", env, 100).model.conj.reweight == 0.0
