"""Distillation on tiny traces: the validation loss falls, runs are deterministic, resumption is exact."""

import json

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


def test_distil_learns_and_is_deterministic(traces, tmp_path):
    res = distil([traces], tmp_path / "a", seed=3, **KW)
    first, last = res.history[0], res.history[-1]
    assert first["step"] == 0 and last["step"] == 20
    assert last["val_loss"] < 0.8 * first["val_loss"]
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
