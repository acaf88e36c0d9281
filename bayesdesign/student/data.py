"""Training examples from teacher traces: (task, step) pairs with exact history prefixes.

An example is one task of a traces file at one refit step ``s``: its history is the *exact*
prefix of the first ``n_obs[s]`` units (no subsampling: the teacher's label is a function of that
prefix), its queries are ``x_query[task, s]`` and its labels the teacher's ``pi_raw``,
``log_sd_mean``, ``log_sd_sd`` at the queries, ``class_prob[task, s]`` and ``task_class[task]``.
Losses are taken on queries only.

:class:`StepBatchSampler` draws batches whose examples share a step (so a batch has one history
length and needs no padding, as in-context models sample "the context length per batch");
:func:`collate` pads anyway, so any mix of examples can be batched.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..io import load_dataset
from ..spec import PriorSpec
from .scaling import InputScaling

__all__ = ["TraceArrays", "TraceDataset", "StepBatchSampler", "collate", "load_traces", "split_tasks"]


@dataclass
class TraceArrays:
    """One traces file in student coordinates (float32 numpy arrays).

    ``u`` (T, N, d), ``a`` (T, N), ``y`` (T, N) standardized, ``n_obs`` (S,), ``uq`` (T, S, Q, d),
    ``pi_raw``, ``pi_query`` (T, S, Q), ``log_sd_mean``, ``log_sd_sd`` (T, S, 2, Q),
    ``class_prob`` (T, S, K), ``task_class`` (T,); ``attrs`` the file's attributes;
    ``true_log_sd`` (T, S, 2, Q) the task's true log sigma_a at the queries (``None``
    in files without it).
    """

    u: np.ndarray
    a: np.ndarray
    y: np.ndarray
    n_obs: np.ndarray
    uq: np.ndarray
    pi_raw: np.ndarray
    pi_query: np.ndarray
    log_sd_mean: np.ndarray
    log_sd_sd: np.ndarray
    class_prob: np.ndarray
    task_class: np.ndarray
    attrs: dict
    true_log_sd: np.ndarray | None = None

    @property
    def n_tasks(self) -> int:
        return self.u.shape[0]

    @property
    def n_steps(self) -> int:
        return self.n_obs.shape[0]

    @property
    def n_classes(self) -> int:
        return self.class_prob.shape[-1]


def load_traces(path: str | Path, scaling: InputScaling | None = None) -> tuple[TraceArrays, InputScaling]:
    """Read a traces file and map it to student coordinates with ``scaling`` (default: the scaling
    of the prior recorded in the file)."""
    ds = load_dataset(path)
    missing = [k for k in ("x", "a", "y", "n_obs", "x_query", "pi_raw", "log_sd_mean", "class_prob") if k not in ds]
    if missing or "prior" not in ds.attrs:
        raise ValueError(f"{path}: not a bayesdesign traces file (missing {missing or ['attribute prior']})")
    if scaling is None:
        scaling = InputScaling.from_spec(PriorSpec.from_dict(json.loads(ds.attrs["prior"]), source=str(path)))
    f32 = np.float32
    a = ds.a.values.astype(f32)
    arrays = TraceArrays(
        u=scaling.to_unit(ds.x.values),
        a=a,
        y=scaling.standardize(ds.y.values, a),
        n_obs=ds.n_obs.values.astype(np.int64),
        uq=scaling.to_unit(ds.x_query.values),
        pi_raw=ds.pi_raw.values.astype(f32),
        pi_query=ds.pi_query.values.astype(f32),
        log_sd_mean=ds.log_sd_mean.values.astype(f32),
        log_sd_sd=ds.log_sd_sd.values.astype(f32),
        class_prob=ds.class_prob.values.astype(f32),
        task_class=ds.task_class.values.astype(np.int64),
        attrs=dict(ds.attrs),
        true_log_sd=ds.true_log_sd.values.astype(f32) if "true_log_sd" in ds else None,
    )
    return arrays, scaling


def split_tasks(n_tasks: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, validation) task indices: a seeded permutation, ``val_fraction`` held out
    (at least one task each side when ``0 < val_fraction < 1`` and there are two tasks)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a number in [0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n_tasks)
    n_val = int(round(val_fraction * n_tasks))
    if val_fraction > 0 and n_tasks >= 2:
        n_val = min(max(n_val, 1), n_tasks - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class TraceDataset(Dataset):
    """Examples ``(file, task, step)`` over the given tasks of one or more :class:`TraceArrays`.

    ``tasks[i]`` lists the task indices of ``files[i]`` to use (all by default); ``index`` is the
    (E, 3) integer array of examples. Examples with a label that is not finite (a sampling
    teacher's ``pi`` or log-sd is NaN or infinite when a posterior draw of the model's ``sd`` site
    overflowed) are left out with a warning that counts them; ``dropped`` holds their number.
    """

    def __init__(self, files: Sequence[TraceArrays], tasks: Sequence[np.ndarray] | None = None):
        self.files = list(files)
        self.dropped = 0
        if tasks is None:
            tasks = [np.arange(f.n_tasks) for f in self.files]
        rows = []
        for i, (f, ts) in enumerate(zip(self.files, tasks, strict=True)):
            ts = np.asarray(ts, dtype=np.int64)
            tt, ss = np.meshgrid(ts, np.arange(f.n_steps), indexing="ij")
            tt, ss = tt.ravel(), ss.ravel()
            labels = [f.pi_raw, f.pi_query, f.log_sd_mean, f.log_sd_sd]
            labels += [] if f.true_log_sd is None else [f.true_log_sd]
            ok = np.ones(tt.size, bool)
            for v in labels:
                ok &= np.isfinite(v[tt, ss]).reshape(tt.size, -1).all(-1)
            rows.append(np.stack([np.full(int(ok.sum()), i), tt[ok], ss[ok]], 1))
            self.dropped += int((~ok).sum())
        self.index = np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)
        if self.dropped:
            warnings.warn(f"traces: {self.dropped} (task, step) examples with non-finite teacher labels left out",
                          RuntimeWarning, stacklevel=2)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        fi, t, s = (int(v) for v in self.index[i])
        f = self.files[fi]
        n = int(f.n_obs[s])
        item = {
            "u": f.u[t, :n],
            "a": f.a[t, :n],
            "y": f.y[t, :n],
            "uq": f.uq[t, s],
            "pi_raw": f.pi_raw[t, s],
            "pi_query": f.pi_query[t, s],
            "log_sd_mean": f.log_sd_mean[t, s],
            "log_sd_sd": f.log_sd_sd[t, s],
            "class_prob": f.class_prob[t, s],
            "task_class": np.int64(f.task_class[t]),
            "n": np.int64(n),
        }
        if f.true_log_sd is not None:
            item["true_log_sd"] = f.true_log_sd[t, s]
        return {k: torch.as_tensor(v) for k, v in item.items()}

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The collated batch of examples ``indices``."""
        return collate([self[int(i)] for i in indices])


