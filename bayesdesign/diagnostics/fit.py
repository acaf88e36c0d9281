"""``bayesdesign diagnose fit``: the NUTS teacher fitted to one history, with its convergence checked.

Apart from :mod:`~bayesdesign.diagnostics.convergence` (the statistics), which the NUTS teacher
itself imports for its tail ESS: this module runs the teacher, so the two do not import each other.
"""

from __future__ import annotations

import numpy as np

from ..spec import load_prior
from ..teachers import TeacherConfig
from ..teachers.nuts import NUTSTeacher
from .convergence import convergence_summary, messages

__all__ = ["diagnose_fit"]


def diagnose_fit(
    prior,
    history,
    num_chains: int = 4,
    draws: int = 2000,
    num_warmup: int = 500,
    queries: int = 9,
    seed: int = 0,
    **teacher_kwargs,
):
    r"""Fit the NUTS teacher of ``prior`` to one ``history`` with ``num_chains`` chains and
    summarize convergence of :math:`\mu_a`, :math:`\sigma_a`, :math:`\log\sigma_a` at ``queries``
    evenly spaced covariates (first covariate varied, others at the box centre).

    Returns ``(idata, summary, messages)``: the ArviZ ``InferenceData`` of
    :meth:`~bayesdesign.teachers._sampling.SampledTeacher.posterior`, the
    :func:`~bayesdesign.diagnostics.convergence.convergence_summary` and the failed thresholds
    (see :func:`~bayesdesign.diagnostics.convergence.messages`).
    """
    spec = prior if hasattr(prior, "hash") else load_prior(prior)
    if num_chains < 2:
        raise ValueError(f"num_chains: expected at least 2 chains for R-hat across chains, got {num_chains}")
    teacher = NUTSTeacher(
        spec,
        teacher_kwargs.pop("config", None) or TeacherConfig(burn_in=0),
        num_warmup=num_warmup,
        num_samples=max(4, draws // num_chains),
        num_chains=num_chains,
        seed=seed,
        **teacher_kwargs,
    )
    low, high = (np.asarray(v, float) for v in spec.bounds)
    xq = np.tile((low + high) / 2, (queries, 1))
    xq[:, 0] = np.linspace(low[0], high[0], queries)
    idata = teacher.posterior(history, xq, draws=max(4, draws // num_chains) * num_chains, seed=seed)
    summary = convergence_summary(idata)
    return idata, summary, messages(summary)
