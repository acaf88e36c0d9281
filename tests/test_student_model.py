"""Student network: the mixture of experts against a hand-computed mixture, padding masks, the
history as a set, the empty history."""

import numpy as np
import pytest
import torch

from bayesdesign.student.model import StudentConfig, StudentModel


@pytest.fixture(scope="module", params=[0, 6], ids=["network", "conjugate-layer"])
def model(request):
    """The plain network, and one with the conjugate layer (random prior arrays, random non-zero
    corrections, so that both parts are exercised)."""
    torch.manual_seed(0)
    m = StudentModel(
        StudentConfig(d=2, n_classes=4, d_model=32, n_heads=4, token_hidden=32, n_terms=request.param)
    ).eval()
    if m.conj is not None:
        g = np.random.default_rng(0)
        f = 1 + 2 * request.param
        m.conj.set_prior({"s_mean": g.uniform(0.1, 1, (2, 4, f)), "s_var": g.uniform(0.1, 1, (2, 4, f)),
                          "log_w": np.log(np.full(4, 0.25)), "log_scale": np.array([0.2, -0.1])})
        with torch.no_grad():
            m.expert_w.normal_(0, 0.2)
            m.gate[-1].weight.normal_(0, 0.2)
    return m


def _history(b, n, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand((b, n, d), generator=g),
        (torch.rand((b, n), generator=g) < 0.5).float(),
        torch.randn((b, n), generator=g),
    )


def test_mixture_of_experts_against_a_hand_computed_mixture():
    """Constant experts and a fixed gate: every output is a closed form of the chosen constants.

    Expert ``k`` returns ``b_k = (log s0, log s1, m0, m1, log t0, log t1)`` (its weights zeroed):
    per arm the log of ``E[sigma]`` and the mean and log sd of the posterior of ``log sigma``; the
    gate returns logits ``c`` (its last layer's weight zeroed). So by hand ``p = softmax(c)``,
    ``pi = sum p s1 / (sum p s1 + sum p s0)``, the mixture's posterior mean of ``log sigma``
    ``sum p m`` and its sd ``sqrt(sum p (t^2 + m^2) - (sum p m)^2)`` (the law of total variance).
    """
    torch.manual_seed(0)
    model = StudentModel(StudentConfig(d=2, n_classes=3, d_model=32, n_heads=4, token_hidden=32)).eval()
    c = np.array([0.3, -1.2, 0.8])
    b = np.array(
        [[0.1, 0.9, -0.5, 0.2, -1.0, -2.0], [0.7, -0.3, 0.4, -0.1, -0.5, -1.5], [-0.2, 0.5, 0.0, 0.6, -2.5, -0.7]]
    )
    with torch.no_grad():
        model.expert_w.zero_()
        model.expert_b.copy_(torch.as_tensor(b))
        model.gate[-1].weight.zero_()
        model.gate[-1].bias.copy_(torch.as_tensor(c))
        out = model(*_history(2, 9), torch.rand(2, 4, 2))
    p = np.exp(c) / np.exp(c).sum()
    s0, s1 = p @ np.exp(b[:, 0]), p @ np.exp(b[:, 1])
    np.testing.assert_allclose(out["class_prob"].numpy(), np.broadcast_to(p, (2, 3)), rtol=1e-5)
    np.testing.assert_allclose(out["pi"].numpy(), np.full((2, 4), s1 / (s1 + s0)), rtol=1e-5)
    for arm in (0, 1):
        m, v = b[:, 2 + arm], np.exp(2 * b[:, 4 + arm])
        mean = p @ m
        np.testing.assert_allclose(out["log_sd_mean"][:, arm].numpy(), np.full((2, 4), mean), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            out["log_sd_sd"][:, arm].numpy(), np.full((2, 4), np.sqrt(p @ (v + m**2) - mean**2)), rtol=1e-5
        )


def test_padding_does_not_change_outputs(model):
    lengths = [5, 9, 0]
    u, a, y = _history(3, 9, seed=1)
    u[0, 5:], a[0, 5:], y[0, 5:] = 7.0, 1.0, 50.0  # garbage in the padding must not matter
    mask = torch.arange(9)[None] < torch.tensor(lengths)[:, None]
    uq = torch.rand(3, 4, 2)
    with torch.no_grad():
        padded = model(u, a, y, uq, mask)
        for i, n in enumerate(lengths):
            alone = model(u[i : i + 1, :n], a[i : i + 1, :n], y[i : i + 1, :n], uq[i : i + 1])
            for k in ("logit", "log_sd_mean", "log_sd_sd", "class_prob"):
                torch.testing.assert_close(padded[k][i : i + 1], alone[k], atol=1e-5, rtol=1e-5)


def test_history_is_a_set(model):
    u, a, y = _history(2, 12, seed=2)
    perm = torch.from_numpy(np.random.default_rng(3).permutation(12))
    uq = torch.rand(2, 6, 2)
    with torch.no_grad():
        out = model(u, a, y, uq)
        shuffled = model(u[:, perm], a[:, perm], y[:, perm], uq)
    for k in ("logit", "log_sd_mean", "log_sd_sd", "class_prob"):
        torch.testing.assert_close(out[k], shuffled[k], atol=1e-5, rtol=1e-5)


def test_empty_history_and_history_matters(model):
    uq = torch.rand(2, 3, 2)
    with torch.no_grad():
        empty = model(torch.zeros(2, 0, 2), torch.zeros(2, 0), torch.zeros(2, 0), uq)
        some = model(*_history(2, 4, seed=4), uq)
    assert all(torch.isfinite(v).all() for v in empty.values())
    assert not torch.allclose(empty["logit"], some["logit"])


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of n_heads"):
        StudentConfig(d_model=30, n_heads=4)
