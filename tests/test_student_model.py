"""Student network: output shapes, padding masks, the history as a set, the empty history."""

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


def test_output_shapes_and_mixture_consistency(model):
    u, a, y = _history(3, 7)
    uq = torch.rand(3, 5, 2)
    with torch.no_grad():
        out = model(u, a, y, uq)
    assert out["logit"].shape == out["pi"].shape == (3, 5)
    assert out["log_sd_mean"].shape == out["log_sd_sd"].shape == (3, 2, 5)
    assert out["class_logits"].shape == out["class_prob"].shape == (3, 4)
    torch.testing.assert_close(out["class_prob"].sum(-1), torch.ones(3))
    assert torch.all((out["pi"] > 0) & (out["pi"] < 1)) and torch.all(out["log_sd_sd"] > 0)
    torch.testing.assert_close(out["pi"], torch.sigmoid(out["logit"]))


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
