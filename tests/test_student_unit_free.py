"""The shipped unit-free students (``student:pretrained`` for 1, 2 and 3 covariates): any covariate
box, decisions invariant to the outcome's location and scale (both backends, also with non-zero
corrections, which exercise the tokens' in-context standardization), the mixture teacher of their
prior reproduced, every public scenario run without ``override``, and more covariates refused."""

import copy

import numpy as np
import pytest
import torch

import bayesdesign as bd
from bayesdesign.design import make_design
from bayesdesign.design.environment import evaluate
from bayesdesign.models import sample_tasks
from bayesdesign.spec import load_prior
from bayesdesign.student import load_policy, load_student
from bayesdesign.student.policy import StudentPolicy, resolve_student_path
from bayesdesign.student.untrained import untrained_student
from bayesdesign.teachers import make_teacher

LOW, HIGH = np.array([0.0, 0.0]), np.array([365.0, 50.0])  # S8's days and past orders


def _checkout(rng, b=3, n=240, q=6):
    """S8-like data: two covariates in their units, zero-heavy revenue larger under treatment."""
    x = LOW + (HIGH - LOW) * rng.uniform(size=(b, n, 2))
    a = (rng.uniform(size=(b, n)) < 0.5).astype(float)
    y = np.where(rng.uniform(size=(b, n)) < 0.6, 0.0, np.exp(rng.normal(3.0, 1.0, (b, n)))) * (1 + a * x[..., 1] / 50)
    return x, a, y, LOW + (HIGH - LOW) * rng.uniform(size=(b, q, 2))


def _pi(policy, x, a, y, xq, blocks=(0, 200, 201, 215, 240)):
    """Decisions after appending the units in uneven blocks (the cache's append-one-token path)."""
    st = policy.init(x.shape[0])
    for lo, hi in zip(blocks[:-1], blocks[1:], strict=True):
        st = policy.update(st, x[:, lo:hi], a[:, lo:hi], y[:, lo:hi], None)
    return policy._raw(st, xq)


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory):
    """The two-covariate unit-free student with random, non-zero corrections: decisions then
    depend on the history tokens, not on the closed-form layer alone."""
    path = untrained_student("unit-free-2", tmp_path_factory.mktemp("uf") / "s", seed=1)
    student = load_student(path, bounds=(LOW, HIGH))
    torch.manual_seed(5)
    with torch.no_grad():
        student.model.expert_w.normal_(0, 0.3)
        student.model.gate[-1].weight.normal_(0, 0.3)
    return student


def test_decisions_invariant_to_outcome_location_and_scale(perturbed, rng):
    x, a, y, xq = _checkout(rng)
    shipped = {be: load_policy("pretrained", bounds=(LOW, HIGH), backend=be) for be in ("engine", "torch")}
    learned = {be: StudentPolicy(perturbed, backend=be) for be in ("engine", "torch")}
    for policies in (shipped, learned):
        data = (("y", y), ("c+sy", 3 + 250 * y))
        pis = {(be, k): _pi(p, x, a, yy, xq) for be, p in policies.items() for k, yy in data}
        for be in policies:
            np.testing.assert_allclose(pis[be, "c+sy"], pis[be, "y"], atol=1e-6, rtol=0)
        np.testing.assert_allclose(pis["engine", "y"], pis["torch", "y"], atol=2e-6, rtol=0)
        assert np.ptp(pis["torch", "y"]) > 0.05  # the decisions depend on the covariates
    # the corrections matter (so the tokens were tested), and the one-pass forward agrees with the cache
    assert np.abs(pis["torch", "y"] - _pi(shipped["torch"], x, a, y, xq)).max() > 1e-3
    t = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
    sc = perturbed.scaling
    with torch.no_grad():
        one = perturbed.model(t(sc.to_unit(x)), t(a), torch.as_tensor(y), t(sc.to_unit(xq)))["pi"].double().numpy()
    np.testing.assert_allclose(one, pis["torch", "y"], atol=2e-6, rtol=0)


