r"""Distillation losses (all but ``log_sd_true`` zero when the student matches the teacher exactly).

* **Probability**: soft-target binary cross-entropy of the student's logit against the teacher's
  unclipped ratio ``pi_raw``, minus the target's entropy (so it is the Bernoulli KL divergence).
  Chosen over MSE on the logit because its gradient in the logit is :math:`\pi_S - \pi_T`: errors
  count on the probability scale, where the imitation error :math:`|\pi_S - \pi_T|` is measured,
  and extreme ratios (which the clip overrides anyway) do not dominate as they would on the
  logit scale.
* **log sigma**: the teacher's posterior of :math:`\log\sigma_a(x)` is summarised by a mean and
  sd; the loss is :math:`KL(N(m_T, s_T^2)\,\|\,N(m_S, s_S^2))`, the expected Gaussian NLL of the
  student's head under the teacher's posterior, less the teacher's entropy.
* **log sigma against the truth** (``log_sd_true``, the default for the log-sigma heads): the
  Gaussian NLL of the task's true :math:`\log\sigma_a(x)` (recorded in the traces) under the
  student's :math:`N(m_S, s_S^2)`. Minimized over prior draws by the exact posterior mean and sd
  (amortized, neural-posterior-estimation style), so the student's amortized posterior is
  calibrated by construction rather than inheriting the teacher's: the conjugate teacher's
  working-model posterior of :math:`\log\sigma` is too wide (its PIT values bunch in the
  middle), and imitating it (``log_sd``) reproduces that. The probability head is separate and
  still imitates the teacher.
* **Gate**: KL from the teacher's class posterior ``class_prob`` to the gate (soft targets: the
  student's mixture weights should be the teacher's, which combine its experts), plus optionally
  cross-entropy against the class that generated the task (``task_class``; minimized by the exact
  posterior under the prior, which differs from the teacher's tempered class posterior).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["DEFAULT_WEIGHTS", "distil_losses"]

DEFAULT_WEIGHTS = {"pi": 10.0, "log_sd": 0.0, "log_sd_true": 1.0, "gate_soft": 1.0, "gate_hard": 0.0}
_HALF_LOG_2PI = 0.9189385332046727
_EPS = 1e-6


def _bernoulli_kl(logit: Tensor, target: Tensor) -> Tensor:
    t = target.clamp(_EPS, 1 - _EPS)
    entropy = -(t * torch.log(t) + (1 - t) * torch.log1p(-t))
    return F.binary_cross_entropy_with_logits(logit, t, reduction="none") - entropy


def distil_losses(out: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-term mean losses of model outputs ``out`` against a batch of teacher labels."""
    pi = _bernoulli_kl(out["logit"], batch["pi_raw"]).mean()
    m_t, s_t = batch["log_sd_mean"], batch["log_sd_sd"].clamp(min=1e-4)
    m_s, s_s = out["log_sd_mean"], out["log_sd_sd"].clamp(min=1e-4)
    log_sd = (torch.log(s_s / s_t) + (s_t**2 + (m_t - m_s) ** 2) / (2 * s_s**2) - 0.5).mean()
    log_q = F.log_softmax(out["class_logits"], -1)
    p = batch["class_prob"].clamp(min=0.0)
    gate_soft = (torch.xlogy(p, p) - p * log_q).sum(-1).mean()
    gate_hard = F.nll_loss(log_q, batch["task_class"])
    terms = {"pi": pi, "log_sd": log_sd, "gate_soft": gate_soft, "gate_hard": gate_hard}
    if "true_log_sd" in batch:
        z = (batch["true_log_sd"] - m_s) / s_s
        terms["log_sd_true"] = (torch.log(s_s) + 0.5 * z**2 + _HALF_LOG_2PI).mean()
    return terms
