"""The compiled inference engine against the torch model it re-implements, its numerical kernels
against NumPy, and the policy's backends against each other."""

import time

import numpy as np
import pytest
import torch
from test_student_checkpoint import make_checkpoint

from bayesdesign.spec import load_prior
from bayesdesign.student import StudentConfig, StudentModel, load_policy, load_student
from bayesdesign.student.conjugate import layer_prior
from bayesdesign.student.engine import (
    Engine,
    _cholesky_inverse,
    _softmax_rows,
    compiled_on_disk,
    standardize,
    to_unit,
)
from bayesdesign.student.scaling import Y_CLAMP, InputScaling
from bayesdesign.teachers.conjugate import prior_from_spec


def _conjugate_model(prior: str, **arch) -> StudentModel:
    """A student with the conjugate layer on ``prior`` and random, non-zero corrections."""
    spec = load_prior(prior)
    torch.manual_seed(3)
    cfg = StudentConfig(d=spec.d, n_classes=len(spec.classes), n_terms=prior_from_spec(spec).n_terms, d_model=32,
                        n_heads=2, n_layers=3, **arch)
    model = StudentModel(cfg).eval()
    model.conj.set_prior(layer_prior(spec), {"floor": 0.05, "prior_obs": 5.0})
    with torch.no_grad():
        model.expert_w.normal_(0, 0.3)
        model.gate[-1].weight.normal_(0, 0.3)
        model.var_evidence.fill_(0.4)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):  # non-trivial affines, folded by the engine
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return model


@pytest.fixture(scope="module", params=["network", "treated-control", "pretrained", "asinh-tokens"])
def model(request, tmp_path_factory):
    if request.param == "network":  # no conjugate layer
        path = tmp_path_factory.mktemp("engine") / "s"
        make_checkpoint(path)
        return load_student(path).model
    if request.param == "pretrained":
        return load_policy("pretrained").model
    if request.param == "asinh-tokens":  # tokens see asinh(y) (heavy tails), the pooled moments y
        return _conjugate_model("student-t", token_asinh=True)
    return _conjugate_model(request.param)


def _torch_pi(model, u, a, y, uq):
    with torch.no_grad():
        t = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
        return model(t(u), t(a), t(y), t(uq))["pi"].double().numpy()


def test_engine_equals_torch_model(model):
    """Decisions after units appended 1, 2, 7, 1, 60 and 129 at a time (the cache grows past its
    capacity several times) equal the torch model on the whole history, for 3 replications and
    5 queries; arms are unbalanced and the first units are all control (an arm without units)."""
    rng = np.random.default_rng(0)
    b, n, d = 3, 200, model.cfg.d
    u = rng.uniform(size=(b, n, d)).astype(np.float32)
    a = (rng.uniform(size=(b, n)) < 0.3).astype(np.float32)
    a[:, :3] = 0
    y = (1.5 * rng.normal(size=(b, n)) + 0.5).astype(np.float32)
    uq = rng.uniform(size=(b, 5, d)).astype(np.float32)
    engine = Engine(model)
    state, s = engine.init(b), 0
    for m in (1, 2, 7, 1, 60, 129):
        state = engine.update(state, u[:, s : s + m], a[:, s : s + m], y[:, s : s + m])
        s += m
        np.testing.assert_allclose(engine.decide(state, uq), _torch_pi(model, u[:, :s], a[:, :s], y[:, :s], uq),
                                   atol=2e-6, err_msg=f"after {s} units")
    assert state.t == n and state.cache.capacity >= n + 1
    assert compiled_on_disk()  # Numba wrote its cache: the next process loads instead of compiling


def test_engine_states_are_values(model):
    """Updating an older state again (a branch) leaves the newer one intact, and the branch decides
    as a fresh run on its own history."""
    rng = np.random.default_rng(1)
    d = model.cfg.d
    u, a, y = rng.uniform(size=(2, 80, d)), (rng.uniform(size=(2, 80)) < 0.5) * 1.0, rng.normal(size=(2, 80))
    uq = rng.uniform(size=(2, 3, d))
    engine = Engine(model)
    old = engine.update(engine.init(2), u[:, :50], a[:, :50], y[:, :50])
    newer = engine.update(old, u[:, 50:], a[:, 50:], y[:, 50:])
    before = engine.decide(newer, uq)
    branch = engine.update(old, u[:, 50:51] * 0.5, 1 - a[:, 50:51], y[:, 50:51] - 2)
    np.testing.assert_array_equal(engine.decide(newer, uq), before)
    joined = [np.concatenate(p, 1) for p in ((u[:, :50], u[:, 50:51] * 0.5), (a[:, :50], 1 - a[:, 50:51]),
                                             (y[:, :50], y[:, 50:51] - 2))]
    ref = engine.update(engine.init(2), *joined)
    np.testing.assert_allclose(engine.decide(branch, uq), engine.decide(ref, uq), atol=1e-12)
    with pytest.raises(ValueError, match="no unit yet"):
        engine.decide(engine.init(1), uq[:1])


