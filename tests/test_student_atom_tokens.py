"""Atom features in the history tokens (``StudentConfig.token_atom``): whether a unit's outcome ties
the running minimum and its log distance above it on the history's scale. The torch forms (one
pass for training, unit by unit for the policy) and the compiled engine compute the same function,
which stays invariant to the outcome's location and scale and unchanged by padding."""

import numpy as np
import pytest
import torch

from bayesdesign.student import StudentConfig, load_student
from bayesdesign.student.model import running_atom
from bayesdesign.student.policy import StudentPolicy
from bayesdesign.student.scaling import running_atom as running_atom_np
from bayesdesign.student.untrained import untrained_student

LOW, HIGH = np.array([0.0, 0.0]), np.array([1.0, 1.0])


def _revenue(rng, b=3, n=240, q=6):
    """Zero-heavy revenue: 70% zeros, lognormal amounts larger under treatment."""
    x = rng.uniform(size=(b, n, 2))
    a = (rng.uniform(size=(b, n)) < 0.5).astype(float)
    y = np.where(rng.uniform(size=(b, n)) < 0.7, 0.0, np.exp(rng.normal(0.0, 0.8, (b, n))) * (1 + a))
    return x, a, y, rng.uniform(size=(b, q, 2))


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """An in-context student with atom tokens and random, non-zero corrections (so decisions
    depend on the tokens), the atom features' token weights enlarged so they matter."""
    path = untrained_student("unit-free-2", tmp_path_factory.mktemp("atom") / "s", seed=1,
                             architecture={"token_atom": True})
    st = load_student(path, bounds=(LOW, HIGH))
    torch.manual_seed(5)
    with torch.no_grad():
        st.model.expert_w.normal_(0, 0.3)
        st.model.gate[-1].weight.normal_(0, 0.3)
        st.model.token[0].weight[:, -4:].normal_(0, 2.0)
    return st


def _pi(policy, x, a, y, xq, blocks=(0, 1, 2, 9, 200, 201, 240)):
    st = policy.init(x.shape[0])
    for lo, hi in zip(blocks[:-1], blocks[1:], strict=True):
        st = policy.update(st, x[:, lo:hi], a[:, lo:hi], y[:, lo:hi], None)
    return policy._raw(st, xq)


def test_features_by_hand():
    """Ties with the running minimum and log excess over it, by hand on a short history."""
    y = torch.tensor([[0.0, 0.0, 3.0, 0.0, -1.0]], dtype=torch.float64)
    f = running_atom(y)[0].numpy()
    np.testing.assert_array_equal(f[:, 0], [1, 1, 0, 1, 1])
    sd3 = np.std([0.0, 0.0, 3.0])  # pooled sd of the first three outcomes (ddof 0)
    np.testing.assert_allclose(f[:, 1], [0, 0, np.log(3.0 / sd3), 0, 0], atol=1e-12)


def test_unit_by_unit_form_equals_the_one_pass_form(rng):
    _, _, y, _ = _revenue(rng, n=60)
    ref = running_atom(torch.as_tensor(y)).numpy()
    n0, s1, s2, low = np.zeros(3), np.zeros(3), np.zeros(3), np.full(3, np.inf)
    parts = []
    for lo, hi in ((0, 1), (1, 7), (7, 60)):
        yy = y[:, lo:hi]
        parts.append(running_atom_np(yy, n0, s1, s2, low))
        n0, s1, s2, low = n0 + yy.shape[1], s1 + yy.sum(1), s2 + (yy * yy).sum(1), np.minimum(low, yy.min(1))
    np.testing.assert_allclose(np.concatenate(parts, 1), ref, atol=1e-12)


def test_backends_agree_and_decisions_are_unit_free(student, rng):
    x, a, y, xq = _revenue(rng)
    pis = {(be, k): _pi(StudentPolicy(student, backend=be), x, a, yy, xq)
           for be in ("engine", "torch") for k, yy in (("y", y), ("c+sy", 3 + 250 * y))}
    for be in ("engine", "torch"):
        np.testing.assert_allclose(pis[be, "c+sy"], pis[be, "y"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(pis["engine", "y"], pis["torch", "y"], atol=2e-6, rtol=0)
    t = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        one = student.model(t(x), t(a), torch.as_tensor(y), t(xq))["pi"].double().numpy()
    np.testing.assert_allclose(one, pis["torch", "y"], atol=2e-6, rtol=0)
    # the atom features change the decisions: the same weights with their token inputs zeroed differ
    model = student.model
    saved = model.token[0].weight[:, -4:].clone()
    with torch.no_grad():
        model.token[0].weight[:, -4:] = 0.0
        blind = model(t(x), t(a), torch.as_tensor(y), t(xq))["pi"].double().numpy()
        model.token[0].weight[:, -4:] = saved
    assert np.abs(blind - one).max() > 1e-3


def test_padding_changes_nothing(student, rng):
    x, a, y, xq = _revenue(rng, n=50)
    t = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
    pad = lambda v, fill: torch.cat([v, torch.full((v.shape[0], 7, *v.shape[2:]), fill)], 1)  # noqa: E731
    mask = torch.cat([torch.ones(3, 50, dtype=torch.bool), torch.zeros(3, 7, dtype=torch.bool)], 1)
    with torch.no_grad():
        plain = student.model(t(x), t(a), t(y), t(xq))["pi"]
        padded = student.model(pad(t(x), 0.3), pad(t(a), 1.0), pad(t(y), -1e4), t(xq), mask)["pi"]
    np.testing.assert_allclose(padded.numpy(), plain.numpy(), atol=2e-6)


def test_needs_in_context_standardization():
    with pytest.raises(ValueError, match="token_atom"):
        StudentConfig(d=1, n_terms=4, token_atom=True)