def swap_arms(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    r"""The batch with the arms' labels exchanged: ``a -> 1 - a``, :math:`\pi -> 1 - \pi`, and the
    per-arm log-sd labels swapped. Under a prior that treats the arms alike (exchangeable arm
    functions) this is another draw of the same task distribution, labelled by the same teacher,
    so training on both doubles the examples (``distil(..., swap_arms=True)``)."""
    out = dict(batch)
    out["a"] = 1 - batch["a"]
    for k in ("pi_raw", "pi_query"):
        out[k] = 1 - batch[k]
    for k in ("log_sd_mean", "log_sd_sd", "true_log_sd"):
        if k in batch:
            out[k] = batch[k].flip(-2)
    return out


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack examples, padding histories to the longest with zeros; ``mask`` (B, N) marks real
    units (``None`` when no example is padded)."""
    n_max = max(int(it["n"]) for it in items)
    out: dict[str, torch.Tensor] = {}
    for k in ("u", "a", "y"):
        vals = []
        for it in items:
            v = it[k]
            pad = n_max - v.shape[0]
            if pad:
                v = torch.cat([v, v.new_zeros((pad, *v.shape[1:]))])
            vals.append(v)
        out[k] = torch.stack(vals)
    for k in items[0]:
        if k not in out:
            out[k] = torch.stack([it[k] for it in items])
    lengths = out["n"]
    out["mask"] = None if bool((lengths == n_max).all()) else torch.arange(n_max)[None, :] < lengths[:, None]
    return out


class StepBatchSampler(Sampler[list[int]]):
    """Endless batches of ``batch_size`` examples of one (file, step), drawn with ``generator``.

    A step is drawn uniformly among the (file, step) groups, then ``batch_size`` examples of that
    group without replacement (fewer if the group is smaller).
    """

    def __init__(self, dataset: TraceDataset, batch_size: int, generator: torch.Generator):
        self.batch_size = batch_size
        self.generator = generator
        keys = dataset.index[:, 0] * (1 + max(f.n_steps for f in dataset.files)) + dataset.index[:, 2]
        self.groups = [np.flatnonzero(keys == k) for k in np.unique(keys)]
        if not self.groups:
            raise ValueError("no training examples: the task split left no tasks to train on")

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield self.next()

    def next(self) -> list[int]:
        g = self.groups[int(torch.randint(len(self.groups), (1,), generator=self.generator))]
        take = torch.randperm(len(g), generator=self.generator)[: self.batch_size].numpy()
        return g[take].tolist()
