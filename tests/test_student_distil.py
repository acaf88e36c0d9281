"""Distillation on tiny traces: the validation loss falls, runs are deterministic, resumption is exact."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bayesdesign.student import distil, load_policy
from bayesdesign.student.data import StepBatchSampler, TraceDataset, collate, load_traces, split_tasks
from bayesdesign.traces import generate_traces

KW = dict(steps=20, batch_size=8, lr=3e-3, warmup=5, val_fraction=0.25, val_every=10, checkpoint_every=10,
          progress=False, architecture={"d_model": 32, "token_hidden": 32, "gate_dim": 32, "expert_hidden": 16})


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    out = tmp_path_factory.mktemp("traces") / "tiny.nc"
    generate_traces("smoothness-mixture", "mixture", tasks=24, horizon=60, queries=6, out=out, refit_every=10, seed=1)
    return out


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_examples_are_exact_prefixes(traces):
    arrays, scaling = load_traces(traces)
    train, val = split_tasks(arrays.n_tasks, 0.25, seed=0)
    assert len(val) == 6 and not set(train) & set(val)
    ds = TraceDataset([arrays], [val])
    assert len(ds) == 6 * arrays.n_steps
    i = int(np.flatnonzero((ds.index[:, 1] == val[2]) & (ds.index[:, 2] == 3))[0])
    item = ds[i]
    assert int(item["n"]) == 30 and item["u"].shape == (30, 1)
    np.testing.assert_array_equal(item["y"].numpy(), arrays.y[val[2], :30])
    batch = collate([ds[0], ds[i]])  # step 0 (empty history) padded to 30
    assert batch["mask"].shape == (2, 30) and batch["mask"].sum().item() == 30
    sampler = StepBatchSampler(ds, 4, torch.Generator().manual_seed(0))
    idx = sampler.next()
    assert len(set(ds.index[idx, 2])) == 1  # one history length per batch


def test_network_alone_learns(traces, tmp_path):
    """Without the conjugate layer (``n_terms = 0``) the validation loss falls from a random start."""
    kw = {**KW, "architecture": {**KW["architecture"], "n_terms": 0}}
    res = distil([traces], tmp_path / "net", seed=3, **kw)
    first, last = res.history[0], res.history[-1]
    assert first["step"] == 0 and last["step"] == 20
    assert last["val_loss"] < 0.8 * first["val_loss"]


def test_distil_starts_at_the_teacher_and_is_deterministic(traces, tmp_path):
    """With the conjugate layer (the default for series priors) the student decides as the mixture
    teacher before any training, and a short run stays there."""
    res = distil([traces], tmp_path / "a", seed=3, **KW)
    first, last = res.history[0], res.history[-1]
    assert first["val_pi_mae_raw"] < 3e-3 and first["val_gate_tv"] < 0.01
    assert last["val_pi_mae_raw"] < 0.01 and last["val_gate_tv"] < 0.05
    assert json.loads((tmp_path / "a" / "config.json").read_text())["architecture"]["n_terms"] == 10
    again = distil(traces, tmp_path / "b", seed=3, **KW)
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert again.metrics == res.metrics
    other = _weights(distil(traces, tmp_path / "c", seed=4, **{**KW, "steps": 2}).path)
    assert not all(torch.equal(wa[k], other[k]) for k in wa)
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["teacher_config"]["burn_in"] == 10 and cfg["metrics"]["step"] == 20
    policy = load_policy(tmp_path / "a", prior="smoothness-mixture")
    assert policy.propensity_at(policy.init(2), np.full((2, 3, 1), 0.5)).shape == (2, 3)


def test_resume_gives_the_uninterrupted_weights(traces, tmp_path):
    distil(traces, tmp_path / "full", seed=5, **{**KW, "steps": 12})
    distil(traces, tmp_path / "cut", seed=5, **{**KW, "steps": 12}, max_seconds=0.0)  # stops after one step
    assert json.loads((tmp_path / "cut" / "train_state.json").read_text())["step"] == 1
    distil(traces, tmp_path / "cut", seed=5, **{**KW, "steps": 12})
    wa, wb = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError, match=r"other arguments is here \(differs in \['lr'\]\)"):
        distil(traces, tmp_path / "cut", seed=5, **{**KW, "steps": 12, "lr": 1e-2})


def test_dagger_rolls_out_the_student_and_labels_with_the_teacher(traces, tmp_path):
    """A DAgger round: the new traces' histories were assigned by the student (its propensities,
    recomputed block by block from the recorded history, equal the recorded ``pi``) and their labels
    are the teacher's on those histories."""
    import xarray as xr

    from bayesdesign.teachers import make_teacher

    kw = {**KW, "steps": 8, "val_every": 4, "checkpoint_every": 4}
    distil(traces, tmp_path / "d", seed=2, dagger_rounds=1, dagger_tasks=3, **kw)
    dag = xr.open_dataset(tmp_path / "d" / "dagger-1.nc")
    assert dag.attrs["design"].startswith("student:") and dag.sizes["task"] == 3
    policy = load_policy(tmp_path / "d")  # the final student differs from the rolled-out one ...
    x, a, y, pi = (dag[k].values.astype(float) for k in ("x", "a", "y", "pi"))
    b = int(dag.attrs["refit_every"])
    assert np.all(pi[:, :10] == 0.5)  # burn-in
    teacher = make_teacher("mixture", "smoothness-mixture")
    s = 3
    n = int(dag.n_obs[s])
    ref = teacher.decide(teacher.update(teacher.init(3), x[:, :n], a[:, :n], y[:, :n], None),
                         dag.x_query.values[:, s].astype(float))
    np.testing.assert_allclose(dag.pi_raw.values[:, s], ref["pi"], atol=1e-5)
    # ... so replay the rollout with the student of step 4, the DAgger point (the warm-up covers
    # steps 0-3, so a 4-step run has the same learning rates and weights)
    rolled = distil(traces, tmp_path / "r", seed=2, **{**kw, "steps": 4})
    rp = load_policy(rolled.path)
    state = rp.init(3)
    for lo in range(0, x.shape[1], b):
        np.testing.assert_allclose(pi[:, lo:lo + b], rp.propensity_at(state, x[:, lo:lo + b]), atol=1e-5)
        state = rp.update(state, x[:, lo:lo + b], a[:, lo:lo + b], y[:, lo:lo + b], pi[:, lo:lo + b])
    assert policy.name.startswith("student:")


