"""StudentPolicy: the cached, incremental decision equals a full recomputation; burn-in, clip, design names."""

from pathlib import Path

import numpy as np
import pytest
import torch
from _environments import TwoCovariates
from test_student_checkpoint import make_checkpoint

import bayesdesign as bd
from bayesdesign.design.registry import make_design
from bayesdesign.design.runner import draw_experiments, run_design
from bayesdesign.design.scenarios import get_scenario
from bayesdesign.student import StudentPolicy, load_policy, load_student


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("student") / "s"
    make_checkpoint(path)
    return path


def _draw(rng, b, n):
    return rng.uniform(size=(b, n, 1)), (rng.uniform(size=(b, n)) < 0.5).astype(np.int8), rng.normal(size=(b, n))


def test_incremental_cache_equals_full_recomputation(ckpt, rng):
    policy = load_policy(ckpt, backend="torch")
    x, a, y = _draw(rng, 3, 150)
    xq = rng.uniform(size=(3, 4, 1))
    state = policy.init(3)
    s = 0
    for m in (1, 2, 7, 1, 60, 79):  # grows the cache past its initial capacity
        state = policy.update(state, x[:, s : s + m], a[:, s : s + m], y[:, s : s + m], np.full((3, m), 0.5))
        s += m
    assert state.t == 150
    sc = policy.student.scaling
    with torch.no_grad():
        full = policy.model(
            torch.from_numpy(sc.to_unit(x)), torch.from_numpy(a.astype(np.float32)),
            torch.from_numpy(sc.standardize(y, a)), torch.from_numpy(sc.to_unit(xq)),
        )
    np.testing.assert_allclose(policy._raw(state, xq), full["pi"].numpy(), atol=1e-5)
    np.testing.assert_allclose(policy.propensity_at(state, xq), policy.clip.clip(full["pi"].numpy(), 151), atol=1e-5)
    out = policy.outputs(state, xq)
    np.testing.assert_allclose(out["log_sd_mean"], full["log_sd_mean"].numpy(), atol=1e-5)
    # states are values: updating an older state again (a branch) leaves the newer one intact
    before = policy._raw(state, xq)
    old = policy.init(3)
    old = policy.update(old, x[:, :100], a[:, :100], y[:, :100], np.full((3, 100), 0.5))
    newer = policy.update(old, x[:, 100:], a[:, 100:], y[:, 100:], np.full((3, 50), 0.5))
    policy.update(old, x[:, 100:101] + 0.3, a[:, 100:101], y[:, 100:101] - 2, np.full((3, 1), 0.5))
    np.testing.assert_allclose(policy._raw(newer, xq), before, atol=1e-5)


def test_burn_in_clip_and_history_protocol(ckpt, rng):
    policy = StudentPolicy(load_student(ckpt))
    assert policy.burn_in == 10 and policy.clip.eps_min == 0.02
    x, a, y = _draw(rng, 1, 12)
    h = bd.History(x[0, :9], a[0, :9].astype(float), y[0, :9], np.full(9, 0.5))
    np.testing.assert_array_equal(policy.propensity(h, x[0, 9:12]), 0.5)  # t = 9 < burn-in
    h = bd.History(x[0], a[0].astype(float), y[0], np.full(12, 0.5))
    p = policy.propensity(h, rng.uniform(size=(50, 1)))
    eps = policy.clip.eps(13)
    assert p.shape == (50,) and np.all((p >= eps - 1e-12) & (p <= 1 - eps + 1e-12))


def test_design_names(ckpt):
    env = get_scenario("S2")
    policy = make_design(f"student:{ckpt}", env, horizon=40)
    assert isinstance(policy, StudentPolicy) and policy.name == f"student:{ckpt}"
    env_run, x, y0, y1, u = draw_experiments(env, 40, 3, seed=0)
    pi, a, y = run_design(policy, x, y0, y1, u, batch_size=4)
    assert pi.shape == (3, 40) and np.all(pi[:, :10] == 0.5) and np.all((pi > 0) & (pi < 1))
    wide = bd.design.environment.rescale(env, np.array([0.0]), np.array([5.0]))
    with pytest.raises(ValueError, match="not inside the box the student was trained on"):
        make_design(f"student:{ckpt}", wide, horizon=40)
    # a policy object gets the same checks as a design name, in simulate and in propensity
    with pytest.raises(ValueError, match=r"box \(low \[0.0\], high \[5.0\]\) is not inside the box the student"):
        bd.simulate(wide, [policy], horizon=20, reps=1)
    with pytest.raises(ValueError, match=r"dimension mismatch: .* 1 covariate\(s\), the environment has 2"):
        bd.simulate(TwoCovariates(), [policy], horizon=20, reps=1)
    with pytest.raises(ValueError, match=r"^x \(design .*the box the student was trained on\): covariate 0 has 1"):
        policy.propensity(bd.History.empty(1), np.array([[0.5], [1.5]]))
    with pytest.raises(ValueError, match=r"^x: expected shape \(\.\.\., 1\) \(1 covariate\(s\) per unit\), got \(3, 2"):
        policy.propensity(bd.History.empty(1), np.zeros((3, 2)))
    if not (Path(bd.__file__).parent / "pretrained" / "student" / "config.json").exists():
        with pytest.raises(FileNotFoundError, match="no shipped student"):
            make_design("student:pretrained", env, horizon=40)