@pytest.mark.parametrize("d", [1, 3])
def test_shipped_student_is_the_mixture_teacher_of_its_prior(d):
    """Fresh draws of the unit-free prior, outcomes then put in dollars: the shipped student
    decides as ``teacher:mixture:unit-free-flex(-d):lognormal`` (JAX, float32; an independent code
    path)."""
    from bayesdesign.design.registry import SUFFIXES
    from bayesdesign.teachers.base import TeacherConfig

    name = "unit-free-flex" if d == 1 else f"unit-free-flex-{d}"
    spec = load_prior(name)
    rng = np.random.default_rng(40 + d)
    b, n = 8, 300
    env, _ = sample_tasks(spec, rng, b)
    x = env.sample_covariates(rng, b * n).reshape(b, n, d)
    a = (rng.uniform(size=(b, n)) < 0.5).astype(float)
    y = np.where(a == 1, evaluate(env, "sample_outcomes", x, 1, rng), evaluate(env, "sample_outcomes", x, 0, rng))
    y = 40.0 + 90.0 * y
    xq = rng.uniform(size=(b, 8, d))
    teacher = make_teacher("mixture", spec, TeacherConfig(**SUFFIXES["lognormal"]))
    ref = teacher.decide(teacher.update(teacher.init(b), x, a, y, None), xq)["pi"]
    policy = load_policy("pretrained", bounds=(np.zeros(d), np.ones(d)))
    pi = _pi(policy, x, a, y, xq, blocks=(0, 100, 101, n))
    assert np.abs(pi - ref).max() < 2e-5
    assert np.abs(ref - 0.5).max() > 0.1  # not a trivial agreement at 1/2


def test_more_covariates_than_three_are_refused():
    with pytest.raises(ValueError, match="dimension 4 not supported"):
        load_policy("pretrained", bounds=(np.zeros(4), np.ones(4)))
    with pytest.raises(ValueError, match="dimension mismatch: the student takes 2 covariate"):
        load_policy(resolve_student_path("pretrained", 2), bounds=(np.zeros(3), np.ones(3)))

    class Four:
        bounds = (np.zeros(4), np.ones(4))

    with pytest.raises(ValueError, match="dimension"):
        make_design("student:pretrained", Four(), horizon=10)


@pytest.mark.parametrize("name", [f"S{i}" for i in range(1, 11)])
def test_runs_on_every_scenario_without_override(name):
    """Each scenario in its own units; the recorded propensities stay within the teacher's clip
    bounds and, past the burn-in, are not all 1/2 (but on S5, whose binary outcomes are atoms,
    near it: the rule for outcomes with an atom and nothing to gain)."""
    env = bd.get_scenario(name)
    ds = bd.simulate(env, ["student:pretrained"], horizon=120, reps=2, seed=1)
    pi = ds.pi.sel(design="student:pretrained").values
    eps = 0.5 * 120 ** (-1 / 3)  # the clip at the last unit, the narrowest
    assert np.all(np.isfinite(pi)) and pi.min() >= eps - 1e-9 and pi.max() <= 1 - eps + 1e-9
    dev = np.abs(pi[..., 20:] - 0.5).max()
    assert dev < 0.02 if name == "S5" else dev > 0.02


def test_padding_does_not_change_in_context_standardization(perturbed, rng):
    """Training's padded batches: a padded history decides as the unpadded one."""
    x, a, y, xq = _checkout(rng, n=50)
    sc, model = perturbed.scaling, perturbed.model
    t = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
    u, uq = t(sc.to_unit(x)), t(sc.to_unit(xq))
    pad = lambda v, fill: torch.cat([v, torch.full((v.shape[0], 7, *v.shape[2:]), fill)], 1)  # noqa: E731
    mask = torch.cat([torch.ones(3, 50, dtype=torch.bool), torch.zeros(3, 7, dtype=torch.bool)], 1)
    with torch.no_grad():
        plain = model(u, t(a), t(y), uq)["pi"]
        padded = model(pad(u, 0.3), pad(t(a), 1.0), pad(t(y), 1e4), uq, mask)["pi"]
    np.testing.assert_allclose(padded.numpy(), plain.numpy(), atol=2e-6)


@pytest.mark.parametrize("suffix", ["", "safe", "log-odds", "sd"])
def test_rule_settings_follow_the_teacher(tmp_path, perturbed, rng, suffix):
    """A student of a teacher with the default spike-and-slab rule, the safe rule and the robust
    second-moment variance (``teacher:...:safe``), the log-odds rule (``:log-odds``) or the ratio
    of posterior mean sds (``:sd``) decides as that JAX teacher (untrained), and with non-zero
    corrections the two backends agree."""
    from bayesdesign.design.registry import SUFFIXES
    from bayesdesign.teachers.base import TeacherConfig

    settings = SUFFIXES.get(suffix, {})
    x, a, y, xq = _checkout(rng, b=4)
    cfg = TeacherConfig(**settings)
    teacher = make_teacher("mixture", load_prior("checkout"), cfg)  # unit-free-2 in S8's units
    ref = teacher.decide(teacher.update(teacher.init(4), x, a, y, None), xq)["pi"]
    path = untrained_student("unit-free-2", tmp_path / (suffix or "default"), teacher_config=cfg)
    policies = {be: load_policy(path, bounds=(LOW, HIGH), backend=be) for be in ("engine", "torch")}
    pis = {be: _pi(p, x, a, y, xq) for be, p in policies.items()}
    for be in pis:
        np.testing.assert_allclose(pis[be], ref, atol=5e-5, rtol=0)
    # the shipped student with the suffix: its own settings (teacher:mixture:unit-free-flex-2:lognormal), then these
    named = make_design(f"student:pretrained{':' if suffix else ''}{suffix}", bd.get_scenario("S8"), horizon=10)
    same = untrained_student("unit-free-flex-2", tmp_path / "flex",
                             teacher_config=TeacherConfig(**{**SUFFIXES["lognormal"], **settings}))
    pi_named = _pi(named, x, a, y, xq)
    np.testing.assert_allclose(pi_named, _pi(load_policy(same, bounds=(LOW, HIGH)), x, a, y, xq), atol=1e-12, rtol=0)
    other = make_design(f"student:pretrained{'' if suffix else ':sd'}", bd.get_scenario("S8"), horizon=10)
    assert np.abs(_pi(other, x, a, y, xq) - pi_named).max() > 0.01  # the rule changes the decisions here
    perturbed_rule = copy.deepcopy(perturbed)
    perturbed_rule.teacher_config.update(settings)
    perturbed_rule.model.conj.set_rule(perturbed_rule.teacher_config)
    both = [_pi(StudentPolicy(perturbed_rule, backend=be), x, a, y, xq) for be in ("engine", "torch")]
    np.testing.assert_allclose(both[0], both[1], atol=2e-6, rtol=0)