def test_log_sd_true_is_the_gaussian_nll_of_the_truth():
    from scipy.stats import norm

    from bayesdesign.student.losses import distil_losses

    g = torch.Generator().manual_seed(0)
    m, s, truth = torch.randn(4, 2, 5, generator=g), torch.rand(4, 2, 5, generator=g) + 0.2, torch.randn(4, 2, 5)
    out = {"logit": torch.zeros(4, 5), "log_sd_mean": m, "log_sd_sd": s, "class_logits": torch.zeros(4, 3)}
    batch = {"pi_raw": torch.full((4, 5), 0.5), "log_sd_mean": m, "log_sd_sd": s,
             "class_prob": torch.full((4, 3), 1 / 3), "task_class": torch.zeros(4, dtype=torch.long),
             "true_log_sd": truth}
    terms = distil_losses(out, batch)
    ref = -norm.logpdf(truth.numpy(), m.numpy(), s.numpy()).mean()
    assert abs(float(terms["log_sd_true"]) - ref) < 1e-5
    assert float(terms["log_sd"]) < 1e-6 and float(terms["pi"]) < 1e-6


def test_traces_without_truth_are_refused_for_the_truth_loss(traces, tmp_path):
    import xarray as xr

    old = tmp_path / "old.nc"
    xr.open_dataset(traces).drop_vars("true_log_sd").to_netcdf(old)
    with pytest.raises(ValueError, match="no true_log_sd"):
        distil(old, tmp_path / "x", seed=0, **KW)