def test_softmax_and_cholesky_kernels():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(4, 300)) * 8
    scores[0, :50] = -1e4  # far below the row's maximum: weight (close to) zero, no overflow
    out = np.full((4, 300), np.nan)
    _softmax_rows(scores, out, 257)
    ref = np.exp(scores[:, :257] - scores[:, :257].max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(out[:, :257], ref, rtol=1e-11, atol=1e-16)
    assert np.isnan(out[:, 257:]).all()  # positions past n are not touched
    m = rng.normal(size=(11, 11))
    spd = m @ m.T + np.eye(11)
    lower, inv = np.empty((11, 11)), np.empty((11, 11))
    logdet = _cholesky_inverse(spd, lower, inv)
    np.testing.assert_allclose(np.tril(lower), np.linalg.cholesky(spd), rtol=1e-12)
    np.testing.assert_allclose(inv, np.linalg.inv(spd), rtol=1e-9, atol=1e-12)
    assert logdet == pytest.approx(np.linalg.slogdet(spd)[1], rel=1e-12)


def test_policy_backends_agree_and_auto_is_the_engine_on_cpu(rng):
    engine, torch_ = load_policy("pretrained", backend="engine"), load_policy("pretrained", backend="torch")
    auto = load_policy("pretrained")
    for b in (1, 40):
        x, a, y = rng.uniform(size=(b, 120, 1)), rng.integers(0, 2, (b, 120)), rng.normal(size=(b, 120))
        xq = rng.uniform(size=(b, 4, 1))
        states = [p.update(p.init(b), x, a, y, np.full((b, 120), 0.5)) for p in (engine, torch_, auto)]
        pis = [p.propensity_at(s, xq) for p, s in zip((engine, torch_, auto), states, strict=True)]
        np.testing.assert_allclose(pis[0], pis[1], atol=1e-5)
        assert type(states[2]) is type(states[0]) is not type(states[1])
    with pytest.raises(ValueError, match="computes decisions only"):
        engine.outputs(states[0], xq)
    with pytest.raises(ValueError, match="backend: expected"):
        load_policy("pretrained", backend="onnx")


def test_compiled_input_maps_equal_input_scaling(rng):
    sc = InputScaling((-2.0, 10.0), (3.0, 12.5), (1.5, -4.0), (2.0, 0.25))
    x = rng.uniform(-4, 14, size=(3, 7, 2))  # partly outside the box: clipped
    a = rng.integers(0, 2, (3, 7)).astype(np.int8)
    y = rng.normal(0, 3, size=(3, 7))
    y[0, 0] = 1e6  # clamped
    low, inv = sc._box
    np.testing.assert_array_equal(to_unit(x, low, inv), sc.to_unit(x))
    np.testing.assert_array_equal(to_unit(x[:, 2:3], low, inv), sc.to_unit(x[:, 2:3]))  # a strided view
    for arms in (a, a.astype(bool), a.astype(float)):
        np.testing.assert_array_equal(standardize(y, arms, *sc._y_maps, Y_CLAMP), sc.standardize(y, arms))


@pytest.mark.parametrize("backend", ["engine", "torch"])
def test_decision_latency_measures_each_backend(tmp_path, backend, monkeypatch):
    """Known delays added to the decision (3 ms) and to the append (2 ms) must show up in the
    reported milliseconds, each in its own figure, and the requested backend must do the work."""
    from bayesdesign.student import policy as student_policy
    from bayesdesign.student.measure import decision_latency

    cls = student_policy.StudentPolicy
    decide, update, states = cls.propensity_at, cls.update, []

    def slow_decide(self, state, x):
        states.append(type(state).__name__)
        time.sleep(0.003)
        return decide(self, state, x)

    def slow_update(self, state, x, a, y, pi):
        time.sleep(0.002)
        return update(self, state, x, a, y, pi)

    monkeypatch.setattr(cls, "propensity_at", slow_decide)
    monkeypatch.setattr(cls, "update", slow_update)
    make_checkpoint(tmp_path / "s")
    res = decision_latency(tmp_path / "s", history=30, repeats=20, backend=backend)
    assert res["backend"] == backend and res["history"] == 30 and len(states) == 20
    assert set(states) == {"StudentState" if backend == "torch" else "EngineState"}
    assert 3.0 <= res["decide_p50_ms"] < 3.0 + 25.0
    assert 2.0 <= res["decide_and_append_p50_ms"] - res["decide_p50_ms"] < 2.0 + 25.0
