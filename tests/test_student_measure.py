"""The imitation contract of ``python -m bayesdesign.student.measure``: trained and untrained
(corrections zeroed) figures, and zeroing that really leaves the closed-form layer alone."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import bayesdesign as bd
from bayesdesign.student.checkpoint import load_student
from bayesdesign.student.measure import main, zero_corrections
from bayesdesign.traces import generate_traces

LEGACY = Path(bd.__file__).parent / "pretrained" / "student"  # the trained smoothness-mixture student


def _history(rng, b=3, n=150, q=7):
    u = torch.tensor(rng.uniform(size=(b, n, 1)), dtype=torch.float32)
    a = torch.tensor(rng.integers(0, 2, size=(b, n)), dtype=torch.float32)
    y = torch.tensor(rng.standard_normal((b, n)) * np.exp(u[..., 0].numpy() * (2 * a.numpy() - 1)), dtype=torch.float32)
    uq = torch.tensor(rng.uniform(size=(b, q, 1)), dtype=torch.float32)
    return u, a, y, uq


def test_zeroed_student_is_the_conjugate_layer_alone(rng):
    model = load_student(LEGACY).model.eval()
    zeroed = zero_corrections(model).eval()
    u, a, y, uq = _history(rng)
    with torch.no_grad():
        out = zeroed(u, a, y, uq)
        trained = model(u, a, y, uq)
        conj = model.conj  # the layer on its own: fit, class posterior at the teacher's evidence weight 0.25
        fit = conj.fit(conj.unit_stats(u, a, y).sum(1))
        base = conj.predict(fit, uq)
        lp = torch.log_softmax(conj.log_w + fit.ev_mean + 0.25 * fit.ev_var, -1)[:, None, :]  # (B, 1, K)
        log_sbar = [torch.logsumexp(lp + base["log_sbar"][..., arm], -1) for arm in (0, 1)]
        pi = torch.sigmoid(log_sbar[1] - log_sbar[0])
        ls_mean = (lp.exp()[..., None] * base["ls_mean"]).sum(2).transpose(1, 2)
    np.testing.assert_allclose(out["pi"].numpy(), pi.numpy(), atol=2e-5)
    np.testing.assert_allclose(out["class_prob"].numpy(), lp[:, 0].exp().numpy(), atol=2e-5)
    np.testing.assert_allclose(out["log_sd_mean"].numpy(), ls_mean.numpy(), atol=2e-4)
    # the shipped student's corrections are not zero, and the original model is left untouched
    assert np.abs(trained["pi"].numpy() - out["pi"].numpy()).max() > 1e-4
    assert model.expert_w.abs().sum() > 0


def test_zeroing_needs_a_conjugate_layer():
    from bayesdesign.student.model import StudentConfig, StudentModel

    with pytest.raises(ValueError, match="plain network .* no conjugate layer"):
        zero_corrections(StudentModel(StudentConfig(n_terms=0)))


def test_measure_prints_trained_and_untrained_imitation(tmp_path, capsys):
    held = generate_traces("smoothness-mixture", "mixture", tasks=8, horizon=200, queries=4, refit_every=50,
                           seed=987, out=tmp_path / "held.nc")
    main([str(LEGACY), "--traces", str(held), "--json", "--no-latency"])
    res = json.loads(capsys.readouterr().out)
    assert 0 < res["pi_mae"] < 0.05 and 0 < res["pi_mae_untrained"] < 0.05
    assert res["pi_mae"] != res["pi_mae_untrained"]
    assert set(res) >= {"pi_mae_raw", "pi_mae_raw_untrained", "gate_tv", "gate_tv_untrained", "pi_mae[n<100]"}
