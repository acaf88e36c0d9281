"""Student checkpoints: ``model.safetensors`` (weights) + ``config.json`` (everything else). No pickle.

``config.json`` holds ``format`` and ``format_version``, ``architecture`` (a
:class:`~bayesdesign.student.model.StudentConfig`), ``prior`` (the prior spec as JSON) and
``prior_hash``, ``scaling`` (covariate bounds and outcome standardization the student was trained
with), ``teacher`` and ``teacher_config`` (burn-in, floor, clip schedule, as recorded in the
traces), ``training`` (the arguments of :func:`~bayesdesign.student.distil.distil`) and
``metrics``. A training run also keeps ``train_state.safetensors`` / ``train_state.json``
(optimizer moments, sampler state, step) so that it can resume exactly.

Weights are read with :func:`safetensors.torch.load_file` (no code runs on load) and every file is
written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..io import atomic_path, write_text
from ..spec import PriorSpec, load_prior
from .conjugate import layer_prior
from .model import StudentConfig, StudentModel
from .scaling import InputScaling

__all__ = ["Student", "save_student", "load_student", "FORMAT", "FORMAT_VERSION"]

FORMAT = "bayesdesign-student"
FORMAT_VERSION = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"


@dataclass
class Student:
    """A loaded student: the network in eval mode, how it maps inputs, and what it imitates.

    ``spec`` is the :class:`~bayesdesign.spec.PriorSpec` it was trained on; ``scaling`` the input
    maps in use (the training ones, or those of an overriding prior / bounds); ``teacher_config``
    the teacher's recorded configuration (``burn_in``, ``floor``, ``prior_obs``, ``clip``);
    ``meta`` the whole ``config.json``.
    """

    model: StudentModel
    spec: Any
    scaling: InputScaling
    teacher_config: dict
    meta: dict = field(default_factory=dict)
    path: Path | None = None


def save_student(out_dir: str | Path, model: StudentModel, meta: dict) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (``meta`` plus format and architecture)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": model.cfg.to_dict(), **meta}
    write_text(out / CONFIG, json.dumps(config, indent=1, sort_keys=True, default=_jsonable))
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray | torch.Tensor):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def read_config(path: str | Path) -> dict:
    """The ``config.json`` of a student folder, checked for format."""
    folder = Path(path)
    cfg_path = folder / CONFIG
    if not folder.is_dir() or not cfg_path.is_file() or not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder}: not a student checkpoint (expected {CONFIG} and {WEIGHTS} in a folder)")
    meta = json.loads(cfg_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{cfg_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{cfg_path}: format version {meta['format_version']} is newer than this bayesdesign reads "
            f"({FORMAT_VERSION}); upgrade bayesdesign"
        )
    return meta


def load_student(path: str | Path, prior=None, bounds=None, override: bool = False) -> Student:
    """Load a student saved by :func:`save_student` (or :func:`~bayesdesign.student.distil.distil`).

    Parameters
    ----------
    path : the checkpoint folder.
    prior : a prior (path, shipped name or :class:`~bayesdesign.spec.PriorSpec`) the caller means
        to use; refused (``ValueError``) if its hash differs from the training prior's.
    bounds : ``(low, high)`` of the caller's covariates; refused if they differ from the bounds the
        student was trained with (it maps covariates to the unit cube with those), except for a
        student of a unit-free prior (``outcome.standardize``), which maps the given box to the
        unit cube its prior is stated on; refused with a "dimension mismatch" for another number
        of covariates.
    override : use the student anyway; it then maps covariates with ``bounds`` (or the given
        prior's bounds) and standardizes outcomes with the given prior's offsets, i.e. it treats the
        caller's data as if drawn from its training prior in those units. A given prior also
        replaces the conjugate layer's prior (coefficient scales ``s_mean``, ``s_var`` and class
        log weights ``log_w``, :func:`~bayesdesign.student.conjugate.layer_prior`); a prior whose
        layer does not fit the student's (another number of smoothness classes, series terms or
        covariates, or no series at all) is refused.
    """
    folder = Path(path)
    meta = read_config(folder)
    spec = PriorSpec.from_dict(meta["prior"], source=str(folder / CONFIG))
    scaling = InputScaling.from_dict(meta["scaling"])
    problems = []
    new_spec = None
    if prior is not None:
        new_spec = prior if hasattr(prior, "hash") else load_prior(prior)
        if new_spec.hash() != meta["prior_hash"]:
            problems.append(
                f"the prior {new_spec.name!r} ({new_spec.source}, hash {new_spec.hash()[:12]}) is not the prior the "
                f"student was trained on ({spec.name!r}, hash {meta['prior_hash'][:12]})"
            )
    new_bounds = None
    if bounds is not None or new_spec is not None:
        lo, hi = bounds if bounds is not None else new_spec.bounds
        new_bounds = (np.atleast_1d(np.asarray(lo, float)), np.atleast_1d(np.asarray(hi, float)))
        trained = (np.asarray(scaling.low), np.asarray(scaling.high))
        if new_bounds[0].shape != trained[0].shape or new_bounds[1].shape != trained[0].shape:
            raise ValueError(
                f"{folder}: dimension mismatch: the student takes {trained[0].shape[0]} covariate(s), got bounds "
                f"for {new_bounds[0].shape[0]}"
            )
        if scaling.in_context and new_spec is None and spec.arms is not None:
            # a unit-free prior is stated on the unit cube: any declared box maps onto it
            scaling = InputScaling(tuple(map(float, new_bounds[0])), tuple(map(float, new_bounds[1])),
                                   scaling.y_offset, scaling.y_scale, True)
        elif not (
            np.allclose(new_bounds[0], trained[0]) and np.allclose(new_bounds[1], trained[1])
        ):
            problems.append(
                f"covariate bounds low={new_bounds[0].tolist()}, high={new_bounds[1].tolist()} differ from the "
                f"bounds the student was trained with, low={list(scaling.low)}, high={list(scaling.high)}"
            )
    if problems and not override:
        raise ValueError(
            f"{folder}: refusing to load the student: "
            + "; ".join(problems)
            + ". Its probabilities are only meaningful for the prior and covariate box it imitates; "
            "retrain on traces of your prior, or pass override=True to use it anyway."
        )
    if override and (new_spec is not None or new_bounds is not None):
        if new_bounds is not None and new_bounds[0].shape != np.asarray(scaling.low).shape:
            raise ValueError(
                f"{folder}: cannot override: the student takes {len(scaling.low)} covariates, "
                f"got bounds for {new_bounds[0].shape[0]}"
            )
        scaling = InputScaling.from_spec(new_spec or spec, bounds=new_bounds)
    cfg = StudentConfig.from_dict(meta["architecture"])
    model = StudentModel(cfg)
    state = load_file(str(folder / WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder / WEIGHTS}: weights do not match the architecture (missing {missing}, "
                         f"unexpected {unexpected})")
    if model.conj is not None:
        if override and new_spec is not None and new_spec.hash() != meta["prior_hash"]:
            _use_prior_in_layer(model, new_spec, meta, folder)
        model.conj.set_rule(meta.get("teacher_config") or {})
        # the layer returns sds in the units the (possibly overridden) scaling implies
        model.conj.log_scale.copy_(torch.log(torch.as_tensor(scaling.y_scale, dtype=torch.float64)))
    model.eval()
    return Student(model, spec, scaling, dict(meta.get("teacher_config") or {}), meta, folder)


def _use_prior_in_layer(model: StudentModel, spec, meta: dict, folder: Path) -> None:
    """Put ``spec``'s conjugate-layer prior into ``model`` (floor and prior_obs stay the teacher's)."""
    if spec.arms is None:
        raise ValueError(
            f"{folder}: cannot override with prior {spec.name!r}: it is a user model without a series, and the "
            "student's conjugate layer needs one; retrain on traces of this prior"
        )
    arrays = layer_prior(spec)
    layer = model.conj
    want = tuple(layer.s_mean.shape)
    if arrays["s_mean"].shape != want:
        raise ValueError(
            f"{folder}: cannot override with prior {spec.name!r}: its conjugate layer has (arms, smoothness "
            f"classes, features) {arrays['s_mean'].shape}, the student's {want} (trained on prior "
            f"{meta['prior'].get('name', '?')!r}); retrain on traces of this prior"
        )
    layer.set_prior(arrays, {"floor": float(layer.floor), "prior_obs": float(layer.prior_obs)})