def _atom_midway(y, rng):
    """``y`` with its zeros jittered for the first 100 units, then 25 exact zeros: the rule for
    outcomes with an atom starts at unit 125 (25 of 125 outcomes tie at the minimum)."""
    y = y.copy()
    y[:, :100] += np.where(y[:, :100] == 0, rng.uniform(1e-3, 2e-3, (len(y), 100)), 0.0)
    y[:, 100:125] = 0.0
    return y


def _follow(teacher, pols, x, a, y, xq):
    """Blocks of units (unit 125 alone, which one arm receives): after each, the policies'
    decisions, the teacher's and its ``atom``."""
    states = {k: p.init(len(y)) for k, p in pols.items()}
    tstate = teacher.init(len(y))
    for lo, hi in ((0, 30), (30, 60), (60, 124), (124, 125), (125, 240)):
        block = (x[:, lo:hi], a[:, lo:hi], y[:, lo:hi], None)
        states = {k: pols[k].update(st, *block) for k, st in states.items()}
        tstate = teacher.update(tstate, *block)
        out = teacher.decide(tstate, xq)
        yield hi, {k: pols[k]._raw(st, xq) for k, st in states.items()}, out


def test_atom_rule_follows_the_teacher_from_the_unit_it_applies(tmp_path, perturbed, rng):
    """The rule for outcomes with an atom starts part-way (:func:`_atom_midway`). At every block
    the untrained student (both backends) decides as the JAX teacher, and the perturbed one's
    backends agree; from unit 125 on the decisions differ from a student without the atom share."""
    from bayesdesign.teachers.base import TeacherConfig

    x, a, y, xq = _checkout(rng, b=4)
    y = _atom_midway(y, rng)
    untrained = untrained_student("unit-free-2", tmp_path / "s")
    off = untrained_student("unit-free-2", tmp_path / "off", teacher_config=TeacherConfig(atom=0.0))
    pols = {be: load_policy(untrained, bounds=(LOW, HIGH), backend=be) for be in ("engine", "torch")}
    pols["off"] = load_policy(off, bounds=(LOW, HIGH))
    pols.update({f"p-{be}": StudentPolicy(perturbed, backend=be) for be in ("engine", "torch")})
    seen = []
    for hi, pis, out in _follow(make_teacher("mixture", load_prior("checkout")), pols, x, a, y, xq):
        for be in ("engine", "torch"):
            np.testing.assert_allclose(pis[be], out["pi"], atol=5e-5, rtol=0)
        np.testing.assert_allclose(pis["p-engine"], pis["p-torch"], atol=2e-6, rtol=0)
        seen.append(bool(out["atom"].all()) if out["atom"].all() or not out["atom"].any() else None)
        if hi < 125:
            np.testing.assert_allclose(pis["off"], pis["engine"], atol=1e-12, rtol=0)
        elif hi == 125:
            assert np.abs(pis["off"] - pis["engine"]).max() > 0.01
    assert seen == [False, False, False, True, True]