def test_in_context_targets_follow_the_outcomes_units():
    """A student that standardizes in context predicts log sigma of (y - c_n)/s_n: its labels move
    by -log s0 when the outcomes are put in other units y -> c0 + s0 y, and are the outcome-unit
    labels less the log of the history's pooled sd (padding ignored)."""
    from bayesdesign.student.distil import in_context_targets

    g = torch.Generator().manual_seed(0)
    y = 2.0 + 3.0 * torch.randn(3, 50, generator=g)
    mask = torch.arange(50)[None, :] < torch.tensor([[50], [31], [2]])
    labels = 0.1 * torch.randn(3, 2, 4, generator=g)
    batch = {"y": y, "mask": mask, "log_sd_mean": labels, "true_log_sd": labels + 0.5}
    got = in_context_targets(batch)
    sd = torch.stack([y[i, mask[i]].std(unbiased=False) for i in range(3)]).double()
    np.testing.assert_allclose(got["log_sd_mean"].numpy(), (labels - torch.log(sd)[:, None, None]).numpy(), atol=1e-5)
    moved = in_context_targets({**batch, "y": -40.0 + 250.0 * y, "log_sd_mean": labels + math.log(250.0),
                                "true_log_sd": labels + 0.5 + math.log(250.0)})
    for k in ("log_sd_mean", "true_log_sd"):
        np.testing.assert_allclose(moved[k].numpy(), got[k].numpy(), atol=1e-4)


def test_swapped_arms_are_what_the_teacher_says_of_the_swapped_history(traces, tmp_path):
    """Exchanging the arms of a batch (a -> 1 - a) gives the labels the teacher itself computes on
    the exchanged history under a prior that treats the arms alike: 1 - pi, log-sds swapped; a
    prior whose arms differ is refused."""
    from bayesdesign.student.data import swap_arms
    from bayesdesign.teachers import make_teacher

    arrays, _ = load_traces(traces)
    ds = TraceDataset([arrays])
    idx = np.flatnonzero(ds.index[:, 2] == 4)[:5]
    swapped = swap_arms(ds.batch(idx))
    teacher = make_teacher("mixture", "smoothness-mixture")
    u, a, y = (swapped[k].double().numpy() for k in ("u", "a", "y"))
    y = arrays.y[ds.index[idx, 1], : u.shape[1]]  # outcomes in the prior's units
    out = teacher.decide(teacher.update(teacher.init(len(idx)), u, a, y, None), swapped["uq"].double().numpy())
    np.testing.assert_allclose(out["pi"], swapped["pi_raw"].numpy(), atol=2e-3)
    np.testing.assert_allclose(out["log_sd_mean"], swapped["log_sd_mean"].numpy(), atol=2e-3)
    assert np.abs(swapped["pi_raw"].numpy() - 0.5).max() > 0.05
    other = tmp_path / "tc.nc"
    generate_traces("treated-control", "conjugate", tasks=4, horizon=20, queries=2, out=other, refit_every=10, seed=1)
    with pytest.raises(ValueError, match="swap_arms: the prior 'treated-control'"):
        distil([other], tmp_path / "s", swap_arms=True, **KW)


def test_examples_with_non_finite_teacher_labels_are_left_out_with_a_warning(traces):
    arrays, _ = load_traces(traces)
    arrays.pi_raw[2, 3, 1] = np.nan
    arrays.log_sd_mean[4, 1, 0, 2] = np.inf  # an overflowed sd draw
    with pytest.warns(RuntimeWarning, match="2 \\(task, step\\) examples with non-finite teacher labels"):
        ds = TraceDataset([arrays])
    assert ds.dropped == 2 and len(ds) == arrays.n_tasks * arrays.n_steps - 2
    assert not ((ds.index[:, 1] == 2) & (ds.index[:, 2] == 3)).any()