def test_atom_rule_refits_both_arms_of_a_student_in_fixed_units(tmp_path, rng):
    """A student of a prior in fixed units (no in-context standardization, so the engine refits
    only the arms that receive units): when the rule changes at unit 125, which one arm receives,
    the other arm's fit changes too, and both backends still decide as the teacher."""
    b, n = 4, 240
    x = rng.uniform(size=(b, n, 1))
    a = (rng.uniform(size=(b, n)) < 0.5).astype(float)
    y = _atom_midway(np.where(rng.uniform(size=(b, n)) < 0.6, 0.0, np.exp(rng.normal(0.0, 0.5 + a, (b, n)))), rng)
    path = untrained_student("smoothness-mixture", tmp_path / "s")
    pols = {be: load_policy(path, backend=be) for be in ("engine", "torch")}
    xq = rng.uniform(size=(b, 6, 1))
    for hi, pis, out in _follow(make_teacher("mixture", "smoothness-mixture"), pols, x, a, y, xq):
        assert out["atom"].all() == (hi >= 125)
        for be in pols:
            np.testing.assert_allclose(pis[be], out["pi"], atol=5e-5, rtol=0, err_msg=f"{be} after {hi} units")


def test_student_of_a_separate_prior_is_its_mixture_teacher(tmp_path):
    """The untrained student of ``unit-free-flex`` (16 classes: separate smoothness for the mean
    and the log-sd) decides as ``teacher:mixture:unit-free-flex`` on S10, where the classes matter."""
    path = untrained_student("unit-free-flex", tmp_path / "flex")
    ds = bd.simulate(bd.get_scenario("S10"), ["teacher:mixture:unit-free-flex", f"student:{path}"],
                     horizon=200, reps=6, seed=2, keep_units=200)
    pi = ds["pi"].values
    assert np.abs(pi[0] - pi[1]).max() < 2e-5
    assert np.abs(pi[0] - 0.5).max() > 0.2


def test_lognormal_law_follows_the_teacher_until_the_atom_rule(tmp_path, perturbed, rng):
    """``variance_law='lognormal'`` (``:lognormal``): on revenue-like data whose atom appears at
    unit 125 (:func:`_atom_midway`) the untrained student (both backends) decides as the JAX
    teacher at every block: the lognormal law before, the normal law and its own slab after. Before
    unit 125 the decisions differ from the normal law's (so the law is in effect); from 125 on
    they equal them. The perturbed student's backends agree under the law."""
    from bayesdesign.design.registry import SUFFIXES
    from bayesdesign.teachers.base import TeacherConfig

    cfg = TeacherConfig(**SUFFIXES["lognormal"])
    x, a, y, xq = _checkout(rng, b=4)
    y = _atom_midway(y, rng)
    path = untrained_student("unit-free-2", tmp_path / "ln", teacher_config=cfg)
    normal = untrained_student("unit-free-2", tmp_path / "normal",
                               teacher_config=TeacherConfig(**{**SUFFIXES["lognormal"], "variance_law": "normal"}))
    pols = {be: load_policy(path, bounds=(LOW, HIGH), backend=be) for be in ("engine", "torch")}
    pols["normal"] = load_policy(normal, bounds=(LOW, HIGH))
    ln_perturbed = copy.deepcopy(perturbed)
    ln_perturbed.teacher_config.update(SUFFIXES["lognormal"])
    ln_perturbed.model.conj.set_rule(ln_perturbed.teacher_config)
    pols.update({f"p-{be}": StudentPolicy(ln_perturbed, backend=be) for be in ("engine", "torch")})
    for hi, pis, out in _follow(make_teacher("mixture", load_prior("checkout"), cfg), pols, x, a, y, xq):
        for be in ("engine", "torch"):
            np.testing.assert_allclose(pis[be], out["pi"], atol=5e-5, rtol=0, err_msg=f"{be} after {hi} units")
        np.testing.assert_allclose(pis["p-engine"], pis["p-torch"], atol=2e-6, rtol=0)
        if hi < 125:
            assert np.abs(pis["normal"] - pis["engine"]).max() > 0.005
        else:
            np.testing.assert_allclose(pis["normal"], pis["engine"], atol=1e-12, rtol=0)


def test_lognormal_law_with_reweighting_follows_the_teacher_on_s10(tmp_path):
    """The compiled engine's lognormal law in the reweighted second-moment regression (each unit's
    weight comes from the law's posterior mean sd): the untrained ``unit-free-flex`` student with
    ``:reweight:lognormal`` decides as that teacher on S10."""
    from bayesdesign.design.registry import SUFFIXES
    from bayesdesign.teachers.base import TeacherConfig

    cfg = TeacherConfig(**{**SUFFIXES["reweight"], **SUFFIXES["lognormal"]})
    path = untrained_student("unit-free-flex", tmp_path / "flex", teacher_config=cfg)
    ds = bd.simulate(bd.get_scenario("S10"), ["teacher:mixture:unit-free-flex:reweight:lognormal", f"student:{path}",
                                              "teacher:mixture:unit-free-flex:reweight"],
                     horizon=150, reps=4, seed=3, keep_units=150)
    pi = ds["pi"].values
    assert np.abs(pi[0] - pi[1]).max() < 5e-5
    assert np.abs(pi[0] - pi[2]).max() > 0.01
